"""The study-wide budget: many workers on one study finish exactly N trials, on every store."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState
from toy_spec import toy_spec
from worker_helpers import (
    assert_exactly_finished,
    environment,
    finished_params,
    load,
    logs,
    start_hpsearch,
    start_workers,
    wait_all,
    write_spec,
)

from hpsearch.objectives import build_objective
from hpsearch.runner import create_study
from hpsearch.search_spaces import spec_from_dict
from hpsearch.storage import open_storage
from hpsearch.storage.internals import storage_of, trial_id_of
from hpsearch.tracking import NullTracker
from hpsearch.workers import BudgetCount, BudgetCounter, Worker, count_trials, run_worker


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def grpc_proxy_url(tmp_path: Path) -> Iterator[str]:
    """`hpsearch storage-proxy` on an SQLite file, as grpc://127.0.0.1:PORT."""
    pytest.importorskip("grpc")
    from optuna.storages import GrpcStorageProxy

    port = _free_port()
    store = f"sqlite:///{tmp_path / 'proxied.db'}"
    proxy = start_hpsearch(
        "storage-proxy",
        "--storage",
        store,
        "--port",
        str(port),
        cwd=tmp_path,
        log=tmp_path / "proxy.log",
    )
    try:
        GrpcStorageProxy(host="127.0.0.1", port=port).wait_server_ready(timeout=60)
        yield f"grpc://127.0.0.1:{port}"
    finally:
        proxy.terminate()
        proxy.wait(timeout=10)


@pytest.fixture(params=["sqlite", "postgresql", "redis", "journal", "grpc"])
def shared_store(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'studies.db'}"
    if request.param == "journal":
        return f"journal://{tmp_path / 'journal.log'}"
    fixture = {"postgresql": "postgres_url", "redis": "redis_url", "grpc": "grpc_proxy_url"}
    return str(request.getfixturevalue(fixture[request.param]))


def test_four_workers_finish_exactly_the_budget(
    shared_store: str, unique_name: str, tmp_path: Path
) -> None:
    n_trials = 12
    spec = write_spec(tmp_path, sleep_s=0.03)
    workers = start_workers(4, spec, shared_store, unique_name, n_trials, cwd=tmp_path)
    assert wait_all(workers, tmp_path) == [0] * 4, logs(tmp_path)
    trials = assert_exactly_finished(load(shared_store, unique_name), n_trials)
    params = finished_params(trials)
    assert len(set(params)) == len(params), "workers sampled the same params"
    assert len({t.user_attrs["worker"]["pid"] for t in trials if t.user_attrs}) >= 2
    assert "budget met" in logs(tmp_path)


REPEATS = int(os.environ.get("HPSEARCH_TEST_REPEATS", "5"))


def test_eight_workers_of_ten_trials_finish_exactly_every_time(
    shared_store: str, unique_name: str, tmp_path: Path
) -> None:
    """8 workers x 10 trials on one store, repeated: budget exact, numbers unique, none left
    RUNNING, and no "database is locked" in any worker's log. (A trial asked over budget at
    the last moment is put back WAITING by design: the next run of the study pops it.)"""
    spec = write_spec(tmp_path, sleep_s=0.0, epochs=1)
    for repeat in range(REPEATS):
        name, folder = f"{unique_name}-{repeat}", tmp_path / f"run-{repeat}"
        folder.mkdir()
        workers = start_workers(8, spec, shared_store, name, 80, cwd=folder)
        assert wait_all(workers, folder, timeout=300) == [0] * 8, logs(folder)
        study = load(shared_store, name)
        assert_exactly_finished(study, 80)
        assert "database is locked" not in logs(folder)


# -- the budget logic, in this process ------------------------------------------------------


def _toy_worker(storage: str, name: str, budget: int) -> Worker:
    spec = spec_from_dict(toy_spec(epochs=2))
    study = create_study(spec, storage, name)
    objective = build_objective(spec, NullTracker(), study_name=name, device="cpu")
    return Worker(study, objective, budget=budget, poll_s=0.05)


def _other_workers_trial(storage: str, name: str) -> tuple[optuna.Study, optuna.Trial]:
    """A RUNNING trial of 'another worker' (a second handle on the study)."""
    study = optuna.load_study(study_name=name, storage=open_storage(storage, heartbeat=False))
    return study, study.ask()


def test_a_trial_asked_over_budget_is_put_back_in_the_queue(
    sqlite_url: str, unique_name: str
) -> None:
    worker = _toy_worker(sqlite_url, unique_name, budget=1)
    _other_workers_trial(sqlite_url, unique_name)  # took the only slot meanwhile
    assert worker._claim_trial() is None
    states = [t.state for t in worker.study.get_trials()]
    assert states == [TrialState.RUNNING, TrialState.WAITING]


def test_a_trial_put_back_in_the_queue_by_another_worker_is_dropped_not_fatal(
    sqlite_url: str, unique_name: str
) -> None:
    """Where a store let two workers pop one queued trial, the one that released it as over
    budget put it back WAITING while the other ran it: telling it must not end the worker."""
    worker = _toy_worker(sqlite_url, unique_name, budget=2)
    trial = worker._claim_trial()
    assert trial is not None
    storage_of(worker.study).set_trial_state_values(trial_id_of(trial), TrialState.WAITING)
    frozen = worker._tell(trial, TrialState.COMPLETE, [0.1, 0.2])
    assert frozen.state == TrialState.WAITING  # its next claimant runs it again


def test_running_trials_of_others_hold_their_slots_until_they_end(
    sqlite_url: str, unique_name: str
) -> None:
    worker = _toy_worker(sqlite_url, unique_name, budget=3)
    worker.run()  # no other worker: it runs the 3 trials itself
    assert count_trials(worker.study).finished == 3

    worker = _toy_worker(sqlite_url, unique_name, budget=5)
    other, running = _other_workers_trial(sqlite_url, unique_name)
    thread = threading.Thread(target=worker.run)
    thread.start()
    deadline = time.monotonic() + 30
    while count_trials(other).finished < 4 and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.3)  # the worker now waits: 4 finished + 1 running of the other = budget
    assert count_trials(other) == count_trials(worker.study)
    assert (count_trials(other).finished, count_trials(other).running) == (4, 1)
    other.tell(running, state=TrialState.FAIL)  # the slot frees: the worker takes it
    thread.join(timeout=30)
    assert not thread.is_alive()
    assert worker.result.stopped_because == "budget met"
    assert worker.result.states == {"complete": 2}
    assert_exactly_finished(other, 5)


def test_worker_without_budget_stops_at_its_timeout(sqlite_url: str, unique_name: str) -> None:
    result = run_worker(
        spec_from_dict(toy_spec(epochs=1)),
        storage=sqlite_url,
        study_name=unique_name,
        track=False,
        timeout=0.5,
    )
    assert result.stopped_because == "timeout"
    assert result.trials_run >= 1 and result.budget is None


def test_worker_command_reports_its_trials(tmp_path: Path) -> None:
    spec = write_spec(tmp_path, sleep_s=0.0)
    store = f"sqlite:///{tmp_path / 'one.db'}"
    command = ["worker", str(spec), "--storage", store, "--trials", "2", "--no-mlflow"]
    result = subprocess.run(
        [sys.executable, "-m", "hpsearch", *command],
        cwd=tmp_path,
        env=environment(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("worker pid ") and lines[0].endswith(store)
    assert sum(line.startswith(("trial 0 complete", "trial 1 complete")) for line in lines) == 2
    assert lines[-1].startswith("worker stopped (budget met): ran 2 trials (2 complete)")
    assert "Warning" not in result.stderr


def test_the_budget_counter_reads_past_its_watermark_only(
    sqlite_url: str, unique_name: str
) -> None:
    study = optuna.create_study(
        study_name=unique_name,
        storage=open_storage(sqlite_url, heartbeat=False),
        directions=["minimize"],
    )
    counter = BudgetCounter(study, settle_s=0.0)
    early = study.ask()  # still running: the watermark cannot pass it
    for value in range(4):
        study.tell(study.ask(), value)
    study.tell(study.ask(), state=TrialState.PRUNED)
    study.tell(study.ask(), state=TrialState.FAIL)
    assert counter.count() == count_trials(study) == BudgetCount(finished=5, running=1)
    assert counter.watermark == -1
    study.tell(early, 1.0)
    assert counter.count() == count_trials(study) == BudgetCount(finished=6, running=0)
    last_id = study.get_trials()[-1]._trial_id
    assert (counter.watermark, counter.finished_below) == (last_id, 6)  # all settled
    study.ask()
    assert counter.count() == count_trials(study) == BudgetCount(finished=6, running=1)
    assert BudgetCounter(study).count() == counter.count()  # 10 s to settle: reads them all


def test_a_running_trial_that_never_beat_is_failed_after_the_grace_and_retried(
    sqlite_url: str, unique_name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A worker died between ``ask`` and its first heartbeat: its RUNNING trial has no
    heartbeat row, so Optuna never finds it stale; it held a budget slot for ever. Repeated,
    since a race that passes once is not fixed."""
    monkeypatch.setenv("HPSEARCH_HEARTBEAT_S", "1")
    monkeypatch.setenv("HPSEARCH_GRACE_S", "2")
    for repeat in range(3):
        name = f"{unique_name}-{repeat}"
        worker = _toy_worker(sqlite_url, name, budget=3)
        other, orphan = _other_workers_trial(sqlite_url, name)
        x = orphan.suggest_float("x", 0.0, 1.0)
        worker.timeout = 120.0  # before the fix the worker waited until here
        worker.run()
        assert worker.result.stopped_because == "budget met"
        trials = assert_exactly_finished(other, 3)
        failed = trials[orphan.number]
        assert failed.state == TrialState.FAIL
        assert "no heartbeat" in failed.user_attrs["fail_reason"]
        retries = [t for t in trials if t.system_attrs.get("failed_trial") == orphan.number]
        assert len(retries) == 1 and retries[0].params["x"] == x
        assert not other.get_trials(states=(TrialState.RUNNING, TrialState.WAITING))
