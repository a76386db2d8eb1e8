"""The Pareto front: feasible front, dominated, infeasible and pruned trials, bands shaded."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from hpsearch.search_spaces import StudySpec
from hpsearch.visualization._common import (
    COLORS,
    LAYOUT,
    Axis,
    axes_for,
    feasible_front,
    sample,
    short,
)
from hpsearch.visualization._trials import TrialView

if TYPE_CHECKING:
    import plotly.graph_objects as go


def pareto_figure(
    views: Sequence[TrialView], spec: StudySpec, *, max_points: int | None = None
) -> go.Figure:
    """Two objectives (the first two when there are more): each group of trials is one trace;
    pruned trials sit at the values of the last epoch they reported."""
    import plotly.graph_objects as go

    figure = go.Figure()
    front = feasible_front(views, spec.directions)
    axes = axes_for(spec, views)[:2]
    groups = _groups(views, front)
    for label, members, style in groups:
        shown = members if label.startswith("Pareto") else sample(members, max_points)
        if shown:
            figure.add_trace(_trace(shown, axes, label, style, front_line=label.startswith("P")))
    for index, axis in enumerate(axes):
        _shade_band(figure, axis, "x" if index == 0 else "y")
    counts = ", ".join(f"{len(m)} {label.split(' (')[0].lower()}" for label, m, _ in groups if m)
    title = f"Pareto front of {spec.name}" + (
        f" (objectives 1-2 of {len(spec.objectives)})" if len(spec.objectives) > 2 else ""
    )
    figure.update_layout(
        **LAYOUT,
        title={"text": f"{title}<br><sup>{counts}</sup>"},
        xaxis_title=axes[0].title,
        yaxis_title=axes[1].title,
    )
    return figure


def _groups(
    views: Sequence[TrialView], front: set[int]
) -> list[tuple[str, list[TrialView], dict[str, object]]]:
    placed = [view for view in views if view.values is not None]
    complete = [view for view in placed if view.state == "COMPLETE"]
    return [
        (
            "infeasible",
            [v for v in complete if v.feasible is False],
            {"color": COLORS["infeasible"], "symbol": "circle-open", "size": 7},
        ),
        (
            "pruned (last epoch reported)",
            [v for v in placed if v.state == "PRUNED"],
            {"color": COLORS["pruned"], "symbol": "x-thin-open", "size": 7},
        ),
        (
            "feasible",
            [v for v in complete if v.feasible and v.number not in front],
            {"color": COLORS["feasible"], "symbol": "circle", "size": 7},
        ),
        (
            "Pareto front (feasible)",
            sorted((v for v in complete if v.number in front), key=lambda v: v.values or []),
            {"color": COLORS["front"], "symbol": "diamond", "size": 10},
        ),
    ]


def _trace(
    views: Sequence[TrialView],
    axes: Sequence[Axis],
    label: str,
    style: dict[str, object],
    *,
    front_line: bool,
) -> go.Scatter:
    import plotly.graph_objects as go

    return go.Scatter(
        x=[short(axes[0].value(v, 0)) for v in views],
        y=[short(axes[1].value(v, 1)) for v in views],
        mode="lines+markers" if front_line else "markers",
        line={"shape": "hv", "width": 1, "dash": "dot"} if front_line else None,
        name=label,
        marker={
            "color": style["color"],
            "symbol": style["symbol"],
            "size": style["size"],
            "line": {"width": 1, "color": style["color"]},
        },
        text=[_hover(v) for v in views],
        hovertemplate="%{text}<extra></extra>",
    )


def _hover(view: TrialView) -> str:
    text = f"trial {view.number}"
    if view.state == "PRUNED" and view.stop is not None:
        text += f": {view.stop.stopper} at epoch {view.stop.epoch}"
    return text


def _shade_band(figure: go.Figure, axis: Axis, which: str) -> None:
    band = axis.objective.band
    if band is None or not axis.raw:
        return
    low, high = band
    shade = figure.add_vrect if which == "x" else figure.add_hrect
    shade(
        low,
        high,
        fillcolor=COLORS["band"],
        line_width=0,
        layer="below",
        annotation_text=f"{axis.objective.metric} band",
        annotation_position="top left",
    )
