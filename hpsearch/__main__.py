"""``python -m hpsearch`` is the ``hpsearch`` command.

A Ctrl-C or SIGTERM while the command is still being imported is one line and exit 130 / 143.
"""

import signal
import sys


def _stopped(signum: int, _frame: object) -> None:
    name = signal.Signals(signum).name
    sys.stderr.write(f"hpsearch: stopped by {name}\n")
    raise SystemExit(128 + signum)


signal.signal(signal.SIGTERM, _stopped)
signal.signal(signal.SIGINT, _stopped)
from hpsearch.cli import main  # noqa: E402  (after the handlers: the import takes seconds)

signal.signal(signal.SIGINT, signal.default_int_handler)
main()
