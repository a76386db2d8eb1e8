"""Reading results: best (Pareto-optimal, feasible) configs and study summaries."""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any

import optuna

from hpsearch.errors import StudyNotFoundError
from hpsearch.objectives.outcome import json_safe
from hpsearch.query_select import feasible, select_trials
from hpsearch.storage import default_storage_url, mask_url, open_storage


@dataclass(frozen=True)
class BestConfig:
    """One Pareto-optimal, feasible, finished trial: its suggested params, its effective params
    (after rule backoffs), named objective values, final metrics, constraint values (<= 0 is
    feasible), the rule events that fired during it and its MLflow run id."""

    trial_number: int
    params: dict[str, Any]
    effective_params: dict[str, Any]
    values: dict[str, float]
    metrics: dict[str, float]
    constraints: dict[str, float] = field(default_factory=dict)
    rule_events: list[dict[str, Any]] = field(default_factory=list)
    mlflow_run_id: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return json_safe(asdict(self))


@dataclass(frozen=True)
class StudySummary:
    name: str
    directions: list[str]
    objective_names: list[str]
    counts: dict[str, int]

    @property
    def finished(self) -> int:
        return self.counts.get("COMPLETE", 0) + self.counts.get("PRUNED", 0)


def load_study(study_name: str, storage: str | None = None) -> optuna.Study:
    """An existing study; StudyNotFoundError lists the studies there are."""
    url = storage or default_storage_url()
    store = open_storage(url, create=False)
    names = [summary.study_name for summary in optuna.get_all_study_summaries(store)]
    if study_name not in names:
        available = ", ".join(sorted(names)) or "none"
        raise StudyNotFoundError(
            f"no study {study_name!r} in {mask_url(url)} (studies there: {available}); "
            "run it first with `hpsearch run`, or pass --storage / --study-name"
        )
    return optuna.load_study(study_name=study_name, storage=store)


def objective_names(study: optuna.Study) -> list[str]:
    names = study.metric_names
    return list(names) if names else [f"value_{i}" for i in range(len(study.directions))]


def best_configs(
    study_name: str,
    storage: str | None = None,
    *,
    rank_by: str | None = None,
    where: str | None = None,
    top: int | None = None,
) -> list[BestConfig]:
    """Pareto-optimal, feasible, complete trials of a study, by trial number.

    ``where`` keeps the trials for which an expression holds (before the Pareto front is
    taken); ``rank_by`` orders all kept feasible trials by an expression, highest first
    (``-val_loss`` for lowest first), instead of taking the front; ``top`` keeps the first N.
    Expressions use the rules' safe language over objective names, final metrics, sampled
    params and ``effective_<param>`` (see ``hpsearch.query_select``)."""
    study = load_study(study_name, storage)
    names = objective_names(study)
    if rank_by is None and where is None:
        trials = sorted(study.best_trials, key=lambda trial: trial.number)[:top]
    else:
        trials = selected_trials(study, names, rank_by=rank_by, where=where, top=top)
    return [_best_config(trial, names) for trial in trials]


def selected_trials(
    study: optuna.Study,
    names: list[str],
    *,
    rank_by: str | None,
    where: str | None,
    top: int | None,
) -> list[optuna.trial.FrozenTrial]:
    """The complete feasible trials chosen by ``where`` / ``rank_by`` / ``top``."""
    complete = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    candidates = [trial for trial in complete if feasible(trial)]
    directions = [direction.name.lower() for direction in study.directions]
    return select_trials(candidates, names, directions, rank_by=rank_by, where=where, top=top)


def _best_config(trial: optuna.trial.FrozenTrial, names: list[str]) -> BestConfig:
    values = trial.values or []
    return BestConfig(
        trial_number=trial.number,
        params=dict(trial.params),
        effective_params=dict(trial.user_attrs.get("effective_params", trial.params)),
        values=dict(zip(names, values, strict=True)),
        metrics=dict(trial.user_attrs.get("final_metrics", {})),
        constraints=dict(trial.constraints),
        rule_events=list(trial.user_attrs.get("rule_events", [])),
        mlflow_run_id=trial.user_attrs.get("mlflow_run_id"),
    )


def study_summaries(storage: str | None = None) -> list[StudySummary]:
    """Every study in the store with its trial counts by state."""
    store = open_storage(storage or default_storage_url(), create=False)
    summaries = []
    for summary in optuna.get_all_study_summaries(store, include_best_trial=False):
        study_id = store.get_study_id_from_name(summary.study_name)
        trials = store.get_all_trials(study_id, deepcopy=False)
        summaries.append(
            StudySummary(
                name=summary.study_name,
                directions=[d.name.lower() for d in summary.directions],
                objective_names=list(
                    store.get_study_system_attrs(study_id).get("study:metric_names", [])
                ),
                counts=dict(Counter(trial.state.name for trial in trials)),
            )
        )
    return sorted(summaries, key=lambda item: item.name)
