"""Scaling of ``hpsearch launch`` per backend (issue 13): local, Slurm and Ray, side by side.

For each backend and N = 1, 2, 4 workers, one ``hpsearch launch`` on a fresh PostgreSQL study
with a budget of ``--per-worker`` trials per worker; the trainer's epochs sleep (standing in
for GPU time), so the figure is how much of N workers' capacity the backend leaves:

- trials/s = finished / (last trial's end - first trial's start), and
  efficiency = trials/s with N / (N x trials/s with 1), target >= 0.9;
- first trial: seconds from starting ``launch`` to the first trial running (the backend's
  start-up: submitting, scheduling, starting Python and importing hpsearch);
- all N running: seconds until the N-th worker's first trial started; (all N running - first
  trial) / (N - 1) is the start-up cost each further worker adds.

Slurm is the one-node cluster of ``.ci/slurm.sh`` (started and stopped here); Ray a local head
with 4 CPUs (started and stopped here). Workers are CPU workers, MLflow is off.

    python bench/cluster_scaling.py [--storage URL] [--backends local,slurm,ray]
        [--epoch-s 1.0] [--epochs 3] [--per-worker 4]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import optuna
import yaml
from optuna.trial import TrialState

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
from toy_spec import toy_spec  # noqa: E402

from hpsearch.storage import open_storage  # noqa: E402

RAY_PORT = 26390
WORKER_COUNTS = (1, 2, 4)


@dataclass
class Figure:
    backend: str
    workers: int
    finished: int
    trials_per_s: float
    first_trial_s: float
    all_running_s: float
    code: int


def _launch_args(backend: str, workers: int, address: str | None) -> list[str]:
    if backend == "local":
        return ["--cpu-workers", str(workers)]
    args = ["--backend", backend, "--workers", str(workers)]
    return [*args, "--address", address] if backend == "ray" and address else args


def run_once(
    backend: str, workers: int, spec: Path, storage: str, env: dict[str, str], per_worker: int
) -> Figure:
    name = f"bench-cluster-{uuid.uuid4().hex[:8]}"
    budget = workers * per_worker
    command = [sys.executable, "-m", "hpsearch", "launch", str(spec), "--storage", storage]
    command += ["--study-name", name, "--trials", str(budget), "--no-mlflow"]
    command += _launch_args(backend, workers, env.get("BENCH_RAY_ADDRESS"))
    started = datetime.now()
    with open(spec.parent / f"{backend}-{workers}.log", "w") as log:
        code = subprocess.run(command, env=env, cwd=spec.parent, stdout=log, stderr=log).returncode
    study = optuna.load_study(study_name=name, storage=open_storage(storage, heartbeat=False))
    trials = [t for t in study.get_trials() if t.datetime_start is not None]
    finished = [t for t in trials if t.state == TrialState.COMPLETE and t.datetime_complete]
    starts = sorted(t.datetime_start for t in trials)  # type: ignore[type-var]
    first_start_by_worker = sorted(
        min(t.datetime_start for t in trials if t.user_attrs.get("worker", {}).get("pid") == pid)
        for pid in {t.user_attrs.get("worker", {}).get("pid") for t in trials}
    )
    span = (max(t.datetime_complete for t in finished) - starts[0]).total_seconds()
    nth = first_start_by_worker[min(workers, len(first_start_by_worker)) - 1]
    return Figure(
        backend,
        workers,
        len(finished),
        len(finished) / span,
        (starts[0] - started).total_seconds(),
        (nth - started).total_seconds(),
        code,
    )


@contextlib.contextmanager
def slurm_cluster(env: dict[str, str]) -> Iterator[None]:
    folder = Path(tempfile.mkdtemp(prefix="bench-slurm-"))
    script = str(REPO / ".ci" / "slurm.sh")
    env.setdefault("HPSEARCH_SLURM_PORT", "16927")  # not the tests' cluster (16917)
    start = ["bash", script, "start", str(folder)]
    subprocess.run(start, env=env, check=True, stdout=subprocess.DEVNULL)
    env["SLURM_CONF"] = str(folder / "slurm.conf")
    try:
        yield
    finally:
        subprocess.run(["scancel", "-u", "root"], env=env, check=False)
        subprocess.run(["bash", script, "stop", str(folder)], env=env, check=False)


@contextlib.contextmanager
def ray_head(env: dict[str, str]) -> Iterator[None]:
    command = [
        sys.executable, "-c", "from ray.scripts.scripts import main; main()", "start", "--head",
        "--block", f"--port={RAY_PORT}", "--num-cpus=4", "--include-dashboard=false",
        "--disable-usage-stats",
    ]  # fmt: skip
    head = subprocess.Popen(
        command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        start_new_session=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not _listening(RAY_PORT):
            time.sleep(0.5)
        env["BENCH_RAY_ADDRESS"] = f"127.0.0.1:{RAY_PORT}"
        yield
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(head.pid, signal.SIGKILL)
        head.wait()


def _listening(port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 1.0):
        return True
    return False


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--storage", default="postgresql+psycopg://postgres@127.0.0.1:5432/test")
    parser.add_argument("--backends", default="local,slurm,ray")
    parser.add_argument("--epoch-s", type=float, default=1.0)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--per-worker", type=int, default=4)
    args = parser.parse_args()
    backends = args.backends.split(",")
    folder = Path(tempfile.mkdtemp(prefix="bench-cluster-"))
    spec = folder / "sleep.yaml"
    spec.write_text(yaml.safe_dump(toy_spec(epochs=args.epochs, fixed={"sleep_s": args.epoch_s})))
    env = {**os.environ, "PYTHONPATH": str(REPO / "tests"), "OMP_NUM_THREADS": "1"}
    figures: list[Figure] = []
    with contextlib.ExitStack() as stack:
        if "slurm" in backends:
            stack.enter_context(slurm_cluster(env))
        if "ray" in backends:
            stack.enter_context(ray_head(env))
        for backend in backends:
            for workers in WORKER_COUNTS:
                figure = run_once(backend, workers, spec, args.storage, env, args.per_worker)
                figures.append(figure)
                print(f"  {backend} x{workers}: {figure}", file=sys.stderr, flush=True)
    print(
        f"trials of {args.epochs} x {args.epoch_s} s sleep, {args.per_worker} per worker; "
        f"logs in {folder}\n"
    )
    print("| backend | workers | finished | trials/s | vs 1 worker | efficiency | first trial "
          "| all N running | per extra worker |")  # fmt: skip
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for figure in figures:
        one = next(f for f in figures if f.backend == figure.backend and f.workers == 1)
        ratio = figure.trials_per_s / one.trials_per_s
        extra = (
            f"{(figure.all_running_s - figure.first_trial_s) / (figure.workers - 1):.1f} s"
            if figure.workers > 1
            else "-"
        )
        failed = "" if figure.code == 0 else f" (exit {figure.code})"
        print(
            f"| {figure.backend}{failed} | {figure.workers} | {figure.finished} | "
            f"{figure.trials_per_s:.3f} | {ratio:.2f}x | {ratio / figure.workers:.2f} | "
            f"{figure.first_trial_s:.1f} s | {figure.all_running_s:.1f} s | {extra} |"
        )


if __name__ == "__main__":
    main()
