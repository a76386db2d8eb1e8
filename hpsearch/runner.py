"""Create or load a study for a spec and run trials in this process."""

from __future__ import annotations

import logging
import signal
import threading
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

import optuna

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
from hpsearch.tracking import MlflowTracker, NullTracker, Terminated, Tracker

logger = logging.getLogger("hpsearch")
SPEC_ATTR = "hpsearch_spec"


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
    if SPEC_ATTR not in study.user_attrs:
        study.set_user_attr(SPEC_ATTR, spec.model_dump(mode="json"))
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
    not stop the study. Ctrl-C or SIGTERM ends the MLflow runs (KILLED, with the signal) and
    raises KeyboardInterrupt (``Terminated`` for SIGTERM)."""
    spec = load_spec(spec)
    tracker = make_tracker(track, tracking_uri)
    objective = build_objective(spec, tracker, study_name=study_name, device=device)
    study = create_study(spec, storage or default_storage_url(), study_name)
    with tracker.tracking(study, spec), _sigterm_raises():
        study.optimize(
            objective,
            n_trials=n_trials,
            timeout=timeout,
            catch=(TrialFailed,),
            show_progress_bar=show_progress_bar,
        )
    return study


@contextmanager
def _sigterm_raises() -> Iterator[None]:
    """SIGTERM raises ``Terminated`` (a KeyboardInterrupt) in the main thread, so it ends the
    running trial and the tracking runs the way Ctrl-C does."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, _frame: FrameType | None) -> None:
        raise Terminated(signum)

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


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
