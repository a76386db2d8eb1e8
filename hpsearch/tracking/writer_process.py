"""MLflow's writes in a child process, so they leave the trial's process (and its GIL).

A thread that writes to MLflow's store holds the GIL for most of each write (SQLAlchemy is
Python), and the trial's own thread waits for it: with the writes in a thread, a no-op trial
took 1.8x as long as untracked (steady cadence, ``bench/mlflow_cost.py``); in this process,
1.1x. ``WriterProcess`` starts a child Python running ``main`` below when a study opens (or
at the first write), sends it the tracking URI on stdin (a password in it stays out of the
process list), then ``Operation``s (``operations.py``), one JSON line each; the child
applies them in order, combining a backlog of one run's batches into one ``log_batch``. Its start-up
(importing MLflow and opening its store: ~3.5 s of CPU) overlaps the first trials; closing a
study waits until the child has applied every write, then ends it.

The child ignores SIGINT and SIGTERM (the parent closes its runs on those and waits for the
writes) and ends at the end of its input: when the parent closes the pipe, or dies. Its
replies, JSON lines on a private copy of its stdout (the child's stdout itself goes to
stderr): ``{"done": token}`` when every operation sent before ``{"sync": token}`` is applied,
and ``{"error": [what, message]}`` when a write fails; after that the child drops what it is
sent (the parent turns tracking off, with one warning).
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

from hpsearch._util import uninterrupted
from hpsearch.tracking.operations import Operation
from hpsearch.tracking.writer import pop_absorbing

logger = logging.getLogger("hpsearch.tracking")
ErrorHandler = Callable[[str, str], None]
CHILD_START = "from hpsearch.tracking.writer_process import main; main()"


class WriterProcess:
    """The parent's end: start the child, send operations, wait until they are applied."""

    def __init__(self, tracking_uri: str, on_error: ErrorHandler) -> None:
        self.tracking_uri = tracking_uri
        self.on_error = on_error
        self._process: subprocess.Popen[bytes] | None = None
        self._send_lock = threading.Lock()
        self._replied = threading.Condition()
        self._done_token = 0
        self._next_token = 0
        self._ended = False

    def start(self) -> None:
        """Start the child now (it also starts on the first ``send``)."""
        with self._send_lock:
            self._ensure_started()

    @uninterrupted
    def send(self, operation: Operation) -> bool:
        """Send ``operation`` to the child (started on first use); False if there is no child
        to send it to (it could not start, or it ended): the caller applies it itself."""
        with self._send_lock:
            if not self._ensure_started():
                return False
            return self._write({"operation": dataclasses.asdict(operation)})

    def sync(self, timeout_s: float) -> bool:
        """Wait until the child has applied everything sent so far; False after ``timeout_s``.
        True at once when there is no child (never started, closed, or dead: what a dead child
        had not applied is lost, with a warning)."""
        with self._send_lock:
            if self._process is None or self._ended:
                return True
            self._next_token += 1
            token = self._next_token
            if not self._write({"sync": token}):
                return False
        deadline = time.monotonic() + timeout_s
        with self._replied:
            while self._done_token < token and not self._ended:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._replied.wait(left)
            return True

    def close(self, timeout_s: float) -> None:
        """Let the child finish what it was sent, then wait for it to exit."""
        with self._send_lock:
            process, self._process = self._process, None
        if process is None:
            return
        if process.stdin is not None:
            with contextlib.suppress(OSError):
                process.stdin.close()
        try:
            process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            logger.warning(
                "the MLflow writer process did not end in %.0f s; stopping it", timeout_s
            )
            process.kill()
            process.wait()

    def _ensure_started(self) -> bool:
        if self._ended:
            return False
        if self._process is not None:
            return True
        try:
            self._process = subprocess.Popen(
                [sys.executable, "-c", CHILD_START],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                env=_child_environment(),
            )
        except OSError as error:
            logger.warning("could not start the MLflow writer process (%s); writing here", error)
            self._ended = True
            return False
        if not self._write({"tracking_uri": self.tracking_uri}):  # never in the process list
            return False
        threading.Thread(
            target=self._read_replies,
            args=(self._process,),
            name="hpsearch-mlflow-replies",
            daemon=True,
        ).start()
        return True

    @uninterrupted
    def _write(self, message: dict[str, Any]) -> bool:
        process = self._process
        if process is None or process.stdin is None:
            return False
        try:
            process.stdin.write(_line(message))
            process.stdin.flush()
        except (BrokenPipeError, OSError):
            self._child_ended(process)
            return False
        return True

    def _read_replies(self, process: subprocess.Popen[bytes]) -> None:
        assert process.stdout is not None
        for line in process.stdout:
            try:
                reply = json.loads(line)
            except ValueError:
                break
            if "done" in reply:
                with self._replied:
                    self._done_token = max(self._done_token, int(reply["done"]))
                    self._replied.notify_all()
            elif "error" in reply:
                self.on_error(*(str(part) for part in reply["error"][:2]))
        if process is self._process:  # not a close(): the child died
            self._child_ended(process)

    def _child_ended(self, process: subprocess.Popen[bytes]) -> None:
        if self._ended:
            return
        self._ended = True
        try:
            code: int | None = process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            code = None
        logger.warning(
            "the MLflow writer process ended (exit code %s); writes not yet applied are lost, "
            "later ones are written in this process",
            code,
        )
        with self._replied:
            self._replied.notify_all()


def _child_environment() -> dict[str, str]:
    """This environment, with hpsearch's own folder first on the path (a source checkout
    that is not installed still starts the child)."""
    root = str(Path(__file__).resolve().parents[2])
    path = os.environ.get("PYTHONPATH", "")
    return {**os.environ, "PYTHONPATH": root + (os.pathsep + path if path else "")}


# -- the child ---------------------------------------------------------------------------------


class _Inbox:
    """Messages read from stdin by a thread, taken in order by the writing loop."""

    def __init__(self, requests: IO[bytes]) -> None:
        self._messages: collections.deque[Any] = collections.deque()
        self._arrived = threading.Condition()
        threading.Thread(target=self._read, args=(requests,), daemon=True).start()

    def _read(self, requests: IO[bytes]) -> None:
        while True:
            message = _message(requests.readline())  # None at the end (or a torn line)
            with self._arrived:
                self._messages.append(message)
                self._arrived.notify()
            if message is None:
                return

    def take(self) -> Any:
        """The next message (None at the end); an operation takes the same run's batches
        queued right after it."""
        with self._arrived:
            while not self._messages:
                self._arrived.wait()
            return pop_absorbing(self._messages)[0]


def serve(requests: IO[bytes], replies: IO[bytes]) -> None:
    """Apply the operations read from ``requests`` (after the tracking URI, the first message)
    until its end; reply on ``replies``."""
    from mlflow.tracking import MlflowClient

    first = json.loads(requests.readline() or "{}")
    tracking_uri = str(first["tracking_uri"])
    client = MlflowClient(tracking_uri)
    inbox, failed = _Inbox(requests), False

    def reply(message: dict[str, Any]) -> None:
        with contextlib.suppress(OSError):  # the parent is gone: finish the writes anyway
            replies.write(_line(message))
            replies.flush()

    while (message := inbox.take()) is not None:
        if isinstance(message, dict):
            reply({"done": message["sync"]})
        elif isinstance(message, Operation) and not failed:
            try:
                message.apply(client, tracking_uri)
            except Exception as error:  # reported once; the parent turns tracking off
                failed = True
                reply({"error": [message.what, str(error)]})


def _line(message: dict[str, Any]) -> bytes:
    return json.dumps(message, separators=(",", ":")).encode() + b"\n"


def _message(line: bytes) -> Operation | dict[str, Any] | None:
    """An operation, a ``{"sync": token}``, or None at the end of the input."""
    try:
        message = json.loads(line) if line else None
    except ValueError:
        return None
    if not isinstance(message, dict):
        return None
    if "operation" in message:
        return Operation(**message["operation"])
    return message if "sync" in message else None


def main() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    replies = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)  # anything printed goes to stderr, never into the replies
    serve(sys.stdin.buffer, replies)
