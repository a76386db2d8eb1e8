"""SIGINT and SIGTERM on ``hpsearch run``, ``worker`` and ``launch`` at any moment (starting up,
mid-trial, between trials): nothing is left RUNNING, the interrupted trial is failed with the
reason and queued again, at most one line on stderr and no traceback, exit 130 / 143.

Each case runs ``REPEATS`` times with the signal at a random moment (seeded): a race that passes
once is not fixed. ``run`` and ``worker`` are real processes forked from a server that imported
hpsearch once (``hpsearch.cli.main`` with the command line, stdout and stderr to files), so a
repeat costs a fraction of a second; ``launch`` is ``python -m hpsearch launch`` with real worker
processes.
"""

from __future__ import annotations

import multiprocessing
import os
import random
import re
import signal
import sqlite3
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
import pytest
import yaml
from optuna.trial import TrialState
from signal_child import run_command
from toy_spec import toy_spec

from hpsearch.runner import create_study
from hpsearch.search_spaces import load_spec
from hpsearch.storage import open_storage

REPEATS = 10
BATCH = 5  # processes started and signalled together
TESTS_DIR = Path(__file__).parent.parent
# python -m hpsearch, once the interpreter is up (a signal during Python's own start-up, before
# any of hpsearch runs, is no part of the test); the clock starts at the file "ready"
READY_THEN_HPSEARCH = (
    "import faulthandler, runpy, signal, sys; import hpsearch; open('ready', 'w').close(); "
    "faulthandler.register(signal.SIGUSR1, all_threads=True); sys.argv[0] = 'hpsearch'; "
    "runpy.run_module('hpsearch', run_name='__main__', alter_sys=True)"
)
SIGNALS = {"SIGINT": signal.SIGINT, "SIGTERM": signal.SIGTERM}


_CONTEXT = multiprocessing.get_context("forkserver")
_CONTEXT.set_forkserver_preload(
    ["hpsearch.cli", "hpsearch.runner", "hpsearch.workers", "signal_child", "toy_trainer"]
)


@dataclass
class Attempt:
    folder: Path
    signum: int
    delay: float
    after_a_trial: bool  # the clock starts once a trial has finished, else at start-up
    process: Any = None  # a multiprocessing Process or a Popen
    started: float | None = None  # when the command began (``ready``)
    signalled: bool = False

    @property
    def store(self) -> str:
        return f"sqlite:///{self.folder / 'store.db'}"

    def code(self) -> int | None:
        if isinstance(self.process, subprocess.Popen):
            return self.process.poll()
        return self.process.exitcode

    def output(self, name: str) -> str:
        path = self.folder / name
        return path.read_text(errors="replace") if path.exists() else ""


def _spec(folder: Path) -> Path:
    path = folder / "toy.yaml"
    spec = toy_spec(epochs=3, fixed={"sleep_s": 0.02}, sampler={"name": "random", "seed": 0})
    path.write_text(yaml.safe_dump(spec))
    return path


def _start(command: str, attempt: Attempt, template: Path) -> None:
    spec = _spec(attempt.folder)
    with sqlite3.connect(template) as source, sqlite3.connect(attempt.folder / "store.db") as copy:
        source.backup(copy)  # the study exists: no store to create in each attempt
    common = [str(spec), "--storage", attempt.store, "--no-mlflow"]
    environment = {"PYTHONPATH": str(TESTS_DIR), "PYTHONUNBUFFERED": "1"}
    if command == "launch":
        argv = ["launch", *common, "--cpu-workers", "1", "--trials", "1000", "--stop-timeout", "60"]
        attempt.process = subprocess.Popen(
            [sys.executable, "-c", READY_THEN_HPSEARCH, *argv],
            cwd=attempt.folder,
            env={**os.environ, **environment},
            stdout=open(attempt.folder / "stdout", "w"),  # noqa: SIM115
            stderr=open(attempt.folder / "stderr", "w"),  # noqa: SIM115
        )

    else:
        argv = [command, *common, "--trials", "1000"]
        attempt.process = _CONTEXT.Process(
            target=run_command, args=(argv, str(attempt.folder), environment)
        )
        attempt.process.start()


def _clock_starts(attempt: Attempt) -> bool:
    if not attempt.after_a_trial:
        return (attempt.folder / "ready").exists()
    return re.search(r"trial \d+ (complete|pruned|fail)", attempt.output("stdout")) is not None


def _pid(attempt: Attempt) -> int:
    return int(attempt.process.pid)


def _run_batch(
    command: str, attempts: list[Attempt], template: Path, deadline_s: float = 90.0
) -> None:
    """Start the attempts, signal each at its moment, wait until each has exited: at most
    ``deadline_s`` after its signal (scaled for a loaded machine: launch stops its workers)."""
    for attempt in attempts:
        _start(command, attempt, template)
    last_moment = time.monotonic() + 4 * deadline_s  # a start-up that never reaches its moment
    signalled_at: dict[int, float] = {}
    while time.monotonic() < last_moment:
        now, pending, late = time.monotonic(), False, False
        for attempt in attempts:
            if not attempt.signalled:
                pending = True
                if attempt.started is None and _clock_starts(attempt):
                    attempt.started = now
                if attempt.started is not None and now - attempt.started >= attempt.delay:
                    os.kill(_pid(attempt), attempt.signum)
                    attempt.signalled = True
                    signalled_at[id(attempt)] = now
            elif attempt.code() is None:
                pending = True
                late = late or now - signalled_at[id(attempt)] > deadline_s
        if not pending:
            return
        if late:
            break
        time.sleep(0.01)
    stuck = [attempt for attempt in attempts if attempt.code() is None]
    for attempt in stuck:
        os.kill(_pid(attempt), signal.SIGUSR1)  # faulthandler: the stacks to stderr
    time.sleep(1.0)
    for attempt in stuck:
        os.kill(_pid(attempt), signal.SIGKILL)
    details = "\n".join(
        f"--- {attempt.signum} after {attempt.delay:.2f} s\n{attempt.output('stdout')[-1500:]}"
        f"{attempt.output('stderr')[-6000:]}"
        for attempt in stuck
    )
    raise AssertionError(f"{command}: not stopped within {deadline_s} s of the signal\n{details}")


def _check(command: str, attempt: Attempt) -> list[str]:
    """What is wrong with one attempt (empty: nothing)."""
    name = signal.Signals(attempt.signum).name
    problems = []
    stdout, stderr = attempt.output("stdout"), attempt.output("stderr")
    where = f"{command} {name} after {attempt.delay:.2f} s"
    if attempt.code() != 128 + attempt.signum:
        problems.append(f"{where}: exit code {attempt.code()}\n{stdout[-2000:]}\n{stderr[-2000:]}")
    if "Traceback" in stdout + stderr:
        problems.append(f"{where}: a traceback\n{stderr[-3000:]}")
    lines = [line for line in stderr.splitlines() if line.strip()]
    if len(lines) > 1:
        problems.append(f"{where}: {len(lines)} stderr lines: {lines[:5]}")
    said = f"stopped by {name}" in stdout + stderr or "[launch] stopping" in stdout  # launch
    if not said:  # forwards SIGTERM to its workers whatever stopped it
        problems.append(f"{where}: no line says 'stopped by {name}'\n{stdout[-1000:]}{stderr}")
    problems += _check_store(where, attempt)
    return problems


def _check_store(where: str, attempt: Attempt) -> list[str]:
    if not (attempt.folder / "store.db").exists():
        return []  # stopped before the store was opened
    storage = open_storage(attempt.store, heartbeat=False)
    if not optuna.get_all_study_summaries(storage):
        return []
    trials = optuna.load_study(study_name="toy", storage=storage).get_trials(deepcopy=False)
    problems = []
    running = [t.number for t in trials if t.state == TrialState.RUNNING]
    if running:
        problems.append(f"{where}: trials {running} left RUNNING")
    retried = {t.system_attrs.get("failed_trial") for t in trials}
    for trial in trials:
        if trial.state != TrialState.FAIL:
            continue
        reason = trial.user_attrs.get("fail_reason", "")
        if not reason.startswith("worker stopped by SIG"):
            problems.append(f"{where}: trial {trial.number} failed with {reason!r}")
        if trial.user_attrs.get("failure_class") != "infrastructure":
            problems.append(f"{where}: trial {trial.number} has no failure_class infrastructure")
        if trial.number not in retried:
            problems.append(f"{where}: interrupted trial {trial.number} was not queued again")
    return problems


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A store with the toy study created (copied into each attempt's folder)."""
    folder = tmp_path_factory.mktemp("template")
    store = folder / "store.db"
    create_study(load_spec(str(_spec(folder))), f"sqlite:///{store}")
    return store


CASES = [(command, name) for command in ("run", "worker", "launch") for name in SIGNALS]


@pytest.mark.slow
@pytest.mark.parametrize(("command", "signal_name"), CASES)
def test_a_signal_at_any_moment_leaves_nothing_running(
    command: str, signal_name: str, tmp_path: Path, template: Path
) -> None:
    rng = random.Random(f"{command}-{signal_name}")
    attempts = []
    for index in range(REPEATS):
        folder = tmp_path / f"attempt-{index}"
        folder.mkdir()
        after_a_trial = index % 3 != 0  # 4 in 10 during start-up, the others among the trials
        delay = rng.uniform(0.0, 0.6) if after_a_trial else rng.uniform(0.05, 1.5)
        attempts.append(Attempt(folder, SIGNALS[signal_name], delay, after_a_trial))
    for start in range(0, REPEATS, BATCH):
        _run_batch(command, attempts[start : start + BATCH], template)
    problems = [problem for attempt in attempts for problem in _check(command, attempt)]
    assert not problems, "\n".join(problems)
    mid_trial = sum(any(_fail_reasons(attempt)) for attempt in attempts)
    print(f"{command} {signal_name}: {REPEATS} runs, {mid_trial} stopped a trial mid-way")


def _fail_reasons(attempt: Attempt) -> list[str]:
    if not (attempt.folder / "store.db").exists():
        return []
    storage = open_storage(attempt.store, heartbeat=False)
    if not optuna.get_all_study_summaries(storage):
        return []
    trials = optuna.load_study(study_name="toy", storage=storage).get_trials(deepcopy=False)
    return [t.user_attrs.get("fail_reason", "") for t in trials if t.state == TrialState.FAIL]


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_stop_swallowed_in_a_callback_is_sent_again(
    signum: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Python drops a KeyboardInterrupt / Terminated raised inside a weakref callback or a
    ``__del__`` ("Exception ignored"): ``main`` makes the process send itself the signal again
    (a worker signalled during start-up ran trials until killed, once in a suite run)."""
    from types import SimpleNamespace

    from hpsearch.cli import Terminated, deliver_swallowed_stops

    others: list[object] = []
    monkeypatch.setattr(sys, "unraisablehook", others.append)  # restored after the test
    deliver_swallowed_stops()
    deliver_swallowed_stops()  # once per process, whatever the number of calls
    received: list[int] = []
    previous = signal.signal(signum, lambda number, _frame: received.append(number))
    try:
        swallowed = KeyboardInterrupt() if signum == signal.SIGINT else Terminated()
        sys.unraisablehook(SimpleNamespace(exc_value=swallowed))
        deadline = time.monotonic() + 30.0  # polled: the timer thread may start late
        while not received and time.monotonic() < deadline:
            time.sleep(0.01)
        assert received == [signum]
        sys.unraisablehook(SimpleNamespace(exc_value=ValueError("other")))
        assert len(others) == 1  # anything else goes to the hook that was there before
    finally:
        signal.signal(signum, previous)
