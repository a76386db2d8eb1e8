"""Supervise one ``hpsearch worker`` process per GPU slot (or per CPU worker).

Each worker gets ``CUDA_VISIBLE_DEVICES`` set to its GPU (empty for CPU workers), the store URL
in ``HPSEARCH_STORAGE`` (never on a command line, where ``ps`` shows it), and its output lines
prefixed with its slot name. A worker that exits with an error is restarted after a short delay,
at most ``max_restarts`` times per slot; the RUNNING trial it left behind is failed and
re-queued at once (rather than after the heartbeat's grace period). SIGINT / SIGTERM send SIGTERM
to every worker, which fails and re-queues its running trial and exits; a worker still alive
after ``stop_timeout`` seconds (or at a second Ctrl-C) is killed and its trial failed here.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from types import FrameType
from typing import IO, Any

import optuna
from optuna.trial import TrialState

from hpsearch.errors import HpsearchError
from hpsearch.storage.internals import frozen_trial_id
from hpsearch.storage.stale import fail_and_retry
from hpsearch.workers.worker import retry_callback

RESTART_DELAY_S = 1.0


class LaunchError(HpsearchError):
    """The launch options do not describe any worker slot."""


@dataclass(frozen=True)
class Slot:
    """One worker process: its name (the log prefix) and its GPU (None: a CPU worker)."""

    name: str
    gpu: str | None = None

    def environment(self) -> dict[str, str]:
        return {"CUDA_VISIBLE_DEVICES": self.gpu or "", "HPSEARCH_WORKER_SLOT": self.name}


USAGE_EXIT_CODE = 2  # what hpsearch exits with on bad input (and a worker stopped by its trainer)


def plan_slots(gpus: str | None, per_gpu: int = 1, cpu_workers: int | None = None) -> list[Slot]:
    """Worker slots: ``per_gpu`` per GPU id in ``gpus`` ("0,1,3", or "all" for every visible
    GPU), or ``cpu_workers`` CPU workers; with neither, every visible GPU."""
    if gpus and cpu_workers:
        raise LaunchError("pass either --gpus or --cpu-workers, not both")
    if per_gpu < 1:
        raise LaunchError(f"--per-gpu must be >= 1, got {per_gpu}")
    if cpu_workers:
        return [Slot(f"cpu{index}") for index in range(cpu_workers)]
    ids = _gpu_ids(gpus or "all")
    return [
        Slot(f"gpu{gpu}.{copy}" if per_gpu > 1 else f"gpu{gpu}", gpu)
        for gpu in ids
        for copy in range(per_gpu)
    ]


def _gpu_ids(gpus: str) -> list[str]:
    if gpus.strip() == "all":
        import torch

        count = torch.cuda.device_count()
        if count == 0:
            raise LaunchError("no GPU is visible here; pass --cpu-workers K, or --gpus 0,1")
        return [str(index) for index in range(count)]
    ids = [part.strip() for part in gpus.split(",") if part.strip()]
    bad = [part for part in ids if not part.isdigit()]
    if not ids or bad:
        raise LaunchError(f"--gpus {gpus!r} is not a comma-separated list of GPU ids like 0,1,2")
    if len(set(ids)) != len(ids):
        raise LaunchError(f"--gpus {gpus!r} names a GPU twice; use --per-gpu for more workers")
    return ids


def worker_command(
    spec: str,
    *,
    n_trials: int | None,
    study_name: str,
    device: str,
    track: bool,
    timeout: float | None = None,
    quick: bool = False,
) -> list[str]:
    """The ``hpsearch worker`` command line of one slot (the store URL goes in the env)."""
    command = [sys.executable, "-m", "hpsearch", "worker", spec, "--study-name", study_name]
    command += ["--device", device]
    if n_trials is not None:
        command += ["--trials", str(n_trials)]
    if timeout is not None:
        command += ["--timeout", str(timeout)]
    if not track:
        command.append("--no-mlflow")
    if quick:
        command.append("--quick")
    return command


@dataclass
class _Process:
    slot: Slot
    popen: subprocess.Popen[str] | None = None
    restarts: int = 0
    restart_at: float | None = None
    done: bool = False
    pump: threading.Thread | None = None


class Launcher:
    """Starts one worker per slot and supervises them until all have exited.

    ``command(slot)`` gives a slot's argv; ``environment`` is added to this process's own. A
    worker's k-th restart waits ``k * restart_delay`` seconds.
    ``on_dead_worker(pids)`` is called with the pids of workers that died without cleaning up
    (crashed or killed), to fail the trials they left RUNNING."""

    def __init__(
        self,
        slots: Sequence[Slot],
        command: Callable[[Slot], list[str]],
        *,
        environment: dict[str, str] | None = None,
        max_restarts: int = 3,
        stop_timeout: float = 30.0,
        restart_delay: float = RESTART_DELAY_S,
        out: IO[str] | None = None,
        on_dead_worker: Callable[[list[int]], None] | None = None,
    ) -> None:
        self.processes = [_Process(slot) for slot in slots]
        self.command = command
        self.environment = environment or {}
        self.max_restarts = max_restarts
        self.stop_timeout = stop_timeout
        self.restart_delay = restart_delay
        self.out = out or sys.stdout
        self.on_dead_worker = on_dead_worker
        self._lock = threading.Lock()
        self._signal: int | None = None
        self._force = False
        self._stop_deadline: float | None = None
        self._gave_up: list[str] = []

    def run(self) -> int:
        """Run until every worker has exited: 0 when all exited cleanly, 128 + the signal when
        stopped by SIGINT / SIGTERM, 1 when a slot gave up after ``max_restarts`` restarts."""
        with self._signals():
            for process in self.processes:
                self._start(process)
            while not all(process.done for process in self.processes):
                self._supervise()
                time.sleep(0.1)
        for process in self.processes:
            if process.pump is not None:
                process.pump.join(timeout=5)
        if self._signal is not None:
            return 128 + self._signal
        return 1 if self._gave_up else 0

    def log(self, line: str) -> None:
        self._write("launch", line)

    # -- supervision ----------------------------------------------------------------------------

    def _supervise(self) -> None:
        if self._signal is not None:
            self._stop_all()
        now = time.monotonic()
        for process in self.processes:
            if process.done:
                continue
            if process.popen is None:
                if process.restart_at is not None and now >= process.restart_at:
                    self._start(process)
                continue
            code = process.popen.poll()
            if code is not None:
                self._exited(process, code)

    def _exited(self, process: _Process, code: int) -> None:
        assert process.popen is not None
        pid, name = process.popen.pid, process.slot.name
        process.popen = None
        if code != 0:  # a crash or a kill may leave its trial RUNNING: fail and re-queue it now
            self._report_dead([pid])
        if code == 0 or self._signal is not None:
            process.done = True
            self.log(f"worker {name} exited with code {code}")
        elif code == USAGE_EXIT_CODE:  # bad input or a broken trainer: a restart cannot help
            process.done = True
            self._gave_up.append(name)
            self.log(
                f"worker {name} exited with code {code} (bad input, or the trainer fails trial "
                "after trial: see its last line); not restarted"
            )
        elif process.restarts < self.max_restarts:
            process.restarts += 1
            process.restart_at = time.monotonic() + self.restart_delay * process.restarts
            self.log(
                f"worker {name} exited with code {code}; restart "
                f"{process.restarts}/{self.max_restarts}"
            )
        else:
            process.done = True
            self._gave_up.append(name)
            self.log(
                f"worker {name} exited with code {code}; gave up after {self.max_restarts} restarts"
            )

    def _start(self, process: _Process) -> None:
        process.restart_at = None
        environment = {
            **os.environ,
            **self.environment,
            **process.slot.environment(),
            "PYTHONUNBUFFERED": "1",
        }
        popen = subprocess.Popen(
            self.command(process.slot),
            env=environment,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            text=True,
            bufsize=1,
            start_new_session=True,  # Ctrl-C reaches the launcher only; it stops the workers
        )
        process.popen = popen
        process.pump = threading.Thread(
            target=self._pump, args=(process.slot.name, popen), name=f"log-{process.slot.name}"
        )
        process.pump.daemon = True
        process.pump.start()
        gpu = f" on GPU {process.slot.gpu}" if process.slot.gpu is not None else " on CPU"
        self.log(f"started worker {process.slot.name}{gpu} (pid {popen.pid})")

    def _pump(self, name: str, popen: subprocess.Popen[str]) -> None:
        assert popen.stdout is not None
        for line in popen.stdout:
            self._write(name, line.rstrip("\n"))

    def _write(self, name: str, line: str) -> None:
        with self._lock:
            self.out.write(f"[{name}] {line}\n")
            self.out.flush()

    def _report_dead(self, pids: list[int]) -> None:
        if self.on_dead_worker is None:
            return
        try:
            self.on_dead_worker(pids)
        except Exception as error:  # the heartbeat will fail those trials later
            self.log(f"could not fail the trials of worker pid(s) {pids}: {error}")

    # -- stopping -------------------------------------------------------------------------------

    def _stop_all(self) -> None:
        alive = [p.popen for p in self.processes if p.popen is not None]
        for process in self.processes:
            if process.popen is None:
                process.done = True  # a pending restart is cancelled
        now = time.monotonic()
        if self._stop_deadline is None:
            self._stop_deadline = now + self.stop_timeout
            self.log(
                f"stopping {len(alive)} worker(s) (their running trials are failed and "
                "re-queued); Ctrl-C again to kill them"
            )
            _send(alive, signal.SIGTERM)
        elif self._force or now >= self._stop_deadline:
            if any(popen.poll() is None for popen in alive):
                self.log("killing the workers that did not stop")
                _send(alive, signal.SIGKILL)
            self._force = False
            self._stop_deadline = float("inf")

    def _on_signal(self, signum: int, _frame: FrameType | None) -> None:
        if self._signal is None:
            self._signal = signum
        else:
            self._force = True

    def _signals(self) -> _SignalScope:
        return _SignalScope(self._on_signal)


class _SignalScope:
    """Installs a handler for SIGINT and SIGTERM (main thread only) and restores the old ones."""

    def __init__(self, handler: Callable[[int, FrameType | None], None]) -> None:
        self.handler = handler
        self.previous: dict[int, Any] = {}

    def __enter__(self) -> None:
        if threading.current_thread() is threading.main_thread():
            for signum in (signal.SIGINT, signal.SIGTERM):
                self.previous[signum] = signal.signal(signum, self.handler)

    def __exit__(self, *_exc: object) -> None:
        for signum, handler in self.previous.items():
            signal.signal(signum, handler)


def _send(popens: Iterable[subprocess.Popen[str]], signum: int) -> None:
    for popen in popens:
        popen.send_signal(signum)  # a no-op once the process has exited


def fail_trials_of_dead_workers(study: optuna.Study, pids: Iterable[int]) -> list[int]:
    """Fail the RUNNING trials that the worker processes ``pids`` of this host left behind,
    and re-queue each with the same params; returns the failed trial numbers."""
    wanted, host = {str(pid) for pid in pids}, socket.gethostname()

    def left_behind(trial: optuna.trial.FrozenTrial) -> bool:
        worker = trial.user_attrs.get("worker") or {}
        return worker.get("host") == host and str(worker.get("pid")) in wanted

    running = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
    ids = [frozen_trial_id(study, trial) for trial in running if left_behind(trial)]
    return fail_and_retry(study, ids, "worker process died", retry_callback(study))
