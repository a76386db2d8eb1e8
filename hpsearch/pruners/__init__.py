"""Health rules (abort / backoff / advise), their engine and the named presets."""

from __future__ import annotations

from collections.abc import Sequence

from hpsearch.pruners.base import Action, EpochState, Rule, RuleEvent
from hpsearch.pruners.conditions import Condition
from hpsearch.pruners.declarative import BackoffConfig, ConditionRule, RuleConfig
from hpsearch.pruners.engine import RuleEngine
from hpsearch.pruners.presets import Preset, get_preset, preset_names, register_preset


def build_rules(entries: Sequence[str | RuleConfig]) -> list[Rule]:
    """Fresh rule objects for one trial from preset names and inline rule configs."""
    rules: list[Rule] = []
    for entry in entries:
        if isinstance(entry, str):
            rules.extend(get_preset(entry).build())
        else:
            rules.append(entry.build())
    return rules


__all__ = [
    "Action",
    "BackoffConfig",
    "Condition",
    "ConditionRule",
    "EpochState",
    "Preset",
    "Rule",
    "RuleConfig",
    "RuleEngine",
    "RuleEvent",
    "build_rules",
    "get_preset",
    "preset_names",
    "register_preset",
]
