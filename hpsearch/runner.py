"""Create or load a study for a spec and run trials in this process."""

from __future__ import annotations

import json
import logging
import math
import signal
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import optuna
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
    check_distribution_compatibility,
)
from pydantic import TypeAdapter, ValidationError

from hpsearch._util import quiet_experimental
from hpsearch.dashboard import FigureRefresher, describe_study
from hpsearch.errors import ParamError, SpecError
from hpsearch.objectives import (
    TrialOutcome,
    build_objective,
    execute_trial,
    make_pruner,
    make_sampler,
    parse_assignments,
    pick_device,
)
from hpsearch.objectives.suggest import try_params
from hpsearch.search_spaces import SPEC_ATTR, FloatParam, IntParam, StudySpec, load_spec
from hpsearch.search_spaces.schema import ParamSpec, study_name_problem
from hpsearch.search_spaces.validate import check_against_trainer
from hpsearch.storage import default_storage_url, open_storage
from hpsearch.tracking import MlflowTracker, NullTracker, Tracker, describe_signal

if TYPE_CHECKING:
    from hpsearch.workers.worker import WorkerResult

logger = logging.getLogger("hpsearch")
_PARAM_ADAPTER: TypeAdapter[ParamSpec] = TypeAdapter(ParamSpec)


def create_study(
    spec: StudySpec, storage: str | None = None, study_name: str | None = None
) -> optuna.Study:
    """The spec's study in the store, created on first use with its objective names set.

    An existing study with other directions, or with a param of another kind (float / int /
    categorical, log or not, other choices) is a SpecError (give another ``study_name``)."""
    name = spec.name if study_name is None else study_name
    problem = study_name_problem(name)
    if problem is not None:
        raise ParamError(f"--study-name: {problem}")
    sampler = make_sampler(spec.sampler)
    pruner = make_pruner(spec.pruner, spec)
    stored_spec = json.dumps(spec.model_dump(mode="json"))  # refuses what cannot be stored
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
    _check_same_space(study, spec)
    if study.metric_names != spec.objective_names:
        with quiet_experimental():
            study.set_metric_names(spec.objective_names)
    if SPEC_ATTR not in study.user_attrs:
        study.set_user_attr(SPEC_ATTR, json.loads(stored_spec))
    describe_study(study, spec)  # optuna-dashboard's note, rewritten when the spec changes
    return study


def _check_same_space(study: optuna.Study, spec: StudySpec) -> None:
    """SpecError when a param of the spec has another kind than in the study's stored spec
    (Optuna would refuse it at the first trial, after the study was changed)."""
    stored = study.user_attrs.get(SPEC_ATTR)
    space = stored.get("space") if isinstance(stored, dict) else None
    if not isinstance(space, dict):
        return
    for key, entry in spec.space.items():
        if key not in space:
            continue
        try:
            old = distribution_of(_PARAM_ADAPTER.validate_python(space[key]))
            check_distribution_compatibility(old, distribution_of(entry))
        except (ValidationError, ValueError) as error:
            reason = str(error).splitlines()[0] if str(error) else "a different kind"
            raise SpecError(
                f"{spec.source}: space.{key}: study {study.study_name!r} already searches "
                f"{key!r} as {space[key]} ({reason}); pass another --study-name or keep the "
                "param's type, log and choices"
            ) from None


def distribution_of(entry: ParamSpec) -> BaseDistribution:
    """The Optuna distribution a space entry is suggested from."""
    if isinstance(entry, FloatParam):
        return FloatDistribution(entry.low, entry.high, log=entry.log, step=entry.step)
    if isinstance(entry, IntParam):
        return IntDistribution(entry.low, entry.high, log=entry.log, step=entry.step)
    return CategoricalDistribution(entry.choices)


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
    trial_timeout: float | None = None,
    show_progress_bar: bool = False,
) -> optuna.Study:
    """Run ``n_trials`` more trials of a spec (packaged name, YAML path or StudySpec) in this
    process and return the ``optuna.Study``.

    ``storage`` defaults to ``HPSEARCH_STORAGE``, then ``sqlite:///hpsearch.db``; MLflow to
    ``MLFLOW_TRACKING_URI``, then ``sqlite:///mlflow.db``. A trial that fails or is pruned does
    not stop the study; ``MAX_FAILURES_IN_A_ROW`` trainer errors (or out-of-memory failures) in
    a row do, with a ``WorkerError``. ``timeout`` stops starting trials after that many seconds
    and also bounds each trial (as ``trial_timeout`` does, which overrides the spec's).
    SIGINT / SIGTERM fail the running trial and queue it again with the same params (none is
    left RUNNING), then raise ``KeyboardInterrupt`` / ``SystemExit(143)``.

    Args:
        spec: a packaged spec name, a YAML path or a ``StudySpec``.
        n_trials: the study's total of finished trials to reach (complete + pruned, earlier
            runs included); None runs until ``timeout`` or a signal.
        storage: the study store URL.
        study_name: overrides the spec's name.
        tracking_uri: the MLflow tracking URI; ``track=False`` turns MLflow off.
        track: whether to track trials in MLflow.
        device: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``.
        timeout: seconds after which no new trial starts (each trial is bounded by it too).
        trial_timeout: seconds one trial may take.
        show_progress_bar: log one line per finished trial.

    Returns:
        The ``optuna.Study``, with every trial's attributes (effective params, rule events,
        stop reason) stored on it.

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
        ... })
        >>> study = run(spec, 4, storage="sqlite:///doc-run.db", track=False)
        >>> len(study.trials), study.trials[0].state.name
        (4, 'COMPLETE')
    """
    report = logger.info if show_progress_bar else None
    study, result = run_trials(
        spec,
        n_trials,
        storage=storage,
        study_name=study_name,
        tracking_uri=tracking_uri,
        track=track,
        device=device,
        timeout=timeout,
        trial_timeout=trial_timeout,
        report=report,
    )
    if result.signal == signal.SIGINT:
        raise KeyboardInterrupt
    if result.signal is not None:
        raise SystemExit(128 + result.signal)
    return study


def run_trials(
    spec: str | StudySpec,
    n_trials: int | None = None,
    *,
    storage: str | None = None,
    study_name: str | None = None,
    tracking_uri: str | None = None,
    track: bool = True,
    device: str | None = None,
    timeout: float | None = None,
    trial_timeout: float | None = None,
    report: Callable[[str], None] | None = None,
) -> tuple[optuna.Study, WorkerResult]:
    """``run``'s work: the study and what the loop did (with the signal that stopped it, if
    any); ``report`` gets one line per trial."""
    from hpsearch.workers.worker import Worker

    spec = with_trial_timeout(load_spec(spec), trial_timeout, timeout)
    tracker = make_tracker(track, tracking_uri)
    objective = build_objective(spec, tracker, study_name=study_name, device=device)
    study = create_study(spec, storage or default_storage_url(), study_name)
    figures = FigureRefresher(spec)  # the dashboard's plots, every few seconds at most
    worker = Worker(
        study,
        figures.before_each(objective),
        max_trials=n_trials,
        timeout=timeout,
        report=report or _report_failures,
        reseed=False,  # one process: a seeded spec gives the same trials every time
    )
    with tracker.tracking(study, spec) as session:  # the study's MLflow run, closed at the end
        try:
            result = worker.run()
        finally:
            figures.flush(study)
        if result.signal is not None:
            session.interrupted = describe_signal(result.signal)
    return study, result


def _report_failures(line: str) -> None:
    """Without a line per trial, a failed trial is still one warning line (its reason)."""
    if " fail: " in line:
        logger.warning("%s", line)


def with_trial_timeout(
    spec: StudySpec, trial_timeout: float | None, timeout: float | None = None
) -> StudySpec:
    """The spec with ``trial_timeout`` (if given) as its per-trial limit, capped by
    ``timeout`` (a run's whole time limit also bounds each of its trials)."""
    limits = [
        limit for limit in (trial_timeout or spec.trial_timeout, timeout) if limit is not None
    ]
    if not limits:
        return spec
    if trial_timeout is not None and not (math.isfinite(trial_timeout) and trial_timeout > 0):
        raise ParamError(f"--trial-timeout {trial_timeout}: give a number of seconds > 0")
    limit = max(min(limits), 0.001)
    if limit == spec.trial_timeout:
        return spec
    changed = spec.model_copy(update={"trial_timeout": limit})
    changed._source = spec.source
    return changed


def try_config(
    spec: str | StudySpec,
    assignments: list[str] | None = None,
    *,
    device: str | None = None,
    seed: int | None = None,
    params: Mapping[str, Any] | None = None,
    note: Callable[[str], None] | None = None,
) -> TrialOutcome:
    """One trial of one configuration (space defaults overlaid with ``params``, then with
    ``key=value`` assignments), with no store and no tracking.

    A value the trainer rejects is a ParamError before anything runs; a valid value outside
    the searched space is tried, and ``note`` (default: the log) gets one line about it.

    Args:
        spec: a packaged spec name, a YAML path or a ``StudySpec``.
        assignments: ``key=value`` strings for space params (as ``hpsearch try --set``).
        device: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``.
        seed: the trainer's seed (default: the spec's).
        params: values for space params, applied before ``assignments``.
        note: where the one-line note about an out-of-space value goes.

    Returns:
        The ``TrialOutcome``: state (COMPLETE / PRUNED / FAIL), final metrics, objective and
        constraint values, the metric history and the rule events.

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
        ... })
        >>> outcome = try_config(spec, ["x=0.3"])
        >>> outcome.state, round(outcome.final_metrics["loss"], 4)
        ('COMPLETE', 0.0333)
    """
    spec = load_spec(spec)
    given = {**(params or {}), **parse_assignments(spec, assignments or [])}
    params, notes = try_params(spec, given)
    trainer_class = check_against_trainer(spec, spec.source)
    trainer_class.resolve_params(params)  # bad input: one line, before any training
    for line in notes:
        (note or logger.warning)(line)
    return execute_trial(
        spec,
        trainer_class,
        params,
        seed=spec.seed if seed is None else seed,
        run=NullTracker().start_trial(spec.name, None, params, {}),
        device=pick_device(device),
    )
