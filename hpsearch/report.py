"""``hpsearch report``: one self-contained HTML file of a study (no server, no network).

The study note, the feasible Pareto front as a table (values, effective params, rule events),
the trials stopped early with their reasons, and the figures of ``hpsearch.visualization``
with plotly.js inlined. ``png_dir`` also writes each figure as a PNG (kaleido drives the
local Chromium; nothing is downloaded).
"""

from __future__ import annotations

import html
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import optuna

from hpsearch.dashboard.note import study_note
from hpsearch.errors import HpsearchError
from hpsearch.objectives.summary import event_line, short_number
from hpsearch.search_spaces import StudySpec
from hpsearch.visualization import TrialView, figures_of, reference_point, trial_views
from hpsearch.visualization._common import feasible_front

STOPPED_ROWS = 50


@dataclass(frozen=True)
class ReportFiles:
    html: Path
    pngs: list[Path]


def write_report(
    study: optuna.Study,
    spec: StudySpec,
    output: Path,
    *,
    png_dir: Path | None = None,
    where: str = "",
) -> ReportFiles:
    """Write the report of ``study`` to ``output`` (and PNGs to ``png_dir``)."""
    import plotly.offline

    views = trial_views(study.get_trials(deepcopy=False), spec)
    figures = figures_of(views, spec, reference_point(study, spec, views))
    parts = [
        _header(study, views, where),
        f"<section class='note'>{markdown_to_html(study_note(spec, study.study_name))}</section>",
        _front_table(views, spec),
        _stopped_table(views),
    ]
    for name, figure in figures.items():
        body = figure.to_html(full_html=False, include_plotlyjs=False, div_id=f"figure-{name}")
        parts.append(f"<section class='figure' id='{name}'>{body}</section>")
    page = _PAGE.format(
        title=html.escape(f"hpsearch report: {study.study_name}"),
        plotly=plotly.offline.get_plotlyjs(),
        body="\n".join(parts),
    )
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(page, encoding="utf-8")
    pngs = _write_pngs(figures, png_dir) if png_dir is not None else []
    return ReportFiles(output, pngs)


def _write_pngs(figures: dict[str, object], folder: Path) -> list[Path]:
    import plotly.io

    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / f"{name}.png" for name in figures]
    try:
        plotly.io.write_images(list(figures.values()), paths, width=1000, height=650)
    except Exception as error:  # kaleido needs a Chrome/Chromium on this machine
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise HpsearchError(
            f"--png: could not render images ({first}); install chromium "
            "(apt-get install chromium) or drop --png"
        ) from None
    return paths


def _header(study: optuna.Study, views: Sequence[TrialView], where: str) -> str:
    counts: dict[str, int] = {}
    for view in views:
        counts[view.state.lower()] = counts.get(view.state.lower(), 0) + 1
    summary = ", ".join(f"{n} {state}" for state, n in sorted(counts.items())) or "no trials"
    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    return (
        f"<header><h1>{html.escape(study.study_name)}</h1><p>{summary}"
        f"{' in ' + html.escape(where) if where else ''}; report written {stamp}.</p></header>"
    )


def _front_table(views: Sequence[TrialView], spec: StudySpec) -> str:
    front = feasible_front(views, spec.directions)
    rows = sorted((v for v in views if v.number in front), key=lambda v: v.number)
    if not rows:
        return "<section><h2>Feasible Pareto front</h2><p>No feasible complete trial.</p></section>"
    params = list(spec.space)
    head = ["trial", *spec.objective_names, *params, "rule events"]
    body = []
    for view in rows:
        cells = [str(view.number)]
        cells += [short_number((view.values or [])[i]) for i in range(len(spec.objectives))]
        cells += [_param(view, name) for name in params]
        cells.append("<br>".join(html.escape(event_line(e)) for e in view.rule_events) or "-")
        body.append(cells)
    return (
        "<section><h2>Feasible Pareto front</h2><p>Params at their effective values (after rule"
        " backoffs), the value the trial started with in brackets where a rule changed it.</p>"
        + _table(head, body, escape_last=False)
        + "</section>"
    )


def _stopped_table(views: Sequence[TrialView]) -> str:
    stopped = [v for v in views if v.stop is not None][-STOPPED_ROWS:]
    if not stopped:
        return "<section><h2>Trials stopped early</h2><p>None.</p></section>"
    body = [
        [str(v.number), v.state, str(v.epochs_run), v.stop.text() if v.stop else ""]
        for v in reversed(stopped)
    ]
    return (
        f"<section><h2>Trials stopped early</h2><p>The latest {len(stopped)}.</p>"
        + _table(["trial", "state", "epochs", "why"], body)
        + "</section>"
    )


def _param(view: TrialView, name: str) -> str:
    effective = view.effective_params.get(name, view.params.get(name))
    sampled = view.params.get(name, effective)
    text = short_number(effective)
    return f"{text} ({short_number(sampled)})" if effective != sampled else text


def _table(head: Sequence[str], rows: Sequence[Sequence[str]], escape_last: bool = True) -> str:
    def cell(index: int, text: str, width: int) -> str:
        raw = not escape_last and index == width - 1
        return f"<td>{text if raw else html.escape(text)}</td>"

    header = "".join(f"<th>{html.escape(h)}</th>" for h in head)
    lines = [
        "<tr>" + "".join(cell(i, text, len(row)) for i, text in enumerate(row)) + "</tr>"
        for row in rows
    ]
    return f"<table><thead><tr>{header}</tr></thead><tbody>{''.join(lines)}</tbody></table>"


def markdown_to_html(text: str) -> str:
    """The markdown the study note uses (headings, tables, lists, code blocks, bold, code)."""
    out: list[str] = []
    lines = text.splitlines()
    index = 0
    while index < len(lines):
        line = lines[index]
        if line.startswith("```"):
            end = next(
                (j for j in range(index + 1, len(lines)) if lines[j].startswith("```")), len(lines)
            )
            out.append(f"<pre>{html.escape(chr(10).join(lines[index + 1 : end]))}</pre>")
            index = end + 1
            continue
        if line.startswith("|"):
            end = index
            while end < len(lines) and lines[end].startswith("|"):
                end += 1
            out.append(_md_table(lines[index:end]))
            index = end
            continue
        stripped = line.lstrip()
        if stripped.startswith("- "):
            indent = "nested" if line.startswith("  ") else "item"
            out.append(f"<li class='{indent}'>{_inline(stripped[2:])}</li>")
        elif line.startswith("#"):
            level = min(len(line) - len(line.lstrip("#")) + 1, 4)
            out.append(f"<h{level}>{_inline(line.lstrip('#').strip())}</h{level}>")
        elif line.strip():
            out.append(f"<p>{_inline(line)}</p>")
        index += 1
    return "\n".join(out)


def _md_table(lines: Sequence[str]) -> str:
    rows = [[c.strip() for c in line.strip().strip("|").split("|")] for line in lines]
    rows = [row for row in rows if not all(re.fullmatch(r"-+", c) for c in row)]
    head = "".join(f"<th>{_inline(c)}</th>" for c in rows[0])
    body = "".join(
        "<tr>" + "".join(f"<td>{_inline(c)}</td>" for c in row) + "</tr>" for row in rows[1:]
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _inline(text: str) -> str:
    escaped = html.escape(text)
    escaped = re.sub(r"\*\*(.+?)\*\*", r"<b>\1</b>", escaped)
    return re.sub(r"`(.+?)`", r"<code>\1</code>", escaped)


_PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1100px; color: #222; }}
table {{ border-collapse: collapse; margin: 0.5em 0 1em; font-size: 0.9em; }}
th, td {{ border: 1px solid #ccc; padding: 3px 8px; text-align: left; vertical-align: top; }}
th {{ background: #f0f0f0; }}
pre, code {{ background: #f6f6f6; }}
pre {{ padding: 0.6em; }}
li.nested {{ margin-left: 2em; }}
section {{ margin-bottom: 2em; }}
section.note {{ border-left: 4px solid #1f77b4; padding-left: 1em; }}
</style>
<script type="text/javascript">{plotly}</script>
</head><body>
{body}
</body></html>
"""
