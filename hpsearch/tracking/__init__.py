"""Experiment tracking: MLflow (a parent run per study, a child run per trial) or nothing.

The names below are imported on first use, so that the MLflow writer process
(``writer_process``) starts without Optuna and hpsearch's storage layer.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from hpsearch._util import lazy_attribute

if TYPE_CHECKING:
    from hpsearch.tracking.base import (
        DEFAULT_TRACKING_URI,
        NullTracker,
        Session,
        Tracker,
        TrialRun,
        describe_interruption,
        describe_signal,
    )
    from hpsearch.tracking.mlflow_tracker import (
        MlflowTracker,
        experiment_url,
        mlflow_hint,
        tracking_uri_from_env,
    )

_HOMES = {
    "DEFAULT_TRACKING_URI": "base",
    "NullTracker": "base",
    "Session": "base",
    "Tracker": "base",
    "TrialRun": "base",
    "describe_interruption": "base",
    "describe_signal": "base",
    "MlflowTracker": "mlflow_tracker",
    "experiment_url": "mlflow_tracker",
    "mlflow_hint": "mlflow_tracker",
    "tracking_uri_from_env": "mlflow_tracker",
}


def __getattr__(name: str) -> Any:
    return lazy_attribute(__name__, _HOMES, name)


__all__ = [
    "DEFAULT_TRACKING_URI",
    "MlflowTracker",
    "NullTracker",
    "Session",
    "Tracker",
    "TrialRun",
    "describe_interruption",
    "describe_signal",
    "experiment_url",
    "mlflow_hint",
    "tracking_uri_from_env",
]
