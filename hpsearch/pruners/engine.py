"""The rule engine: runs a trial's rules after every epoch and keeps the record."""

from __future__ import annotations

from collections.abc import Mapping, MutableMapping, Sequence
from typing import Any

from hpsearch.pruners.base import Action, EpochState, Rule, RuleEvent


class RuleEngine:
    """Feeds each epoch to the rules, applies backoffs to ``knobs`` in place, records events.

    ``observe`` returns the events of that epoch; ``aborted_by`` is the first aborting event
    (the trial should end PRUNED), None while the trial may go on.
    """

    def __init__(self, rules: Sequence[Rule], params: Mapping[str, Any]) -> None:
        self.rules = [rule for rule in rules if rule.applies_to(params)]
        self.params = dict(params)
        self.history: list[dict[str, float]] = []
        self.events: list[RuleEvent] = []
        self.aborted_by: RuleEvent | None = None

    def observe(
        self, epoch: int, metrics: Mapping[str, float], knobs: MutableMapping[str, float]
    ) -> list[RuleEvent]:
        """Judge one epoch; backoffs change ``knobs`` before the next epoch starts."""
        self.history.append(dict(metrics))
        fired: list[RuleEvent] = []
        for rule in self.rules:
            state = EpochState(epoch, dict(metrics), self.history, dict(knobs), self.params)
            action = rule.check(state)
            if action is None:
                continue
            event = self._apply(rule, action, state, knobs)
            fired.append(event)
            if action.kind == "abort":
                self.aborted_by = event
                break
        self.events.extend(fired)
        return fired

    def _apply(
        self,
        rule: Rule,
        action: Action,
        state: EpochState,
        knobs: MutableMapping[str, float],
    ) -> RuleEvent:
        before = dict(knobs)
        if action.kind == "backoff":
            knobs.update(action.knob_values)
        watched = rule.watched_metrics()
        recorded = {
            name: value for name, value in state.metrics.items() if not watched or name in watched
        }
        return RuleEvent(
            rule=rule.name,
            epoch=state.epoch,
            action=action.kind,
            message=action.message,
            metrics=recorded,
            knobs_before=before,
            knobs_after=dict(knobs),
        )
