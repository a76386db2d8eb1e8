"""One storage suite over every backend (as Optuna's tests/storages_tests): the behaviours
every store keeps, run against SQLite, PostgreSQL, the Redis journal, a journal file and the
gRPC proxy. Where a backend lacks a feature, the capability table
(``hpsearch.storage.capabilities``) says so, and the test checks the fallback instead: no
test skips a backend."""

from __future__ import annotations

import random
import threading
import time
from pathlib import Path

import optuna
import pytest
import sqlalchemy as sa
from optuna.trial import TrialState
from toy_spec import toy_spec

from hpsearch.objectives.attrs import set_user_attrs
from hpsearch.pruners.rung_store import (
    VECTORS_ATTR,
    SqlRungStore,
    TrialAttrRungStore,
    rung_store_for,
    vector_entry,
)
from hpsearch.runner import create_study
from hpsearch.search_spaces import spec_from_dict
from hpsearch.storage import open_storage
from hpsearch.storage.capabilities import capabilities_of
from hpsearch.storage.internals import (
    PUBLIC_ONLY_ENV,
    backend_of,
    frozen_trial_id,
    public_only,
    storage_of,
    trial_id_of,
)
from hpsearch.workers import BudgetCounter, count_trials


@pytest.fixture(autouse=True, params=["internals", "public-only"])
def optuna_api(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Each test twice: with hpsearch's shortcuts into Optuna's internals, and with every
    public-API fallback forced (what an Optuna upgrade that moved a private name gives)."""
    if request.param == "public-only":
        monkeypatch.setenv(PUBLIC_ONLY_ENV, "1")
    return str(request.param)


def _fast(url: str, feature: str) -> bool:
    """The store has the feature and hpsearch may use Optuna's internals for it."""
    return bool(getattr(capabilities_of(url), feature)) and not public_only()


def _study(url: str, name: str) -> optuna.Study:
    return create_study(spec_from_dict(toy_spec(name=name)), url, name)


def test_a_created_study_loads_with_its_directions_and_names(
    every_store: str, unique_name: str
) -> None:
    _study(every_store, unique_name)
    loaded = optuna.load_study(study_name=unique_name, storage=open_storage(every_store))
    assert [d.name for d in loaded.directions] == ["MINIMIZE", "MINIMIZE"]
    assert loaded.metric_names == ["loss", "quality_band_distance"]
    assert loaded.user_attrs["hpsearch_spec"]["name"] == unique_name


def test_ask_and_tell_round_trip_values_and_params(every_store: str, unique_name: str) -> None:
    study = _study(every_store, unique_name)
    for x in (0.25, 0.75):
        trial = study.ask()
        trial.suggest_float("x", 0.0, 1.0)
        study.tell(trial, [x, 1 - x])
    again = optuna.load_study(study_name=unique_name, storage=open_storage(every_store))
    trials = again.get_trials()
    assert [t.values for t in trials] == [[0.25, 0.75], [0.75, 0.25]]
    assert [t.number for t in trials] == [0, 1]
    assert all(0.0 <= t.params["x"] <= 1.0 for t in trials)


def test_user_attrs_are_all_written_in_one_transaction_where_the_store_can(
    every_store: str, unique_name: str
) -> None:
    study = _study(every_store, unique_name)
    trial = study.ask()
    attrs = {f"key{index}": {"value": index, "nested": [index, "x"]} for index in range(6)}
    commits = _count_commits(study)
    set_user_attrs(trial, attrs)
    stored = optuna.load_study(study_name=unique_name, storage=open_storage(every_store))
    assert {k: v for k, v in stored.trials[0].user_attrs.items() if k in attrs} == attrs
    if _fast(every_store, "attrs_in_one_transaction"):
        assert commits() == 1
    elif capabilities_of(every_store).attrs_in_one_transaction:
        assert commits() == len(attrs)  # the public API: one commit per key
    else:
        assert commits() is None  # no SQL engine in this process: written one by one


def _count_commits(study: optuna.Study):  # type: ignore[no-untyped-def]
    """A function giving the number of SQL commits since this call (None: no SQL engine)."""
    engine = getattr(backend_of(storage_of(study)), "engine", None)
    if engine is None:
        return lambda: None
    seen: list[int] = []
    sa.event.listen(engine, "commit", lambda _connection: seen.append(1))
    return lambda: len(seen)


def test_rung_values_of_every_trial_are_read_back(every_store: str, unique_name: str) -> None:
    study = _study(every_store, unique_name)
    store = rung_store_for(storage_of(study))
    expected = SqlRungStore if _fast(every_store, "rung_table") else TrialAttrRungStore
    assert isinstance(store, expected)
    for index in range(3):
        trial = study.ask()
        values, violation = [0.1 * index, 1.0 - 0.1 * index], 0.0 if index else 0.5
        trial.set_user_attr(VECTORS_ATTR, {"2": vector_entry(values, [violation])})
        entries = store.record(trial, 2, values, violation)
        assert len(entries.numbers) == index + 1
    assert sorted(entries.numbers) == [0, 1, 2]
    own = entries.index_of(0)
    assert list(entries.values[own]) == pytest.approx([0.0, 1.0])
    assert entries.violations[own] == pytest.approx(0.5)


def test_the_budget_counts_complete_and_pruned_as_finished_and_running_as_claimed(
    every_store: str, unique_name: str
) -> None:
    study = _study(every_store, unique_name)
    for state in (TrialState.COMPLETE, TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL):
        trial = study.ask()
        study.tell(trial, [0.5, 0.5] if state == TrialState.COMPLETE else None, state=state)
    study.ask()  # RUNNING
    counter = BudgetCounter(study)
    assert (counter.count().finished, counter.count().running) == (3, 1)
    assert count_trials(study).claimed == 4
    assert (counter.rdb is not None) == _fast(every_store, "budget_sql_count")


def test_every_queued_trial_is_claimed_by_exactly_one_of_several_clients(
    every_store: str, unique_name: str
) -> None:
    """Four clients, each with its own connection, race to pop the same queued trials (as
    workers' ``study.ask()`` does): each trial goes to one of them. SQLite needs hpsearch's
    claim lock for that (``hpsearch.storage.claims``); the others are atomic by themselves."""
    study = _study(every_store, unique_name)
    for round_number in range(3):  # a race that passes once is not fixed
        for x in range(12):
            study.enqueue_trial({"x": x / 12})
        waiting = study.get_trials(states=[TrialState.WAITING])
        queued = [frozen_trial_id(study, t) for t in waiting]
        won: list[list[int]] = []

        def claim(seed: int, queued: list[int] = queued, won: list[list[int]] = won) -> None:
            storage = open_storage(every_store)
            order = random.Random(seed).sample(queued, len(queued))
            ids = [tid for tid in order if storage.set_trial_state_values(tid, TrialState.RUNNING)]
            won.append(ids)

        threads = [threading.Thread(target=claim, args=(seed,)) for seed in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        claimed = sorted(tid for ids in won for tid in ids)
        assert claimed == sorted(queued), f"round {round_number}: claims {won}"
        for tid in queued:
            storage_of(study).set_trial_state_values(tid, TrialState.FAIL)


def test_best_configs_are_optunas_feasible_front_read_from_values_only(
    every_store: str, unique_name: str
) -> None:
    """``best_configs`` finds the front from the COMPLETE trials' values and constraints by SQL
    where it can: the same trials as Optuna's ``best_trials`` (feasible, non-dominated), with
    pruned, failed, infeasible and infinite-valued trials among them."""
    from hpsearch.query import best_configs

    storage = open_storage(every_store)
    study = optuna.create_study(
        storage=storage,
        study_name=unique_name,
        directions=["minimize", "maximize"],
        sampler=optuna.samplers.RandomSampler(seed=0),
    )
    study.set_metric_names(["loss", "score"])
    rng = random.Random(7)
    for number in range(40):
        trial = study.ask()
        trial.suggest_float("x", 0.0, 1.0)
        if number % 7 == 3:
            study.tell(trial, state=TrialState.PRUNED if number % 2 else TrialState.FAIL)
            continue
        violation = rng.uniform(-1.0, 0.5)  # a third infeasible
        storage.set_trial_system_attr(trial_id_of(trial), "constraints", [violation, -0.1])
        cost = rng.random()  # a trade-off: the score grows with the loss, plus noise
        loss = float("inf") if number == 5 else cost
        study.tell(trial, [loss, cost + 0.3 * rng.random()])
    expected = sorted(t.number for t in study.best_trials)
    assert len(expected) >= 3  # the values are seeded: a front of several trials
    assert [config.trial_number for config in best_configs(unique_name, every_store)] == expected
    top = best_configs(unique_name, every_store, top=2)
    assert [config.trial_number for config in top] == expected[:2]
    assert all(config.values.keys() == {"loss", "score"} for config in top)


def test_a_trial_whose_heartbeat_stopped_is_failed_and_retried_where_the_store_beats(
    every_store: str, unique_name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HPSEARCH_HEARTBEAT_S", "1")
    monkeypatch.setenv("HPSEARCH_GRACE_S", "2")
    study = _study(every_store, unique_name)
    storage = storage_of(study)
    beats = getattr(storage, "get_heartbeat_interval", lambda: None)() is not None
    assert beats == capabilities_of(every_store).heartbeat
    if not beats:
        return  # no heartbeat by design (see the capability table): nothing fails it
    trial = study.ask()
    x = trial.suggest_float("x", 0.0, 1.0)
    storage.record_heartbeat(trial_id_of(trial))  # then the worker "dies"
    deadline = time.monotonic() + 60
    while study.trials[0].state == TrialState.RUNNING and time.monotonic() < deadline:
        optuna.storages.fail_stale_trials(study)
        time.sleep(0.2)
    trials = study.get_trials()
    assert trials[0].state == TrialState.FAIL
    assert [t.params for t in trials if t.state == TrialState.WAITING] == [{"x": x}]


def test_storage_capability_table_names_every_backend_the_suite_runs(tmp_path: Path) -> None:
    from hpsearch.storage.capabilities import CAPABILITIES, backend_of_url

    assert set(CAPABILITIES) == {"sqlite", "postgresql", "redis", "journal", "grpc"}
    assert backend_of_url("postgresql+psycopg://u@h/db") == "postgresql"
    assert backend_of_url(f"journal://{tmp_path}/x.log") == "journal"
    with pytest.raises(ValueError, match="mysql"):
        backend_of_url("mysql://h/db")
