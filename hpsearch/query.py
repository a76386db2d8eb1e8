"""Reading results: best (Pareto-optimal, feasible) configs and study summaries."""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import optuna
from optuna.storages import BaseStorage
from optuna.trial import FrozenTrial

from hpsearch.errors import StudyNotFoundError
from hpsearch.metrics.pareto import as_losses, pareto_mask
from hpsearch.objectives.failures import FAILURE_CLASS_ATTR
from hpsearch.objectives.outcome import json_safe
from hpsearch.objectives.summary import FINAL_METRICS_SYSTEM_ATTR, RULE_EVENTS_SYSTEM_ATTR
from hpsearch.query_select import feasible, select_trials
from hpsearch.storage import default_storage_url, mask_url, open_storage
from hpsearch.storage.internals import (
    complete_trial_points,
    count_attr_values,
    count_states,
    rdb_of,
    trial_by_id,
    trials_in_states,
)


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
    failures: dict[str, int] = field(default_factory=dict)  # FAIL trials by failure_class

    @property
    def finished(self) -> int:
        return self.counts.get("COMPLETE", 0) + self.counts.get("PRUNED", 0)


def load_study(study_name: str, storage: str | None = None) -> optuna.Study:
    """An existing study; StudyNotFoundError lists the studies there are."""
    url = storage or default_storage_url()
    store = open_storage(url, create=False)
    names = [study.study_name for study in store.get_all_studies()]  # no trial is read
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
    params and ``effective_<param>`` (see ``hpsearch.query_select``).

    Args:
        study_name: the study (a spec's name unless ``--study-name`` gave another).
        storage: the store URL (default: ``HPSEARCH_STORAGE``, then ``sqlite:///hpsearch.db``);
            a store that does not exist is an error, never created.
        rank_by: an expression to sort the feasible trials by, highest first.
        where: an expression a trial must satisfy.
        top: keep the first ``top`` configs.

    Returns:
        ``BestConfig`` records: sampled and effective params, named objective values, final
        metrics, constraint values, rule events and the MLflow run id.

    Example:
        >>> from hpsearch.search_spaces import spec_from_dict
        >>> from hpsearch.trainers import register_trainer
        >>> from hpsearch.trainers.base import function_trainer
        >>> def quadratic(params, knobs, *, device, seed):
        ...     for epoch in range(1, 4):
        ...         yield {"loss": (params["x"] - 0.3) ** 2 + 0.1 / epoch}
        >>> register_trainer("doc-quadratic", function_trainer(quadratic))
        >>> spec = spec_from_dict({
        ...     "name": "doc", "trainer": "doc-quadratic", "epochs": 3,
        ...     "space": {"x": {"type": "float", "low": 0.0, "high": 1.0, "default": 0.5}},
        ...     "objectives": [{"metric": "loss", "direction": "minimize"}],
        ...     "sampler": {"name": "random", "seed": 0},
        ... })
        >>> import hpsearch
        >>> _ = hpsearch.run(spec, 6, storage="sqlite:///doc-best.db", track=False)
        >>> best = best_configs("doc", "sqlite:///doc-best.db")
        >>> len(best), sorted(best[0].values)
        (1, ['loss'])
        >>> top = best_configs("doc", "sqlite:///doc-best.db", rank_by="-loss", top=2)
        >>> top[0].values["loss"] <= top[1].values["loss"]
        True
    """
    study = load_study(study_name, storage)
    names = objective_names(study)
    # ``study.best_trials`` reads and copies every trial (16 s for a 10,000-trial study on
    # PostgreSQL): the front is found from the COMPLETE trials' values and constraints only.
    trials = _front_from_values(study, top) if rank_by is None and where is None else None
    if trials is None:
        trials = selected_trials(study, names, rank_by=rank_by, where=where, top=top)
    constraint_names = _constraint_names(study)
    return [_best_config(trial, names, constraint_names) for trial in trials]


def selected_trials(
    study: optuna.Study,
    names: list[str],
    *,
    rank_by: str | None,
    where: str | None,
    top: int | None,
) -> list[optuna.trial.FrozenTrial]:
    """The complete feasible trials chosen by ``where`` / ``rank_by`` / ``top``."""
    complete = trials_in_states(study, (optuna.trial.TrialState.COMPLETE,))
    candidates = [trial for trial in complete if feasible(trial)]
    directions = [direction.name.lower() for direction in study.directions]
    return select_trials(candidates, names, directions, rank_by=rank_by, where=where, top=top)


def _front_from_values(study: optuna.Study, top: int | None) -> list[FrozenTrial] | None:
    """The feasible Pareto front by trial number, first ``top``: found from the values and
    constraints of the COMPLETE trials (SQL stores), then only its trials read; None where the
    store cannot (``selected_trials`` reads the trials then)."""
    points = complete_trial_points(study)
    if points is None:
        return None
    kept = [point for point in points if all(v <= 0.0 for v in point.constraints.values())]
    if not kept:
        return []
    directions = [direction.name.lower() for direction in study.directions]
    losses = as_losses(np.array([point.values for point in kept], dtype=float), directions)
    front = [point for point, keep in zip(kept, pareto_mask(losses), strict=True) if keep]
    return [trial_by_id(study, point.trial_id) for point in front[:top]]


def _constraint_names(study: optuna.Study) -> list[str]:
    """The constraint names of the spec stored on the study (``describe_study``), in order."""
    from hpsearch.dashboard import stored_spec
    from hpsearch.search_spaces import ConstraintSpec

    spec = stored_spec(study) or {}
    try:
        return [ConstraintSpec.model_validate(c).name for c in spec.get("constraints", [])]
    except ValueError:
        return []


def named_constraints(trial: optuna.trial.FrozenTrial, names: list[str]) -> dict[str, float]:
    """A trial's constraint values by name: Optuna names the list form by position ("0")."""
    values = dict(trial.constraints)
    if names and len(values) == len(names) and all(key.isdigit() for key in values):
        return {names[int(key)]: value for key, value in values.items()}
    return values


def _best_config(
    trial: optuna.trial.FrozenTrial, names: list[str], constraint_names: list[str]
) -> BestConfig:
    events = trial.system_attrs.get(RULE_EVENTS_SYSTEM_ATTR, trial.user_attrs.get("rule_events"))
    values = trial.values or []
    return BestConfig(
        trial_number=trial.number,
        params=dict(trial.params),
        effective_params=dict(trial.user_attrs.get("effective_params", trial.params)),
        values=dict(zip(names, values, strict=True)),
        metrics=dict(
            trial.system_attrs.get(FINAL_METRICS_SYSTEM_ATTR)
            or trial.user_attrs.get("final_metrics", {})
        ),
        constraints=named_constraints(trial, constraint_names),
        rule_events=list(events) if isinstance(events, list) else [],
        mlflow_run_id=trial.user_attrs.get("mlflow_run_id"),
    )


def study_summaries(storage: str | None = None) -> list[StudySummary]:
    """Every study in the store with its trial counts by state: one count per state, no
    trial is read (``optuna.get_all_study_summaries`` reads every trial of every study)."""
    store = open_storage(storage or default_storage_url(), create=False)
    summaries = []
    for study in store.get_all_studies():
        counts = _state_counts(store, store.get_study_id_from_name(study.study_name))
        summaries.append(
            StudySummary(
                name=study.study_name,
                directions=[d.name.lower() for d in study.directions],
                objective_names=list(study.system_attrs.get("study:metric_names", [])),
                counts=counts,
                failures=_failure_classes(store, study.study_name, counts.get("FAIL", 0)),
            )
        )
    return sorted(summaries, key=lambda item: item.name)


def _failure_classes(store: BaseStorage, study_name: str, n_failed: int) -> dict[str, int]:
    """The ``n_failed`` FAIL trials by user attr ``failure_class`` (``unknown`` where it is
    missing): one SQL query on SQL stores, the FAIL trials read otherwise."""
    if not n_failed:
        return {}
    study_id = store.get_study_id_from_name(study_name)
    fail = optuna.trial.TrialState.FAIL
    rdb = rdb_of(store)
    if rdb is not None:
        counted = count_attr_values(rdb, study_id, fail, FAILURE_CLASS_ATTR)
    else:
        trials = store.get_all_trials(study_id, deepcopy=False, states=(fail,))
        counted = Counter(
            str(t.user_attrs[FAILURE_CLASS_ATTR])
            for t in trials
            if FAILURE_CLASS_ATTR in t.user_attrs
        )
    unknown = n_failed - sum(counted.values())
    if unknown > 0:
        counted["unknown"] += unknown
    return dict(sorted(counted.items()))


def _state_counts(store: BaseStorage, study_id: int) -> dict[str, int]:
    """Trials by state name: one grouped SQL query on SQL stores, one count per state else."""
    states = tuple(optuna.trial.TrialState)
    rdb = rdb_of(store)
    if rdb is not None:
        counted = count_states(rdb, study_id, states)
        return {state.name: n for state, n in counted.items() if n}
    counts = {state.name: store.get_n_trials(study_id, state) for state in states}
    return {name: n for name, n in counts.items() if n}
