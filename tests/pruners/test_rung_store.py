"""Rung stores: the side table (SQLite, PostgreSQL) and the user-attr fallback agree."""

from __future__ import annotations

import optuna
import pytest

from hpsearch.pruners.pareto_asha import ParetoAshaPruner
from hpsearch.pruners.rung_store import (
    VECTORS_ATTR,
    SqlRungStore,
    TrialAttrRungStore,
    entry_at,
    rung_store_for,
    vector_entry,
    violation_of,
)
from hpsearch.storage import open_storage

# (values, constraints) of six trials reaching rung 2, in this order; both objectives minimized.
ARRIVALS: list[tuple[list[float], list[float | None]]] = [
    ([1.0, 5.0], [-0.1]),
    ([4.0, 1.0], [None]),
    ([4.5, 1.5], [-0.2]),
    ([0.5, 0.5], [0.3]),  # best values, infeasible
    ([3.0, 6.0], [-0.1]),
    ([6.0, 7.0], [-0.1]),
]
EXPECTED = [True, True, False, False, False, False]


def judge_arrivals(storage: optuna.storages.BaseStorage, name: str) -> list[bool]:
    study = optuna.create_study(
        study_name=name, storage=storage, directions=["minimize", "minimize"]
    )
    pruner = ParetoAshaPruner(["minimize", "minimize"], [2])
    verdicts = []
    for values, constraints in ARRIVALS:
        trial = study.ask()
        trial.set_user_attr(VECTORS_ATTR, {"2": vector_entry(values, constraints)})
        decision = pruner.judge(trial, 2, values, violation_of(constraints))
        assert decision is not None
        verdicts.append(decision.proceed)
        study.tell(trial, state=optuna.trial.TrialState.PRUNED)
    return verdicts


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_the_side_table_decides_the_same_on_sqlite_and_postgresql(
    backend: str, request: pytest.FixtureRequest, unique_name: str
) -> None:
    url = request.getfixturevalue(f"{backend}_url" if backend == "sqlite" else "postgres_url")
    storage = open_storage(url, heartbeat=False)
    assert isinstance(rung_store_for(storage), SqlRungStore)
    assert judge_arrivals(storage, unique_name) == EXPECTED
    optuna.delete_study(study_name=unique_name, storage=storage)


def test_other_stores_read_the_trials_user_attrs(unique_name: str) -> None:
    storage = optuna.storages.InMemoryStorage()
    assert isinstance(rung_store_for(storage), TrialAttrRungStore)
    assert judge_arrivals(storage, unique_name) == EXPECTED


def test_entries_round_trip_through_user_attrs() -> None:
    attrs = {VECTORS_ATTR: {"2": vector_entry([1.0, 2.0], [0.5, None, -1.0])}}
    assert entry_at(attrs, 2) == ([1.0, 2.0], 0.5)
    assert entry_at(attrs, 3) is None
    assert violation_of([None, -0.5]) == 0.0
