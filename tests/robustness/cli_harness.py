"""Running the real ``hpsearch`` command for the robustness tests.

``invoke`` runs ``hpsearch.cli.main`` in this process (what ``python -m hpsearch`` runs), with
stdout and stderr captured and the environment patched: any exception other than ``SystemExit``
escaping it is a traceback the user would have seen. ``store_rows`` counts the rows of every
table of an SQLite store, so a case can show that nothing was written.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import signal
import sqlite3
import traceback
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from hpsearch.cli import main


@dataclass
class Result:
    code: int
    stdout: str
    stderr: str
    traceback: str  # of an exception that escaped main(), else ""

    @property
    def stderr_lines(self) -> list[str]:
        return [line for line in self.stderr.splitlines() if line.strip()]


@contextlib.contextmanager
def patched_environment(env: Mapping[str, str | None]) -> Iterator[None]:
    saved = {key: os.environ.get(key) for key in env}
    try:
        for key, value in env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def invoke(argv: list[str], env: Mapping[str, str | None] | None = None) -> Result:
    """``hpsearch ARGV`` in this process."""
    out, err = io.StringIO(), io.StringIO()
    handlers = {signum: signal.getsignal(signum) for signum in (signal.SIGINT, signal.SIGTERM)}
    code, trace = 0, ""
    root = logging.getLogger()
    log_handler = logging.StreamHandler(err)  # warnings logged by the libraries count too
    root.addHandler(log_handler)
    try:
        with (
            patched_environment(env or {}),
            contextlib.redirect_stdout(out),
            contextlib.redirect_stderr(err),
        ):
            try:
                main(argv)
            except SystemExit as stop:
                code = stop.code if isinstance(stop.code, int) else 1
            except BaseException:  # what the user would see as a traceback
                trace = traceback.format_exc()
                code = 1
    finally:
        root.removeHandler(log_handler)
        for signum, handler in handlers.items():
            signal.signal(signum, handler)
    return Result(code, out.getvalue(), err.getvalue(), trace)


def store_rows(path: Path) -> dict[str, int]:
    """Rows per table of an SQLite store ({} when the file does not exist)."""
    if not path.is_file():
        return {}
    with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as connection:
        tables = [
            row[0]
            for row in connection.execute("SELECT name FROM sqlite_master WHERE type='table'")
        ]
        return {
            table: connection.execute(f'SELECT COUNT(*) FROM "{table}"').fetchone()[0]
            for table in tables
        }
