"""Shared pieces of the study figures: axes per objective, point sampling, colours."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from hpsearch.metrics.pareto import as_losses, pareto_mask
from hpsearch.search_spaces import ObjectiveSpec, StudySpec
from hpsearch.visualization._trials import TrialView

COLORS = {
    "front": "#d62728",
    "feasible": "#1f77b4",
    "infeasible": "#b0b0b0",
    "pruned": "#ff7f0e",
    "failed": "#7f3fbf",
    "band": "rgba(44, 160, 44, 0.15)",
}
LAYOUT: dict[str, Any] = {
    "template": "plotly_white",
    "margin": {"l": 60, "r": 20, "t": 60, "b": 50},
    "legend": {"orientation": "h", "y": -0.18},
}


@dataclass(frozen=True)
class Axis:
    """How one objective is drawn: the raw metric with its band shaded (band objectives whose
    trials all carry the metric), else the objective value."""

    objective: ObjectiveSpec
    raw: bool

    @property
    def title(self) -> str:
        objective = self.objective
        if objective.band is not None and self.raw:
            low, high = objective.band
            return f"{objective.metric} (band {low:g}-{high:g} shaded)"
        if objective.band is not None:
            return f"{objective.name} (0 = inside the band)"
        return f"{objective.name} ({objective.direction})"

    def value(self, view: TrialView, index: int) -> float:
        if self.raw:
            return view.metrics[self.objective.metric]
        assert view.values is not None
        return view.values[index]


def axes_for(spec: StudySpec, views: Sequence[TrialView]) -> list[Axis]:
    placed = [view for view in views if view.values is not None]
    return [
        Axis(o, raw=o.band is not None and all(o.metric in v.metrics for v in placed))
        for o in spec.objectives
    ]


def feasible_front(views: Sequence[TrialView], directions: Sequence[str]) -> set[int]:
    """Numbers of the complete, feasible, non-dominated trials."""
    candidates = [view for view in views if view.on_front_candidate]
    if not candidates:
        return set()
    losses = as_losses([view.values or [] for view in candidates], directions)
    mask = pareto_mask(losses)
    return {view.number for view, keep in zip(candidates, mask, strict=True) if keep}


def sample(views: Sequence[TrialView], limit: int | None) -> list[TrialView]:
    """At most ``limit`` views, evenly spread over the trial numbers (all when None)."""
    if limit is None or len(views) <= limit:
        return list(views)
    picks = np.linspace(0, len(views) - 1, num=limit).round().astype(int)
    return [views[i] for i in sorted(set(picks.tolist()))]


def short(value: float) -> float:
    """4 significant digits: small figures for the dashboard's study attributes."""
    return float(f"{value:.4g}")
