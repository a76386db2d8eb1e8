"""Hypervolume over trials at one fixed reference point, and the epochs spent per trial."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING

import numpy as np

from hpsearch.metrics.pareto import as_losses, hypervolume, pareto_mask
from hpsearch.search_spaces import StudySpec
from hpsearch.visualization._common import COLORS, LAYOUT, sample, short
from hpsearch.visualization._trials import TrialView

if TYPE_CHECKING:
    import plotly.graph_objects as go


def hypervolume_history(
    views: Sequence[TrialView], directions: Sequence[str], reference: Sequence[float]
) -> tuple[list[int], list[float]]:
    """(trial numbers in completion order, hypervolume of the feasible front after each) at
    ``reference`` (objective values). Only the trials that change the front cost work."""
    done = sorted(
        (v for v in views if v.state == "COMPLETE" and v.values is not None),
        key=lambda v: (v.completed_at or 0.0, v.number),
    )
    reference_losses = as_losses([list(reference)], directions)[0]
    front = np.empty((0, len(directions)))
    volume = 0.0
    numbers: list[int] = []
    volumes: list[float] = []
    for view in done:
        if view.feasible:
            losses = as_losses([view.values or []], directions)
            candidates = np.vstack([front, losses])
            new_front = candidates[pareto_mask(candidates)]
            if len(new_front) != len(front) or not np.array_equal(new_front, front):
                front = new_front
                volume = hypervolume(front, reference_losses)
        numbers.append(view.number)
        volumes.append(volume)
    return numbers, volumes


def hypervolume_figure(
    views: Sequence[TrialView],
    spec: StudySpec,
    reference: Sequence[float],
    *,
    max_points: int | None = None,
) -> go.Figure:
    import plotly.graph_objects as go

    numbers, volumes = hypervolume_history(views, spec.directions, reference)
    steps = list(range(1, len(numbers) + 1))
    keep = _change_points(volumes, max_points)
    figure = go.Figure(
        go.Scatter(
            x=[steps[i] for i in keep],
            y=[short(volumes[i]) for i in keep],
            mode="lines+markers",
            line={"shape": "hv", "color": COLORS["front"]},
            marker={"size": 5},
            text=[f"trial {numbers[i]}" for i in keep],
            hovertemplate="%{x} complete trials, after %{text}: %{y}<extra></extra>",
            name="hypervolume",
        )
    )
    point = ", ".join(
        f"{name} {value:.4g}" for name, value in zip(spec.objective_names, reference, strict=True)
    )
    figure.update_layout(
        **LAYOUT,
        title={
            "text": f"Hypervolume of the feasible front<br><sup>reference point: {point}"
            " (fixed for the study)</sup>"
        },
        xaxis_title="complete trials (in completion order)",
        yaxis_title="hypervolume",
    )
    return figure


def _change_points(volumes: Sequence[float], limit: int | None) -> list[int]:
    """Indices where the volume changes (plus the last), thinned to ``limit``."""
    changes = [i for i in range(len(volumes)) if i == 0 or volumes[i] != volumes[i - 1]]
    if volumes and changes[-1] != len(volumes) - 1:
        changes.append(len(volumes) - 1)
    if limit is not None and len(changes) > limit:
        picks = np.linspace(0, len(changes) - 1, num=limit).round().astype(int)
        changes = [changes[i] for i in sorted(set(picks.tolist()))]
    return changes


def stopper_label(view: TrialView) -> str:
    """How a trial ended, as grouped in the pruning view."""
    if view.state == "COMPLETE":
        return "complete"
    if view.state == "RUNNING":
        return "running"
    if view.stop is None:
        return view.state.lower()
    if view.stop.by == "failure":
        return "failed"
    return view.stop.stopper


def pruning_figure(
    views: Sequence[TrialView],
    spec: StudySpec,
    rungs: Sequence[int] = (),
    *,
    max_points: int | None = None,
) -> go.Figure:
    """Epochs run per trial, one colour per way of ending; rung epochs as dotted lines."""
    import plotly.graph_objects as go

    figure = go.Figure()
    by_label: dict[str, list[TrialView]] = {}
    for view in views:
        by_label.setdefault(stopper_label(view), []).append(view)
    palette = iter(["#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#bcbd22"])
    for label, members in sorted(
        by_label.items(), key=lambda item: (item[0] != "complete", item[0])
    ):
        color = _label_color(label, palette)
        shown = sample(members, max_points)
        figure.add_trace(
            go.Scatter(
                x=[v.number for v in shown],
                y=[v.epochs_run for v in shown],
                mode="markers",
                name=f"{label} ({len(members)})",
                marker={"color": color, "size": 7, "symbol": _label_symbol(label)},
                text=[_stop_text(v) for v in shown],
                hovertemplate="trial %{x}: %{y} epochs<br>%{text}<extra></extra>",
            )
        )
    for rung in rungs:
        figure.add_hline(y=rung, line_dash="dot", line_color="#888", annotation_text=f"rung {rung}")
    spent = sum(v.epochs_run for v in views if v.state != "RUNNING")
    budget = spec.epochs * sum(1 for v in views if v.state != "RUNNING")
    saved = f", {100 * (1 - spent / budget):.0f}% of the full budget saved" if budget else ""
    figure.update_layout(
        **LAYOUT,
        title={"text": f"Epochs spent per trial<br><sup>{spent} of {budget} epochs{saved}</sup>"},
        xaxis_title="trial",
        yaxis_title=f"epochs run (of {spec.epochs})",
        yaxis_range=[0, spec.epochs + 0.5],
    )
    return figure


def _label_color(label: str, palette: Iterator[str]) -> str:
    if label == "complete":
        return COLORS["feasible"]
    if label == "failed":
        return COLORS["failed"]
    if label == "pruner pareto-asha":
        return COLORS["pruned"]
    return next(palette)


def _label_symbol(label: str) -> str:
    return {"complete": "circle", "failed": "x", "running": "circle-open"}.get(
        label, "triangle-down"
    )


def _stop_text(view: TrialView) -> str:
    if view.stop is None:
        return view.state.lower()
    text = view.stop.text()
    return text if len(text) <= 160 else text[:157] + "..."
