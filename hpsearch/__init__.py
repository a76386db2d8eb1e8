"""hpsearch: multi-objective hyperparameter search for fragile training trade-offs.

import hpsearch
study = hpsearch.run("cvfp", n_trials=40)            # an optuna.Study
best = hpsearch.best_configs("cvfp", storage="sqlite:///hpsearch.db")
best[0].params, best[0].values, best[0].metrics, best[0].mlflow_run_id
"""

from __future__ import annotations

from hpsearch.errors import (
    HpsearchError,
    ParamError,
    RuleError,
    SpecError,
    StorageError,
    StudyNotFoundError,
    TrainerError,
)
from hpsearch.query import BestConfig, best_configs, study_summaries
from hpsearch.runner import create_study, run, try_config
from hpsearch.search_spaces import load_spec, packaged_spec_names
from hpsearch.storage import open_storage

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
