"""hpsearch: multi-objective hyperparameter search for fragile training trade-offs.

import hpsearch
study = hpsearch.run("cvfp", n_trials=40)            # an optuna.Study
best = hpsearch.best_configs("cvfp", storage="sqlite:///hpsearch.db")
best[0].params, best[0].values, best[0].metrics, best[0].mlflow_run_id

Importing the package is light: torch, Optuna and MLflow load when a name that needs them is
first used (``hpsearch.run``, ...), and importing sets nothing (no environment variable, no
logging filter).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from hpsearch.errors import (
    HpsearchError,
    ParamError,
    RuleError,
    SpecError,
    StorageError,
    StudyNotFoundError,
    TrainerError,
)

if TYPE_CHECKING:
    from hpsearch.query import BestConfig, best_configs, study_summaries
    from hpsearch.runner import create_study, run, try_config
    from hpsearch.search_spaces import load_spec, packaged_spec_names
    from hpsearch.storage import open_storage

# public name -> the module that defines it, imported on first use
_LAZY = {
    "BestConfig": "hpsearch.query",
    "best_configs": "hpsearch.query",
    "study_summaries": "hpsearch.query",
    "create_study": "hpsearch.runner",
    "run": "hpsearch.runner",
    "try_config": "hpsearch.runner",
    "load_spec": "hpsearch.search_spaces",
    "packaged_spec_names": "hpsearch.search_spaces",
    "open_storage": "hpsearch.storage",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'hpsearch' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # the next access is a plain attribute
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_LAZY])


__all__ = [
    "BestConfig",
    "HpsearchError",
    "ParamError",
    "RuleError",
    "SpecError",
    "StorageError",
    "StudyNotFoundError",
    "TrainerError",
    "best_configs",
    "create_study",
    "load_spec",
    "open_storage",
    "packaged_spec_names",
    "run",
    "study_summaries",
    "try_config",
]
