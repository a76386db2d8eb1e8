"""Per-trial objective curves with a marker where a rule fired or a rung decided, and the
table of the feasible front at its effective params."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from hpsearch.objectives.summary import event_line, short_number
from hpsearch.search_spaces import StudySpec
from hpsearch.visualization._common import COLORS, LAYOUT, feasible_front, short
from hpsearch.visualization._trials import TrialView

if TYPE_CHECKING:
    import plotly.graph_objects as go

PALETTE = [
    "#1f77b4",
    "#2ca02c",
    "#9467bd",
    "#8c564b",
    "#e377c2",
    "#17becf",
    "#bcbd22",
    "#ff7f0e",
    "#d62728",
    "#7f7f7f",
]


def curve_trials(views: Sequence[TrialView], spec: StudySpec, limit: int = 12) -> list[TrialView]:
    """The trials worth a curve: the feasible front first, then the latest trials that a rule
    or a rung acted on, then the latest others; at most ``limit``."""
    front = feasible_front(views, spec.directions)
    with_curves = [v for v in views if v.curves]
    ordered = (
        [v for v in with_curves if v.number in front]
        + [v for v in reversed(with_curves) if v.number not in front and (v.rule_events or v.stop)]
        + [v for v in reversed(with_curves) if v.number not in front]
    )
    chosen: dict[int, TrialView] = {}
    for view in ordered:
        if len(chosen) < limit:
            chosen.setdefault(view.number, view)
    return sorted(chosen.values(), key=lambda v: v.number)


def curves_figure(views: Sequence[TrialView], spec: StudySpec, limit: int = 12) -> go.Figure:
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    rows = len(spec.objectives)
    figure = make_subplots(
        rows=rows,
        cols=1,
        shared_xaxes=True,
        vertical_spacing=0.08,
        subplot_titles=[o.name for o in spec.objectives],
    )
    for index, view in enumerate(curve_trials(views, spec, limit)):
        color = PALETTE[index % len(PALETTE)]
        epochs = list(view.curves)
        for row in range(rows):
            ys = [short(view.curves[e][row]) for e in epochs]
            figure.add_trace(
                go.Scatter(
                    x=epochs,
                    y=ys,
                    mode="lines",
                    line={"color": color, "width": 1.5},
                    name=f"trial {view.number}",
                    legendgroup=str(view.number),
                    showlegend=row == 0,
                    hovertemplate=f"trial {view.number}, epoch %{{x}}: %{{y}}<extra></extra>",
                ),
                row=row + 1,
                col=1,
            )
            for marker in _markers(view, row, color):
                figure.add_trace(marker, row=row + 1, col=1)
    figure.update_xaxes(title_text="epoch", row=rows, col=1)
    figure.update_xaxes(dtick=1 if spec.epochs <= 20 else None)
    figure.update_layout(
        **{**LAYOUT, "height": 300 + 220 * rows},
        title={
            "text": "Objective per epoch<br><sup>▲ a rule fired · ● a rung let the trial on"
            " · ✕ a rung or rule stopped it</sup>"
        },
    )
    return figure


def _markers(view: TrialView, row: int, color: str) -> list[Any]:
    """One trace with a marker per rule event and rung decision of the trial (symbols: a rule
    backoff or advice ▲, a rung that let it on ●, a stop ✕)."""
    import plotly.graph_objects as go

    points: list[tuple[int, str, str]] = []
    for event in view.rule_events:
        epoch = int(event.get("epoch", 0))
        symbol = "x" if event.get("action") == "abort" else "triangle-up"
        points.append((epoch, symbol, event_line(event)))
    for decision in view.rung_decisions:
        rung = int(decision.get("rung", 0))
        verdict = "continues" if decision.get("proceed") else "stopped"
        text = (
            f"rung {rung}: rank {decision.get('rank')} of {decision.get('trials_at_rung')},"
            f" {verdict}"
        )
        points.append((rung, "circle" if decision.get("proceed") else "x", text))
    points = [point for point in points if point[0] in view.curves]
    if not points:
        return []
    return [
        go.Scatter(
            x=[epoch for epoch, _, _ in points],
            y=[short(view.curves[epoch][row]) for epoch, _, _ in points],
            mode="markers",
            marker={
                "symbol": [symbol for _, symbol, _ in points],
                "size": 10,
                "color": color,
                "line": {"width": 1, "color": "#222"},
            },
            text=[f"trial {view.number}: {text}" for _, _, text in points],
            legendgroup=str(view.number),
            showlegend=False,
            hovertemplate="%{text}<extra></extra>",
        )
    ]


def best_table_figure(views: Sequence[TrialView], spec: StudySpec) -> go.Figure:
    """The feasible Pareto front: values and params at their effective values (after rule
    backoffs; the sampled value in brackets where a rule changed it)."""
    import plotly.graph_objects as go

    front = feasible_front(views, spec.directions)
    rows = sorted((v for v in views if v.number in front), key=lambda v: v.number)
    params = list(spec.space)
    header = ["trial", *spec.objective_names, *params]
    columns: list[list[str]] = [[str(v.number) for v in rows]]
    for index in range(len(spec.objectives)):
        columns.append([short_number((v.values or [])[index]) for v in rows])
    for name in params:
        columns.append([_param_cell(v, name) for v in rows])
    figure = go.Figure(
        go.Table(
            header={"values": header, "fill_color": "#eeeeee", "align": "left"},
            cells={"values": columns, "align": "left"},
        )
    )
    figure.update_layout(
        template="plotly_white",
        margin={"l": 10, "r": 10, "t": 60, "b": 10},
        height=120 + 28 * max(1, len(rows)),
        title={
            "text": f"Feasible Pareto front: {len(rows)} trial(s), effective params"
            "<br><sup>(sampled value) where a rule changed it</sup>"
        },
    )
    figure.update_traces(header_font_color=COLORS["front"])
    return figure


def _param_cell(view: TrialView, name: str) -> str:
    effective = view.effective_params.get(name, view.params.get(name))
    sampled = view.params.get(name, effective)
    if effective != sampled:
        return f"{short_number(effective)} ({short_number(sampled)})"
    return short_number(effective)
