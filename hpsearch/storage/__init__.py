"""Opening the study store from a URL (DESIGN.md, Storage).

- ``sqlite:///path.db``: RDB storage with WAL and a busy timeout (several local processes).
- ``postgresql://`` / ``postgresql+psycopg://``: psycopg 3, ``pool_pre_ping``, small pools.
- ``redis://host:port/db``: journal storage on Redis; ``journal:///path.log``: journal file.
- ``grpc://host:port``: Optuna's gRPC storage proxy (``optuna.storages.run_grpc_proxy_server``).

RDB stores get a heartbeat so a trial of a dead worker is failed after the grace period and
retried with the same params (``RetryHeartbeatStaleTrialCallback``). Passwords are masked by
``mask_url`` wherever a URL is printed or logged.
"""

from __future__ import annotations

import os
import sqlite3
import warnings
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import optuna
from optuna.storages import BaseStorage, RDBStorage, RetryHeartbeatStaleTrialCallback

from hpsearch.errors import StorageError

DEFAULT_STORAGE = "sqlite:///hpsearch.db"
HEARTBEAT_INTERVAL_S = 60
GRACE_PERIOD_S = 180
MAX_RETRY = 3


def default_storage_url() -> str:
    """``HPSEARCH_STORAGE`` if set, else ``sqlite:///hpsearch.db`` in the working directory."""
    return os.environ.get("HPSEARCH_STORAGE") or DEFAULT_STORAGE


def mask_url(url: str) -> str:
    """The URL with any password replaced by ``***``."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.hostname or ""
    port = f":{parts.port}" if parts.port else ""
    return urlunsplit(parts._replace(netloc=f"{user}:***@{host}{port}"))


def open_storage(url: str | None = None, *, heartbeat: bool = True) -> BaseStorage:
    """A storage for ``url`` (default: ``default_storage_url()``); StorageError if it cannot be
    opened, with the URL masked."""
    url = url or default_storage_url()
    scheme = urlsplit(url).scheme
    try:
        with warnings.catch_warnings():  # heartbeat options are "experimental" since Optuna 2.8
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return _open(url, scheme, heartbeat)
    except StorageError:
        raise
    except Exception as error:  # driver errors carry the URL; never print it unmasked
        message = str(error).replace(url, mask_url(url)).splitlines()[0]
        raise StorageError(
            f"cannot open storage {mask_url(url)}: {message}; check that the server is running "
            "and the URL is right"
        ) from None


def _open(url: str, scheme: str, heartbeat: bool) -> BaseStorage:
    if scheme == "sqlite":
        return _sqlite(url, heartbeat)
    if scheme.startswith("postgresql"):
        return _postgresql(url, heartbeat)
    if scheme in ("redis", "rediss"):
        return _redis_journal(url)
    if scheme == "journal":
        return _file_journal(url)
    if scheme == "grpc":
        return _grpc(url)
    raise StorageError(
        f"unsupported storage URL {mask_url(url)!r}; use sqlite:///file.db, "
        "postgresql+psycopg://user@host/db, redis://host:port, journal:///file.log "
        "or grpc://host:port"
    )


def _heartbeat_kwargs(heartbeat: bool) -> dict[str, object]:
    if not heartbeat:
        return {}
    return {
        "heartbeat_interval": HEARTBEAT_INTERVAL_S,
        "grace_period": GRACE_PERIOD_S,
        "heartbeat_stale_trial_callback": RetryHeartbeatStaleTrialCallback(max_retry=MAX_RETRY),
    }


def _sqlite(url: str, heartbeat: bool) -> RDBStorage:
    path = url.removeprefix("sqlite:///")
    if path and path != ":memory:":
        folder = Path(path).parent
        if not folder.is_dir():
            raise StorageError(
                f"cannot open storage {url}: folder {str(folder)!r} does not exist; create it"
            )
        _enable_wal(path)
    return RDBStorage(
        url,
        engine_kwargs={"connect_args": {"timeout": 60}},
        **_heartbeat_kwargs(heartbeat),  # type: ignore[arg-type]
    )


def _enable_wal(path: str) -> None:
    """WAL lets readers and one writer work at once; the mode is kept in the file."""
    with sqlite3.connect(path, timeout=60) as connection:
        connection.execute("PRAGMA journal_mode=WAL")


def _postgresql(url: str, heartbeat: bool) -> RDBStorage:
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url.removeprefix("postgresql://")
    return RDBStorage(
        url,
        engine_kwargs={"pool_pre_ping": True, "pool_size": 2, "max_overflow": 4},
        **_heartbeat_kwargs(heartbeat),  # type: ignore[arg-type]
    )


def _redis_journal(url: str) -> BaseStorage:
    from optuna.storages.journal import JournalRedisBackend, JournalStorage

    return JournalStorage(JournalRedisBackend(url))


def _file_journal(url: str) -> BaseStorage:
    from optuna.storages.journal import JournalFileBackend, JournalStorage

    path = url.removeprefix("journal://")
    return JournalStorage(JournalFileBackend(path))


def _grpc(url: str) -> BaseStorage:
    from optuna.storages import GrpcStorageProxy

    parts = urlsplit(url)
    return GrpcStorageProxy(host=parts.hostname or "localhost", port=parts.port or 13000)


__all__ = ["DEFAULT_STORAGE", "default_storage_url", "mask_url", "open_storage"]
