"""One worker of a distributed study: runs trials until the study-wide budget is met.

Any number of workers, on any number of machines, share one store. Each worker loops: fail
the stale trials of dead workers (their retries are enqueued with the same params), check the
budget (``budget.py``), ask for a trial, run the spec's objective with a heartbeat, tell the
result. SIGTERM or SIGINT stops the running trial at once: it is told FAIL, a retry with the
same params is enqueued, and the worker exits, so no trial is left RUNNING.
"""

from __future__ import annotations

import logging
import os
import random
import signal
import sys
import threading
import time
import warnings
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from types import FrameType
from typing import Any, TypeVar

import optuna
from optuna.trial import FrozenTrial, TrialState

from hpsearch._util import UNINTERRUPTED_CODE, quiet_experimental
from hpsearch.dashboard import FigureRefresher
from hpsearch.errors import HpsearchError
from hpsearch.objectives import TrialFailed, build_objective
from hpsearch.objectives.attrs import set_user_attrs
from hpsearch.objectives.failures import FAILURE_CLASS_ATTR
from hpsearch.runner import create_study, make_tracker, with_trial_timeout
from hpsearch.search_spaces import StudySpec, load_spec
from hpsearch.storage import MAX_RETRY, default_storage_url, is_transient_error
from hpsearch.storage.internals import storage_of, trial_id_of
from hpsearch.storage.retry import RetrySameParams
from hpsearch.storage.stale import (
    ORPHAN_REASON,
    fail_orphaned_trials,
    fail_stale_trials,
)
from hpsearch.tracking import describe_signal
from hpsearch.workers.budget import BudgetCounter, count_trials, release_trial

logger = logging.getLogger("hpsearch.workers")

Objective = Callable[[optuna.Trial], Any]  # returns a value or a list of values
Report = Callable[[str], None]
T = TypeVar("T")

POLL_S = 0.5  # how often a worker waiting on other workers' running trials looks again
STORAGE_PATIENCE_S = 120.0  # how long a worker retries a store that does not answer
MAX_CONSECUTIVE_ERRORS = 5  # unexpected errors in a row before the worker gives up
MAX_FAILURES_IN_A_ROW = 5  # trainer errors / out-of-memory failures in a row: the worker stops
REDELIVER_S = 0.05  # how soon a signal that could not stop the trial where it landed comes again
MAX_DEFER_S = 2.0  # how long a stop waits for such a call (a store whose server is down: not more)
# A signal that lands in a store's code (a trial reporting, a pruner reading other trials) or in
# a function marked ``uninterrupted`` (a tracking write being queued or sent to the MLflow
# writer) waits until that call is over, for at most MAX_DEFER_S: an exception raised inside
# SQLAlchemy or a database driver makes it invalidate the connection and log a traceback of its
# own, one raised mid-send would tear the line the writer process reads; the trial stops all the
# same, a few milliseconds later.
STORE_MODULES = (
    "sqlalchemy",
    "sqlite3",
    "psycopg",
    "psycopg2",
    "redis",
    "grpc",
    "alembic",
    "optuna.storages",
    "hpsearch.storage",
)
STREAK_CLASSES = ("trainer_error", "out_of_memory")  # failures that say the code or device is bad
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class WorkerError(HpsearchError):
    """A worker gave up: its trials keep failing with unexpected errors, or the trainer fails
    (or runs out of memory) trial after trial."""


class StopRequested(BaseException):
    """Raised in a running trial when the worker gets SIGTERM or SIGINT.

    A BaseException, so that the trial code (which turns every Exception into a FAIL outcome)
    does not swallow it."""


@dataclass
class WorkerResult:
    """What one worker did, and why it stopped."""

    study_name: str
    budget: int | None
    stopped_because: str = ""
    signal: int | None = None
    states: Counter[str] = field(default_factory=Counter)
    study_finished: int = 0

    @property
    def trials_run(self) -> int:
        return sum(self.states.values())

    def summary(self) -> str:
        states = ", ".join(f"{n} {state}" for state, n in sorted(self.states.items())) or "none"
        budget = f"/{self.budget}" if self.budget is not None else ""
        return (
            f"worker stopped ({self.stopped_because}): ran {self.trials_run} trials ({states}); "
            f"study {self.study_name!r} has {self.study_finished}{budget} finished"
        )


class Worker:
    """Runs ``objective`` on trials of ``study`` until ``budget`` trials of the study have
    finished (None: until stopped), this worker has run ``max_trials`` trials, ``timeout``
    seconds have passed, or a signal arrives. ``max_failures_in_a_row`` trials in a row that
    fail with a trainer error or out of memory stop it with a ``WorkerError``."""

    def __init__(
        self,
        study: optuna.Study,
        objective: Objective,
        *,
        budget: int | None = None,
        timeout: float | None = None,
        report: Report | None = None,
        poll_s: float = POLL_S,
        max_trials: int | None = None,
        reseed: bool = True,
        max_failures_in_a_row: int = MAX_FAILURES_IN_A_ROW,
    ) -> None:
        self.study = study
        self.objective = objective
        self.budget = budget
        self.timeout = timeout
        self.report: Report = report or logger.info
        self.poll_s = poll_s
        self.result = WorkerResult(study.study_name, budget)
        self._counter = BudgetCounter(study)
        self._signal: int | None = None
        self._done: str | None = None  # why the loop ends, once it must
        self._in_trial = False  # a signal now raises StopRequested (once per delivery)
        self._evaluating = False  # the objective is running
        self._previous_unraisable: Callable[[Any], None] = sys.unraisablehook
        self._redelivery: threading.Timer | None = None
        self._deferred_since: float | None = None  # when a stop first waited for a call to end
        self._errors_in_a_row = 0
        self._waiting = False
        self.max_trials = max_trials
        self.reseed = reseed
        self.max_failures_in_a_row = max_failures_in_a_row
        self._failures_in_a_row: list[str] = []  # reasons of the current streak
        self._last_class: str | None = None

    # -- the loop -------------------------------------------------------------------------------

    def run(self) -> WorkerResult:
        """Run trials until the budget is met, the timeout passes or a signal arrives."""
        started = time.monotonic()
        if self.reseed:  # workers built from one seeded spec must not sample alike
            self.study.sampler.reseed_rng()
        with self._stop_on_signals():
            while not self._should_stop(started):
                self._fail_stale_trials()
                if not self._budget_allows_a_trial():
                    continue
                trial = self._claim_trial()
                if trial is not None:
                    self._run_trial(trial)
        self.result.study_finished = self._storage_call(count_trials, self.study).finished
        return self.result

    def _should_stop(self, started: float) -> bool:
        if self._done is not None:
            self.result.stopped_because = self._done
            return True
        if self._signal is not None:
            self.result.signal = self._signal
            self.result.stopped_because = f"stopped by {signal.Signals(self._signal).name}"
            return True
        if self.timeout is not None and time.monotonic() - started >= self.timeout:
            self.result.stopped_because = "timeout"
            return True
        if self.max_trials is not None and self.result.trials_run >= self.max_trials:
            self.result.stopped_because = f"ran {self.result.trials_run} trials"
            return True
        if len(self._failures_in_a_row) >= self.max_failures_in_a_row:
            raise WorkerError(self._streak_message())
        if self._errors_in_a_row >= MAX_CONSECUTIVE_ERRORS:
            raise WorkerError(
                f"{self._errors_in_a_row} trials in a row failed with unexpected errors "
                "(see the log above); fix the cause and start the worker again"
            )
        return False

    def _streak_message(self) -> str:
        count, last = len(self._failures_in_a_row), self._failures_in_a_row[-1]
        if self._last_class == "out_of_memory":
            return (
                f"{count} trials in a row ran out of memory (last: {last}); shrink the space "
                "(model or batch size) or use a device with more memory, then start again"
            )
        return (
            f"{count} trials in a row failed in the trainer (last: {last}); the trainer's "
            "code is broken, not the trials: fix it and start again"
        )

    def _count_failure(self, failure_class: str | None, reason: str) -> None:
        """Extend the streak of trainer errors / out-of-memory failures, or end it."""
        if failure_class in STREAK_CLASSES:
            self._failures_in_a_row.append(reason)
            self._last_class = failure_class
        else:
            self._failures_in_a_row.clear()

    def _budget_allows_a_trial(self) -> bool:
        """True when a new trial fits the budget; else waits a little (False), or marks the
        budget as met (the loop then stops)."""
        if self.budget is None:
            return True
        count = self._storage_call(self._counter.count)
        if count.finished >= self.budget:
            self._done = "budget met"
            return False
        if count.claimed >= self.budget:
            if not self._waiting:
                self.report(
                    f"budget {self.budget}: {count.finished} finished, {count.running} running; "
                    "waiting for running trials of other workers"
                )
            self._waiting = True
            time.sleep(self.poll_s)
            return False
        self._waiting = False
        return True

    def _claim_trial(self) -> optuna.Trial | None:
        """A new (or queued) trial that fits the budget; None if it did not fit and was put
        back in the queue, or a signal came in the meantime."""
        with warnings.catch_warnings():  # "heartbeat is supposed to be used with optimize"
            warnings.simplefilter("ignore", UserWarning)
            trial = self._storage_call(self.study.ask)
        over_budget = (
            self.budget is not None
            and self._storage_call(self._counter.count).claimed > self.budget
        )
        if over_budget or self._signal is not None:
            self._storage_call(release_trial, self.study, trial)
            if over_budget:  # another worker claimed the last slot at the same moment
                time.sleep(random.uniform(0.1, 2.0) * self.poll_s)
            return None
        return trial

    # -- one trial ------------------------------------------------------------------------------

    def _run_trial(self, trial: optuna.Trial) -> None:
        started = time.monotonic()
        with _Heartbeat(self.study, trial):
            state, values, note = self._evaluate(trial)
        if self._signal is not None and state == TrialState.FAIL:
            note = f"worker stopped by {signal.Signals(self._signal).name}"
            stopped = {"fail_reason": note, FAILURE_CLASS_ATTR: "infrastructure"}
            self._storage_call(set_user_attrs, trial, stopped)
        frozen = self._tell(trial, state, values)
        self.result.states[frozen.state.name.lower()] += 1
        shown = _format_values(frozen.values) if frozen.values else note
        self.report(
            f"trial {trial.number} {frozen.state.name.lower()}: {shown} "
            f"({time.monotonic() - started:.1f} s)"
        )
        if self._signal is not None and frozen.state == TrialState.FAIL:
            self._enqueue_retry(frozen)

    def _evaluate(self, trial: optuna.Trial) -> tuple[TrialState, Any, str]:
        """(state, values, note) of one call of the objective; a signal ends it as FAIL."""
        try:
            self._in_trial = self._evaluating = True
            try:
                if self._signal is not None:
                    raise StopRequested()
                values = self.objective(trial)
            finally:
                self._in_trial = self._evaluating = False
        except StopRequested:
            return TrialState.FAIL, None, "stopped"
        except optuna.TrialPruned as pruned:
            self._errors_in_a_row = 0
            self._count_failure(None, "")
            return TrialState.PRUNED, None, str(pruned)
        except TrialFailed as failed:
            self._errors_in_a_row = 0
            self._count_failure(failed.failure_class, str(failed))
            return TrialState.FAIL, None, str(failed)
        except Exception as error:  # the next trial may well work: log, count, go on
            self._errors_in_a_row += 1
            logger.warning("trial %d failed: %r", trial.number, error, exc_info=True)
            return TrialState.FAIL, None, f"{type(error).__name__}: {error}"
        self._errors_in_a_row = 0
        self._count_failure(None, "")
        return TrialState.COMPLETE, values, ""

    def _tell(self, trial: optuna.Trial, state: TrialState, values: Any) -> FrozenTrial:
        try:
            told = self._storage_call(
                self.study.tell,
                trial,
                values if state == TrialState.COMPLETE else None,
                state=state,
                skip_if_finished=True,
            )
        except ValueError as error:  # "Cannot tell a WAITING trial."
            if TrialState.WAITING.name not in str(error):
                raise
            # Another worker put it back in the queue (a claim race the store did not
            # serialise): its next claimant runs it again, this result is dropped.
            logger.warning(
                "trial %d was put back in the queue by another worker; its "
                "result here is dropped and it runs again",
                trial.number,
            )
            return self._storage_call(storage_of(self.study).get_trial, trial_id_of(trial))
        if told.state != state:  # NaN values, or failed as stale by another worker
            logger.warning("trial %d ended %s, not %s", trial.number, told.state.name, state.name)
        return told

    def _enqueue_retry(self, trial: FrozenTrial) -> None:
        """Queue the interrupted trial again with the same params."""
        self._storage_call(retry_callback(self.study), self.study, trial)

    def _fail_stale_trials(self) -> None:
        """Fail the RUNNING trials whose heartbeat stopped (dead workers), or that never
        recorded one within the grace period, and enqueue their retries; a no-op on stores
        without heartbeats."""
        retry = retry_callback(self.study)
        self._storage_call(fail_stale_trials, self.study, retry)
        orphans = self._storage_call(fail_orphaned_trials, self.study, retry)
        if orphans:
            self.report(f"failed and re-queued trial(s) {orphans}: {ORPHAN_REASON}")

    # -- plumbing -------------------------------------------------------------------------------

    def _storage_call(self, function: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """``function(*args, **kwargs)``, retried while the store is unreachable."""
        deadline = time.monotonic() + STORAGE_PATIENCE_S
        delay = 0.5
        while True:
            try:
                return function(*args, **kwargs)
            except Exception as error:
                if not is_transient_error(error) or time.monotonic() >= deadline:
                    raise
                logger.warning("store unreachable (%s); retrying in %.1f s", error, delay)
                time.sleep(delay)
                delay = min(2 * delay, 10.0)

    @contextmanager
    def _stop_on_signals(self) -> Iterator[None]:
        """SIGTERM / SIGINT stop the worker (and its running trial); main thread only."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        previous = {signum: signal.signal(signum, self._on_signal) for signum in STOP_SIGNALS}
        previous_hook = self._previous_unraisable = sys.unraisablehook
        sys.unraisablehook = self._on_unraisable
        try:
            yield
        finally:
            sys.unraisablehook = previous_hook
            self._cancel_redelivery()
            for signum, handler in previous.items():
                signal.signal(signum, handler)

    def _on_unraisable(self, unraisable: Any) -> None:
        """A StopRequested raised while Python ran a callback (a weakref callback of the import
        system, a ``__del__``) is swallowed there, and the trial would go on: say nothing, and
        deliver the signal again so that it lands in the trial's own code."""
        if not isinstance(unraisable.exc_value, StopRequested):
            self._previous_unraisable(unraisable)
            return
        if self._evaluating and self._signal is not None:
            self._in_trial = True
            self._redeliver_soon()

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        if self._signal is None:
            self._signal = signum
        if not self._in_trial:
            return
        if self._deferred_since is None:
            self._deferred_since = time.monotonic()
        waited = time.monotonic() - self._deferred_since
        if waited < MAX_DEFER_S and in_uninterrupted_code(frame):  # stop once the call is over
            self._redeliver_soon()
            return
        self._in_trial = False
        raise StopRequested()

    def _redeliver_soon(self) -> None:
        """Sends the first signal again in ``REDELIVER_S``, while the objective still runs."""
        if self._redelivery is not None and self._redelivery.is_alive():
            return
        self._redelivery = threading.Timer(REDELIVER_S, self._redeliver)
        self._redelivery.daemon = True
        self._redelivery.start()

    def _redeliver(self) -> None:
        if self._evaluating and self._signal is not None:
            os.kill(os.getpid(), self._signal)

    def _cancel_redelivery(self) -> None:
        """No signal comes again once the worker's handlers are gone (it would hit Python's
        own handler: a KeyboardInterrupt traceback at exit)."""
        if self._redelivery is not None:
            self._redelivery.cancel()
            self._redelivery.join()
            self._redelivery = None


def in_uninterrupted_code(frame: FrameType | None) -> bool:
    """Whether ``frame`` or a frame that called it runs a store's or a database driver's code,
    or a function marked ``uninterrupted``."""
    while frame is not None:
        if frame.f_code in UNINTERRUPTED_CODE:
            return True
        module = frame.f_globals.get("__name__")
        if isinstance(module, str) and any(
            module == name or module.startswith(f"{name}.") for name in STORE_MODULES
        ):
            return True
        frame = frame.f_back
    return False


class _Heartbeat:
    """Records a trial's heartbeat now and then every interval in a thread, on stores that have
    heartbeats; a store error is logged, never raised (the worker's next call will tell)."""

    def __init__(self, study: optuna.Study, trial: optuna.Trial) -> None:
        storage: Any = storage_of(study)
        getter = getattr(storage, "get_heartbeat_interval", None)
        self.interval: int | None = getter() if getter else None
        self.storage = storage
        self.trial_id = trial_id_of(trial)
        self.stop = threading.Event()
        self.thread: threading.Thread | None = None

    def __enter__(self) -> _Heartbeat:
        if self.interval is not None:
            self._beat()
            self.thread = threading.Thread(target=self._loop, name="heartbeat", daemon=True)
            self.thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop.set()
        if self.thread is not None:
            self.thread.join()

    def _loop(self) -> None:
        assert self.interval is not None
        while not self.stop.wait(self.interval):
            self._beat()

    def _beat(self) -> None:
        try:
            self.storage.record_heartbeat(self.trial_id)
        except Exception as error:
            logger.warning(
                "could not record the heartbeat of trial id %d: %s", self.trial_id, error
            )


def retry_callback(study: optuna.Study) -> Callable[[optuna.Study, FrozenTrial], None]:
    """Re-queues a failed trial with the same params (WAITING, popped by the next ask): the
    store's stale-trial callback, so that every retry counts towards its ``max_retry``, else
    ``RetrySameParams`` (Optuna's, less the failed run's user attrs) with hpsearch's limit."""
    storage: Any = storage_of(study)
    getter = getattr(storage, "get_heartbeat_stale_trial_callback", None)
    callback = getter() if getter else None
    with quiet_experimental():
        retry = callback or RetrySameParams(max_retry=MAX_RETRY)

    def call(study: optuna.Study, trial: FrozenTrial) -> None:
        with quiet_experimental():
            retry(study, trial)

    return call


def _format_values(values: Sequence[float]) -> str:
    return "[" + ", ".join(f"{value:.4g}" for value in values) + "]"


def ensure_study(
    spec: StudySpec, storage: str | None, study_name: str | None, attempts: int = 5
) -> optuna.Study:
    """The spec's study, created if missing. Workers that start together race to create it
    (the loser of Optuna's create-study race, or of setting its attributes, gets an error from
    the store): each attempt after the first loads what the winner created."""
    for attempt in range(1, attempts + 1):
        try:
            return create_study(spec, storage, study_name)
        except HpsearchError:
            raise
        except Exception as error:
            if attempt == attempts:
                raise
            logger.warning("creating study failed (%s); trying again", error)
            time.sleep(random.uniform(0.2, 1.0) * attempt)
    raise AssertionError("unreachable")


def run_worker(
    spec: str | StudySpec,
    *,
    storage: str | None = None,
    n_trials: int | None = None,
    study_name: str | None = None,
    device: str | None = None,
    track: bool = True,
    tracking_uri: str | None = None,
    timeout: float | None = None,
    trial_timeout: float | None = None,
    report: Report | None = None,
) -> WorkerResult:
    """Run trials of a spec's study until ``n_trials`` trials of the study have finished across
    all its workers (None: until stopped or ``timeout``); the study is created if missing.
    ``trial_timeout`` overrides the spec's per-trial time limit."""
    spec = with_trial_timeout(load_spec(spec), trial_timeout)
    study = ensure_study(spec, storage or default_storage_url(), study_name)
    tracker = make_tracker(track, tracking_uri)
    objective = build_objective(spec, tracker, study_name=study.study_name, device=device)
    figures = FigureRefresher(spec)  # the dashboard's plots, every few seconds at most
    worker = Worker(
        study, figures.before_each(objective), budget=n_trials, timeout=timeout, report=report
    )
    with tracker.tracking(study, spec) as session:
        try:
            result = worker.run()
        finally:
            figures.flush(study)
        if result.signal is not None:
            session.interrupted = f"worker stopped by {describe_signal(result.signal)}"
    return result
