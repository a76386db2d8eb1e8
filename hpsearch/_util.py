"""Small helpers shared across hpsearch (one home each)."""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import CodeType
from typing import Any, TypeVar

F = TypeVar("F", bound=Callable[..., Any])

# The code of functions that a worker's stop signal never cuts short (``uninterrupted``).
UNINTERRUPTED_CODE: set[CodeType] = set()


def uninterrupted(function: F) -> F:
    """Mark ``function`` as one that a worker's stop (SIGINT, SIGTERM) waits for: the trial
    stops once the call is over. For short calls that a stop would leave half done (a write
    queued but not counted, a line half sent to the MLflow writer process)."""
    UNINTERRUPTED_CODE.add(function.__code__)
    return function


def json_safe(value: Any) -> Any:
    """Recursively replace NaN/inf by strings (and tuples by lists) so the result is strict
    JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {str(key): json_safe(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(item) for item in value]
    return value


def first_line(error: BaseException | str, limit: int = 300) -> str:
    """The first line of an error's message (at most ``limit`` characters), else the error's
    type name: what a one-line message quotes of an exception."""
    lines = str(error).strip().splitlines()
    if lines:
        return lines[0][:limit]
    return type(error).__name__ if isinstance(error, BaseException) else ""


@contextmanager
def quiet_experimental() -> Iterator[None]:
    """Optuna's ExperimentalWarning silenced inside the block (heartbeats, constraints and the
    other features hpsearch uses on purpose)."""
    import optuna

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        yield


def lazy_attribute(package: str, homes: dict[str, str], name: str) -> Any:
    """A package's ``__getattr__`` (PEP 562): ``name`` from its module ``package.homes[name]``,
    imported on first use, so that heavy imports wait until a name that needs them is used."""
    import importlib

    home = homes.get(name)
    if home is None:
        raise AttributeError(f"module {package!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{package}.{home}"), name)
