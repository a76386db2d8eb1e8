"""A stop signal that lands while Python runs a callback (a ``__del__``, a weakref callback of
the import system) still stops the trial, and prints no "Exception ignored" traceback.

Seen once in the signal tests: SIGTERM during an import inside a trial raised the worker's
StopRequested in importlib's weakref callback, where Python swallows and prints it."""

from __future__ import annotations

import signal
import time
from typing import Any

import optuna
import pytest
import sqlalchemy
from optuna.trial import FrozenTrial, TrialState

from hpsearch._util import uninterrupted
from hpsearch.storage import open_storage
from hpsearch.workers import Worker


def _run_a_minute() -> None:
    """Python code that runs for 60 s unless a stop cuts it short."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        time.sleep(0.01)


def _stopped_trial(study: optuna.Study, objective: Any, signum: int) -> FrozenTrial:
    """Run a worker on ``study`` until ``signum`` stops it, well before the trial's minute is
    over; the stopped trial, failed (its retry waits in the queue)."""
    started = time.monotonic()
    result = Worker(study, objective, budget=3, poll_s=0.05).run()
    assert result.signal == signum
    assert time.monotonic() - started < 50  # stopped, not run to its end (60 s)
    trial = study.get_trials()[0]
    assert trial.state == TrialState.FAIL
    return trial


class _SignalsOnCollection:
    def __del__(self) -> None:
        signal.raise_signal(signal.SIGTERM)  # the handler runs here, inside __del__


def _objective_hit_inside_a_callback(trial: optuna.Trial) -> float:
    trial.suggest_float("x", 0.0, 1.0)
    doomed: Any = _SignalsOnCollection()
    del doomed  # the stop is raised in __del__, where Python swallows it
    _run_a_minute()  # a long trial: the stop must still reach it
    return 1.0


@pytest.mark.parametrize("repeat", range(3))
def test_a_signal_swallowed_by_a_callback_still_stops_the_trial(
    sqlite_url: str, unique_name: str, capfd: pytest.CaptureFixture[str], repeat: int
) -> None:
    study = optuna.create_study(study_name=unique_name, storage=open_storage(sqlite_url))
    _stopped_trial(study, _objective_hit_inside_a_callback, signal.SIGTERM)
    assert not study.get_trials(states=(TrialState.RUNNING,))
    assert "Exception ignored" not in capfd.readouterr().err


class _SignalInsideTheStore:
    """Raises a stop signal once inside SQLAlchemy's code, as the trial writes a user attr:
    where the signal tests saw SQLAlchemy invalidate the connection and log a traceback."""

    def __init__(self) -> None:
        self.armed = False

    def __call__(self, *_args: Any) -> None:
        if self.armed:
            self.armed = False
            signal.raise_signal(signal.SIGINT)  # the handler runs here, in a store's frame


_IN_THE_STORE = _SignalInsideTheStore()


def _objective_hit_inside_a_store_call(trial: optuna.Trial) -> float:
    trial.suggest_float("x", 0.0, 1.0)
    _IN_THE_STORE.armed = True
    trial.set_user_attr("written", True)  # the signal lands in this call, which must complete
    _run_a_minute()  # the stop comes again here, in the trial's own code
    return 1.0


@pytest.mark.parametrize("repeat", range(3))
def test_a_signal_inside_a_store_call_stops_the_trial_once_the_call_is_over(
    sqlite_url: str, unique_name: str, capfd: pytest.CaptureFixture[str], repeat: int
) -> None:
    study = optuna.create_study(study_name=unique_name, storage=open_storage(sqlite_url))
    sqlalchemy.event.listen(sqlalchemy.engine.Engine, "before_cursor_execute", _IN_THE_STORE)
    try:
        trial = _stopped_trial(study, _objective_hit_inside_a_store_call, signal.SIGINT)
    finally:
        sqlalchemy.event.remove(sqlalchemy.engine.Engine, "before_cursor_execute", _IN_THE_STORE)
    assert trial.user_attrs.get("written") is True  # the store call was not cut short
    assert "Traceback" not in capfd.readouterr().err


CALLS_COMPLETED: list[str] = []


@uninterrupted
def _queue_a_write(name: str) -> None:
    signal.raise_signal(signal.SIGINT)  # lands in a call marked uninterrupted
    CALLS_COMPLETED.append(name)


@uninterrupted
def _a_store_call_that_never_ends() -> None:
    signal.raise_signal(signal.SIGINT)
    _run_a_minute()
    CALLS_COMPLETED.append("never")


def _objective_with_uninterrupted_calls(trial: optuna.Trial) -> float:
    trial.suggest_float("x", 0.0, 1.0)
    if trial.study.user_attrs.get("stuck"):
        _a_store_call_that_never_ends()
    _queue_a_write(f"trial-{trial.number}")
    _run_a_minute()
    return 1.0


@pytest.mark.parametrize("stuck", [False, True], ids=["short-call", "stuck-call"])
def test_a_call_marked_uninterrupted_ends_before_the_stop_but_waits_at_most_a_while(
    sqlite_url: str, unique_name: str, capfd: pytest.CaptureFixture[str], stuck: bool
) -> None:
    study = optuna.create_study(study_name=unique_name, storage=open_storage(sqlite_url))
    study.set_user_attr("stuck", stuck)
    CALLS_COMPLETED.clear()
    _stopped_trial(study, _objective_with_uninterrupted_calls, signal.SIGINT)
    # a short call ends before the stop; one stuck in there is cut after MAX_DEFER_S
    assert ([] if stuck else ["trial-0"]) == CALLS_COMPLETED
    assert "Traceback" not in capfd.readouterr().err
