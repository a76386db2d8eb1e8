"""A toy trainer that fails on purpose (imported as faulty_trainer:FaultyTrainer).

Param ``fault`` picks the fault: ``none`` (a normal trial), ``init`` / ``epoch`` / ``final``
(an exception there), ``nan`` / ``inf`` (a non-finite metric), ``text`` (a metric that is a
string), ``missing`` (final metrics without the objective's metric), ``oom`` (a simulated
``torch.OutOfMemoryError``), ``hang`` (sleeps for ever, ignoring ``Exception``s), ``exit``
(``sys.exit(3)`` in an epoch), ``output`` (megabytes printed, then a megabyte message).
"""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Mapping
from typing import Any, ClassVar

import torch
from toy_trainer import ToyTrainer

FAULTS = ("none", "init", "epoch", "final", "nan", "inf", "text", "missing", "oom", "hang",
          "exit", "output")  # fmt: skip


class FaultyTrainer(ToyTrainer):
    name = "faulty"
    param_defaults: ClassVar[Mapping[str, Any]] = {**ToyTrainer.param_defaults, "fault": "none"}

    def __init__(self, params: Mapping[str, Any], *, device: torch.device, seed: int) -> None:
        super().__init__(params, device=device, seed=seed)
        if self.params["fault"] == "init":
            raise ValueError("broken in __init__")

    def _run_epoch(self, epoch: int, total_epochs: int) -> dict[str, Any]:
        fault = self.params["fault"]
        metrics: dict[str, Any] = super()._run_epoch(epoch, total_epochs)
        if epoch < 2:
            return metrics
        if fault == "epoch":
            raise KeyError("broken in an epoch")
        if fault in ("nan", "inf"):
            metrics["loss"] = float(fault)
        if fault == "text":
            metrics["quality"] = "high"
        if fault == "oom":
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")
        if fault == "hang":
            while True:
                with contextlib.suppress(Exception):  # swallows errors: must still be stopped
                    time.sleep(3600)
        if fault == "exit":
            sys.exit(3)
        if fault == "output":
            for _ in range(50):
                print("x" * 100_000)
            raise RuntimeError("y" * 1_000_000)
        return metrics

    def final_metrics(self) -> dict[str, float]:
        if self.params["fault"] == "final":
            raise ZeroDivisionError("broken in final_metrics")
        metrics = super().final_metrics()
        if self.params["fault"] == "missing":
            del metrics["loss"]
        return metrics
