"""Space entries -> Optuna suggestions, and ``--set`` values -> typed params."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import optuna

from hpsearch.errors import ParamError
from hpsearch.pruners.conditions import ConditionScope
from hpsearch.search_spaces import CategoricalParam, FloatParam, IntParam, StudySpec
from hpsearch.search_spaces.schema import ParamSpec, default_of


def suggest_params(
    trial: optuna.Trial, space: Mapping[str, ParamSpec], fixed: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """One value per space entry from the trial's sampler; an entry whose ``when`` is false
    (given ``fixed`` and the params sampled before it) is not sampled: it takes its
    ``default`` if it has one, else it is left out (the trainer's own default applies)."""
    params: dict[str, Any] = {}
    for name, entry in space.items():
        if not condition_holds(entry, {**(fixed or {}), **params}):
            if entry.default is not None:
                params[name] = entry.default
            continue
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


def condition_holds(entry: ParamSpec, params: Mapping[str, Any]) -> bool:
    """True when the entry has no ``when`` or its condition holds for ``params``."""
    condition = entry.condition()
    if condition is None:
        return True
    return condition.evaluate(ConditionScope(values=dict(params), history=(), metrics={}))


def inactive_params(space: Mapping[str, ParamSpec], params: Mapping[str, Any]) -> list[str]:
    """The space params whose ``when`` is false for ``params``."""
    return [name for name, entry in space.items() if not condition_holds(entry, params)]


def try_params(spec: StudySpec, given: Mapping[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """The params of a single try: ``fixed``, then each space entry as given, else at its
    default where its ``when`` holds (or it has a ``default``), as a trial would get them; and
    notes on given values outside the searched space."""
    params: dict[str, Any] = dict(spec.fixed)
    notes: list[str] = []
    for name, entry in spec.space.items():
        active = condition_holds(entry, params)
        if name in given:
            params[name] = given[name]
            notes += _outside_notes(name, given[name], entry, active)
        elif active or entry.default is not None:
            params[name] = entry.default if entry.default is not None else default_of(entry)
    return params, notes


def _outside_notes(name: str, value: Any, entry: ParamSpec, active: bool) -> list[str]:
    notes = []
    if isinstance(entry, FloatParam | IntParam) and not entry.low <= value <= entry.high:
        notes.append(
            f"{name}={value} is outside the searched range [{entry.low}, {entry.high}]; "
            "trying it anyway"
        )
    if not active:
        notes.append(f"{name} is not searched here (when: {entry.when}); the trainer gets it")
    return notes


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
