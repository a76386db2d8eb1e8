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
from optuna.trial import TrialState

from hpsearch.storage import open_storage
from hpsearch.workers import Worker


class _SignalsOnCollection:
    def __del__(self) -> None:
        signal.raise_signal(signal.SIGTERM)  # the handler runs here, inside __del__


def _objective_hit_inside_a_callback(trial: optuna.Trial) -> float:
    trial.suggest_float("x", 0.0, 1.0)
    doomed: Any = _SignalsOnCollection()
    del doomed  # the stop is raised in __del__, where Python swallows it
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:  # a long trial: the stop must still reach it
        time.sleep(0.01)
    return 1.0


@pytest.mark.parametrize("repeat", range(3))
def test_a_signal_swallowed_by_a_callback_still_stops_the_trial(
    sqlite_url: str, unique_name: str, capfd: pytest.CaptureFixture[str], repeat: int
) -> None:
    study = optuna.create_study(study_name=unique_name, storage=open_storage(sqlite_url))
    worker = Worker(study, _objective_hit_inside_a_callback, budget=3, poll_s=0.05)
    started = time.monotonic()
    result = worker.run()
    assert result.signal == signal.SIGTERM
    assert time.monotonic() - started < 50  # stopped, not run to its end (60 s)
    trial = study.get_trials()[0]
    assert trial.state == TrialState.FAIL
    assert not study.get_trials(states=(TrialState.RUNNING,))
    assert "Exception ignored" not in capfd.readouterr().err
