"""A per-trial time limit (the spec's ``trial_timeout``).

In the main thread of a Unix process a timer signal (``SIGALRM``) interrupts the trainer where
it is, even in ``time.sleep`` or a loop that never yields; it fires again every second while a
trainer swallows it. The alarm is held while hpsearch itself writes to the store (``hold``), and
raised as soon as the write is done. Elsewhere (another thread, no ``SIGALRM``) the limit is
checked between epochs. A hang inside one C call (a kernel that never returns) is interrupted
only when it returns to Python.
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType


class TrialTimeout(BaseException):
    """The trial ran past its time limit. A BaseException, so that trainer code catching
    ``Exception`` does not swallow it."""

    def __init__(self, seconds: float) -> None:
        super().__init__(f"the trial ran past its trial_timeout of {seconds:g} s")
        self.seconds = seconds


class Deadline:
    """The time limit of one trial; ``check()`` raises ``TrialTimeout`` once it has passed."""

    def __init__(self, seconds: float | None) -> None:
        self.seconds = seconds
        self.ends_at = None if seconds is None else time.monotonic() + seconds
        self._held = False
        self._expired = False

    def check(self) -> None:
        if self.seconds is None or self._held:
            return
        if self._expired or (self.ends_at is not None and time.monotonic() >= self.ends_at):
            self._expired = True
            raise TrialTimeout(self.seconds)

    @contextmanager
    def hold(self) -> Iterator[None]:
        """No timeout raised inside (hpsearch's own store writes); checked right after."""
        held, self._held = self._held, True
        try:
            yield
        finally:
            self._held = held
        self.check()

    def disarm(self) -> None:
        """The trial has ended: no timeout from now on."""
        self._held = True

    def _on_alarm(self, _signum: int, _frame: FrameType | None) -> None:
        self._expired = True
        self.check()


@contextmanager
def trial_deadline(seconds: float | None) -> Iterator[Deadline]:
    """A ``Deadline`` of ``seconds`` (None: no limit), with the alarm armed where possible."""
    deadline = Deadline(seconds)
    usable = (
        seconds is not None
        and hasattr(signal, "SIGALRM")
        and threading.current_thread() is threading.main_thread()
    )
    if not usable:
        yield deadline
        return
    assert seconds is not None
    previous = signal.signal(signal.SIGALRM, deadline._on_alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds, 1.0)
    try:
        yield deadline
    finally:
        deadline.disarm()  # an alarm that fires now is dropped
        signal.setitimer(signal.ITIMER_REAL, 0.0)
        signal.signal(signal.SIGALRM, previous)
