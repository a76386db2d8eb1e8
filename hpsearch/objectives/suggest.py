"""Space entries -> Optuna suggestions, and ``--set`` values -> typed params."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import optuna

from hpsearch.errors import ParamError
from hpsearch.search_spaces import CategoricalParam, FloatParam, IntParam, StudySpec
from hpsearch.search_spaces.schema import ParamSpec


def suggest_params(trial: optuna.Trial, space: Mapping[str, ParamSpec]) -> dict[str, Any]:
    """One value per space entry from the trial's sampler."""
    params: dict[str, Any] = {}
    for name, entry in space.items():
        if isinstance(entry, FloatParam):
            params[name] = trial.suggest_float(
                name, entry.low, entry.high, log=entry.log, step=entry.step
            )
        elif isinstance(entry, IntParam):
            params[name] = trial.suggest_int(
                name, entry.low, entry.high, log=entry.log, step=entry.step
            )
        else:
            params[name] = trial.suggest_categorical(name, entry.choices)
    return params


def parse_assignments(spec: StudySpec, assignments: list[str]) -> dict[str, Any]:
    """``["key=value", ...]`` for space keys, typed and checked against the space entry."""
    params: dict[str, Any] = {}
    for assignment in assignments:
        key, sep, raw = assignment.partition("=")
        key, raw = key.strip(), raw.strip()
        if not sep or not key:
            raise ParamError(f"--set {assignment!r}: write key=value, e.g. --set lr=0.001")
        if key not in spec.space:
            raise ParamError(
                f"--set {key}: {key!r} is not in the search space of {spec.name!r}; "
                f"use one of {', '.join(spec.space)}"
            )
        params[key] = _typed_value(key, raw, spec.space[key])
    return params


def _typed_value(key: str, raw: str, entry: ParamSpec) -> Any:
    if isinstance(entry, CategoricalParam):
        for choice in entry.choices:
            if str(choice).lower() == raw.lower():
                return choice
        raise ParamError(
            f"--set {key}={raw}: not one of the choices {', '.join(map(str, entry.choices))}"
        )
    try:
        value: float | int = int(raw) if isinstance(entry, IntParam) else float(raw)
    except ValueError:
        kind = "an integer" if isinstance(entry, IntParam) else "a number"
        raise ParamError(f"--set {key}={raw}: not {kind}; e.g. --set {key}={entry.low}") from None
    if not math.isfinite(value):
        raise ParamError(f"--set {key}={raw}: not a finite number; e.g. --set {key}={entry.low}")
    return value  # outside the searched range is allowed for a try; the trainer validates it
