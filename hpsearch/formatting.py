"""Plain-text tables for the CLI."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from hpsearch.query import BestConfig, StudySummary


def format_value(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """Left-aligned columns separated by two spaces, with a rule under the header."""
    cells = [[format_value(cell) for cell in row] for row in rows]
    widths = [len(header) for header in headers]
    for row in cells:
        widths = [max(width, len(cell)) for width, cell in zip(widths, row, strict=True)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True))]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) for row in cells]
    return "\n".join(line.rstrip() for line in lines)


def best_table(configs: Sequence[BestConfig]) -> str:
    """Trial, objective values, the searched params as sampled (headed ``param (sampled)`` when
    a rule changed it), ``param (effective)`` for each param a rule changed in some listed trial
    (the value its last epoch trained with), then the MLflow run id."""
    if not configs:
        return "no feasible Pareto-optimal trial yet"
    value_names = list(configs[0].values)
    param_names = list(dict.fromkeys(name for config in configs for name in config.params))
    changed = [
        name
        for name in param_names
        if any(_effective(config, name) != config.params.get(name) for config in configs)
    ]
    headers = [
        "trial",
        *value_names,
        *(f"{name} (sampled)" if name in changed else name for name in param_names),
        *(f"{name} (effective)" for name in changed),
        "mlflow_run_id",
    ]
    rows = [
        [
            config.trial_number,
            *(config.values[name] for name in value_names),
            *(config.params.get(name, "-") for name in param_names),
            *(_effective(config, name) for name in changed),
            config.mlflow_run_id or "-",
        ]
        for config in configs
    ]
    return table(headers, rows)


def _effective(config: BestConfig, name: str) -> Any:
    if name not in config.params:
        return "-"
    return config.effective_params.get(name, config.params[name])


def studies_table(summaries: Sequence[StudySummary]) -> str:
    if not summaries:
        return "no studies in this store"
    states = ["COMPLETE", "PRUNED", "FAIL", "RUNNING", "WAITING"]
    headers = ["study", "objectives", *[state.lower() for state in states], "total"]
    rows = [
        [
            summary.name,
            ", ".join(
                f"{name} ({direction[:3]})"
                for name, direction in zip(
                    summary.objective_names or summary.directions, summary.directions, strict=False
                )
            ),
            *(summary.counts.get(state, 0) for state in states),
            sum(summary.counts.values()),
        ]
        for summary in summaries
    ]
    return table(headers, rows)
