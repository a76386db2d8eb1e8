"""Follow a group of ``hpsearch worker`` tasks on a cluster engine until the study's budget is met.

Every backend (Slurm, Ray) starts the same ``hpsearch worker`` loop; what differs is how its
tasks are started, counted and stopped, which a backend gives as a ``Tasks`` object. The loop
here prints a progress line when it changes (finished / budget, trials running, tasks running /
pending) and returns when:

- the budget is met: pending tasks are cancelled (they would only start to find it met), the
  running ones exit by themselves (each worker stops at the budget), and are cancelled if they
  have not after ``drain_s``; exit code 0;
- every task has ended before the budget was met (the tasks failed, or ran out of time): 1;
- SIGINT / SIGTERM: every task is cancelled (a worker that gets SIGTERM fails its running trial
  and queues it again with the same params); once none is left, the RUNNING trials that the
  tasks still own (a task killed before it could clean up) are failed and queued again here, so
  no trial is left RUNNING; 128 + the signal.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import optuna
from optuna.trial import TrialState

from hpsearch.storage.internals import frozen_trial_id
from hpsearch.storage.stale import fail_and_retry
from hpsearch.workers.budget import count_trials
from hpsearch.workers.launcher import _SignalScope
from hpsearch.workers.worker import retry_callback

POLL_S = 2.0
DRAIN_S = 120.0  # how long tasks get to exit after the budget is met, or after a cancel


@dataclass(frozen=True)
class TaskCount:
    """Tasks of a launch as the engine has them now."""

    running: int
    pending: int

    @property
    def alive(self) -> int:
        return self.running + self.pending


class Tasks(Protocol):
    """The workers of one launch on one engine."""

    def count(self) -> TaskCount | None:
        """Running and pending tasks; None when the engine did not answer this time."""

    def cancel(self, pending_only: bool = False) -> None:
        """Stop the tasks (workers get SIGTERM first), or only those not started yet."""

    def owns(self, worker: dict[str, Any]) -> bool:
        """Whether a trial's ``worker`` attr names one of these tasks."""


def follow(
    study: optuna.Study,
    tasks: Tasks,
    budget: int | None,
    report: Callable[[str], None],
    *,
    poll_s: float = POLL_S,
    drain_s: float = DRAIN_S,
) -> int:
    """Follow ``tasks`` until the budget is met, they all end, or a signal; the exit code."""
    stopped: list[int] = []
    with _SignalScope(lambda signum, _frame: stopped.append(signum)):
        code = _follow(study, tasks, budget, report, poll_s, drain_s, stopped)
        if code is not None:
            return code
        report(f"stopping: cancelling the tasks (Ctrl-C again is ignored; at most {drain_s:.0f} s)")
        tasks.cancel()
        _wait_until_gone(tasks, drain_s, poll_s)
    failed = fail_trials_of(study, tasks.owns)
    if failed:
        report(f"failed and re-queued trial(s) {failed} left RUNNING by cancelled tasks")
    report(f"stopped by {signal.Signals(stopped[0]).name}: {_finished_line(study, budget)}")
    return 128 + stopped[0]


def _follow(
    study: optuna.Study,
    tasks: Tasks,
    budget: int | None,
    report: Callable[[str], None],
    poll_s: float,
    drain_s: float,
    stopped: list[int],
) -> int | None:
    """The progress loop: an exit code, or None when a signal came."""
    last_line = ""
    while not stopped:
        trials = count_trials(study)
        count = tasks.count()
        if count is not None:
            line = progress_line(trials.finished, trials.running, budget, count)
            if line != last_line:
                report(line)
                last_line = line
            if budget is not None and trials.finished >= budget:
                return _drain(tasks, report, drain_s, poll_s, stopped)
            if count.alive == 0:
                report(f"every task has ended: {_finished_line(study, budget)}")
                return 0 if budget is None else 1
        _sleep(poll_s, stopped)
    return None


def _drain(
    tasks: Tasks, report: Callable[[str], None], drain_s: float, poll_s: float, stopped: list[int]
) -> int | None:
    """The budget is met: cancel what has not started, let the running workers exit."""
    tasks.cancel(pending_only=True)
    deadline = time.monotonic() + drain_s
    while not stopped and time.monotonic() < deadline:
        count = tasks.count()
        if count is not None and count.alive == 0:
            report("budget met; every task has exited")
            return 0
        _sleep(poll_s, stopped)
    if stopped:
        return None
    report(f"budget met; cancelling the tasks still alive after {drain_s:.0f} s")
    tasks.cancel()
    return 0


def _wait_until_gone(tasks: Tasks, timeout: float, poll_s: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        count = tasks.count()
        if count is not None and count.alive == 0:
            return
        time.sleep(min(poll_s, 0.5))


def _sleep(seconds: float, stopped: list[int]) -> None:
    deadline = time.monotonic() + seconds
    while not stopped and time.monotonic() < deadline:
        time.sleep(min(0.1, seconds))


def progress_line(finished: int, running: int, budget: int | None, tasks: TaskCount) -> str:
    """``finished 12/40, 4 trials running; tasks: 4 running, 2 pending``."""
    of = f"/{budget}" if budget is not None else ""
    return (
        f"finished {finished}{of}, {running} trial(s) running; "
        f"tasks: {tasks.running} running, {tasks.pending} pending"
    )


def _finished_line(study: optuna.Study, budget: int | None) -> str:
    trials = count_trials(study)
    of = f"/{budget}" if budget is not None else ""
    return f"study {study.study_name!r} has {trials.finished}{of} finished"


def fail_trials_of(study: optuna.Study, owns: Callable[[dict[str, Any]], bool]) -> list[int]:
    """Fail the RUNNING trials whose ``worker`` attr ``owns`` accepts, and queue each again
    with the same params; their numbers."""
    running = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
    ids = [frozen_trial_id(study, t) for t in running if owns(t.user_attrs.get("worker") or {})]
    return fail_and_retry(study, ids, "its task was cancelled", retry_callback(study))
