"""One worker per queued trial: the SQLite store's atomic claim of a WAITING trial.

``study.ask()`` pops a queued (WAITING) trial by setting it RUNNING, and Optuna's RDB storage
makes that transition atomic with ``SELECT ... FOR UPDATE``. SQLite ignores ``FOR UPDATE``: two
processes (or two threads of the gRPC proxy) can both read WAITING and both set RUNNING, so both
run the same trial, or one of them puts it back in the queue while the other runs it. Here the
transition to RUNNING holds an exclusive ``flock`` on a file beside the database, so only one
claim reads and writes at a time; every other call goes straight through.

PostgreSQL honours ``FOR UPDATE`` and the journal stores (Redis, file) decide the winner of a
claim from their log, so only SQLite needs this.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator, Sequence
from pathlib import Path

from optuna.storages import RDBStorage
from optuna.trial import TrialState


class SQLiteClaimStorage(RDBStorage):
    """An ``RDBStorage`` on an SQLite file whose WAITING -> RUNNING claims are serialised."""

    def set_trial_state_values(
        self, trial_id: int, state: TrialState, values: Sequence[float] | None = None
    ) -> bool:
        if state != TrialState.RUNNING:
            return super().set_trial_state_values(trial_id, state, values)
        with claim_lock(claim_lock_path(self.url)):
            return super().set_trial_state_values(trial_id, state, values)


def claim_lock_path(url: str) -> Path | None:
    """The lock file of the SQLite store at ``url`` (``<file>.claims.lock``); None in memory."""
    path = url.removeprefix("sqlite:///").split("?")[0]
    if not path or path == ":memory:":
        return None
    return Path(path + ".claims.lock")


@contextlib.contextmanager
def claim_lock(path: Path | None) -> Iterator[None]:
    """Holds an exclusive ``flock`` on ``path`` (a new descriptor per call, so threads of one
    process exclude each other too); a no-op for ``None``."""
    if path is None:
        yield
        return
    descriptor = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX)
        yield
    finally:
        os.close(descriptor)  # closing the descriptor releases the lock
