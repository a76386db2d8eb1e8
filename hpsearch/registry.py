"""One pattern for every plug-in point: a named registry with lazy targets.

Trainers, rule presets, samplers, pruners and stores are each found in a ``Registry``: a name
maps to the object itself or to a ``"package.module:attribute"`` string that is imported on
first use (so listing names loads nothing heavy). A plug-in author registers a name once::

    from hpsearch.trainers import TRAINERS
    TRAINERS.register("my-trainer", "my_package.trainer:MyTrainer")

and every registry answers an unknown name with one line naming the known ones.

Example:
    >>> from hpsearch.registry import Registry
    >>> colours = Registry("colour", {"red": "colorsys:rgb_to_hsv"})
    >>> colours.register("blue", len)
    >>> colours.names()
    ['blue', 'red']
    >>> colours.get("red").__name__
    'rgb_to_hsv'
    >>> colours.get("green")
    Traceback (most recent call last):
    ...
    KeyError: "unknown colour 'green'; use one of blue, red"
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from typing import Any, Generic, TypeVar

T = TypeVar("T")


class Registry(Generic[T]):
    """Names of one kind of plug-in (``kind`` is used in messages) and what they stand for."""

    def __init__(self, kind: str, entries: Mapping[str, T | str] | None = None) -> None:
        self.kind = kind
        self._entries: dict[str, T | str] = dict(entries or {})

    def register(self, name: str, target: T | str) -> None:
        """Make ``name`` stand for ``target`` (an object, or ``"package.module:attribute"``
        imported on first use); a later registration of the same name replaces it."""
        self._entries[name] = target

    def names(self) -> list[str]:
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def entry(self, name: str) -> T | str | None:
        """What ``name`` was registered as (not imported), or None."""
        return self._entries.get(name)

    def get(self, name: str) -> T:
        """The object registered as ``name`` (imported now if it was a string);
        KeyError naming the known names otherwise."""
        if name not in self._entries:
            raise KeyError(f"unknown {self.kind} {name!r}; use one of {', '.join(self.names())}")
        target = self._entries[name]
        if isinstance(target, str):
            target = self._entries[name] = resolve(target)
        return target


def resolve(target: str) -> Any:
    """The attribute ``target`` (``"package.module:attribute"``) names, imported now."""
    module_name, _, attribute = target.partition(":")
    value: Any = importlib.import_module(module_name)
    for part in attribute.split("."):
        value = getattr(value, part)
    return value
