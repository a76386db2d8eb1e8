"""A tiny deterministic trainer for testing the machinery (imported as toy_trainer:ToyTrainer).

loss = (x - 0.3)^2 + (y - 0.7)^2 shrinks geometrically with the epochs at rate ``decay``
(a knob); ``quality = 1 - loss``. Fault injection: ``crash_at_epoch`` raises, ``nan_at_epoch``
reports a NaN loss, ``sleep_s`` sleeps per epoch.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from typing import Any, ClassVar

import torch

from hpsearch.trainers import Trainer
from hpsearch.trainers.base import require_range


class ToyTrainer(Trainer):
    name = "toy"
    param_defaults: ClassVar[Mapping[str, Any]] = {
        "x": 0.5,
        "y": 0.5,
        "decay": 0.9,
        "mode": "plain",
        "crash_at_epoch": 0,
        "nan_at_epoch": 0,
        "sleep_s": 0.0,
    }
    knob_names = ("decay",)
    metric_names = ("loss", "quality", "decay")

    @classmethod
    def validate_params(cls, params: Mapping[str, Any]) -> None:
        require_range(params, "x", 0.0, 1.0, trainer=cls.name)
        require_range(params, "y", 0.0, 1.0, trainer=cls.name)

    def __init__(self, params: Mapping[str, Any], *, device: torch.device, seed: int) -> None:
        super().__init__(params, device=device, seed=seed)
        self.loss = (self.params["x"] - 0.3) ** 2 + (self.params["y"] - 0.7) ** 2 + 0.1

    def _run_epoch(self, epoch: int, total_epochs: int) -> dict[str, float]:
        if self.params["sleep_s"]:
            time.sleep(float(self.params["sleep_s"]))
        if epoch == self.params["crash_at_epoch"]:
            raise RuntimeError(f"toy crash at epoch {epoch}")
        self.loss *= self.knobs["decay"]
        loss = math.nan if epoch == self.params["nan_at_epoch"] else self.loss
        return {"loss": loss, "quality": 1.0 - loss, "decay": self.knobs["decay"]}

    def final_metrics(self) -> dict[str, float]:
        return {"loss": self.loss, "quality": 1.0 - self.loss, "decay": self.knobs["decay"]}
