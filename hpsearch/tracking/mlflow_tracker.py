"""MLflow tracking on MLflow's client API: one experiment per study, one run per trial.

Per-epoch metrics are buffered and sent with ``log_batch`` every ``flush_every`` epochs and at
the end; rule events, the metrics history and any trainer report are JSON artifacts. Every
call is guarded: an unreachable tracking server is one warning, then the trial goes on
untracked.
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

from hpsearch.storage import mask_secrets, mask_url
from hpsearch.tracking.base import DEFAULT_TRACKING_URI, Tracker, TrialRun

logger = logging.getLogger("hpsearch.tracking")
T = TypeVar("T")

_RUN_STATUS = {"COMPLETE": "FINISHED", "PRUNED": "KILLED", "FAIL": "FAILED"}
MAX_PARAM_LENGTH = 6000
SUMMARY_SUFFIX = ".summary"


def tracking_uri_from_env() -> str:
    """``MLFLOW_TRACKING_URI`` if set, else MLflow 3's default ``sqlite:///mlflow.db``."""
    return os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_TRACKING_URI


class MlflowTracker(Tracker):
    """Tracks trials in MLflow at ``tracking_uri`` (default: ``tracking_uri_from_env()``)."""

    def __init__(self, tracking_uri: str | None = None, *, flush_every: int = 5) -> None:
        # Fail fast on a dead server instead of MLflow's minutes of retries.
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")
        self.tracking_uri = tracking_uri or tracking_uri_from_env()
        self.flush_every = flush_every
        self._client: Any = None
        self._experiments: dict[str, str] = {}
        self.disabled = False

    def _guard(self, what: str, call: Callable[[], T]) -> T | None:
        if self.disabled:
            return None
        try:
            return call()
        except Exception as error:  # tracking must never fail a trial
            self.disabled = True
            logger.warning(
                "MLflow tracking at %s is off for this process: %s failed (%s)",
                mask_url(self.tracking_uri),
                what,
                _first_line(mask_secrets(str(error), self.tracking_uri)) or type(error).__name__,
            )
            return None

    @property
    def client(self) -> Any:
        if self._client is None:
            from mlflow.tracking import MlflowClient

            self._client = MlflowClient(tracking_uri=self.tracking_uri)
        return self._client

    def experiment_id(self, study_name: str) -> str:
        if study_name not in self._experiments:
            experiment = self.client.get_experiment_by_name(study_name)
            if experiment is None:
                try:
                    experiment_id = self.client.create_experiment(study_name)
                except Exception:  # another worker created it first
                    experiment_id = self.client.get_experiment_by_name(study_name).experiment_id
            else:
                experiment_id = experiment.experiment_id
            self._experiments[study_name] = experiment_id
        return self._experiments[study_name]

    def start_trial(
        self,
        study_name: str,
        trial_number: int | None,
        params: Mapping[str, Any],
        tags: Mapping[str, str],
    ) -> TrialRun:
        run_name = f"trial-{trial_number}" if trial_number is not None else "try"

        def create() -> str:
            from mlflow.entities import Param

            run = self.client.create_run(
                self.experiment_id(study_name), run_name=run_name, tags=dict(tags)
            )
            param_list = [
                Param(key, str(value)[:MAX_PARAM_LENGTH]) for key, value in params.items()
            ]
            self.client.log_batch(run.info.run_id, params=param_list)
            return str(run.info.run_id)

        run_id = self._guard("create_run", create)
        return MlflowTrialRun(self, run_id)

    def log_study_artifact(self, study_name: str, name: str, path: str) -> None:
        """Log a study-level file into the run ``study`` of the experiment
        ``<study_name>.summary``, so the study's own experiment keeps one run per trial."""

        def log() -> None:
            experiment_id = self.experiment_id(f"{study_name}{SUMMARY_SUFFIX}")
            runs = self.client.search_runs([experiment_id], max_results=1)
            if runs:
                run_id = runs[0].info.run_id
            else:
                run = self.client.create_run(
                    experiment_id, run_name="study", tags={"study": study_name}
                )
                run_id = run.info.run_id
                self.client.set_terminated(run_id, "FINISHED")
            self.client.log_artifact(run_id, path)

        self._guard(f"log_artifact {name}", log)


class MlflowTrialRun(TrialRun):
    """One trial's MLflow run; buffers epoch metrics and sends them in batches."""

    def __init__(self, tracker: MlflowTracker, run_id: str | None) -> None:
        self.tracker = tracker
        self.run_id = run_id
        self._pending: list[Any] = []
        self._epochs_pending = 0

    def log_epoch(self, epoch: int, metrics: Mapping[str, float]) -> None:
        if self.run_id is None:
            return
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        self._pending.extend(
            Metric(key, _finite(value), now, epoch) for key, value in metrics.items()
        )
        self._epochs_pending += 1
        if self._epochs_pending >= self.tracker.flush_every:
            self._flush()

    def _flush(self) -> None:
        if self.run_id is None or not self._pending:
            return
        batch, self._pending, self._epochs_pending = self._pending, [], 0
        run_id = self.run_id

        def send() -> None:
            for start in range(0, len(batch), 1000):  # MLflow's per-call limit
                self.tracker.client.log_batch(run_id, metrics=batch[start : start + 1000])

        self.tracker._guard("log_batch", send)

    def log_events(self, events: Sequence[Mapping[str, Any]]) -> None:
        if self.run_id is None or not events:
            return
        run_id = self.run_id
        self.tracker._guard(
            "log rule events",
            lambda: self.tracker.client.log_dict(run_id, list(events), "rule_events.json"),
        )

    def finish(
        self,
        state: str,
        values: Mapping[str, float] | None,
        final_metrics: Mapping[str, float],
        artifacts: Mapping[str, Any],
    ) -> None:
        self._flush()
        if self.run_id is None:
            return
        run_id, client = self.run_id, self.tracker.client

        def close() -> None:
            from mlflow.entities import Metric, RunTag

            now = int(time.time() * 1000)
            metrics = [Metric(f"final_{k}", _finite(v), now, 0) for k, v in final_metrics.items()]
            metrics += [
                Metric(f"objective_{k}", _finite(v), now, 0) for k, v in (values or {}).items()
            ]
            client.log_batch(run_id, metrics=metrics, tags=[RunTag("state", state)])
            for name, content in artifacts.items():
                client.log_dict(run_id, content, f"{name}.json")
            client.set_terminated(run_id, _RUN_STATUS.get(state, "FINISHED"))

        self.tracker._guard("finish run", close)


def _first_line(text: str) -> str:
    lines = text.strip().splitlines()
    return lines[0][:300] if lines else ""


def _finite(value: float) -> float:
    """MLflow stores NaN but not inf portably; clamp infinities."""
    value = float(value)
    if math.isinf(value):
        return math.copysign(1e308, value)
    return value
