"""The body of a process forked for the signal tests: ``hpsearch ARGV`` with its output in
files of ``folder`` (preloaded by the fork server, so that it starts in a fraction of a second).
The file ``ready`` appears once the command is about to start."""

from __future__ import annotations

import faulthandler
import os
import signal


def run_command(argv: list[str], folder: str, environment: dict[str, str]) -> None:
    os.environ.update(environment)
    os.chdir(folder)
    for fd, name in ((1, "stdout"), (2, "stderr")):
        target = os.open(os.path.join(folder, name), os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
        os.dup2(target, fd)
    faulthandler.register(signal.SIGUSR1, all_threads=True)  # the test's view of a hang
    signal.signal(signal.SIGINT, signal.default_int_handler)
    from hpsearch.cli import main

    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    open(os.path.join(folder, "ready"), "w").close()
    main(argv)
