"""Experiment tracking: MLflow (a parent run per study, a child run per trial) or nothing."""

from __future__ import annotations

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
