"""Per-trial storage overhead at 100 and at 10,000 finished trials in one study (issue 7).

Optuna issue #3053 saw trials slow down tenfold by 83k trials in one study. This bench fills
two PostgreSQL studies with 100 and 10,000 finished trials that look like hpsearch's own (the
user attributes of a real trial, copied in bulk), then times a few more trials in each:

- bare Optuna: ``study.optimize`` with a trivial objective (same storage, heartbeat, sampler);
- the hpsearch worker loop (budget checks, heartbeat, stale-trial check) with the same trivial
  objective: what `hpsearch worker` adds to Optuna;
- the hpsearch worker with the spec's real objective (a trainer that does nothing, no MLflow);
- the worker's budget check alone (reads the trials past its watermark), and a full count.

A cost that grows with the study shows as a difference between the two sizes. The first read
of a study by a process (Optuna's trial cache loads every trial once) is shown apart.

    python bench/storage_overhead.py [--storage URL] [--sizes 100,10000] [--trials 30]
"""

from __future__ import annotations

import argparse
import copy
import json
import random
import statistics
import time
import uuid
from collections.abc import Callable, Mapping
from typing import Any, ClassVar

import optuna
from optuna.storages import RDBStorage
from optuna.trial import FrozenTrial, TrialState

from hpsearch.errors import StorageError
from hpsearch.objectives import build_objective
from hpsearch.runner import create_study
from hpsearch.search_spaces import StudySpec, spec_from_dict
from hpsearch.storage import mask_url, open_storage
from hpsearch.tracking import NullTracker
from hpsearch.trainers import Trainer
from hpsearch.workers import BudgetCounter, Worker, budget, count_trials

DEFAULT_STORAGE = "postgresql+psycopg://postgres@127.0.0.1:5432/test"


class IdleTrainer(Trainer):
    """Does no work: the loss of its two params, every epoch."""

    name = "idle"
    param_defaults: ClassVar[Mapping[str, Any]] = {"x": 0.5, "y": 0.5}
    knob_names = ()
    metric_names = ("loss", "quality")

    def _run_epoch(self, epoch: int, total_epochs: int) -> dict[str, float]:
        return self.final_metrics()

    def final_metrics(self) -> dict[str, float]:
        loss = (self.params["x"] - 0.3) ** 2 + (self.params["y"] - 0.7) ** 2
        return {"loss": loss, "quality": 1.0 - loss}


def make_spec() -> StudySpec:
    return spec_from_dict(
        {
            "name": "overhead",
            "trainer": "__main__:IdleTrainer",
            "epochs": 4,
            "space": {
                "x": {"type": "float", "low": 0.0, "high": 1.0},
                "y": {"type": "float", "low": 0.0, "high": 1.0},
            },
            "objectives": [
                {"metric": "loss", "direction": "minimize"},
                {"metric": "quality", "direction": "maximize"},
            ],
            "constraints": [{"metric": "loss", "op": "<=", "value": 0.5}],
            "sampler": {"name": "random"},
        }
    )


def trivial_objective(trial: optuna.Trial) -> tuple[float, float]:
    x, y = trial.suggest_float("x", 0.0, 1.0), trial.suggest_float("y", 0.0, 1.0)
    loss = (x - 0.3) ** 2 + (y - 0.7) ** 2
    return loss, 1.0 - loss


# -- filling a study fast ----------------------------------------------------------------------


def fill(study: optuna.Study, template: FrozenTrial, total: int) -> None:
    """Copies of ``template`` (new params and values) until the study has ``total`` trials,
    written in bulk with Optuna's own table models (the storage API takes ~10 ms a trial)."""
    from optuna.storages._rdb import models

    storage: Any = study._storage
    rdb: RDBStorage = getattr(storage, "_backend", storage)  # under Optuna's trial cache
    rng = random.Random(0)
    first = len(study.get_trials(deepcopy=False))
    session = rdb.scoped_session()
    try:
        for start in range(first, total, 2000):
            session.add_all(
                _trial_model(models, study._study_id, number, template, rng)
                for number in range(start, min(total, start + 2000))
            )
            session.commit()
    finally:
        session.close()


def _trial_model(
    models: Any, study_id: int, number: int, template: FrozenTrial, rng: random.Random
) -> Any:
    params = {"x": rng.random(), "y": rng.random()}
    loss = (params["x"] - 0.3) ** 2 + (params["y"] - 0.7) ** 2
    trial = models.TrialModel(number=number, study_id=study_id, state=TrialState.COMPLETE)
    trial.datetime_start = template.datetime_start
    trial.datetime_complete = template.datetime_complete
    trial.params = [
        models.TrialParamModel(
            param_name=name,
            param_value=template.distributions[name].to_internal_repr(value),
            distribution_json=optuna.distributions.distribution_to_json(
                template.distributions[name]
            ),
        )
        for name, value in params.items()
    ]
    trial.values = [
        models.TrialValueModel(
            objective=index, value=value, value_type=models.TrialValueModel.TrialValueType.FINITE
        )
        for index, value in enumerate((loss, 1.0 - loss))
    ]
    trial.user_attributes = [
        models.TrialUserAttributeModel(key=key, value_json=json.dumps(value))
        for key, value in template.user_attrs.items()
    ]
    trial.system_attributes = [
        models.TrialSystemAttributeModel(key=key, value_json=json.dumps(value))
        for key, value in template.system_attrs.items()
    ]
    return trial


# -- timing ------------------------------------------------------------------------------------


def per_trial(run: Callable[[int], None], trials: int) -> float:
    """Seconds per trial of ``run(trials)``, after one trial to warm up."""
    run(1)
    started = time.perf_counter()
    run(trials)
    return (time.perf_counter() - started) / trials


def per_call(function: Callable[[], Any], calls: int = 20) -> float:
    started = time.perf_counter()
    for _ in range(calls):
        function()
    return (time.perf_counter() - started) / calls


def worker_runs(
    study: optuna.Study, objective: Callable[[optuna.Trial], Any]
) -> Callable[[int], None]:
    def run(trials: int) -> None:
        budget = count_trials(study).finished + trials
        Worker(study, objective, budget=budget, report=lambda _line: None).run()

    return run


def optimize_runs(study: optuna.Study) -> Callable[[int], None]:
    def run(trials: int) -> None:
        study.optimize(trivial_objective, n_trials=trials)

    return run


def measure(
    url: str, spec: StudySpec, template: FrozenTrial, size: int, trials: int, rounds: int = 5
) -> dict[str, float]:
    """Fill a fresh study to ``size`` trials and time each kind of trial there (ms): the
    median of ``rounds`` rounds of ``trials`` trials, the kinds taking turns."""
    name = f"bench-overhead-{size}-{uuid.uuid4().hex[:8]}"
    study = create_study(spec, url, name)
    fill(study, template, size)
    study = create_study(spec, url, name)  # a new handle: a cold trial cache, as a new worker
    started = time.perf_counter()
    study.get_trials(deepcopy=False)
    figures = {"first read of the study": time.perf_counter() - started}
    objective = build_objective(spec, NullTracker(), study_name=name, device="cpu")
    kinds = {
        "bare Optuna optimize": optimize_runs(study),
        "hpsearch worker, trivial objective": worker_runs(study, trivial_objective),
        "hpsearch worker, spec objective": worker_runs(study, objective),
    }
    timings: dict[str, list[float]] = {kind: [] for kind in kinds}
    for _ in range(rounds):
        for kind, run in kinds.items():
            timings[kind].append(per_trial(run, trials))
    figures.update({kind: statistics.median(values) for kind, values in timings.items()})
    figures["full count of the study (one query)"] = per_call(lambda: count_trials(study))
    counter = BudgetCounter(study)
    counter.count()  # a worker's first check reads every trial id once
    figures["worker's budget check (incremental)"] = per_call(counter.count)
    optuna.delete_study(study_name=name, storage=open_storage(url, heartbeat=False))
    return {key: 1000 * value for key, value in figures.items()}


def template_trial(url: str, spec: StudySpec) -> FrozenTrial:
    """One real trial of the spec's objective: what hpsearch stores with each trial."""
    name = f"bench-template-{uuid.uuid4().hex[:8]}"
    study = create_study(spec, url, name)
    objective = build_objective(spec, NullTracker(), study_name=name, device="cpu")
    Worker(study, objective, budget=1, report=lambda _line: None).run()
    trial = copy.deepcopy(study.get_trials()[0])
    optuna.delete_study(study_name=name, storage=open_storage(url, heartbeat=False))
    return trial


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--storage", default=DEFAULT_STORAGE, help="an SQL store URL")
    parser.add_argument("--sizes", default="100,10000", help="finished trials in the study")
    parser.add_argument("--trials", type=int, default=30, help="timed trials per round")
    args = parser.parse_args(argv)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    # A worker's budget counter passes the finished trials it read SETTLE_S (10 s) ago; the
    # filled trials are committed before any timing, so the timed workers may pass them at once,
    # as a worker that has run for 10 s does.
    budget.SETTLE_S = 0.0
    try:
        open_storage(args.storage, heartbeat=False)
    except StorageError as error:
        print(f"skipped: {error}")
        return
    sizes = [int(size) for size in args.sizes.split(",")]
    spec = make_spec()
    template = template_trial(args.storage, spec)
    print(
        f"store {mask_url(args.storage)}; median of 5 rounds of {args.trials} trials of each kind; "
        f"a stored trial has {len(template.user_attrs)} user attributes"
    )
    results = {size: measure(args.storage, spec, template, size, args.trials) for size in sizes}
    header = "".join(f"{f'{size:,} trials':>16}" for size in sizes)
    print(f"{'ms per trial':<40}{header}")
    for key in results[sizes[0]]:
        print(f"{key:<40}" + "".join(f"{results[size][key]:>16.1f}" for size in sizes))
    added = [
        results[size]["hpsearch worker, trivial objective"] - results[size]["bare Optuna optimize"]
        for size in sizes
    ]
    print(f"{'worker loop minus bare Optuna':<40}" + "".join(f"{value:>16.1f}" for value in added))


if __name__ == "__main__":
    main()
