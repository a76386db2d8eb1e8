"""Per-trial overhead of `hpsearch run` against a bare Optuna loop (issue 2).

Every side uses a fresh SQLite file, the same sampler (TPE, seed 0, two objectives), the same
space and a trainer that does nothing, so the difference is hpsearch's own work per trial. Two
bare loops are timed: on a plain ``RDBStorage`` (what a user writes by hand) and on the storage
hpsearch opens (``open_storage``: WAL, synchronous=NORMAL, heartbeat with retry of stale trials),
so the ratio against the second isolates hpsearch's code: spec handling, the rule engine and the
attributes it stores (effective params, rule events, metric history, final metrics, worker).
Each side's time runs from opening the store to the last trial; sides run in interleaved
rounds and the figures are medians. MLflow is timed separately (its own
I/O, not search overhead).

    python bench/overhead.py --trials 60 --rounds 3 [--mlflow]
"""

from __future__ import annotations

import argparse
import statistics
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


def time_bare(url: str, trials: int, *, hpsearch_storage: bool = False) -> float:
    """Opening the store and loading the study are timed too, as ``hpsearch run`` does both."""
    start = time.perf_counter()
    storage: Any = hpsearch.open_storage(url) if hpsearch_storage else url
    study = optuna.create_study(
        study_name="overhead",
        storage=storage,
        directions=["maximize", "minimize"],
        sampler=optuna.samplers.TPESampler(seed=0),
        load_if_exists=True,
    )
    study.optimize(bare_objective, n_trials=trials)
    return (time.perf_counter() - start) / trials


def time_hpsearch(url: str, trials: int, *, track: bool, mlflow_uri: str | None = None) -> float:
    study_spec = spec()
    start = time.perf_counter()
    hpsearch.run(study_spec, trials, storage=url, track=track, tracking_uri=mlflow_uri)
    return (time.perf_counter() - start) / trials


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=60)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--mlflow", action="store_true", help="also time hpsearch with MLflow")
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    sides: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        for round_number in range(args.rounds):

            def url(name: str, number: int = round_number) -> str:
                return f"sqlite:///{root / f'{name}-{number}.db'}"

            timings = {
                "bare optuna, plain RDBStorage": time_bare(url("plain"), args.trials),
                "bare optuna, hpsearch storage": time_bare(
                    url("same"), args.trials, hpsearch_storage=True
                ),
                "hpsearch run (no MLflow)": time_hpsearch(url("hps"), args.trials, track=False),
            }
            if args.mlflow:
                timings["hpsearch run + MLflow"] = time_hpsearch(
                    url("tracked"),
                    args.trials,
                    track=True,
                    mlflow_uri=f"sqlite:///{root / f'mlflow-{round_number}.db'}",
                )
            for name, seconds in timings.items():
                sides.setdefault(name, []).append(seconds)
    medians = {name: statistics.median(values) for name, values in sides.items()}
    same = medians["bare optuna, hpsearch storage"]
    plain = medians["bare optuna, plain RDBStorage"]
    print(
        f"{args.trials} trials x {args.rounds} rounds per side, {EPOCHS} epochs per trial, "
        "SQLite, medians"
    )
    print(f"{'side':<32}{'ms/trial':>9}{'vs same storage':>17}{'vs plain':>10}")
    for name, seconds in medians.items():
        print(f"{name:<32}{seconds * 1000:9.1f}{seconds / same:16.2f}x{seconds / plain:9.2f}x")


if __name__ == "__main__":
    main()
