"""A background thread that performs tracking writes in the order they were submitted.

MLflow's own asynchronous mode (``log_batch(..., synchronous=False)``,
``MLFLOW_ENABLE_ASYNC_LOGGING``) covers metrics, params and tags only; artifact uploads and
ending a run stay synchronous. hpsearch sends all of a trial's writes but the run's creation
(its id is stored on the Optuna trial when the trial starts) through this queue, so a trial
never waits on the tracking store.

When the thread falls behind (trials shorter than their writes), consecutive writes that can
be combined are: a write with an ``absorb(later) -> bool`` method takes the writes queued right
after it that it accepts (one ``log_batch`` of a run's params, metrics and tags instead of
several), so the backlog costs fewer round trips to the store.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from collections.abc import Callable
from typing import Any, Protocol, TypeVar, runtime_checkable

from hpsearch._util import uninterrupted

logger = logging.getLogger("hpsearch.tracking")
Write = Callable[[], None]
T = TypeVar("T")


@runtime_checkable
class Absorbing(Protocol):
    """A queued write that may take over the one queued right after it."""

    def absorb(self, later: Any) -> bool:
        """Include ``later`` in this write (True), or leave it queued (False)."""
        ...


def pop_absorbing(queue: collections.deque[T]) -> tuple[T, int]:
    """The first item of a non-empty ``queue``, having absorbed the items queued right after it
    that it accepts (an item with an ``absorb`` method), removed too; how many were taken."""
    first, taken = queue.popleft(), 1
    if isinstance(first, Absorbing):
        while queue and first.absorb(queue[0]):
            queue.popleft()
            taken += 1
    return first, taken


class BackgroundWriter:
    """Runs submitted writes one at a time in a daemon thread (started on first use)."""

    def __init__(self, name: str = "hpsearch-mlflow") -> None:
        self.name = name
        self._queue: collections.deque[Write] = collections.deque()
        self._pending = 0  # submitted and not yet done (queued or being written)
        self._changed = threading.Condition()
        self._thread: threading.Thread | None = None

    @uninterrupted
    def submit(self, write: Write) -> None:
        """Queue ``write``; it must handle its own errors (one that escapes is logged)."""
        with self._changed:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._loop, name=self.name, daemon=True)
                self._thread.start()
            self._queue.append(write)
            self._pending += 1
            self._changed.notify_all()

    @property
    def pending(self) -> int:
        """Writes submitted and not yet done."""
        return self._pending

    def drain(self, timeout_s: float) -> bool:
        """Wait until every submitted write is done; False if ``timeout_s`` passed first."""
        deadline = time.monotonic() + timeout_s
        with self._changed:
            while self._pending:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._changed.wait(left)
        return True

    def _next(self) -> tuple[Write, int]:
        """The next write, with the writes queued after it that it absorbed; their count."""
        with self._changed:
            while not self._queue:
                self._changed.wait()
            return pop_absorbing(self._queue)

    def _loop(self) -> None:
        while True:
            write, taken = self._next()
            try:
                write()
            except Exception:  # a write must never end the thread
                logger.exception("a tracking write failed")
            finally:
                with self._changed:
                    self._pending -= taken
                    self._changed.notify_all()
