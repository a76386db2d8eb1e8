"""What the plots need of each trial, read once from Optuna's frozen trials (no plotly here).

Values come from the trial itself when it completed; a pruned trial is placed at the objective
vector of the last epoch it reported (user attr ``intermediate_objectives``), so pruned trials
show in every plot. Older trials without hpsearch's newer attributes still load.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import optuna

from hpsearch.objectives.stop import StopReason, stop_of
from hpsearch.objectives.summary import RULE_EVENTS_SYSTEM_ATTR, RUNG_DECISIONS_SYSTEM_ATTR
from hpsearch.pruners.rung_store import VECTORS_ATTR
from hpsearch.search_spaces import StudySpec

_REASON = re.compile(r"^(rule|pruner) (\S+) at epoch (\d+)(?:: (.*))?$")


@dataclass
class TrialView:
    """One trial as plotted: where it sits in objective space and how it ended."""

    number: int
    state: str
    values: list[float] | None
    metrics: dict[str, float]
    feasible: bool | None
    epochs_run: int
    curves: dict[int, list[float]] = field(default_factory=dict)
    rule_events: list[dict[str, Any]] = field(default_factory=list)
    rung_decisions: list[dict[str, Any]] = field(default_factory=list)
    stop: StopReason | None = None
    params: dict[str, Any] = field(default_factory=dict)
    effective_params: dict[str, Any] = field(default_factory=dict)
    completed_at: float | None = None

    @property
    def on_front_candidate(self) -> bool:
        return self.state == "COMPLETE" and self.values is not None and bool(self.feasible)


def trial_views(trials: Sequence[optuna.trial.FrozenTrial], spec: StudySpec) -> list[TrialView]:
    """Every finished (and running) trial of a study, as plotted."""
    return [view_of(trial, spec) for trial in trials if trial.state.name != "WAITING"]


def view_of(trial: optuna.trial.FrozenTrial, spec: StudySpec) -> TrialView:
    attrs = trial.user_attrs
    system = trial.system_attrs
    curves = _curves(attrs.get(VECTORS_ATTR), len(spec.objectives))
    values = list(trial.values) if trial.values is not None else None
    feasible: bool | None = None
    if values is not None:
        feasible = all(value <= 0.0 for value in trial.constraints.values())
    elif curves:
        last = max(curves)
        values = curves[last]
        feasible = _feasible_at(attrs.get(VECTORS_ATTR), last)
    metrics = attrs.get("final_metrics") or attrs.get("last_metrics") or {}
    completed = trial.datetime_complete.timestamp() if trial.datetime_complete else None
    return TrialView(
        number=trial.number,
        state=trial.state.name,
        values=values,
        metrics={k: float(v) for k, v in metrics.items() if _is_number(v)},
        feasible=feasible,
        epochs_run=int(attrs.get("epochs_run", max(curves) if curves else 0) or 0),
        curves=curves,
        rule_events=_list_of_dicts(system.get(RULE_EVENTS_SYSTEM_ATTR, attrs.get("rule_events"))),
        rung_decisions=_list_of_dicts(
            system.get(RUNG_DECISIONS_SYSTEM_ATTR, attrs.get("rung_decisions"))
        ),
        stop=stop_of(attrs) or _parsed_stop(attrs),
        params=dict(trial.params),
        effective_params=dict(attrs.get("effective_params") or trial.params),
        completed_at=completed,
    )


def _curves(data: Any, n_objectives: int) -> dict[int, list[float]]:
    if not isinstance(data, Mapping):
        return {}
    curves: dict[int, list[float]] = {}
    for epoch, entry in data.items():
        values = entry.get("values") if isinstance(entry, Mapping) else None
        if isinstance(values, list) and len(values) == n_objectives and str(epoch).isdigit():
            curves[int(epoch)] = [float(v) for v in values]
    return dict(sorted(curves.items()))


def _feasible_at(data: Any, epoch: int) -> bool | None:
    entry = data.get(str(epoch)) if isinstance(data, Mapping) else None
    known = [c for c in (entry or {}).get("constraints") or [] if c is not None]
    return all(float(c) <= 0.0 for c in known) if known else None


def _parsed_stop(attrs: Mapping[str, Any]) -> StopReason | None:
    """A stop record read back from the text of trials stored before the typed record."""
    if isinstance(attrs.get("fail_reason"), str):
        return StopReason("failure", "failure", None, attrs["fail_reason"])
    text = attrs.get("prune_reason")
    if not isinstance(text, str):
        return None
    match = _REASON.match(text)
    if match is None:
        return StopReason("optuna-pruner", "pruner", None, text)
    kind, name, epoch, message = match.groups()
    by = "rule" if kind == "rule" else "pareto-asha" if name == "pareto-asha" else "optuna-pruner"
    return StopReason(by, name, int(epoch), message or "")  # type: ignore[arg-type]


def _list_of_dicts(value: Any) -> list[dict[str, Any]]:
    if not isinstance(value, list):
        return []
    return [dict(item) for item in value if isinstance(item, Mapping)]


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)
