"""The Trainer contract shared by every trainer (DESIGN.md, Trainer).

Trainers know nothing of Optuna or MLflow: they take plain params, expose ``knobs`` (live
hyperparameters that rules may change between epochs), yield metrics after each epoch and give a
full evaluation at the end.
"""

from __future__ import annotations

import random
from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping
from typing import Any, ClassVar

import numpy as np
import torch

from hpsearch.errors import ParamError


class Trainer(ABC):
    """Base class of every trainer.

    Subclasses declare ``param_defaults`` (every accepted param with its default) and
    ``metric_names`` (every metric ``epochs`` or ``final_metrics`` may return, so that specs can be
    validated before any training), and implement ``_run_epoch`` and ``final_metrics``.

    ``knobs`` holds the live hyperparameters that rules may change between epochs; a trainer reads
    them at every step, so a backoff applied after epoch k shapes epoch k+1.
    """

    name: ClassVar[str] = ""
    param_defaults: ClassVar[Mapping[str, Any]] = {}
    knob_names: ClassVar[tuple[str, ...]] = ()
    metric_names: ClassVar[tuple[str, ...]] = ()

    def __init__(self, params: Mapping[str, Any], *, device: torch.device, seed: int) -> None:
        self.params: dict[str, Any] = self.resolve_params(params)
        self.device = device
        self.seed = seed
        seed_everything(seed)
        self.knobs: dict[str, float] = {name: float(self.params[name]) for name in self.knob_names}
        self.epoch = 0

    @classmethod
    def resolve_params(cls, params: Mapping[str, Any]) -> dict[str, Any]:
        """Defaults overlaid with ``params``; an unknown param is a ParamError."""
        unknown = sorted(set(params) - set(cls.param_defaults))
        if unknown:
            raise ParamError(
                f"trainer {cls.name!r} has no param {unknown[0]!r}; "
                f"known params: {', '.join(sorted(cls.param_defaults))}"
            )
        resolved = dict(cls.param_defaults)
        resolved.update(params)
        cls.validate_params(resolved)
        return resolved

    @classmethod
    def validate_params(cls, params: Mapping[str, Any]) -> None:
        """Raise ParamError on a bad value; subclasses extend this (default: accept all)."""
        return None

    def epochs(self, n: int) -> Iterator[dict[str, float]]:
        """Run ``n`` epochs, yielding the metrics after each one (``epoch`` counts from 1)."""
        for _ in range(n):
            self.epoch += 1
            metrics = self._run_epoch(self.epoch, n)
            yield metrics

    @abstractmethod
    def _run_epoch(self, epoch: int, total_epochs: int) -> dict[str, float]:
        """Train one epoch (reading ``self.knobs``) and return its metrics."""

    @abstractmethod
    def final_metrics(self) -> dict[str, float]:
        """Full evaluation after the last epoch."""

    def report(self) -> dict[str, Any]:
        """Structured results beyond the final metrics (e.g. a full test-suite report), JSON-safe.

        Stored as the MLflow artifact ``trainer_report.json`` (not on the Optuna trial: large
        JSON there slows optuna-dashboard down); empty by default.
        """
        return {}

    def effective_params(self) -> dict[str, Any]:
        """The params as they stand now: the original ones with the live knob values."""
        current = dict(self.params)
        current.update(self.knobs)
        return current


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and PyTorch (CPU and CUDA) from one integer."""
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def require_range(
    params: Mapping[str, Any], key: str, low: float, high: float, *, trainer: str
) -> None:
    """ParamError unless ``low <= params[key] <= high``."""
    value = params[key]
    if not isinstance(value, int | float) or not low <= float(value) <= high:
        raise ParamError(
            f"{trainer}: param {key}={value!r} is out of range; use a number in [{low}, {high}]"
        )


def require_choice(
    params: Mapping[str, Any], key: str, choices: tuple[str, ...], *, trainer: str
) -> None:
    """ParamError unless ``params[key]`` is one of ``choices``."""
    if params[key] not in choices:
        raise ParamError(
            f"{trainer}: param {key}={params[key]!r} is not valid; use one of {', '.join(choices)}"
        )
