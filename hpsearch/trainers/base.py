"""The Trainer contract shared by every trainer (docs/design.md, Trainer).

Trainers know nothing of Optuna or MLflow: they take plain params, expose ``knobs`` (live
hyperparameters that rules may change between epochs), yield metrics after each epoch and give a
full evaluation at the end.

The fewest lines that work: subclass ``Trainer``, set ``self.knobs`` in ``__init__`` (optional;
it starts as the numeric params), write ``epochs(n)`` as a generator of per-epoch metric dicts and
``final_metrics()``. Declaring ``param_defaults``, ``metric_names``, ``knob_names`` and
``epoch_metric_names`` is optional: it lets a spec be checked before any trial runs. Undeclared,
params and metrics are checked on first use (a ``TrainerContractError``, one line). A plain
generator function ``train(params, knobs, *, device, seed)`` is a trainer too
(``FunctionTrainer``).
"""

from __future__ import annotations

import itertools
import random
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Mapping
from typing import Any, ClassVar

import numpy as np
import torch

from hpsearch.errors import ParamError, TrainerContractError

TrainFunction = Callable[..., Iterator[Mapping[str, float]]]


class Params(dict[str, Any]):
    """The params of an undeclared trainer: reading a missing one names the trainer and the fix."""

    trainer = ""

    def __missing__(self, key: str) -> Any:
        raise TrainerContractError(
            f"trainer {self.trainer!r} reads param {key!r}, which the spec neither searches nor "
            f"fixes (params given: {', '.join(sorted(self)) or 'none'}); add it to space or fixed"
        )


class Knobs(dict[str, Any]):
    """The knobs of a trainer that declares none: reading a missing one names the fix."""

    trainer = ""

    def __missing__(self, key: str) -> Any:
        raise TrainerContractError(
            f"trainer {self.trainer!r} reads knob {key!r}, which is not a numeric param the spec "
            f"gives (knobs: {', '.join(sorted(self)) or 'none'}); add it to space or fixed, or "
            "set it in self.knobs"
        )


class Trainer(ABC):
    """Base class of every trainer.

    Override ``epochs(n)`` (a generator: train one epoch, yield its metrics, ``n`` times) or, if
    every epoch is the same loop, ``run_epoch(epoch, total_epochs)``; and ``final_metrics()``.

    Optional declarations, checked against a spec before any trial when present (``None``:
    undeclared, checked on first use instead):

    - ``param_defaults``: every accepted param with its default (an unknown param is an error);
    - ``metric_names``: every metric ``epochs`` or ``final_metrics`` may return;
    - ``epoch_metric_names``: the metrics ``epochs`` yields every epoch (a pruner needs its
      objectives there);
    - ``knob_names``: the params rules may change between epochs.

    ``knobs`` holds the live hyperparameters: the declared ``knob_names`` taken from the params,
    else every numeric param. A trainer reads them at every step, so a backoff applied after
    epoch k shapes epoch k+1; a trainer that reads ``params`` instead ignores backoffs.
    """

    name: ClassVar[str] = ""
    param_defaults: ClassVar[Mapping[str, Any] | None] = None
    knob_names: ClassVar[tuple[str, ...] | None] = None
    metric_names: ClassVar[tuple[str, ...] | None] = None
    epoch_metric_names: ClassVar[tuple[str, ...] | None] = None

    def __init__(self, params: Mapping[str, Any], *, device: torch.device, seed: int) -> None:
        self.params: dict[str, Any] = self.resolve_params(params)
        self.device = device
        self.seed = seed
        seed_everything(seed)
        self.knobs: dict[str, float] = initial_knobs(self.params, self.knob_names)
        if self.knob_names is None:
            self.knobs = Knobs(self.knobs)
            self.knobs.trainer = self.display_name()
        self.epoch = 0

    @classmethod
    def display_name(cls) -> str:
        return cls.name or f"{cls.__module__}:{cls.__qualname__}"

    @classmethod
    def resolve_params(cls, params: Mapping[str, Any]) -> dict[str, Any]:
        """Defaults overlaid with ``params``; an unknown param is a ParamError (declared
        trainers only)."""
        if cls.param_defaults is None:
            resolved = Params(params)
            resolved.trainer = cls.display_name()
            cls.validate_params(resolved)
            return resolved
        unknown = sorted(set(params) - set(cls.param_defaults))
        if unknown:
            raise ParamError(
                f"trainer {cls.display_name()!r} has no param {unknown[0]!r}; "
                f"known params: {', '.join(sorted(cls.param_defaults))}"
            )
        resolved_params = dict(cls.param_defaults)
        resolved_params.update(params)
        cls.validate_params(resolved_params)
        return resolved_params

    @classmethod
    def validate_params(cls, params: Mapping[str, Any]) -> None:
        """Raise ParamError on a bad value; subclasses extend this (default: accept all)."""
        return None

    def epochs(self, n: int) -> Iterator[dict[str, float]]:
        """Run ``n`` epochs, yielding the metrics after each one (``self.epoch`` counts from 1).

        The default calls ``run_epoch`` ``n`` times; override either."""
        for _ in range(n):
            self.epoch += 1
            yield self.run_epoch(self.epoch, n)

    def run_epoch(self, epoch: int, total_epochs: int) -> dict[str, float]:
        """Train one epoch (reading ``self.knobs``) and return its metrics."""
        legacy = getattr(self, "_run_epoch", None)  # the hook's name before it was public
        if legacy is not None:
            return dict(legacy(epoch, total_epochs))
        raise NotImplementedError(
            f"trainer {self.display_name()!r}: override epochs(n) or run_epoch(epoch, total_epochs)"
        )

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


def initial_knobs(params: Mapping[str, Any], knob_names: tuple[str, ...] | None) -> dict[str, Any]:
    """The declared knobs from ``params`` (as floats), else every numeric param as given."""
    if knob_names is not None:
        return {name: float(params[name]) for name in knob_names if name in params}
    return {
        key: value
        for key, value in params.items()
        if isinstance(value, int | float) and not isinstance(value, bool)
    }


class FunctionTrainer(Trainer):
    """A generator function as a trainer: ``train(params, knobs, *, device, seed)`` yields one
    metric dict per epoch, reading the live ``knobs`` (the numeric params, changed by rules);
    the final metrics are the last dict it yielded. Made by ``function_trainer``."""

    function: ClassVar[TrainFunction]

    def __init__(self, params: Mapping[str, Any], *, device: torch.device, seed: int) -> None:
        super().__init__(params, device=device, seed=seed)
        self._last: dict[str, float] = {}

    def epochs(self, n: int) -> Iterator[dict[str, float]]:
        function = type(self).function
        generator = function(self.params, self.knobs, device=self.device, seed=self.seed)
        if not isinstance(generator, Iterator):
            raise TrainerContractError(
                f"trainer {self.display_name()!r} returned {type(generator).__name__}, not a "
                "generator; yield one dict of metrics per epoch"
            )
        for metrics in itertools.islice(generator, n):
            self.epoch += 1
            self._last = dict(metrics)
            yield self._last
        close = getattr(generator, "close", None)
        if close is not None:
            close()

    def final_metrics(self) -> dict[str, float]:
        return dict(self._last)


def function_trainer(function: TrainFunction, name: str = "") -> type[Trainer]:
    """A Trainer class around a generator function ``train(params, knobs, *, device, seed)``."""
    label = name or f"{function.__module__}:{function.__qualname__}"
    attributes = {"name": label, "function": staticmethod(function), "__doc__": function.__doc__}
    return type(f"FunctionTrainer_{function.__name__}", (FunctionTrainer,), attributes)


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
