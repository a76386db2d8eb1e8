"""Why a trial stopped early: a small typed record, built where the decision is made.

``by`` says who stopped it: a health ``rule``, ``pareto-asha`` at a rung, an ``optuna-pruner``
(single-objective specs), or a ``failure`` (an exception of the trainer, a NaN metric, a
timeout). ``name`` is the rule's name, the pruner's name or the failure class
(``trainer_error``, ``divergence``, ``out_of_memory``, ``timeout``: ``failures.py``). The
record is stored once on the trial (user attr ``stop``) beside its one-line text
(``prune_reason`` / ``fail_reason``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

StoppedBy = Literal["rule", "pareto-asha", "optuna-pruner", "failure"]
STOP_ATTR = "stop"
_KINDS: tuple[str, ...] = ("rule", "pareto-asha", "optuna-pruner", "failure")


@dataclass(frozen=True)
class StopReason:
    """Who stopped a trial (``by`` and ``name``), at which epoch (None: before any epoch or
    unknown), and the message of the rule, the rung verdict or the error."""

    by: StoppedBy
    name: str
    epoch: int | None
    message: str

    @property
    def state(self) -> str:
        """The trial state it leads to: FAIL for a failure, PRUNED otherwise."""
        return "FAIL" if self.by == "failure" else "PRUNED"

    @property
    def stopper(self) -> str:
        """``rule X``, ``pruner X`` (pareto-asha or Optuna's) or the failure class."""
        if self.by == "rule":
            return f"rule {self.name}"
        if self.by in ("pareto-asha", "optuna-pruner"):
            return f"pruner {self.name}"
        return self.name

    def text(self) -> str:
        """One line: ``rule too-slow at epoch 3: <message>``, ``pruner pareto-asha at epoch 3:
        rank 4 of 5 ...``, ``RuntimeError: toy crash at epoch 2``."""
        if self.by == "failure":
            return self.message
        where = f" at epoch {self.epoch}" if self.epoch is not None else ""
        return f"{self.stopper}{where}" + (f": {self.message}" if self.message else "")

    def to_dict(self) -> dict[str, Any]:
        return {"by": self.by, "name": self.name, "epoch": self.epoch, "message": self.message}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> StopReason:
        """From ``to_dict``'s output; ValueError naming a bad ``by``."""
        by = str(data.get("by"))
        if by not in _KINDS:
            raise ValueError(f"stop record: by={by!r} is not one of {', '.join(_KINDS)}")
        epoch = data.get("epoch")
        return cls(
            by=by,  # type: ignore[arg-type]
            name=str(data.get("name", "")),
            epoch=int(epoch) if epoch is not None else None,
            message=str(data.get("message", "")),
        )


def stop_of(user_attrs: Mapping[str, Any]) -> StopReason | None:
    """The stop record a trial stored, or None (a finished trial, or one from before it)."""
    data = user_attrs.get(STOP_ATTR)
    if not isinstance(data, Mapping):
        return None
    try:
        return StopReason.from_dict(data)
    except (ValueError, TypeError):
        return None
