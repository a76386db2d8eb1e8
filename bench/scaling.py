"""Throughput of 1, 2, 4 and 8 workers on one PostgreSQL study (issue 7), in one run.

Each worker is its own process running ``hpsearch.workers.Worker`` (what `hpsearch worker` and
`hpsearch launch` run), on one study with a study-wide budget of ``--per-worker`` trials per
worker. The trainer's epochs sleep (standing in for GPU time), so the figure is how much of
N workers' capacity the shared store, the budget accounting and the heartbeats leave for
training: throughput with N workers / (N x throughput with 1), target >= 0.9. Processes are
forked from a server that imported hpsearch once and wait at a barrier, so start-up is not
timed; MLflow is off (its server is a separate concern).

    python bench/scaling.py [--storage URL] [--epoch-s 1.0] [--epochs 4] [--per-worker 5]
"""

from __future__ import annotations

import argparse
import multiprocessing
import time
import uuid
from collections.abc import Mapping
from typing import Any, ClassVar

import optuna

from hpsearch.errors import StorageError
from hpsearch.objectives import build_objective
from hpsearch.search_spaces import spec_from_dict
from hpsearch.storage import mask_url, open_storage
from hpsearch.tracking import NullTracker
from hpsearch.trainers import Trainer
from hpsearch.workers import Worker, ensure_study

DEFAULT_STORAGE = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
WORKER_COUNTS = (1, 2, 4, 8)


class SleepTrainer(Trainer):
    """Sleeps ``epoch_s`` per epoch, then reports a loss from its two params."""

    name = "sleep"
    param_defaults: ClassVar[Mapping[str, Any]] = {"x": 0.5, "y": 0.5, "epoch_s": 0.25}
    knob_names = ()
    metric_names = ("loss", "quality")

    def _run_epoch(self, epoch: int, total_epochs: int) -> dict[str, float]:
        time.sleep(float(self.params["epoch_s"]))
        return self.final_metrics()

    def final_metrics(self) -> dict[str, float]:
        loss = (self.params["x"] - 0.3) ** 2 + (self.params["y"] - 0.7) ** 2
        return {"loss": loss, "quality": 1.0 - loss}


def spec_dict(epochs: int, epoch_s: float) -> dict[str, Any]:
    return {
        "name": "scaling",
        "trainer": "scaling:SleepTrainer",
        "epochs": epochs,
        "fixed": {"epoch_s": epoch_s},
        "space": {
            "x": {"type": "float", "low": 0.0, "high": 1.0},
            "y": {"type": "float", "low": 0.0, "high": 1.0},
        },
        "objectives": [
            {"metric": "loss", "direction": "minimize"},
            {"metric": "quality", "direction": "maximize"},
        ],
        "sampler": {"name": "random"},
    }


def worker_process(
    storage: str, study_name: str, spec: dict[str, Any], budget: int, barrier: Any
) -> None:
    """One worker: set up (store, objective), wait for the others, run."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study_spec = spec_from_dict(spec)
    study = ensure_study(study_spec, storage, study_name)
    objective = build_objective(study_spec, NullTracker(), study_name=study_name, device="cpu")
    worker = Worker(study, objective, budget=budget, report=lambda _line: None)
    barrier.wait()
    worker.run()


def run_workers(storage: str, spec: dict[str, Any], workers: int, budget: int) -> dict[str, Any]:
    """Start ``workers`` processes on a fresh study; the study's trial timestamps give the
    throughput (finished trials / first start to last completion)."""
    context = multiprocessing.get_context("forkserver")
    name = f"bench-scaling-{workers}-{uuid.uuid4().hex[:8]}"
    ensure_study(spec_from_dict(spec), storage, name)  # created once, before the workers
    barrier = context.Barrier(workers)
    processes = [
        context.Process(target=worker_process, args=(storage, name, spec, budget, barrier))
        for _ in range(workers)
    ]
    for process in processes:
        process.start()
    for process in processes:
        process.join()
    study = optuna.load_study(study_name=name, storage=open_storage(storage, heartbeat=False))
    trials = [t for t in study.get_trials(deepcopy=False) if t.state.is_finished()]
    finished = [t for t in trials if t.state.name in ("COMPLETE", "PRUNED")]
    start = min(t.datetime_start for t in trials if t.datetime_start)
    end = max(t.datetime_complete for t in trials if t.datetime_complete)
    span = (end - start).total_seconds()
    optuna.delete_study(study_name=name, storage=open_storage(storage, heartbeat=False))
    return {"finished": len(finished), "span_s": span, "per_s": len(finished) / span}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--storage", default=DEFAULT_STORAGE, help="a PostgreSQL URL")
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--epoch-s", type=float, default=1.0, help="sleep per epoch")
    parser.add_argument("--per-worker", type=int, default=5, help="budget per worker")
    args = parser.parse_args(argv)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        open_storage(args.storage, heartbeat=False)
    except StorageError as error:
        print(f"skipped: {error}")
        return
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(["hpsearch.workers", "scaling"])
    spec = spec_dict(args.epochs, args.epoch_s)
    trial_s = args.epochs * args.epoch_s
    print(
        f"store {mask_url(args.storage)}; trial = {args.epochs} epochs x {args.epoch_s} s sleep "
        f"= {trial_s:.2f} s; budget = {args.per_worker} trials per worker"
    )
    print(f"{'workers':>7} {'finished':>8} {'span s':>7} {'trials/s':>8} {'vs 1':>6} {'eff.':>5}")
    single = None
    for workers in WORKER_COUNTS:
        result = run_workers(args.storage, spec, workers, args.per_worker * workers)
        assert result["finished"] == args.per_worker * workers, result
        single = single or result["per_s"]
        speedup = result["per_s"] / single
        print(
            f"{workers:>7} {result['finished']:>8} {result['span_s']:>7.1f} "
            f"{result['per_s']:>8.2f} {speedup:>5.2f}x {speedup / workers:>5.2f}"
        )
    print(f"ideal: {1 / trial_s:.2f} trials/s per worker; target efficiency >= 0.90")


if __name__ == "__main__":
    main()
