"""Shared fixtures: temporary stores, real services (PostgreSQL, Redis), the toy trainer."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from hpsearch.storage.capabilities import CAPABILITIES

TESTS_DIR = Path(__file__).parent
sys.path.insert(0, str(TESTS_DIR))  # makes "toy_trainer:ToyTrainer" importable
torch.set_num_threads(1)  # tests run in parallel workers on 2 cores

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
POSTGRES_URL = os.environ.get(
    "HPSEARCH_TEST_POSTGRES", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
REDIS_URL = os.environ.get("HPSEARCH_TEST_REDIS", "redis://127.0.0.1:6379/0")


def _reachable(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1.0):
            return True
    except OSError:
        return False


def require_service(name: str, host: str, port: int) -> None:
    """In CI a missing server fails the test; on a laptop it is a skip with the reason."""
    if _reachable(host, port):
        return
    message = f"{name} is not reachable on {host}:{port}"
    if IN_CI:
        pytest.fail(f"{message} (CI needs it running)")
    pytest.skip(message)


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'studies.db'}"


@pytest.fixture(scope="session")
def mlflow_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A migrated MLflow SQLite store made once per session (creating a store runs MLflow's
    schema migrations, which take seconds); each test gets a copy through ``mlflow_uri``."""
    import mlflow

    path = tmp_path_factory.mktemp("mlflow-template") / "mlflow.db"
    mlflow.MlflowClient(f"sqlite:///{path}").search_experiments()
    return path


@pytest.fixture
def mlflow_uri(tmp_path: Path, mlflow_template: Path) -> str:
    path = tmp_path / "mlflow.db"
    shutil.copyfile(mlflow_template, path)
    return f"sqlite:///{path}"


@pytest.fixture
def postgres_url() -> Iterator[str]:
    require_service("PostgreSQL", "127.0.0.1", 5432)
    yield POSTGRES_URL
    # The shared server has ~100 connections for every test process and worker at once: give
    # back this test's idle ones now, not when its engines are garbage-collected.
    import gc

    from hpsearch.storage import close_idle_connections

    gc.collect()
    close_idle_connections()


@pytest.fixture
def redis_url() -> str:
    require_service("Redis", "127.0.0.1", 6379)
    return REDIS_URL


@pytest.fixture(params=["sqlite", "postgresql", "redis"])
def any_storage_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """Each storage backend in turn (one suite for all of them)."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'studies.db'}"
    elif request.param == "postgresql":
        yield request.getfixturevalue("postgres_url")
    else:
        yield request.getfixturevalue("redis_url")


@pytest.fixture
def unique_name() -> str:
    """A study name no other test (or earlier run on a shared server) uses."""
    return f"test-{uuid.uuid4().hex[:12]}"


@pytest.fixture(autouse=True)
def _isolated_defaults(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No test writes hpsearch.db / mlflow.db into the repository."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("HPSEARCH_STORAGE", raising=False)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)


# -- every kind of store, for the one storage suite (tests/storage) ---------------------------


def _free_port_for_proxy() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def grpc_store(tmp_path: Path) -> Iterator[str]:
    """``hpsearch storage-proxy`` in front of an SQLite file, as grpc://127.0.0.1:PORT."""
    from optuna.storages import GrpcStorageProxy

    port = _free_port_for_proxy()
    log = open(tmp_path / "proxy.log", "w")  # noqa: SIM115 (closed below)
    proxy = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "hpsearch",
            "storage-proxy",
            "--port",
            str(port),
            "--storage",
            f"sqlite:///{tmp_path / 'proxied.db'}",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        GrpcStorageProxy(host="127.0.0.1", port=port).wait_server_ready(timeout=120)
        yield f"grpc://127.0.0.1:{port}"
    finally:
        proxy.terminate()
        deadline = time.monotonic() + 30
        while proxy.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
        if proxy.poll() is None:
            proxy.kill()
        log.close()


@pytest.fixture(params=sorted(CAPABILITIES))
def every_store(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A URL of each backend of the capability table: SQLite, PostgreSQL, the Redis journal,
    a journal file and the gRPC proxy (PostgreSQL and Redis: the servers of this machine)."""
    backend = request.param
    if backend == "sqlite":
        return f"sqlite:///{tmp_path / 'studies.db'}"
    if backend == "journal":
        return f"journal://{tmp_path / 'journal.log'}"
    fixture = {"postgresql": "postgres_url", "redis": "redis_url", "grpc": "grpc_store"}[backend]
    return str(request.getfixturevalue(fixture))
