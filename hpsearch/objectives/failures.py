"""Why a trial failed: its ``failure_class`` (issue 13, "Retries that know the cause").

- ``infrastructure``: the worker was killed or stopped, its heartbeat went stale, the store's
  connection was cut. The same params are retried.
- ``out_of_memory``: CUDA or host memory ran out (``torch.OutOfMemoryError``, ``MemoryError``).
- ``divergence``: a NaN / inf metric. A result about the config, never retried.
- ``trainer_error``: an exception from the trainer's own code (``sys.exit()`` included), a
  metric that is not a number or is missing. Not retried; K in a row stop a worker.
- ``timeout``: the trial ran past the spec's ``trial_timeout``.

Stored on a failed trial as user attr ``failure_class`` (next to ``fail_reason``).
"""

from __future__ import annotations

from typing import Literal

FailureClass = Literal["infrastructure", "out_of_memory", "divergence", "trainer_error", "timeout"]
FAILURE_CLASSES: tuple[FailureClass, ...] = (
    "infrastructure",
    "out_of_memory",
    "divergence",
    "trainer_error",
    "timeout",
)
FAILURE_CLASS_ATTR = "failure_class"
MAX_REASON_CHARS = 500  # a reason is one line; a trainer's megabyte message is cut


def classify_exception(error: BaseException) -> FailureClass:
    """The class of an exception raised by trainer code."""
    if isinstance(error, MemoryError) or _is_torch_out_of_memory(error):
        return "out_of_memory"
    return "trainer_error"


def _is_torch_out_of_memory(error: BaseException) -> bool:
    if type(error).__name__ == "OutOfMemoryError":  # torch.OutOfMemoryError (CUDA, MPS)
        return True
    return isinstance(error, RuntimeError) and "out of memory" in str(error).lower()[:200]


def describe_exception(error: BaseException) -> str:
    """``Type: first line of the message``, at most ``MAX_REASON_CHARS`` characters."""
    if isinstance(error, SystemExit):
        return short_reason(f"the trainer called sys.exit({error.code!r})")
    text = str(error).strip().splitlines()
    return short_reason(f"{type(error).__name__}: {text[0]}" if text else type(error).__name__)


def short_reason(reason: str) -> str:
    """One line of at most ``MAX_REASON_CHARS`` characters."""
    line = " ".join(reason.split("\n")[0].split())
    if len(line) <= MAX_REASON_CHARS:
        return line
    return line[: MAX_REASON_CHARS - 30] + f"... ({len(line)} characters)"
