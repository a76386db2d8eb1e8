"""MLflow's cost per trial: `hpsearch run` with MLflow tracking against tracking off (issue 14).

Both sides run the same spec (TPE, two objectives, a trainer that does no work, 5 epochs) on a
fresh SQLite study store; the tracked side logs to a fresh SQLite MLflow store (MLflow 3's
default), with its writes in the writer process (hpsearch's default) or, as before, in a thread of
the trial's process. Sides run in interleaved rounds; figures are medians of per-trial wall time,
from opening the study store to the end of ``hpsearch.run`` (which waits until every MLflow write
is done). A second pair of sides gives each epoch 20 ms of (sleeping) work. Wall time on a shared
machine is noisy, so the CPU time per trial (all threads, and the MLflow writer process) is printed
too, and the steady per-trial cadence: the median time between the starts of consecutive trials,
which leaves out what a run does once (opening the study's MLflow run, the final summary and plots,
waiting for the last writes). Last, the cost of one ``log_epoch`` call on the hot path (the only
tracking call an epoch makes), timed over many calls on a real run.

    python bench/mlflow_cost.py --trials 40 --rounds 3
"""

from __future__ import annotations

import argparse
import itertools
import os
import resource
import statistics
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

import optuna
import optuna.visualization  # plotly: imported once, outside the clock
import torch

import hpsearch
from hpsearch.search_spaces import spec_from_dict
from hpsearch.trainers import Trainer

EPOCHS = 5
EPOCH_WORK_S = 0.02
WRITERS = ("thread", "process")  # where MLflow's writes run: HPSEARCH_MLFLOW_WRITER


def side_name(kind: str, writer: str) -> str:
    return f"{kind}, " + ("no MLflow" if writer == "off" else f"MLflow ({writer} writer)")


class NoopTrainer(Trainer):
    """Constant metrics every epoch; ``work_s`` seconds of sleep per epoch."""

    name = "noop"
    param_defaults: ClassVar[Mapping[str, Any]] = {"a": 0.5, "b": 0.5, "c": "x", "work_s": 0.0}
    knob_names = ("a",)
    metric_names = ("m1", "m2")

    def _run_epoch(self, epoch: int, total_epochs: int) -> dict[str, float]:
        if self.params["work_s"]:
            time.sleep(float(self.params["work_s"]))
        return {"m1": self.params["a"], "m2": self.params["b"]}

    def final_metrics(self) -> dict[str, float]:
        return {"m1": self.params["a"], "m2": self.params["b"]}


def spec(work_s: float) -> Any:
    return spec_from_dict(
        {
            "name": "mlflow-cost",
            "trainer": f"{__name__}:NoopTrainer",
            "epochs": EPOCHS,
            "fixed": {"work_s": work_s},
            "space": {
                "a": {"type": "float", "low": 0.0, "high": 1.0},
                "b": {"type": "float", "low": 1e-3, "high": 1.0, "log": True},
                "c": {"type": "categorical", "choices": ["x", "y", "z"]},
            },
            "objectives": [
                {"metric": "m1", "direction": "maximize"},
                {"metric": "m2", "direction": "minimize"},
            ],
            "rules": [{"name": "never", "when": "m1 > 2", "then": "abort"}],
            "sampler": {"name": "tpe", "seed": 0},
        }
    )


def cpu_seconds() -> float:
    """CPU time of this process and of its ended children (the MLflow writer process)."""
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time() + children.ru_utime + children.ru_stime


def time_run(
    url: str, trials: int, work_s: float, mlflow_uri: str | None, writer: str = "process"
) -> tuple[float, float, float]:
    """Per-trial seconds; a new MLflow store's tables are created before the clock starts."""
    study_spec = spec(work_s)
    if mlflow_uri is not None:
        import mlflow

        mlflow.MlflowClient(mlflow_uri).search_experiments()
    os.environ["HPSEARCH_MLFLOW_WRITER"] = writer
    start, cpu = time.perf_counter(), cpu_seconds()
    study = hpsearch.run(
        study_spec, trials, storage=url, track=mlflow_uri is not None, tracking_uri=mlflow_uri
    )
    wall, cpu = (time.perf_counter() - start) / trials, (cpu_seconds() - cpu) / trials
    starts = sorted(trial.datetime_start for trial in study.trials if trial.datetime_start)
    gaps = [(b - a).total_seconds() for a, b in itertools.pairwise(starts[2:])]
    return wall, cpu, statistics.median(gaps)


def time_log_epoch(mlflow_uri: str, calls: int = 20000) -> float:
    """Seconds per ``log_epoch`` call (two metrics) on a real run of an MLflow store."""
    from hpsearch.tracking import MlflowTracker

    tracker = MlflowTracker(mlflow_uri)
    run = tracker.start_trial("log-epoch", 0, {}, {})
    start = time.perf_counter()
    for epoch in range(calls):
        run.log_epoch(epoch, {"m1": 0.5, "m2": 0.25})
    seconds = (time.perf_counter() - start) / calls
    run.finish("COMPLETE", None, {}, {})
    getattr(tracker, "drain", lambda: None)()  # hpsearch before issue 14 had no queue
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=40)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(1)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    sides: dict[str, list[tuple[float, float, float]]] = {}

    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        for number in range(args.rounds):
            for work_s in (0.0, EPOCH_WORK_S):
                kind = "no-op" if work_s == 0.0 else f"{EPOCH_WORK_S * 1000:.0f} ms epochs"
                for writer in ("off", *WRITERS):
                    tag = f"{kind}-{writer}-{number}"
                    mlflow_uri = (
                        f"sqlite:///{root / f'mlflow-{tag}.db'}" if writer != "off" else None
                    )
                    timing = time_run(
                        f"sqlite:///{root / f'study-{tag}.db'}",
                        args.trials,
                        work_s,
                        mlflow_uri,
                        writer if writer != "off" else "process",
                    )
                    sides.setdefault(side_name(kind, writer), []).append(timing)
        epoch_s = time_log_epoch(f"sqlite:///{root / 'log-epoch.db'}")
    medians = {
        name: tuple(statistics.median(t[i] for t in values) for i in range(3))
        for name, values in sides.items()
    }
    print(f"{args.trials} trials x {args.rounds} rounds per side, {EPOCHS} epochs, SQLite, medians")
    print(
        f"{'side':<36}{'ms/trial':>9}{'vs off':>8}{'CPU ms':>8}{'vs off':>8}"
        f"{'cadence ms':>11}{'vs off':>8}"
    )
    for kind in ("no-op", f"{EPOCH_WORK_S * 1000:.0f} ms epochs"):
        off = medians[side_name(kind, "off")]
        for name in (side_name(kind, writer) for writer in ("off", *WRITERS)):
            side = medians[name]
            print(
                f"{name:<36}"
                + "".join(f"{v * 1000:9.1f}{v / o:7.2f}x" for v, o in zip(side, off, strict=True))
            )
    print(f"log_epoch (2 metrics), the only tracking call in an epoch: {epoch_s * 1e6:.1f} us")
    print("CPU ms: this process and its ended MLflow writer process, all threads")


if __name__ == "__main__":
    main()
