"""Create or load a study for a spec and run trials in this process."""

from __future__ import annotations

import logging
import tempfile
import warnings
from pathlib import Path
from typing import Any

import optuna

from hpsearch.dashboard import FigureRefresher, describe_study
from hpsearch.errors import SpecError
from hpsearch.objectives import (
    TrialFailed,
    TrialOutcome,
    build_objective,
    execute_trial,
    make_pruner,
    make_sampler,
    parse_assignments,
    pick_device,
)
from hpsearch.search_spaces import StudySpec, load_spec
from hpsearch.search_spaces.validate import check_against_trainer
from hpsearch.storage import default_storage_url, open_storage
from hpsearch.tracking import MlflowTracker, NullTracker, Tracker

logger = logging.getLogger("hpsearch")


def create_study(
    spec: StudySpec, storage: str | None = None, study_name: str | None = None
) -> optuna.Study:
    """The spec's study in the store, created on first use with its objective names set.

    An existing study with other directions is a SpecError (give another ``study_name``)."""
    name = study_name or spec.name
    sampler = make_sampler(spec.sampler)
    pruner = make_pruner(spec.pruner, spec)
    study = optuna.create_study(
        study_name=name,
        storage=open_storage(storage),
        directions=spec.directions,  # type: ignore[arg-type]
        sampler=sampler,
        pruner=pruner,
        load_if_exists=True,
    )
    wanted = [optuna.study.StudyDirection[d.upper()] for d in spec.directions]
    if list(study.directions) != wanted:
        raise SpecError(
            f"study {name!r} exists with directions "
            f"{[d.name.lower() for d in study.directions]} but spec {spec.source} has "
            f"{spec.directions}; pass another --study-name"
        )
    if study.metric_names != spec.objective_names:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            study.set_metric_names(spec.objective_names)
    describe_study(study, spec)  # the dashboard's note; the spec as a system attr
    return study


def make_tracker(track: bool = True, tracking_uri: str | None = None) -> Tracker:
    return MlflowTracker(tracking_uri) if track else NullTracker()


def run(
    spec: str | StudySpec,
    n_trials: int | None = None,
    *,
    storage: str | None = None,
    study_name: str | None = None,
    tracking_uri: str | None = None,
    track: bool = True,
    device: str | None = None,
    timeout: float | None = None,
    show_progress_bar: bool = False,
) -> optuna.Study:
    """Run ``n_trials`` more trials of a spec (packaged name, YAML path or StudySpec) in this
    process and return the ``optuna.Study``.

    ``storage`` defaults to ``HPSEARCH_STORAGE``, then ``sqlite:///hpsearch.db``; MLflow to
    ``MLFLOW_TRACKING_URI``, then ``sqlite:///mlflow.db``. A trial that fails or is pruned does
    not stop the study."""
    spec = load_spec(spec)
    tracker = make_tracker(track, tracking_uri)
    objective = build_objective(spec, tracker, study_name=study_name, device=device)
    study = create_study(spec, storage or default_storage_url(), study_name)
    figures = FigureRefresher(spec)  # the dashboard's plots, every few seconds at most
    try:
        study.optimize(
            objective,
            n_trials=n_trials,
            timeout=timeout,
            catch=(TrialFailed,),
            show_progress_bar=show_progress_bar,
            callbacks=[figures],
        )
    finally:
        figures.flush(study)
    log_pareto_plot(study, tracker)
    return study


def try_config(
    spec: str | StudySpec,
    assignments: list[str] | None = None,
    *,
    device: str | None = None,
    seed: int | None = None,
) -> TrialOutcome:
    """One trial of one configuration (space defaults overlaid with ``key=value`` assignments),
    with no store and no tracking."""
    spec = load_spec(spec)
    params = {**spec.fixed, **spec.default_params(), **parse_assignments(spec, assignments or [])}
    trainer_class = check_against_trainer(spec, spec.source)
    return execute_trial(
        spec,
        trainer_class,
        params,
        seed=spec.seed if seed is None else seed,
        run=NullTracker().start_trial(spec.name, None, params, {}),
        device=pick_device(device),
    )


def log_pareto_plot(study: optuna.Study, tracker: Tracker) -> None:
    """Attach the Pareto-front plot (2 or 3 objectives) to the study's MLflow experiment."""
    if isinstance(tracker, NullTracker) or len(study.directions) not in (2, 3):
        return
    complete = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    if not complete:
        return
    try:
        import matplotlib

        matplotlib.use("Agg")
        from matplotlib import pyplot
        from optuna.visualization.matplotlib import plot_pareto_front

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            axes: Any = plot_pareto_front(study, include_dominated_trials=True)
        with tempfile.TemporaryDirectory() as folder:
            path = Path(folder) / "pareto_front.png"
            axes.figure.savefig(path, dpi=100, bbox_inches="tight")
            pyplot.close(axes.figure)
            tracker.log_study_artifact(study.study_name, "pareto_front", str(path))
    except Exception as error:  # a plot must never fail a study
        logger.warning("could not plot the Pareto front: %s", error)
