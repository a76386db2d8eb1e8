"""Rules written as data (in a spec or a preset): ``when`` + ``for_epochs`` + ``then``.

    - name: rank-collapse
      when: "val_effective_rank_ratio < 0.02 and val_convergence_rate < 0.5"
      for_epochs: 3
      then: abort
    - name: free-bits-down
      when: "penalty_reduction > 70"
      for_epochs: 3
      then: {add: {free_bits: -0.005}}
      bounds: {free_bits: [0.0, 0.5]}
    - name: teacher-low
      when: "teacher_contribution < 3"
      then: {advise: "raise teacher_weight to 0.5"}
      if_params: {schedule: adaptive}      # only for trials with these params

``then`` is ``abort``, ``advise`` (with ``message``), or a mapping with one or more of
``set`` / ``add`` / ``scale`` (knob -> number, applied in that order) and optionally ``advise``.
A backoff or advice resets the ``for_epochs`` streak, so "for 3 epochs -> lower by 0.005" fires
every third epoch while the condition holds. ``max_firings`` caps how often a rule fires.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from hpsearch.errors import RuleError
from hpsearch.pruners.base import Action, EpochState, Rule
from hpsearch.pruners.conditions import Condition, ConditionScope


class BackoffConfig(BaseModel):
    """Knob changes of a backoff: ``set`` then ``add`` then ``scale``; optional advice text."""

    model_config = ConfigDict(extra="forbid")

    set: dict[str, float] = Field(default_factory=dict)
    add: dict[str, float] = Field(default_factory=dict)
    scale: dict[str, float] = Field(default_factory=dict)
    advise: str | None = None

    @model_validator(mode="after")
    def _not_empty(self) -> BackoffConfig:
        if not (self.set or self.add or self.scale or self.advise):
            raise ValueError("give at least one of set, add, scale or advise")
        return self

    def knobs(self) -> frozenset[str]:
        return frozenset(self.set) | frozenset(self.add) | frozenset(self.scale)


class RuleConfig(BaseModel):
    """A declarative rule, validated when a spec or preset is loaded."""

    model_config = ConfigDict(extra="forbid")

    name: str
    when: str
    then: Literal["abort", "advise"] | BackoffConfig
    for_epochs: int = Field(default=1, ge=1)
    bounds: dict[str, tuple[float, float]] = Field(default_factory=dict)
    if_params: dict[str, Any] = Field(default_factory=dict)
    message: str = ""
    max_firings: int | None = Field(default=None, ge=1)

    @field_validator("when")
    @classmethod
    def _parse_when(cls, when: str) -> str:
        try:
            Condition(when)
        except RuleError as error:  # pydantic reports ValueErrors with their location
            raise ValueError(str(error)) from None
        return when

    @field_validator("bounds")
    @classmethod
    def _ordered_bounds(
        cls, bounds: dict[str, tuple[float, float]]
    ) -> dict[str, tuple[float, float]]:
        for knob, (low, high) in bounds.items():
            if low > high:
                raise ValueError(f"bounds of {knob!r}: low {low} > high {high}; swap them")
        return bounds

    def condition_names(self) -> frozenset[str]:
        return Condition(self.when).names

    def changed_knobs(self) -> set[str]:
        return set(self.then.knobs()) if isinstance(self.then, BackoffConfig) else set()

    def build(self) -> ConditionRule:
        return ConditionRule(self)


class ConditionRule(Rule):
    """A rule built from a ``RuleConfig``."""

    def __init__(self, config: RuleConfig) -> None:
        super().__init__(config.name)
        self.config = config
        self.condition = Condition(config.when)
        self.streak = 0
        self.firings = 0

    def applies_to(self, params: Mapping[str, Any]) -> bool:
        return all(params.get(key) == value for key, value in self.config.if_params.items())

    def watched_metrics(self) -> frozenset[str]:
        return self.condition.names

    def check(self, state: EpochState) -> Action | None:
        scope = ConditionScope(
            values=scope_values(state), history=state.history, metrics=state.metrics
        )
        self.streak = self.streak + 1 if self.condition.evaluate(scope) else 0
        if self.streak < self.config.for_epochs:
            return None
        if self.config.max_firings is not None and self.firings >= self.config.max_firings:
            return None
        self.firings += 1
        self.streak = 0
        return self._action(state.knobs)

    def _action(self, knobs: Mapping[str, float]) -> Action:
        then = self.config.then
        message = self.config.message
        if then == "abort":
            return Action("abort", message=message or f"aborted: {self.config.when}")
        if then == "advise":
            return Action("advise", message=message or f"advice: {self.config.when}")
        assert isinstance(then, BackoffConfig)
        values = apply_backoff(then, knobs, self.config.bounds)
        if not values:
            return Action("advise", message=then.advise or message)
        return Action("backoff", knob_values=values, message=then.advise or message)


def apply_backoff(
    backoff: BackoffConfig,
    knobs: Mapping[str, float],
    bounds: Mapping[str, tuple[float, float]],
) -> dict[str, float]:
    """New values of the knobs a backoff touches: set, then add, then scale, then clamp."""
    values: dict[str, float] = {}
    for knob in backoff.knobs():
        value = float(knobs[knob])
        value = backoff.set.get(knob, value)
        value += backoff.add.get(knob, 0.0)
        value *= backoff.scale.get(knob, 1.0)
        if knob in bounds:
            low, high = bounds[knob]
            value = min(max(value, low), high)
        values[knob] = float(f"{value:.12g}")  # no float noise such as 0.08499999999999999
    return values


def scope_values(state: EpochState) -> dict[str, float]:
    """Names a condition can use: numeric params, then knobs, then metrics, then ``epoch``."""
    values: dict[str, float] = {
        key: float(value)
        for key, value in state.params.items()
        if isinstance(value, int | float) and not isinstance(value, bool)
    }
    values.update(state.knobs)
    values.update(state.metrics)
    values["epoch"] = float(state.epoch)
    return values
