"""Per-trial overhead of `hpsearch run` against a bare Optuna loop (issue 2).

Both sides use the same storage URL type (a fresh SQLite file each), the same sampler (TPE,
seed 0, two objectives), the same space and a trainer that does nothing, so the difference is
hpsearch's own work per trial: spec handling, the rule engine, the user attributes it stores
(effective params, rule events, metric history, final metrics, worker) and the storage
heartbeat. MLflow is measured separately (it is I/O of its own, not search overhead).

    python bench/overhead.py --trials 60
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

import optuna
import torch

import hpsearch
from hpsearch.search_spaces import spec_from_dict
from hpsearch.trainers import Trainer

EPOCHS = 5


class NoopTrainer(Trainer):
    """Does no work: constant metrics every epoch."""

    name = "noop"
    param_defaults: ClassVar[Mapping[str, Any]] = {"a": 0.5, "b": 0.5, "c": "x"}
    knob_names = ("a",)
    metric_names = ("m1", "m2")

    def _run_epoch(self, epoch: int, total_epochs: int) -> dict[str, float]:
        return {"m1": self.params["a"], "m2": self.params["b"]}

    def final_metrics(self) -> dict[str, float]:
        return {"m1": self.params["a"], "m2": self.params["b"]}


SPACE = {
    "a": {"type": "float", "low": 0.0, "high": 1.0},
    "b": {"type": "float", "low": 1e-3, "high": 1.0, "log": True},
    "c": {"type": "categorical", "choices": ["x", "y", "z"]},
}


def spec() -> Any:
    return spec_from_dict(
        {
            "name": "overhead",
            "trainer": f"{__name__}:NoopTrainer",
            "epochs": EPOCHS,
            "space": SPACE,
            "objectives": [
                {"metric": "m1", "direction": "maximize"},
                {"metric": "m2", "direction": "minimize"},
            ],
            "rules": [{"name": "never", "when": "m1 > 2", "then": "abort"}],
            "sampler": {"name": "tpe", "seed": 0},
        }
    )


def bare_objective(trial: optuna.Trial) -> tuple[float, float]:
    a = trial.suggest_float("a", 0.0, 1.0)
    b = trial.suggest_float("b", 1e-3, 1.0, log=True)
    trial.suggest_categorical("c", ["x", "y", "z"])
    trainer = NoopTrainer({"a": a, "b": b}, device=torch.device("cpu"), seed=trial.number)
    for _ in trainer.epochs(EPOCHS):
        pass
    metrics = trainer.final_metrics()
    return metrics["m1"], metrics["m2"]


def time_bare(url: str, trials: int) -> float:
    study = optuna.create_study(
        storage=url,
        directions=["maximize", "minimize"],
        sampler=optuna.samplers.TPESampler(seed=0),
    )
    start = time.perf_counter()
    study.optimize(bare_objective, n_trials=trials)
    return (time.perf_counter() - start) / trials


def time_hpsearch(url: str, trials: int, *, track: bool, mlflow_uri: str | None = None) -> float:
    study_spec = spec()
    study = hpsearch.create_study(study_spec, url)  # creation is outside the loop on both sides
    del study
    start = time.perf_counter()
    hpsearch.run(study_spec, trials, storage=url, track=track, tracking_uri=mlflow_uri)
    return (time.perf_counter() - start) / trials


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=60)
    parser.add_argument("--mlflow", action="store_true", help="also time hpsearch with MLflow")
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        bare = time_bare(f"sqlite:///{root / 'bare.db'}", args.trials)
        ours = time_hpsearch(f"sqlite:///{root / 'hps.db'}", args.trials, track=False)
        print(f"trials per side: {args.trials}, epochs per trial: {EPOCHS}, storage: SQLite")
        print(f"{'bare optuna':<28}{bare * 1000:8.1f} ms/trial")
        ratio = ours / bare
        print(f"{'hpsearch run (no MLflow)':<28}{ours * 1000:8.1f} ms/trial   ratio {ratio:.2f}x")
        if args.mlflow:
            tracked = time_hpsearch(
                f"sqlite:///{root / 'hps2.db'}",
                args.trials,
                track=True,
                mlflow_uri=f"sqlite:///{root / 'mlflow.db'}",
            )
            print(
                f"{'hpsearch run + MLflow':<28}{tracked * 1000:8.1f} ms/trial   "
                f"ratio {tracked / bare:.2f}x"
            )


if __name__ == "__main__":
    main()
