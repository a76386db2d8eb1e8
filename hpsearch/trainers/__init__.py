"""Trainers and their registry.

A trainer is named in a spec either by its registry name (``cvfp``), as
``package.module:Class`` for a user's own ``Trainer`` subclass, or as ``package.module:function``
for a generator function ``train(params, knobs, *, device, seed)``. The module is imported from
``sys.path``, the working directory first (so ``examples.digits:DigitsTrainer`` works from the
repository root), or given as a file: ``path/to/file.py:Class``.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import os
import re
import sys
from pathlib import Path
from types import ModuleType

from hpsearch.errors import TrainerError
from hpsearch.trainers.base import FunctionTrainer, Trainer, function_trainer

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


def get_trainer_class(name: str, base_dir: Path | None = None) -> type[Trainer]:
    """Resolve a registry name, ``package.module:Class``, ``package.module:function`` or
    ``file.py:Class`` to a Trainer class (a generator function is wrapped in one). A relative
    ``file.py`` is looked for in ``base_dir`` (the spec's folder) first, then the working
    directory."""
    target = _BUILTIN.get(name, name)
    if ":" not in target:
        raise TrainerError(
            f"unknown trainer {name!r}; use one of {', '.join(trainer_names())}, "
            "'package.module:Class' for your own Trainer subclass or "
            "'package.module:function' for a generator function"
        )
    module_name, _, attribute = target.rpartition(":")
    is_file = module_name.endswith(".py")
    if not ((is_file or _DOTTED.fullmatch(module_name)) and attribute.isidentifier()):
        raise TrainerError(
            f"trainer {name[:200]!r} is not 'package.module:Class' (an absolute module path, "
            "a colon, a class name) or 'file.py:Class'; fix the trainer: entry"
        )
    module = _import(name, module_name, base_dir)
    found = getattr(module, attribute, None)
    if isinstance(found, type) and issubclass(found, Trainer):
        return found
    if inspect.isgeneratorfunction(found):
        return function_trainer(found, name=target)
    raise TrainerError(
        f"trainer {name!r}: {module_name!r} has no Trainer subclass {attribute!r}; name a class "
        "that subclasses hpsearch.trainers.Trainer, or a generator function "
        "train(params, knobs, *, device, seed) that yields metrics"
    )


def _import(name: str, module_name: str, base_dir: Path | None) -> ModuleType:
    """The module, from a dotted name (working directory on the path) or a ``.py`` file."""
    if module_name.endswith(".py"):
        path = Path(module_name)
        if base_dir is not None and not path.is_absolute() and (base_dir / path).is_file():
            path = base_dir / path
        return _import_file(name, path)
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        return importlib.import_module(module_name)
    except ImportError as error:
        raise TrainerError(
            f"trainer {name!r}: cannot import module {module_name!r} ({_first_line(error)}); "
            "run from the folder that holds it, add that folder to PYTHONPATH, or name the "
            "file: path/file.py:Class"
        ) from None
    except (Exception, SystemExit) as error:  # the module itself fails on import
        raise TrainerError(
            f"trainer {name!r}: importing module {module_name!r} failed with "
            f"{type(error).__name__}: {_first_line(error)}; fix that module"
        ) from None


def _import_file(name: str, path: Path) -> ModuleType:
    if not path.is_file():
        raise TrainerError(f"trainer {name!r}: file {str(path)!r} does not exist; fix the path")
    module_name = f"hpsearch_user_{path.stem}_{abs(hash(str(path.resolve())))}"
    if module_name in sys.modules:
        return sys.modules[module_name]
    spec = importlib.util.spec_from_file_location(module_name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    except (Exception, SystemExit) as error:  # the file itself fails on import
        del sys.modules[module_name]
        raise TrainerError(
            f"trainer {name!r}: importing {str(path)!r} failed with "
            f"{type(error).__name__}: {_first_line(error)}; fix that file"
        ) from None
    return module


__all__ = [
    "FunctionTrainer",
    "Trainer",
    "function_trainer",
    "get_trainer_class",
    "register_trainer",
    "trainer_names",
]
