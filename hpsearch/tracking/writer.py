"""A background thread that performs tracking writes in the order they were submitted.

MLflow's own asynchronous mode (``log_batch(..., synchronous=False)``,
``MLFLOW_ENABLE_ASYNC_LOGGING``) covers metrics, params and tags only; artifact uploads and
ending a run stay synchronous. hpsearch sends all of a trial's writes but the run's creation
(its id is stored on the Optuna trial when the trial starts) through this queue, so a trial
never waits on the tracking store.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable

logger = logging.getLogger("hpsearch.tracking")
Write = Callable[[], None]


class BackgroundWriter:
    """Runs submitted writes one at a time in a daemon thread (started on first use)."""

    def __init__(self, name: str = "hpsearch-mlflow") -> None:
        self.name = name
        self._queue: queue.Queue[Write] = queue.Queue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def submit(self, write: Write) -> None:
        """Queue ``write``; it must handle its own errors (one that escapes is logged)."""
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._loop, name=self.name, daemon=True)
                self._thread.start()
        self._queue.put(write)

    @property
    def pending(self) -> int:
        """Writes submitted and not yet done."""
        return self._queue.unfinished_tasks

    def drain(self, timeout_s: float) -> bool:
        """Wait until every submitted write is done; False if ``timeout_s`` passed first."""
        deadline = time.monotonic() + timeout_s
        with self._queue.all_tasks_done:
            while self._queue.unfinished_tasks:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._queue.all_tasks_done.wait(left)
        return True

    def _loop(self) -> None:
        while True:
            write = self._queue.get()
            try:
                write()
            except Exception:  # a write must never end the thread
                logger.exception("a tracking write failed")
            finally:
                self._queue.task_done()
