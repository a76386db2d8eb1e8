"""``every_store``: each kind of study store in turn, for the one storage suite."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from hpsearch.storage.capabilities import CAPABILITIES

TESTS_DIR = Path(__file__).parent.parent


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def grpc_store(tmp_path: Path) -> Iterator[str]:
    """``hpsearch storage-proxy`` in front of an SQLite file, as grpc://127.0.0.1:PORT."""
    from optuna.storages import GrpcStorageProxy

    port = _free_port()
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
