"""Helpers of the distributed tests: a toy spec file, worker processes, study checks."""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import optuna
import yaml
from optuna.trial import FrozenTrial, TrialState
from toy_spec import toy_spec

from hpsearch.storage import open_storage

WORKERS_DIR = Path(__file__).parent
TESTS_DIR = WORKERS_DIR.parent
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)


def write_spec(folder: Path, *, sleep_s: float = 0.05, epochs: int = 3, **overrides: Any) -> Path:
    """A toy spec YAML whose epochs sleep ``sleep_s`` (the stand-in for GPU time)."""
    fixed = {"sleep_s": sleep_s, **overrides.pop("fixed", {})}
    path = folder / "toy.yaml"
    path.write_text(yaml.safe_dump(toy_spec(epochs=epochs, fixed=fixed, **overrides)))
    return path


def environment(**extra: str) -> dict[str, str]:
    """This process's environment with the test trainers importable and unbuffered output."""
    return {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(TESTS_DIR), str(WORKERS_DIR)]),
        "PYTHONUNBUFFERED": "1",
        **extra,
    }


def start_hpsearch(
    *args: str, cwd: Path, env: dict[str, str] | None = None, log: Path | None = None
) -> subprocess.Popen[str]:
    """``python -m hpsearch ARGS`` in the background, its output in ``log`` (or a pipe)."""
    output: Any = open(log, "w") if log is not None else subprocess.PIPE  # noqa: SIM115
    return subprocess.Popen(
        [sys.executable, "-m", "hpsearch", *args],
        cwd=cwd,
        env=env or environment(),
        stdout=output,
        stderr=subprocess.STDOUT,
        text=True,
    )


class WorkerProcess:
    """One worker in its own process, forked from a server that imported hpsearch once (so a
    test starts four workers in a fraction of a second); its report lines go to ``log``."""

    def __init__(self, log: Path, env: dict[str, str], **worker_args: Any) -> None:
        self.log = log
        self.process = _CONTEXT.Process(target=_worker_main, args=(str(log), env, worker_args))
        self.process.start()

    @property
    def pid(self) -> int:
        assert self.process.pid is not None
        return self.process.pid

    @property
    def returncode(self) -> int | None:
        return self.process.exitcode

    def wait(self, timeout: float) -> int | None:
        self.process.join(timeout)
        return self.process.exitcode

    def kill(self) -> None:
        self.process.kill()


def _worker_main(log: str, env: dict[str, str], worker_args: dict[str, Any]) -> None:
    """A worker process's body: the ``hpsearch worker`` command without the imports."""
    import signal

    from hpsearch.workers import run_worker

    os.environ.update(env)
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    with open(log, "w", buffering=1) as out:
        sys.stderr = out  # warnings and log records too
        out.write(f"worker pid {os.getpid()}\n")
        try:
            result = run_worker(report=lambda line: print(line, file=out), **worker_args)
        except BaseException as error:
            out.write(f"worker error: {error!r}\n")
            raise
        out.write(result.summary() + "\n")
    sys.exit(128 + result.signal if result.signal else 0)


_CONTEXT = multiprocessing.get_context("forkserver")
_CONTEXT.set_forkserver_preload(["hpsearch.workers", "toy_trainer", "crashy_trainer"])


def start_workers(
    count: int,
    spec: Path,
    storage: str,
    study_name: str,
    n_trials: int,
    *,
    cwd: Path,
    env: dict[str, str] | None = None,
) -> list[WorkerProcess]:
    """``count`` worker processes on one study, each writing to ``cwd/worker-K.log``."""
    return [
        WorkerProcess(
            cwd / f"worker-{index}.log",
            env or {},
            spec=str(spec),
            storage=storage,
            study_name=study_name,
            n_trials=n_trials,
            track=False,
            device="cpu",
        )
        for index in range(count)
    ]


def wait_all(processes: Sequence[Any], cwd: Path, timeout: float = 90) -> list[int | None]:
    """Wait for every process (Popen or WorkerProcess) and return their exit codes; on a timeout
    kill them all and fail with their logs."""
    deadline = time.monotonic() + timeout
    for process in processes:
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=max(0.1, deadline - time.monotonic()))
    codes = [process.returncode for process in processes]
    if None in codes:
        for process in processes:
            process.kill()
        raise AssertionError(f"workers did not finish in {timeout} s\n{logs(cwd)}")
    return codes


def logs(cwd: Path) -> str:
    return "\n".join(f"--- {path.name}\n{path.read_text()}" for path in sorted(cwd.glob("*.log")))


def load(storage: str, study_name: str) -> optuna.Study:
    return optuna.load_study(study_name=study_name, storage=open_storage(storage, heartbeat=False))


def wait_for(condition: Callable[[], Any], timeout: float, what: str, interval: float = 0.1) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def assert_exactly_finished(study: optuna.Study, n_trials: int) -> list[FrozenTrial]:
    """Exactly ``n_trials`` finished, unique trial numbers, none left RUNNING; the trials."""
    trials = study.get_trials(deepcopy=False)
    states = Counter(trial.state for trial in trials)
    assert states[TrialState.RUNNING] == 0, states
    assert states[TrialState.COMPLETE] + states[TrialState.PRUNED] == n_trials, states
    numbers = [trial.number for trial in trials]
    assert len(numbers) == len(set(numbers))
    return trials


def finished_params(trials: Sequence[FrozenTrial]) -> list[tuple[Any, ...]]:
    return [tuple(sorted(t.params.items())) for t in trials if t.state in FINISHED]
