"""The tracking contract: one run per trial, per-epoch metrics, rule events, final values."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from typing import Any

DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"


class TrialRun(ABC):
    """The record of one trial. Implementations never raise: tracking must not fail a trial."""

    run_id: str | None = None

    @abstractmethod
    def log_epoch(self, epoch: int, metrics: Mapping[str, float]) -> None:
        """Metrics after one epoch (may be buffered and sent in batches)."""

    @abstractmethod
    def log_events(self, events: Sequence[Mapping[str, Any]]) -> None:
        """Rule firings of this trial so far (the full list replaces the last one)."""

    @abstractmethod
    def finish(
        self,
        state: str,
        values: Mapping[str, float] | None,
        final_metrics: Mapping[str, float],
        artifacts: Mapping[str, Any],
    ) -> None:
        """End the run: state COMPLETE / PRUNED / FAIL, objective values, JSON artifacts."""


class Tracker(ABC):
    """Starts one ``TrialRun`` per trial, grouped by study."""

    @abstractmethod
    def start_trial(
        self,
        study_name: str,
        trial_number: int | None,
        params: Mapping[str, Any],
        tags: Mapping[str, str],
    ) -> TrialRun:
        """A run for one trial (``trial_number`` None for a trial outside any study)."""

    def log_study_artifact(self, study_name: str, name: str, path: str) -> None:  # noqa: B027
        """Attach a file (e.g. the Pareto-front plot) to the study's experiment."""


class NullTrialRun(TrialRun):
    def log_epoch(self, epoch: int, metrics: Mapping[str, float]) -> None:
        pass

    def log_events(self, events: Sequence[Mapping[str, Any]]) -> None:
        pass

    def finish(
        self,
        state: str,
        values: Mapping[str, float] | None,
        final_metrics: Mapping[str, float],
        artifacts: Mapping[str, Any],
    ) -> None:
        pass


class NullTracker(Tracker):
    """Tracks nothing (``hpsearch try``, tests, ``--no-mlflow``)."""

    def start_trial(
        self,
        study_name: str,
        trial_number: int | None,
        params: Mapping[str, Any],
        tags: Mapping[str, str],
    ) -> TrialRun:
        return NullTrialRun()
