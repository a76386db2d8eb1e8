"""Time of one pareto-asha rung decision with 100, 1,000 and 5,000 trials in PostgreSQL.

One throwaway study (two maximized objectives, a constraint violated by about a third of the
trials) grows to each size; every trial has its vector at rung 2 in user attr
``intermediate_objectives`` and a row in the side table ``hpsearch_rung_values``. Then
``--decisions`` new trials each reach rung 2 and are judged, timed from the call to the
verdict: the side-table path (insert + one indexed select + ranking), the ranking alone, and,
side by side, the fallback that reads every trial of the study (``TrialAttrRungStore``, what a
journal store does), once on a fresh storage (a new worker) and once warm (Optuna's cache of
finished trials). Issue 6 asks for at most 50 ms at 5,000 trials. The study is deleted at the
end unless ``--keep``.

    python bench/rung_decision.py --storage postgresql+psycopg://postgres@127.0.0.1:5432/test
"""

from __future__ import annotations

import argparse
import statistics
import time
import uuid
from collections.abc import Callable
from functools import partial
from typing import Literal

import numpy as np
import optuna

from hpsearch.pruners.pareto_asha import ParetoAshaPruner, decide
from hpsearch.pruners.rung_store import (
    VECTORS_ATTR,
    SqlRungStore,
    TrialAttrRungStore,
    vector_entry,
    violation_of,
)
from hpsearch.storage import mask_url, open_storage

RUNG = 2
DIRECTIONS: list[Literal["minimize", "maximize"]] = ["maximize", "maximize"]
DEFAULT_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"


def random_vector(rng: np.random.Generator) -> tuple[list[float], list[float | None]]:
    """cvfp-like values in [0, 1] and one constraint value (convergence >= 0.5)."""
    values = rng.random(2).tolist()
    return values, [0.5 - values[0] if rng.random() < 0.35 else -0.1]


def grow(study: optuna.Study, store: SqlRungStore, size: int, rng: np.random.Generator) -> None:
    """Add finished trials (and their side-table rows) until the study holds ``size``."""
    start = len(study.get_trials(deepcopy=False))
    vectors = [random_vector(rng) for _ in range(start, size)]
    study.add_trials(
        [
            optuna.trial.create_trial(
                values=values,
                user_attrs={VECTORS_ATTR: {str(RUNG): vector_entry(values, constraints)}},
            )
            for values, constraints in vectors
        ]
    )
    added = study.get_trials(deepcopy=False)[start:]
    store.add_entries(
        study._storage.get_study_id_from_name(study.study_name),
        RUNG,
        [
            (t._trial_id, t.number, values, violation_of(constraints))
            for t, (values, constraints) in zip(added, vectors, strict=True)
        ],
    )


def timed(call: Callable[[], object]) -> float:
    start = time.perf_counter()
    call()
    return (time.perf_counter() - start) * 1000


def judge_new_trials(study: optuna.Study, pruner: ParetoAshaPruner, count: int) -> list[float]:
    """Milliseconds per decision for ``count`` new trials reaching the rung."""
    rng = np.random.default_rng(len(study.trials))
    times = []
    for _ in range(count):
        trial = study.ask()
        values, constraints = random_vector(rng)
        times.append(timed(partial(pruner.judge, trial, RUNG, values, violation_of(constraints))))
        study.tell(trial, state=optuna.trial.TrialState.PRUNED)
    return times


def ranking_only(study: optuna.Study, store: SqlRungStore, count: int) -> list[float]:
    trial = study.ask()
    entries = store.record(trial, RUNG, [0.5, 0.5], 0.0)
    study.tell(trial, state=optuna.trial.TrialState.PRUNED)
    return [
        timed(lambda: decide(entries, trial.number, RUNG, DIRECTIONS, eta=3)) for _ in range(count)
    ]


def fallback(url: str, name: str, repeats: int) -> tuple[float, float]:
    """(first, warm) milliseconds of a decision that reads every trial of the study, by a
    worker whose storage cache starts empty (trials are asked through another handle, since
    asking fills the cache)."""
    asker, worker = (
        optuna.load_study(
            study_name=name,
            storage=open_storage(url, heartbeat=False),
            sampler=optuna.samplers.RandomSampler(),
        )
        for _ in range(2)
    )
    pruner = ParetoAshaPruner(DIRECTIONS, [RUNG], store=TrialAttrRungStore())
    times = []
    for _ in range(repeats + 1):
        asked = asker.ask()
        trial = optuna.Trial(worker, asked._trial_id)
        times.append(timed(partial(pruner.judge, trial, RUNG, [0.5, 0.5], 0.0)))
        asker.tell(asked, state=optuna.trial.TrialState.PRUNED)
    return times[0], statistics.median(times[1:])


def summary(times: list[float]) -> str:
    ordered = sorted(times)
    p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
    return f"{statistics.median(ordered):8.1f}{p95:8.1f}{ordered[-1]:8.1f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--storage", default=DEFAULT_URL)
    parser.add_argument("--sizes", type=int, nargs="+", default=[100, 1000, 5000])
    parser.add_argument("--decisions", type=int, default=30)
    parser.add_argument("--fallback-repeats", type=int, default=3)
    parser.add_argument("--keep", action="store_true", help="keep the throwaway study")
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    name = f"bench-rung-{uuid.uuid4().hex[:10]}"
    storage = open_storage(args.storage, heartbeat=False)
    study = optuna.create_study(study_name=name, storage=storage, directions=DIRECTIONS)
    pruner = ParetoAshaPruner(DIRECTIONS, [RUNG])
    store = pruner.store_for(storage)
    assert isinstance(store, SqlRungStore), "this benchmark needs an RDB storage"
    rng = np.random.default_rng(0)
    print(f"rung decision, study {name} on {mask_url(args.storage)}; milliseconds")
    print(
        f"{'trials':>7} | {'side table: median':>19}{'p95':>8}{'max':>8} | "
        f"{'ranking only':>12} | {'read all: new worker':>20}{'warm':>8}"
    )
    try:
        for size in args.sizes:
            grow(study, store, size, rng)
            judge_new_trials(study, pruner, 2)  # warm the connection pool and the caches
            times = judge_new_trials(study, pruner, args.decisions)
            ranking = statistics.median(ranking_only(study, store, args.decisions))
            first, warm = fallback(args.storage, name, args.fallback_repeats)
            print(
                f"{size:>7} | {summary(times):>35} | {ranking:>12.1f} | {first:>20.1f}{warm:>8.1f}"
            )
    finally:
        if not args.keep:
            optuna.delete_study(study_name=name, storage=storage)


if __name__ == "__main__":
    main()
