"""Opening the study store from a URL (docs/design.md, Storage).

- ``sqlite:///path.db``: RDB storage with WAL and a busy timeout (several local processes);
  claims of queued trials are serialised by a lock file (``hpsearch.storage.claims``).
- ``postgresql://`` / ``postgresql+psycopg://``: psycopg 3, ``pool_pre_ping``, small pools.
- ``redis://host:port/db``: journal storage on Redis; ``journal:///path.log``: journal file.
- ``grpc://host:port``: Optuna's gRPC storage proxy (``optuna.storages.run_grpc_proxy_server``).

RDB stores get a heartbeat so a trial of a dead worker is failed after the grace period and
retried with the same params (``retry.RetrySameParams``: Optuna's retry, less the failed run's
user attrs); ``HPSEARCH_HEARTBEAT_S`` and ``HPSEARCH_GRACE_S`` change the defaults (60 s and
180 s). A PostgreSQL connection lost to a server restart is reopened, retrying for up to
``HPSEARCH_RECONNECT_S`` (default 60 s).
``serve_grpc_proxy`` runs the gRPC proxy in front of a store. Passwords are masked by ``mask_url``
wherever a URL is printed or logged.
"""

from __future__ import annotations

import contextlib
import logging
import os
import random
import sqlite3
import time
import weakref
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import sqlalchemy
from optuna.storages import BaseStorage, RDBStorage

from hpsearch._util import quiet_experimental
from hpsearch.errors import StorageError
from hpsearch.registry import Registry
from hpsearch.storage.claims import SQLiteClaimStorage
from hpsearch.storage.internals import check_optuna_version
from hpsearch.storage.retry import RetrySameParams
from hpsearch.urls import DEFAULT_STORAGE, default_storage_url, mask_secrets, mask_url

Opener = Callable[[str, bool, bool], BaseStorage]  # (url, heartbeat, create) -> store
logger = logging.getLogger("hpsearch.storage")

HEARTBEAT_INTERVAL_S = 60
GRACE_PERIOD_S = 180
RECONNECT_S = 60
MAX_RETRY = 3
SCHEMA_ATTEMPTS = 5
DEFAULT_GRPC_PORT = 13000


def open_storage(
    url: str | None = None, *, heartbeat: bool = True, create: bool = True
) -> BaseStorage:
    """A storage for ``url`` (default: ``default_storage_url()``); StorageError if it cannot be
    opened, with the URL masked. ``create=False`` (readers: best, studies, dashboard) refuses an
    SQLite file that does not exist instead of creating it. An SQLite file that is not an
    Optuna store (another program's database, not a database at all) is refused, untouched."""
    url = url or default_storage_url()
    check_optuna_version()
    try:
        scheme = urlsplit(url).scheme
        with quiet_experimental():  # heartbeat options are "experimental" since Optuna 2.8
            return _open(url, scheme, heartbeat, create)
    except StorageError:
        raise
    except Exception as error:  # driver errors carry the URL; never print it unmasked
        lines = mask_secrets(str(error), url).strip().splitlines() or [type(error).__name__]
        message = lines[0][:300]
        raise StorageError(
            f"cannot open storage {mask_url(url)}: {message}; check that the server is running "
            "and the URL is right"
        ) from None


def _open(url: str, scheme: str, heartbeat: bool, create: bool) -> BaseStorage:
    kind = "postgresql" if scheme.startswith("postgresql") else scheme
    if kind not in STORES:
        raise StorageError(
            f"unsupported storage URL {mask_url(url)!r}; use sqlite:///file.db, "
            "postgresql+psycopg://user@host/db, redis://host:port, journal:///file.log "
            "or grpc://host:port"
        )
    return STORES.get(kind)(url, heartbeat, create)


_TRANSIENT_ERROR_NAMES = frozenset(
    {"OperationalError", "InterfaceError", "ConnectionError", "TimeoutError", "BusyLoadingError"}
)


def is_transient_error(error: BaseException) -> bool:
    """True for an error of an unreachable or restarting store (database connection lost or
    refused, database locked, Redis connection error, gRPC UNAVAILABLE), worth retrying; the
    causes of an error are looked at too (Optuna wraps database errors in its own)."""
    seen: BaseException | None = error
    for _ in range(5):
        if seen is None:
            return False
        if _is_transient(seen):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def _is_transient(error: BaseException) -> bool:
    if getattr(error, "connection_invalidated", False):
        return True
    if any(kind.__name__ in _TRANSIENT_ERROR_NAMES for kind in type(error).__mro__):
        return True
    code = getattr(error, "code", None)
    if callable(code):  # grpc.RpcError
        try:
            return getattr(code(), "name", "") in ("UNAVAILABLE", "DEADLINE_EXCEEDED")
        except Exception:
            return False
    return False


def _env_seconds(name: str, default: int) -> int:
    """A whole number of seconds >= 1 from the environment variable ``name``, else ``default``."""
    text = os.environ.get(name, "").strip()
    if not text:
        return default
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise StorageError(
            f"{name}={text!r} is not a whole number of seconds >= 1; fix or unset it"
        )
    return value


def heartbeat_settings() -> tuple[int, int]:
    """(heartbeat interval, grace period) in seconds: ``HPSEARCH_HEARTBEAT_S`` (default 60) and
    ``HPSEARCH_GRACE_S`` (default 3 heartbeats); the grace period is at least 2 heartbeats."""
    interval = _env_seconds("HPSEARCH_HEARTBEAT_S", HEARTBEAT_INTERVAL_S)
    default_grace = GRACE_PERIOD_S * interval // HEARTBEAT_INTERVAL_S
    grace = _env_seconds("HPSEARCH_GRACE_S", default_grace)
    if grace < 2 * interval:
        raise StorageError(
            f"HPSEARCH_GRACE_S={grace} is shorter than two heartbeats "
            f"(HPSEARCH_HEARTBEAT_S={interval}); a live trial would be failed: raise it"
        )
    return interval, grace


def _heartbeat_kwargs(heartbeat: bool) -> dict[str, object]:
    if not heartbeat:
        return {}
    interval, grace = heartbeat_settings()
    return {
        "heartbeat_interval": interval,
        "grace_period": grace,
        "heartbeat_stale_trial_callback": RetrySameParams(max_retry=MAX_RETRY),
    }


def _sqlite(url: str, heartbeat: bool, create: bool = True) -> RDBStorage:
    if not url.startswith("sqlite:///"):
        raise StorageError(
            f"storage {mask_url(url)!r}: write sqlite:///relative/path.db or "
            "sqlite:////absolute/path.db"
        )
    path = url.removeprefix("sqlite:///").split("?")[0]
    if path and path != ":memory:":
        _check_sqlite_file(url, Path(path), create)
        _enable_wal(path)
    storage = _rdb_storage(
        url, {"connect_args": {"timeout": 60}}, heartbeat, storage_class=SQLiteClaimStorage
    )
    _sync_normal(storage)
    return storage


_OPTUNA_TABLES = frozenset({"studies", "version_info", "alembic_version"})


def _check_sqlite_file(url: str, path: Path, create: bool) -> None:
    """StorageError unless ``path`` is a new file in an existing folder (when ``create``) or an
    SQLite database that is empty or has Optuna's tables; nothing is written to check."""
    if path.is_dir():
        raise StorageError(f"storage {url}: {str(path)!r} is a folder; name a .db file in it")
    if not path.exists():
        if not create:
            raise StorageError(
                f"storage {url}: {str(path)!r} does not exist; check --storage (or run a study "
                "first)"
            )
        if not path.parent.is_dir():
            raise StorageError(
                f"cannot open storage {url}: folder {str(path.parent)!r} does not exist; create it"
            )
        return
    if str(path.resolve()) in _CHECKED_FILES:
        return
    try:
        empty = path.stat().st_size == 0
    except OSError as error:
        raise StorageError(f"storage {url}: cannot read it ({error.strerror}); check it") from None
    if empty:
        return  # an empty file: SQLite makes a new database of it
    tables = _sqlite_tables(url, path)
    if tables and not tables & _OPTUNA_TABLES:
        raise StorageError(
            f"storage {url}: {str(path)!r} is another program's SQLite database (tables "
            f"{', '.join(sorted(tables)[:5])}); name another file, hpsearch will not change it"
        )
    _CHECKED_FILES.add(str(path.resolve()))


# Files found to be Optuna stores in this process: not checked again. The check goes through
# SQLite only: opening and closing the file any other way would drop the POSIX locks this
# process's SQLite connections hold on it, and let other processes corrupt it.
_CHECKED_FILES: set[str] = set()


def _sqlite_tables(url: str, path: Path) -> set[str]:
    """The table names of an SQLite file, read-only; StorageError if it is no SQLite file."""
    try:
        with contextlib.closing(
            sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=60)
        ) as connection:
            rows = connection.execute("SELECT name FROM sqlite_master WHERE type='table'")
            return {str(row[0]) for row in rows}
    except sqlite3.DatabaseError as error:
        if "not a database" in str(error):
            raise StorageError(
                f"storage {url}: {str(path)!r} is not an SQLite database; name another file"
            ) from None
        return set()  # busy or being created by another process now: let Optuna open it


def _sync_normal(storage: RDBStorage) -> None:
    """``synchronous=NORMAL`` on every connection: with WAL it cannot corrupt the file, and a
    commit no longer waits for a disk sync (a power cut may lose the last commits, not the
    store). Connections made before the listener are dropped from the pool."""

    def on_connect(connection: Any, _record: Any) -> None:
        cursor = connection.cursor()
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    sqlalchemy.event.listen(storage.engine, "connect", on_connect)
    storage.engine.dispose()


# Every SQL engine this process opened and still holds: ``close_idle_connections`` empties
# their pools (a long-lived process that opens many stores, e.g. a test run, would otherwise
# keep their idle connections until each engine is garbage-collected).
_ENGINES: weakref.WeakSet[Any] = weakref.WeakSet()


def close_idle_connections() -> None:
    """Close the idle pooled connections of every store this process opened (they reconnect
    on next use)."""
    for engine in list(_ENGINES):
        engine.dispose()


def _rdb_storage(
    url: str,
    engine_kwargs: dict[str, Any],
    heartbeat: bool,
    storage_class: type[RDBStorage] = RDBStorage,
) -> RDBStorage:
    """An RDBStorage; on a new database, processes that start together race to create Optuna's
    tables, and the losers try again (they then find the tables)."""
    for attempt in range(1, SCHEMA_ATTEMPTS + 1):
        try:
            options: Any = _heartbeat_kwargs(heartbeat)
            storage = storage_class(url, engine_kwargs=engine_kwargs, **options)
            _ENGINES.add(storage.engine)
            return storage
        except Exception as error:
            if attempt == SCHEMA_ATTEMPTS or not _lost_schema_race(error):
                raise
            time.sleep(random.uniform(0.1, 0.5) * attempt)
    raise AssertionError("unreachable")


def _lost_schema_race(error: BaseException) -> bool:
    text = str(error).lower()
    return "already exists" in text or "duplicate key" in text or "unique constraint" in text


def _enable_wal(path: str) -> None:
    """WAL lets readers and one writer work at once; the mode is kept in the file."""
    with contextlib.closing(sqlite3.connect(path, timeout=60)) as connection:
        connection.execute("PRAGMA journal_mode=WAL")


def _postgresql(url: str, heartbeat: bool) -> RDBStorage:
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url.removeprefix("postgresql://")
    # A worker uses at most a few connections at once (its loop, the heartbeat thread): keep
    # few per process, so that many workers stay far below the server's max_connections.
    engine_kwargs = {"pool_pre_ping": True, "pool_size": 1, "max_overflow": 3}
    storage = _rdb_storage(url, engine_kwargs, heartbeat)
    _reconnect_on_restart(storage.engine, _env_seconds("HPSEARCH_RECONNECT_S", RECONNECT_S))
    return storage


def _reconnect_on_restart(engine: Any, patience_s: int) -> None:
    """New connections retry while the server is down (restart, failover) for ``patience_s``.

    With ``pool_pre_ping`` a connection the server closed is replaced on checkout, so every call
    made while the server restarts waits for it instead of failing."""
    from sqlalchemy import event

    @event.listens_for(engine, "do_connect")
    def _connect(dialect: Any, _record: Any, cargs: Any, cparams: Any) -> Any:
        deadline = time.monotonic() + patience_s
        while True:
            try:
                return dialect.connect(*cargs, **cparams)
            except dialect.loaded_dbapi.OperationalError as error:
                if time.monotonic() >= deadline:
                    raise
                first_line = str(error).strip().splitlines()[0] if str(error).strip() else ""
                logger.warning("database unreachable (%s); retrying", first_line)
                time.sleep(1.0)


def _redis_journal(url: str) -> BaseStorage:
    from optuna.storages.journal import JournalRedisBackend, JournalStorage

    try:
        import redis  # noqa: F401
    except ImportError:
        raise StorageError(
            f"storage {mask_url(url)} needs the Python package redis: pip install redis"
        ) from None

    return JournalStorage(JournalRedisBackend(url))


def _file_journal(url: str) -> BaseStorage:
    from optuna.storages.journal import JournalFileBackend, JournalStorage

    path = url.removeprefix("journal://")
    return JournalStorage(JournalFileBackend(path))


def _grpc(url: str) -> BaseStorage:
    _require_grpc()
    from optuna.storages import GrpcStorageProxy

    parts = urlsplit(url)
    return GrpcStorageProxy(
        host=parts.hostname or "localhost", port=parts.port or DEFAULT_GRPC_PORT
    )


def _require_grpc() -> None:
    try:
        import grpc  # noqa: F401
    except ImportError:
        raise StorageError("the gRPC storage proxy needs grpcio: pip install grpcio") from None


def serve_grpc_proxy(
    url: str | None, *, host: str = "127.0.0.1", port: int = DEFAULT_GRPC_PORT
) -> None:
    """Serve Optuna's gRPC storage proxy for the store at ``url`` until interrupted.

    Workers then open ``grpc://host:port``: the proxy holds the only database connections, so
    very many workers do not exhaust the database's connection limit. Trials run through the
    proxy have no heartbeat (Optuna's gRPC client does not support it)."""
    _require_grpc()
    from optuna.storages import get_storage, run_grpc_proxy_server

    url = url or default_storage_url()
    if urlsplit(url).scheme in ("grpc", "redis", "rediss", "journal"):
        raise StorageError(
            f"the gRPC proxy serves an SQL store, not {mask_url(url)!r}; "
            "pass --storage postgresql+psycopg://... or sqlite:///..."
        )
    storage = get_storage(open_storage(url, heartbeat=False))  # adds Optuna's trial cache
    try:
        run_grpc_proxy_server(storage, host=host, port=port)
    except RuntimeError as error:  # grpc: "Failed to bind to address"
        raise StorageError(f"cannot serve on {host}:{port}: {error}; pick another --port") from None


__all__ = [
    "DEFAULT_GRPC_PORT",
    "DEFAULT_STORAGE",
    "STORES",
    "default_storage_url",
    "heartbeat_settings",
    "is_transient_error",
    "mask_url",
    "open_storage",
    "serve_grpc_proxy",
]


# Store kinds by URL scheme (``postgresql+driver`` counts as ``postgresql``): an opener takes
# the URL, whether to record heartbeats, and whether a missing store may be created. A plug-in
# adds a scheme with ``STORES.register("scheme", opener)``.
STORES: Registry[Opener] = Registry(
    "store",
    {
        "sqlite": lambda url, heartbeat, create: _sqlite(url, heartbeat, create),
        "postgresql": lambda url, heartbeat, _create: _postgresql(url, heartbeat),
        "redis": lambda url, _heartbeat, _create: _redis_journal(url),
        "rediss": lambda url, _heartbeat, _create: _redis_journal(url),
        "journal": lambda url, _heartbeat, _create: _file_journal(url),
        "grpc": lambda url, _heartbeat, _create: _grpc(url),
    },
)
