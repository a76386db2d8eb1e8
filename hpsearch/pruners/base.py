"""The health-rule contract: a rule looks at one epoch and may abort, back off or advise.

Rules know nothing of PyTorch or Optuna. The engine (``engine.py``) feeds them an ``EpochState``
after every epoch, applies the actions they return to the trainer's knobs and records every
firing as a ``RuleEvent``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from hpsearch._util import json_safe

ActionKind = Literal["abort", "backoff", "advise"]


@dataclass(frozen=True)
class EpochState:
    """What a rule sees after an epoch: its number (from 1), this epoch's metrics, the metrics
    of every epoch so far (this one last), the live knobs and the trial's params."""

    epoch: int
    metrics: Mapping[str, float]
    history: Sequence[Mapping[str, float]]
    knobs: Mapping[str, float]
    params: Mapping[str, Any]


@dataclass(frozen=True)
class Action:
    """What a firing rule asks for.

    ``abort``: end the trial (PRUNED). ``backoff``: set knobs to ``knob_values`` (already
    computed and bounded by the rule). ``advise``: record ``message``, change nothing.
    """

    kind: ActionKind
    knob_values: Mapping[str, float] = field(default_factory=dict)
    message: str = ""


@dataclass(frozen=True)
class RuleEvent:
    """One firing, as stored on the trial (user attr ``rule_events``) and in MLflow."""

    rule: str
    epoch: int
    action: ActionKind
    message: str
    metrics: dict[str, float]
    knobs_before: dict[str, float]
    knobs_after: dict[str, float]

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe: non-finite floats become strings ('nan', 'inf')."""
        return {key: json_safe(value) for key, value in asdict(self).items()}


class Rule(ABC):
    """Base class of every health rule.

    ``check`` is called once per epoch, in rule order, with the knobs as earlier rules of the
    same epoch left them; it returns an ``Action`` when the rule fires, else ``None``. Rules
    may keep state between epochs (``for_epochs`` counters, ladders); one rule object serves one
    trial (the engine builds fresh rules per trial).

    Example:
        >>> from hpsearch.pruners import RuleEngine
        >>> from hpsearch.pruners.base import Action, Rule
        >>> class HalveLrWhenRising(Rule):
        ...     def check(self, state):
        ...         earlier = state.history[-2]["loss"] if len(state.history) > 1 else None
        ...         rising = earlier is not None and state.metrics["loss"] > earlier
        ...         return Action("backoff", {"lr": state.knobs["lr"] / 2}) if rising else None
        >>> knobs = {"lr": 0.1}
        >>> engine = RuleEngine([HalveLrWhenRising("halve-lr")], {"lr": 0.1})
        >>> for epoch, loss in enumerate([1.0, 0.8, 0.9], start=1):
        ...     _ = engine.observe(epoch, {"loss": loss}, knobs)
        >>> knobs, [(e.epoch, e.rule) for e in engine.events]
        ({'lr': 0.05}, [(3, 'halve-lr')])
    """

    def __init__(self, name: str) -> None:
        self.name = name

    def applies_to(self, params: Mapping[str, Any]) -> bool:
        """Whether this rule is active for a trial with these params (default: always)."""
        return True

    @abstractmethod
    def check(self, state: EpochState) -> Action | None:
        """The action this rule takes after this epoch, or None."""

    def watched_metrics(self) -> frozenset[str]:
        """Names this rule reads (recorded with each firing); default: none in particular."""
        return frozenset()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r})"
