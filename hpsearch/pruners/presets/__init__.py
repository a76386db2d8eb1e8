"""Named rule sets (presets) from the seeds: a spec lists them by name under ``rules:``.

Each trainer's presets live in a module beside this one (every module of this package is
imported on first use) and register themselves with ``register_preset``. A preset holds
declarative ``RuleConfig`` rules and/or factories of custom ``Rule`` subclasses (for stateful
logic such as a fallback ladder); ``build()`` makes fresh rule objects for each trial.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from hpsearch.errors import RuleError
from hpsearch.pruners.base import Rule
from hpsearch.pruners.declarative import RuleConfig
from hpsearch.registry import Registry

RuleFactory = Callable[[], Rule]


@dataclass(frozen=True)
class Preset:
    """A named rule set.

    ``reads`` and ``changes`` name the metrics/knobs the custom rules use, so a spec can be
    checked against its trainer (declarative rules are checked from their own conditions).
    """

    name: str
    description: str
    configs: tuple[RuleConfig, ...] = ()
    factories: tuple[RuleFactory, ...] = ()
    reads: frozenset[str] = field(default_factory=frozenset)
    changes: frozenset[str] = field(default_factory=frozenset)

    def build(self) -> list[Rule]:
        rules: list[Rule] = [config.build() for config in self.configs]
        rules.extend(factory() for factory in self.factories)
        return rules

    def names_read(self) -> set[str]:
        names = set(self.reads)
        for config in self.configs:
            names |= config.condition_names()
            names |= set(config.if_params)
        return names

    def knobs_changed(self) -> set[str]:
        knobs = set(self.changes)
        for config in self.configs:
            knobs |= config.changed_knobs()
        return knobs


# Every module of this package registers its presets here when first needed (``_load_builtin``);
# a plug-in registers its own with ``register_preset`` (or ``PRESETS.register``).
PRESETS: Registry[Preset] = Registry("rule preset")
_loaded = False


def register_preset(
    name: str,
    description: str,
    *,
    rules: Iterable[Mapping[str, Any]] = (),
    factories: Iterable[RuleFactory] = (),
    reads: Iterable[str] = (),
    changes: Iterable[str] = (),
) -> Preset:
    """Register a preset from rule mappings (validated now) and custom rule factories."""
    preset = Preset(
        name=name,
        description=description,
        configs=tuple(RuleConfig.model_validate(rule) for rule in rules),
        factories=tuple(factories),
        reads=frozenset(reads),
        changes=frozenset(changes),
    )
    PRESETS.register(name, preset)
    return preset


def _load_builtin() -> None:
    global _loaded
    if not _loaded:
        _loaded = True
        for module in pkgutil.iter_modules(__path__):
            importlib.import_module(f"{__name__}.{module.name}")


def get_preset(name: str) -> Preset:
    """The preset called ``name``; RuleError listing the known ones otherwise."""
    _load_builtin()
    try:
        return PRESETS.get(name)
    except KeyError as error:
        raise RuleError(str(error.args[0])) from None


def preset_names() -> list[str]:
    _load_builtin()
    return PRESETS.names()


__all__ = ["PRESETS", "Preset", "get_preset", "preset_names", "register_preset"]
