"""The tracking contract: a record per study, and within it one run per trial with per-epoch
metrics, rule events, final values and how the trial ended."""

from __future__ import annotations

import signal
from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"


class TrialRun(ABC):
    """The record of one trial. Implementations never raise: tracking must not fail a trial."""

    run_id: str | None = None

    @abstractmethod
    def log_epoch(self, epoch: int, metrics: Mapping[str, float]) -> None:
        """Metrics after one epoch (buffered; never waits on the tracking store)."""

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
        *,
        reason: str | None = None,
        feasible: bool | None = None,
    ) -> None:
        """End the run: state COMPLETE / PRUNED / FAIL, objective values, JSON artifacts, why
        a PRUNED or FAIL trial stopped, and whether a COMPLETE one meets its constraints."""


class Tracker(ABC):
    """Starts one ``TrialRun`` per trial, grouped by study.

    ``open_study`` and ``close_study`` bracket the trials one process runs on a study (``hpsearch
    run``, each ``hpsearch worker``, ``hpsearch launch``): the study's own record is found or
    created, its summary refreshed as trials end and once more at the close, and runs left open
    by an interruption are closed with its reason."""

    @abstractmethod
    def start_trial(
        self,
        study_name: str,
        trial_number: int | None,
        params: Mapping[str, Any],
        tags: Mapping[str, str],
    ) -> TrialRun:
        """A run for one trial (``trial_number`` None for a trial outside any study)."""

    def open_study(self, study: Any, spec: Any) -> None:  # noqa: B027
        """Find or create the study's record (an ``optuna.Study`` and its ``StudySpec``)."""

    def close_study(self, study: Any, interrupted: str | None = None) -> None:  # noqa: B027
        """Final summary; runs still open are closed (as interrupted, with the reason, when
        ``interrupted`` says why); waits until every write is done."""

    def where(self) -> str | None:
        """One line telling a person where to look at the study, or None."""
        return None

    @contextmanager
    def tracking(self, study: Any, spec: Any) -> Iterator[Session]:
        """``open_study`` ... ``close_study`` around a block of trials; an exception out of the
        block (Ctrl-C, an error) closes the open runs with its description, as does a reason
        set on the session (a signal the block handled itself)."""
        session = Session()
        self.open_study(study, spec)
        try:
            yield session
        except BaseException as error:
            session.interrupted = session.interrupted or describe_interruption(error)
            raise
        finally:
            self.close_study(study, session.interrupted)


@dataclass
class Session:
    """Why a block of trials was interrupted (None: it was not)."""

    interrupted: str | None = None


def describe_signal(signum: int) -> str:
    """``SIGINT (Ctrl-C)`` or the signal's name (``SIGTERM``)."""
    if signum == signal.SIGINT:
        return "SIGINT (Ctrl-C)"
    return signal.Signals(signum).name


def describe_interruption(error: BaseException) -> str:
    """``SIGINT (Ctrl-C)`` for KeyboardInterrupt, else the error's type and first line."""
    if isinstance(error, KeyboardInterrupt):
        return describe_signal(signal.SIGINT)
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0]}" if text else type(error).__name__


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
        *,
        reason: str | None = None,
        feasible: bool | None = None,
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
