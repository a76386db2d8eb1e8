"""Trainers and their registry.

A trainer is named in a spec either by its registry name (``cvfp``) or as
``package.module:Class`` for a user's own ``Trainer`` subclass.
"""

from __future__ import annotations

import importlib
import re

from hpsearch.errors import TrainerError
from hpsearch.trainers.base import Trainer

_BUILTIN: dict[str, str] = {
    "cvfp": "hpsearch.trainers.cvfp:CvfpTrainer",
    "vae": "hpsearch.trainers.vae:VaeTrainer",
    "lbo": "hpsearch.trainers.lbo:LboTrainer",
    "lvm": "hpsearch.trainers.lvm:LvmTrainer",
    "fep": "hpsearch.trainers.fep:FepTrainer",
}


_DOTTED = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*")


def _first_line(error: BaseException) -> str:
    lines = str(error).strip().splitlines()
    return lines[0][:300] if lines else ""


def register_trainer(name: str, target: str) -> None:
    """Register ``name`` as an alias of ``package.module:Class``."""
    _BUILTIN[name] = target


def trainer_names() -> list[str]:
    """The registry names of the built-in trainers."""
    return sorted(_BUILTIN)


def get_trainer_class(name: str) -> type[Trainer]:
    """Resolve a registry name or ``package.module:Class`` to a Trainer subclass."""
    target = _BUILTIN.get(name, name)
    if ":" not in target:
        raise TrainerError(
            f"unknown trainer {name!r}; use one of {', '.join(trainer_names())} "
            "or 'package.module:Class' for your own Trainer subclass"
        )
    module_name, _, class_name = target.partition(":")
    if not (_DOTTED.fullmatch(module_name) and class_name.isidentifier()):
        raise TrainerError(
            f"trainer {name[:200]!r} is not 'package.module:Class' (an absolute module path, "
            "a colon, a class name); fix the trainer: entry"
        )
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        raise TrainerError(
            f"trainer {name!r}: cannot import module {module_name!r} ({_first_line(error)}); "
            "check the module path and that it is on PYTHONPATH"
        ) from None
    except (Exception, SystemExit) as error:  # the module itself fails on import
        raise TrainerError(
            f"trainer {name!r}: importing module {module_name!r} failed with "
            f"{type(error).__name__}: {_first_line(error)}; fix that module"
        ) from None
    trainer_class = getattr(module, class_name, None)
    if not (isinstance(trainer_class, type) and issubclass(trainer_class, Trainer)):
        raise TrainerError(
            f"trainer {name!r}: {module_name!r} has no Trainer subclass {class_name!r}; "
            "name a class that subclasses hpsearch.trainers.Trainer"
        )
    return trainer_class


__all__ = ["Trainer", "get_trainer_class", "register_trainer", "trainer_names"]
