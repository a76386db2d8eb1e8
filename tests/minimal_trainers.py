"""Trainers written the shortest way a user may (imported as minimal_trainers:...)."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any, ClassVar

from hpsearch.trainers import Trainer


class Quadratic(Trainer):
    """Only epochs and final_metrics: loss = (x - 0.3)^2 shrinking at the live knob ``decay``."""

    def epochs(self, n: int) -> Iterator[dict[str, float]]:
        self.loss = (self.params["x"] - 0.3) ** 2 + 0.1
        for _ in range(n):
            self.loss *= self.knobs["decay"]
            yield {"loss": self.loss, "decay": self.knobs["decay"]}

    def final_metrics(self) -> dict[str, float]:
        return {"loss": self.loss, "quality": 1.0 - self.loss}


class FinalOnly(Quadratic):
    """Reports its objective only at the end (a pruner can do nothing with it)."""

    def epochs(self, n: int) -> Iterator[dict[str, float]]:
        for metrics in super().epochs(n):
            yield {"decay": metrics["decay"]}


class DeclaredFinalOnly(FinalOnly):
    param_defaults: ClassVar[Mapping[str, Any] | None] = {"x": 0.5, "decay": 0.9}
    metric_names = ("loss", "quality", "decay")
    epoch_metric_names = ("decay",)
    knob_names = ("decay",)


def quadratic(params: dict[str, Any], knobs: dict[str, float], *, device: Any, seed: int) -> Any:
    """The same as a generator function."""
    loss = (params["x"] - 0.3) ** 2 + 0.1
    while True:
        loss *= knobs["decay"]
        yield {"loss": loss, "quality": 1.0 - loss, "decay": knobs["decay"]}
