"""A study in MLflow: its experiment, its parent run, and what the parent run shows.

MLflow's pattern for hyperparameter tuning: one parent run per study (named ``study``), one
nested child run per trial (tag ``mlflow.parentRunId``). The parent carries the study's
description, its settings, summary metrics (trial counts, the hypervolume over trials), the
Pareto front and the study's plots; the children carry the per-epoch curves.

Finding the parent is race-free across many workers: the process that creates the experiment
(experiment names are unique, so exactly one does) creates the parent run and records its id
in the experiment tag ``hpsearch.parent_run_id``; the others read that tag, waiting a little for
it when the experiment is new. An experiment that has no such tag (made by an older hpsearch or
by hand, or its creator died in between) falls
back to the run tagged ``hpsearch.role = study``, created if absent; should two processes create
one at the same moment, both adopt the older and the other is deleted.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections import Counter
from collections.abc import Mapping
from typing import Any

logger = logging.getLogger("hpsearch.tracking")

ROLE_TAG = "hpsearch.role"  # "study" on the parent run, "trial" on the child runs
PARENT_ID_TAG = "hpsearch.parent_run_id"  # experiment tag: the parent run's id
STUDY_TAG = "hpsearch.study"  # experiment tag set when hpsearch creates it (its parent follows)
PARENT_RUN_TAG = "mlflow.parentRunId"  # MLflow's nesting tag
NOTE_TAG = "mlflow.note.content"  # the description MLflow shows on experiments and runs
# MLflow 3 opens an experiment on its GenAI page (traces) unless told it is model training.
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
EXPERIMENT_KIND = "custom_model_development"
PARENT_RUN_NAME = "study"
PARENT_WAIT_S = 15.0  # how long a process waits for the experiment's creator to tag the parent
FRESH_EXPERIMENT_S = 120.0  # an experiment younger than this may still be being tagged


def experiment_description(study_name: str, spec: Any) -> str:
    """The experiment's description (markdown): what the study is and how runs are laid out."""
    text = f"**hpsearch study `{study_name}`**"
    if spec is not None:
        text += f" (spec `{spec.name}`, trainer `{spec.trainer}`)"
        if spec.description:
            text += f": {spec.description}"
    return (
        f"{text}\n\nThe run **{PARENT_RUN_NAME}** holds the study's plots (`plots.html`), its "
        "Pareto front and trial counts; its child runs `trial-N` are the trials, with per-epoch "
        "metrics. Tags on each trial: `state` (COMPLETE / PRUNED / FAIL; a pruned trial's run "
        "is FINISHED, a failed one FAILED, an interrupted one KILLED), `feasible` and "
        "`stop_reason`.\n\nMLflow 3 may open this experiment on its GenAI view (traces): switch "
        "the toggle at the top left to **Model training** to see the runs."
    )


def spec_description(spec: Any) -> str:
    """The spec in a few markdown lines: objectives, constraints, space, sampler, pruner."""
    objectives = ", ".join(
        f"{o.name} ({o.direction or f'band {list(o.band)}'})" for o in spec.objectives
    )
    lines = [f"- objectives: {objectives}"]
    if spec.constraints:
        constraints = ", ".join(f"{c.metric} {c.op} {c.value:g}" for c in spec.constraints)
        lines.append(f"- constraints: {constraints}")
    space = ", ".join(f"{name} {_range(param)}" for name, param in spec.space.items())
    lines.append(f"- space: {space}")
    lines.append(
        f"- {spec.epochs} epochs, sampler {spec.sampler.name}, "
        f"pruner {spec.pruner.name if spec.pruner else 'none'}, {len(spec.rules)} rule(s)"
    )
    return "\n".join(lines)


def _range(param: Any) -> str:
    if param.type == "categorical":
        return "{" + ", ".join(str(choice) for choice in param.choices) + "}"
    return f"[{param.low:g}, {param.high:g}]" + (" log" if param.log else "")


def spec_params(spec: Any) -> dict[str, str]:
    """The study's settings as MLflow params of the parent run."""
    return {
        "spec": spec.name,
        "trainer": spec.trainer,
        "epochs": str(spec.epochs),
        "objectives": json.dumps(
            {o.name: o.direction or f"band {list(o.band)}" for o in spec.objectives}
        ),
        "constraints": json.dumps([f"{c.metric} {c.op} {c.value:g}" for c in spec.constraints]),
        "sampler": spec.sampler.name,
        "pruner": spec.pruner.name if spec.pruner else "none",
        "search_space": ", ".join(spec.space),
    }


# -- finding the parent run ----------------------------------------------------------------------


def ensure_experiment(client: Any, study_name: str, description: str) -> tuple[str, bool]:
    """The study's experiment id, and whether this call created it (tagged so MLflow opens it
    on its runs, with the description)."""
    experiment = client.get_experiment_by_name(study_name)
    if experiment is not None:
        _tag_experiment(client, experiment, description)
        return str(experiment.experiment_id), False
    tags = {EXPERIMENT_KIND_TAG: EXPERIMENT_KIND, NOTE_TAG: description, STUDY_TAG: study_name}
    try:
        return str(client.create_experiment(study_name, tags=tags)), True
    except Exception:  # another process created it first
        experiment = client.get_experiment_by_name(study_name)
        if experiment is None:
            raise
        return str(experiment.experiment_id), False


def _tag_experiment(client: Any, experiment: Any, description: str) -> None:
    """Experiments made before these tags existed get them (once)."""
    tags = experiment.tags or {}
    if tags.get(EXPERIMENT_KIND_TAG) != EXPERIMENT_KIND:
        client.set_experiment_tag(experiment.experiment_id, EXPERIMENT_KIND_TAG, EXPERIMENT_KIND)
    if not tags.get(NOTE_TAG):
        client.set_experiment_tag(experiment.experiment_id, NOTE_TAG, description)


def find_or_create_parent(
    client: Any, experiment_id: str, study_name: str, created: bool, wait_s: float = PARENT_WAIT_S
) -> str:
    """The id of the study's parent run (see the module docstring for the race)."""
    if created:
        run_id = _create_parent(client, experiment_id, study_name)
        client.set_experiment_tag(experiment_id, PARENT_ID_TAG, run_id)
        return run_id
    tagged = _tagged_parent(client, experiment_id, wait_s)
    if tagged is not None:
        return tagged
    found = _parents(client, experiment_id)
    if found:
        return str(found[0].info.run_id)
    own = _create_parent(client, experiment_id, study_name)
    parents = _parents(client, experiment_id)
    chosen = str(parents[0].info.run_id) if parents else own
    if chosen != own:
        client.delete_run(own)
    else:
        client.set_experiment_tag(experiment_id, PARENT_ID_TAG, own)
    return chosen


def _create_parent(client: Any, experiment_id: str, study_name: str) -> str:
    run = client.create_run(
        experiment_id,
        run_name=PARENT_RUN_NAME,
        tags={ROLE_TAG: "study", "study": study_name},
    )
    return str(run.info.run_id)


def _tagged_parent(client: Any, experiment_id: str, wait_s: float) -> str | None:
    """The run id in the experiment's tag; None if it is not there (or names a deleted run).
    An experiment hpsearch created recently whose tag is missing is waited for (up to
    ``wait_s``): its creator is about to write it."""
    deadline = time.monotonic() + wait_s
    delay = 0.05
    while True:
        experiment = client.get_experiment(experiment_id)
        tags = experiment.tags or {}
        run_id = tags.get(PARENT_ID_TAG)
        if run_id:
            run = client.get_run(run_id)
            return str(run_id) if run.info.lifecycle_stage == "active" else None
        age_ms = time.time() * 1000 - (experiment.creation_time or 0)
        pending = STUDY_TAG in tags and age_ms < FRESH_EXPERIMENT_S * 1000
        if not pending or time.monotonic() >= deadline:
            return None
        time.sleep(delay)
        delay = min(2 * delay, 1.0)


def _parents(client: Any, experiment_id: str) -> list[Any]:
    """Active parent runs, oldest first (ties by run id, so every process picks the same)."""
    runs = client.search_runs(
        [experiment_id], filter_string=f"tags.`{ROLE_TAG}` = 'study'", max_results=50
    )
    return sorted(runs, key=lambda run: (run.info.start_time, run.info.run_id))


# -- the summary on the parent run ---------------------------------------------------------------


def is_feasible(trial: Any) -> bool:
    """A COMPLETE trial whose constraint values (Optuna 5: a dict by name) are all <= 0."""
    constraints = trial.constraints
    values = constraints.values() if isinstance(constraints, Mapping) else constraints or ()
    return trial.state.name == "COMPLETE" and all(value <= 0 for value in values)


def trial_counts(trials: list[Any]) -> dict[str, int]:
    """Trials by state (lower case), plus ``feasible`` among the complete ones."""
    counts = Counter(trial.state.name.lower() for trial in trials)
    counts["feasible"] = sum(1 for trial in trials if is_feasible(trial))
    return dict(counts)


def summary_metrics(trials: list[Any], names: list[str], directions: list[Any]) -> dict[str, float]:
    """What the parent run shows as metrics now: counts by state and, per objective, the best
    value among the feasible complete trials (``best_<name>``)."""
    counts = trial_counts(trials)
    metrics = {
        f"trials_{state}": float(counts.get(state, 0))
        for state in ("complete", "pruned", "fail", "running", "feasible")
    }
    feasible = [trial for trial in trials if is_feasible(trial) and trial.values]
    for index, (name, direction) in enumerate(zip(names, directions, strict=True)):
        values = [t.values[index] for t in feasible if math.isfinite(t.values[index])]
        if values:
            best = max if str(getattr(direction, "name", direction)).upper() == "MAXIMIZE" else min
            metrics[f"best_{name}"] = best(values)
    return metrics


def hypervolume_points(trials: list[Any]) -> list[tuple[int, float]]:
    """(trial number, the study's hypervolume after it) for trials that stored one."""
    points = []
    for trial in trials:
        volume = trial.user_attrs.get("study_hypervolume")
        if isinstance(volume, int | float) and math.isfinite(volume):
            points.append((trial.number, float(volume)))
    return points


def pareto_table(study: Any, names: list[str], limit: int = 20) -> str:
    """The feasible Pareto front as a markdown table (effective params), best first."""
    try:
        best = sorted(study.best_trials, key=lambda trial: trial.number)[:limit]
    except Exception:  # no complete trial yet
        return "_no complete trial yet_"
    if not best:
        return "_no feasible complete trial yet_"
    keys = sorted({key for trial in best for key in trial.params})
    header = ["trial", *names, *keys]
    rows = []
    for trial in best:
        effective = {**trial.params, **trial.user_attrs.get("effective_params", {})}
        cells = [f"trial-{trial.number}", *(_cell(v) for v in trial.values or [])]
        rows.append(cells + [_cell(effective.get(key, "")) for key in keys])
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows])


def _cell(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def parent_description(study: Any, spec: Any, trials: list[Any]) -> str:
    """The parent run's description: the spec, the counts and the Pareto front."""
    names = list(study.metric_names or [f"value_{i}" for i in range(len(study.directions))])
    counts = trial_counts(trials)
    shown = ", ".join(f"{n} {state}" for state, n in sorted(counts.items()) if state != "feasible")
    title = f"**Study `{study.study_name}`**" + (
        f": {spec.description}" if spec.description else ""
    )
    feasible = counts.get("feasible", 0)
    parts = [title, spec_description(spec)]
    parts.append(f"**Trials**: {shown or 'none'}; {feasible} complete and feasible.")
    parts.append("**Pareto front** (feasible, effective params):\n\n" + pareto_table(study, names))
    parts.append("Plots: artifact `plots.html`. Trials: the child runs below.")
    return "\n\n".join(parts)


def study_figures(study: Any, spec: Any, trials: list[Any] | None = None) -> dict[str, Any]:
    """The study's plotly figures (``hpsearch.visualization``: Pareto front, hypervolume,
    objective curves, pruning view, best configs)."""
    from hpsearch.visualization import study_figures as figures

    return figures(study, spec, trials=trials)


def figures_html(title: str, figures: Mapping[str, Any]) -> str:
    """One self-contained HTML page with every figure (plotly.js inlined once), so that MLflow's
    artifact viewer shows it without network access."""
    import plotly.io

    blocks = []
    for index, (name, figure) in enumerate(figures.items()):
        html = plotly.io.to_html(
            figure, full_html=False, include_plotlyjs=index == 0, div_id=f"plot-{name}"
        )
        blocks.append(f"<h2>{name.replace('_', ' ')}</h2>\n{html}")
    body = "\n".join(blocks) or "<p>No plot yet: no complete trial.</p>"
    return (
        f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{title}</title></head>"
        f"<body style='font-family:sans-serif'><h1>{title}</h1>\n{body}</body></html>"
    )
