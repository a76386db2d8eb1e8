"""Experiment tracking: MLflow (one run per trial) or nothing."""

from __future__ import annotations

from hpsearch.tracking.base import DEFAULT_TRACKING_URI, NullTracker, Tracker, TrialRun
from hpsearch.tracking.mlflow_tracker import MlflowTracker, tracking_uri_from_env

__all__ = [
    "DEFAULT_TRACKING_URI",
    "MlflowTracker",
    "NullTracker",
    "Tracker",
    "TrialRun",
    "tracking_uri_from_env",
]
