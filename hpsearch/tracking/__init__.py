"""Experiment tracking: MLflow (a parent run per study, a child run per trial) or nothing."""

from __future__ import annotations

from hpsearch.tracking.base import (
    DEFAULT_TRACKING_URI,
    NullTracker,
    Session,
    Terminated,
    Tracker,
    TrialRun,
    describe_interruption,
)
from hpsearch.tracking.mlflow_tracker import (
    MlflowTracker,
    experiment_url,
    mlflow_hint,
    tracking_uri_from_env,
)

__all__ = [
    "DEFAULT_TRACKING_URI",
    "MlflowTracker",
    "NullTracker",
    "Session",
    "Terminated",
    "Tracker",
    "TrialRun",
    "describe_interruption",
    "experiment_url",
    "mlflow_hint",
    "tracking_uri_from_env",
]
