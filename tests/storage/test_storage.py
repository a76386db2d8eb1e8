"""One suite against every backend: SQLite (WAL), PostgreSQL and the Redis journal."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import optuna
import pytest
from optuna.storages import RDBStorage
from optuna.trial import TrialState

from hpsearch.errors import StorageError
from hpsearch.storage import (
    default_storage_url,
    heartbeat_settings,
    is_transient_error,
    mask_url,
    open_storage,
    serve_grpc_proxy,
)


def test_a_study_round_trips_through_every_backend(any_storage_url: str, unique_name: str) -> None:
    study = optuna.create_study(
        study_name=unique_name, storage=open_storage(any_storage_url), directions=["minimize"] * 2
    )
    for x in (0.1, 0.5):
        trial = study.ask()
        trial.set_user_attr("effective_params", {"x": x, "knob": 2 * x})
        study.tell(trial, [x, 1 - x])
    again = optuna.load_study(study_name=unique_name, storage=open_storage(any_storage_url))
    trials = again.get_trials()
    assert [t.values for t in trials] == [[0.1, 0.9], [0.5, 0.5]]
    assert trials[1].user_attrs["effective_params"] == {"x": 0.5, "knob": 1.0}
    assert len(again.best_trials) == 2


def test_sqlite_store_uses_wal(sqlite_url: str) -> None:
    open_storage(sqlite_url)
    path = sqlite_url.removeprefix("sqlite:///")
    with sqlite3.connect(path) as connection:
        assert connection.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_rdb_stores_get_a_heartbeat_and_retry_callback(sqlite_url: str) -> None:
    storage = open_storage(sqlite_url)
    assert isinstance(storage, RDBStorage)
    assert storage.get_heartbeat_interval() is not None
    assert storage.get_heartbeat_stale_trial_callback() is not None


def test_a_retry_has_the_same_params_and_none_of_the_failed_runs_attrs(sqlite_url: str) -> None:
    storage = open_storage(sqlite_url)
    study = optuna.create_study(storage=storage)
    trial = study.ask({"x": optuna.distributions.FloatDistribution(0.0, 1.0)})
    for key, value in {"worker": {"slot": "slurm:7_1"}, "fail_reason": "worker stopped"}.items():
        trial.set_user_attr(key, value)
    study.tell(trial, state=TrialState.FAIL)
    retry = storage.get_heartbeat_stale_trial_callback()
    assert retry is not None
    retry(study, study.trials[0])
    failed, queued = study.get_trials()
    assert queued.state == TrialState.WAITING and queued.params == failed.params
    assert queued.system_attrs["failed_trial"] == 0 and queued.user_attrs == {}
    assert failed.user_attrs["worker"] == {"slot": "slurm:7_1"}  # the failed run keeps them


def test_default_url_follows_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    assert default_storage_url() == "sqlite:///hpsearch.db"
    monkeypatch.setenv("HPSEARCH_STORAGE", "sqlite:///other.db")
    assert default_storage_url() == "sqlite:///other.db"


@pytest.mark.parametrize(
    ("url", "masked"),
    [
        (
            "postgresql+psycopg://alice:s3cret@db:5432/optuna",
            "postgresql+psycopg://alice:***@db:5432/optuna",
        ),
        ("redis://:pw@127.0.0.1:6379/0", "redis://:***@127.0.0.1:6379/0"),
        ("sqlite:///hpsearch.db", "sqlite:///hpsearch.db"),
    ],
)
def test_passwords_are_masked(url: str, masked: str) -> None:
    assert mask_url(url) == masked


def test_unreachable_server_error_masks_the_password() -> None:
    with pytest.raises(StorageError) as error:
        open_storage("postgresql+psycopg://alice:s3cret@127.0.0.1:1/optuna")
    assert "s3cret" not in str(error.value)
    assert "alice:***@127.0.0.1:1" in str(error.value)


def test_bad_urls_name_the_fix(tmp_path: Path) -> None:
    with pytest.raises(StorageError, match="unsupported storage URL 'mysql://x'; use sqlite"):
        open_storage("mysql://x")
    with pytest.raises(StorageError, match="folder .* does not exist; create it"):
        open_storage(f"sqlite:///{tmp_path}/no/such/dir/x.db")


def test_heartbeat_and_grace_period_follow_the_environment(
    monkeypatch: pytest.MonkeyPatch, sqlite_url: str
) -> None:
    assert heartbeat_settings() == (60, 180)
    monkeypatch.setenv("HPSEARCH_HEARTBEAT_S", "2")
    assert heartbeat_settings() == (2, 6)  # the grace period scales with the heartbeat
    monkeypatch.setenv("HPSEARCH_GRACE_S", "5")
    storage = open_storage(sqlite_url)
    assert isinstance(storage, RDBStorage)
    assert (storage.heartbeat_interval, storage.grace_period) == (2, 5)


@pytest.mark.parametrize(
    ("variables", "message"),
    [
        ({"HPSEARCH_HEARTBEAT_S": "0.5"}, "HPSEARCH_HEARTBEAT_S='0.5' is not a whole number"),
        ({"HPSEARCH_GRACE_S": "-1"}, "HPSEARCH_GRACE_S='-1' is not a whole number"),
        (
            {"HPSEARCH_HEARTBEAT_S": "10", "HPSEARCH_GRACE_S": "15"},
            "HPSEARCH_GRACE_S=15 is shorter than two heartbeats",
        ),
    ],
)
def test_bad_heartbeat_settings_name_the_variable(
    monkeypatch: pytest.MonkeyPatch, sqlite_url: str, variables: dict[str, str], message: str
) -> None:
    for name, value in variables.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(StorageError, match=message):
        open_storage(sqlite_url)


def test_postgresql_connections_wait_for_a_restarting_server(postgres_url: str) -> None:
    storage = open_storage(postgres_url)
    assert isinstance(storage, RDBStorage)
    assert storage.engine.pool._pre_ping
    listeners = list(storage.engine.dialect.dispatch.do_connect)
    assert [listener.__qualname__.split(".")[0] for listener in listeners] == [
        "_reconnect_on_restart"
    ]  # tests/workers/test_worker_recovery.py restarts a server


def test_transient_errors_are_told_apart_from_real_ones() -> None:
    from sqlalchemy.exc import OperationalError

    lost = OperationalError("SELECT 1", {}, Exception("server closed the connection"))
    assert is_transient_error(lost)
    try:  # Optuna wraps database errors in its own
        try:
            raise lost
        except OperationalError as error:
            raise optuna.exceptions.StorageInternalError("commit failed") from error
    except optuna.exceptions.StorageInternalError as wrapped:
        assert is_transient_error(wrapped)
    assert is_transient_error(ConnectionRefusedError())
    assert not is_transient_error(ValueError("bad value"))
    assert not is_transient_error(KeyError("no such study"))


def test_the_grpc_proxy_serves_sql_stores_only() -> None:
    pytest.importorskip("grpc")
    with pytest.raises(StorageError, match="the gRPC proxy serves an SQL store"):
        serve_grpc_proxy("redis://127.0.0.1:6379/0")


def test_sqlite_connections_commit_without_a_disk_sync(sqlite_url: str) -> None:
    storage = open_storage(sqlite_url)
    with storage.engine.connect() as connection:  # type: ignore[attr-defined]
        level = connection.exec_driver_sql("PRAGMA synchronous").scalar()
    assert level == 1  # NORMAL (FULL is 2), safe with WAL
