"""MLflow tracking on MLflow's client API: one experiment per study, one parent run per study
(``study_run.py``) and one nested child run per trial.

What a trial waits for: creating its run (one call; its id goes on the Optuna trial). Its
params, per-epoch metrics (buffered, sent every ``flush_interval_s`` and at the end), final
values, tags, JSON artifacts (one upload of a folder) and the end of the run are written by a
background thread (``writer.py``), as are the parent run's summary and plots, refreshed at most
every ``refresh_interval_s`` seconds (longer when a refresh is slow) and at ``close_study``.

Run status: COMPLETE -> FINISHED, PRUNED -> FINISHED with tag ``state = PRUNED`` (as Optuna's
own MLflow callback does: pruning is a normal end of a trial), FAIL -> FAILED, a run left open
by Ctrl-C / SIGTERM -> KILLED. Every run's tag ``stop_reason`` and description say why a trial
stopped early; tag ``feasible`` is true / false for a complete trial, unknown otherwise.

Every call is guarded: an unreachable tracking server is one warning, then the process goes
on untracked.
"""

from __future__ import annotations

import atexit
import hashlib
import logging
import math
import os
import tempfile
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from hpsearch._util import first_line
from hpsearch.storage import mask_secrets, mask_url
from hpsearch.tracking import study_run
from hpsearch.tracking.base import DEFAULT_TRACKING_URI, Tracker, TrialRun
from hpsearch.tracking.operations import MetricTuple, Operation, Pair, log_batch
from hpsearch.tracking.writer import BackgroundWriter
from hpsearch.tracking.writer_process import WriterProcess

logger = logging.getLogger("hpsearch.tracking")
T = TypeVar("T")

RUN_STATUS = {"COMPLETE": "FINISHED", "PRUNED": "FINISHED", "FAIL": "FAILED"}
INTERRUPTED_STATUS = "KILLED"
MAX_PARAM_LENGTH = 6000
MAX_TAG_LENGTH = 8000
DRAIN_TIMEOUT_S = 120.0
WRITER_ENV = "HPSEARCH_MLFLOW_WRITER"  # "process" (the default) or "thread"


def tracking_uri_from_env() -> str:
    """``MLFLOW_TRACKING_URI`` if set, else MLflow 3's default ``sqlite:///mlflow.db``."""
    return os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_TRACKING_URI


def experiment_url(server: str, experiment_id: str) -> str:
    """The page of an experiment's runs. MLflow 3.17's UI opens experiments on its GenAI view
    unless the URL (or the toggle at the top left, remembered by the browser) says otherwise;
    the experiment tag ``mlflow.experimentKind`` alone does not switch it."""
    return f"{server.rstrip('/')}/#/experiments/{experiment_id}/runs?workflowType=machine_learning"


def mlflow_hint(tracking_uri: str | None = None, study_name: str | None = None) -> str:
    """Where a person looks at the runs: the server's page of the study's runs, or the
    ``mlflow ui`` command that serves a database or folder store (on 127.0.0.1) and the page."""
    uri = tracking_uri or tracking_uri_from_env()
    experiment_id = _experiment_id_or_none(uri, study_name)
    if uri.startswith(("http://", "https://")):
        server = mask_url(uri)
        return f"MLflow: {experiment_url(server, experiment_id) if experiment_id else server}"
    local = "http://127.0.0.1:5000"
    page = experiment_url(local, experiment_id) if experiment_id else local
    return f"MLflow: mlflow ui --backend-store-uri {mask_url(uri)}, then open {page}"


def _experiment_id_or_none(tracking_uri: str, study_name: str | None) -> str | None:
    if study_name is None:
        return None
    try:
        from mlflow.tracking import MlflowClient

        experiment = MlflowClient(tracking_uri).get_experiment_by_name(study_name)
    except Exception:  # a hint is never worth an error
        return None
    return str(experiment.experiment_id) if experiment is not None else None


@dataclass
class StudyRecord:
    experiment_id: str
    parent_run_id: str


class MlflowTracker(Tracker):
    """Tracks a study and its trials in MLflow at ``tracking_uri`` (default:
    ``tracking_uri_from_env()``)."""

    def __init__(
        self,
        tracking_uri: str | None = None,
        *,
        flush_interval_s: float = 5.0,
        refresh_interval_s: float = 10.0,
        writer: str | None = None,
    ) -> None:
        # Fail fast on a dead server instead of MLflow's minutes of retries.
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")
        self.tracking_uri = tracking_uri or tracking_uri_from_env()
        self.flush_interval_s = flush_interval_s
        self.refresh_interval_s = refresh_interval_s
        self.disabled = False
        self._client: Any = None
        self._records: dict[str, StudyRecord] = {}
        self._record_lock = threading.Lock()
        self._open_runs: dict[str, MlflowTrialRun] = {}
        self._writer = BackgroundWriter()  # the trials' writes, in order
        self._summary_writer = BackgroundWriter("hpsearch-mlflow-summary")  # never delays them
        self._process = self._writer_process(writer or os.environ.get(WRITER_ENV) or "process")
        self._summary = _SummaryRefresher(self)
        atexit.register(self._drain_at_exit)

    # -- plumbing -------------------------------------------------------------------------------

    def _writer_process(self, kind: str) -> WriterProcess | None:
        """Where the trials' writes are applied: a child process (``writer_process.py``), or
        this process's writer thread."""
        if kind not in ("process", "thread"):
            raise ValueError(f"{WRITER_ENV}={kind!r}: use 'process' or 'thread'")
        return WriterProcess(self.tracking_uri, self._turn_off) if kind == "process" else None

    def _guard(self, what: str, call: Callable[[], T]) -> T | None:
        if self.disabled:
            return None
        try:
            return call()
        except Exception as error:  # tracking must never fail a trial
            self._turn_off(what, str(error) or type(error).__name__)
            return None

    def _turn_off(self, what: str, error: str) -> None:
        """A write failed: one warning, then no more tracking in this process."""
        if self.disabled:
            return
        self.disabled = True
        logger.warning(
            "MLflow tracking at %s is off for this process: %s failed (%s)",
            mask_url(self.tracking_uri),
            what,
            first_line(mask_secrets(error, self.tracking_uri)) or "no message",
        )

    def submit(self, what: str, write: Callable[[], None]) -> None:
        """Run ``write`` (guarded) in the background thread, after what was submitted before."""
        if not self.disabled:
            self._writer.submit(lambda: self._guard(what, write))

    def submit_operation(self, operation: Operation) -> None:
        """Apply ``operation`` after what was submitted before: in the writer process, or in
        the background thread. A ``log_batch`` is combined with the run's next one when both
        wait in a queue (``Operation.absorb``)."""
        if not self.disabled:
            self._writer.submit(_OperationWrite(self, operation))

    def submit_batch(
        self,
        run_id: str,
        *,
        metrics: Sequence[MetricTuple] = (),
        params: Sequence[Pair] = (),
        tags: Sequence[Pair] = (),
    ) -> None:
        """``log_batch`` of ``(key, value, timestamp_ms, step)`` metrics and ``(key, value)``
        params and tags, in the background."""
        self.submit_operation(
            Operation(
                "log_batch", run_id, metrics=list(metrics), params=list(params), tags=list(tags)
            )
        )

    def _apply(self, operation: Operation) -> None:
        """In the writer thread: send ``operation`` to the writer process, or apply it here
        when there is none."""
        if self._process is None or not self._process.send(operation):
            self._guard(operation.what, lambda: operation.apply(self.client, self.tracking_uri))

    def drain(self, timeout_s: float = DRAIN_TIMEOUT_S) -> bool:
        """Wait until every queued write is done."""
        deadline = time.monotonic() + timeout_s
        done = all(
            writer.drain(max(0.0, deadline - time.monotonic()))
            for writer in (self._writer, self._summary_writer)
        )
        if done and self._process is not None:
            done = self._process.sync(max(0.0, deadline - time.monotonic()))
        if not done:
            logger.warning(
                "MLflow at %s: %d write(s) still pending after %.0f s; giving up on them",
                mask_url(self.tracking_uri),
                self._writer.pending + self._summary_writer.pending,
                timeout_s,
            )
        return done

    def _drain_at_exit(self) -> None:
        if self._writer.pending or self._summary_writer.pending:
            self.drain()
        if self._process is not None:
            self._process.close(DRAIN_TIMEOUT_S)

    @property
    def client(self) -> Any:
        if self._client is None:
            from mlflow.tracking import MlflowClient

            self._client = MlflowClient(tracking_uri=self.tracking_uri)
        return self._client

    # -- the study ------------------------------------------------------------------------------

    def study_record(self, study_name: str, spec: Any = None) -> StudyRecord:
        """The study's experiment and parent run, found or created once per process."""
        with self._record_lock:
            if study_name not in self._records:
                description = study_run.experiment_description(study_name, spec)
                experiment_id, created = study_run.ensure_experiment(
                    self.client, study_name, description
                )
                parent = study_run.find_or_create_parent(
                    self.client, experiment_id, study_name, created
                )
                self._records[study_name] = StudyRecord(experiment_id, parent)
            return self._records[study_name]

    def experiment_id(self, study_name: str) -> str:
        return self.study_record(study_name).experiment_id

    def open_study(self, study: Any, spec: Any) -> None:
        """Find or create the study's parent run, mark it RUNNING, log the spec on it, and
        refresh its summary as trials end. The writer process starts once the store is there
        (two processes creating a new MLflow database's tables at once would race), so that its
        start-up overlaps the first trials."""
        record = self._guard(
            "find the study's run", lambda: self.study_record(study.study_name, spec)
        )
        if record is None:
            return
        if self._process is not None:
            self._process.start()
        self._summary.watch(study, spec, record)
        self.submit("open the study's run", lambda: self._open_parent(record, spec))

    def _open_parent(self, record: StudyRecord, spec: Any) -> None:
        client = self.client
        run = client.get_run(record.parent_run_id)
        if run.info.status != "RUNNING":
            client.update_run(record.parent_run_id, status="RUNNING")
        missing = {
            key: value
            for key, value in study_run.spec_params(spec).items()
            if key not in run.data.params
        }
        if missing:
            self._log_batch(record.parent_run_id, params=_params(missing))
        if "spec.json" not in {info.path for info in client.list_artifacts(record.parent_run_id)}:
            client.log_dict(record.parent_run_id, spec.model_dump(mode="json"), "spec.json")

    def close_study(self, study: Any, interrupted: str | None = None) -> None:
        """Close the runs left open (KILLED, with the reason), write the final summary, end
        the parent run unless other trials of the study still run, and wait for the writes."""
        reason = interrupted or "the process ended before the trial did"
        for run in list(self._open_runs.values()):
            run.interrupt(reason)
        record = self._records.get(study.study_name)
        if record is not None and not self.disabled:
            self._writer.drain(DRAIN_TIMEOUT_S)  # the trials' runs are closed first
            self._summary.refresh_now()
            self._summary_writer.submit(
                lambda: self._guard(
                    "end the study's run", lambda: self._end_parent(study, record, interrupted)
                )
            )
        self.drain()
        if self._process is not None:  # the study's writes are done: let the process go
            self._process.close(DRAIN_TIMEOUT_S)

    def _end_parent(self, study: Any, record: StudyRecord, interrupted: str | None) -> None:
        import optuna

        running = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,))
        if running:  # other workers go on; the last one to stop ends the run
            return
        status = INTERRUPTED_STATUS if interrupted else "FINISHED"
        if interrupted:
            self._log_batch(
                record.parent_run_id, tags=_tags({"stop_reason": f"interrupted: {interrupted}"})
            )
        self.client.set_terminated(record.parent_run_id, status)

    def where(self) -> str | None:
        names = list(self._records)
        return mlflow_hint(self.tracking_uri, names[0] if names else None)

    # -- the trials -----------------------------------------------------------------------------

    def start_trial(
        self,
        study_name: str,
        trial_number: int | None,
        params: Mapping[str, Any],
        tags: Mapping[str, str],
    ) -> TrialRun:
        run_name = f"trial-{trial_number}" if trial_number is not None else "try"

        def create() -> Any:
            run_tags = {key: value for key, value in tags.items() if value != ""}  # no blanks
            run_tags[study_run.ROLE_TAG] = "trial"
            if trial_number is not None:
                record = self.study_record(study_name)
                experiment_id = record.experiment_id
                run_tags[study_run.PARENT_RUN_TAG] = record.parent_run_id
            else:
                experiment_id = study_run.ensure_experiment(self.client, study_name, "")[0]
            return self.client.create_run(experiment_id, run_name=run_name, tags=run_tags)

        created = self._guard("create_run", create)
        if created is None:
            return MlflowTrialRun(self, None, None)
        trial_run = MlflowTrialRun(self, str(created.info.run_id), created.info.artifact_uri)
        self._open_runs[trial_run.run_id or ""] = trial_run
        if params:
            param_list = _params({key: str(value) for key, value in params.items()})
            self.submit_batch(str(trial_run.run_id), params=param_list)
        return trial_run

    def _log_batch(
        self,
        run_id: Any,
        *,
        metrics: Sequence[MetricTuple] = (),
        params: Sequence[Pair] = (),
        tags: Sequence[Pair] = (),
    ) -> None:
        """``log_batch`` here and now, in chunks within MLflow's per-call limits."""
        log_batch(self.client, run_id, metrics=metrics, params=params, tags=tags)

    def _run_ended(self, run_id: str) -> None:
        self._open_runs.pop(run_id, None)
        self._summary.maybe_refresh()


class MlflowTrialRun(TrialRun):
    """One trial's child run; buffers epoch metrics, sends everything in the background."""

    def __init__(self, tracker: MlflowTracker, run_id: str | None, artifact_uri: Any) -> None:
        self.tracker = tracker
        self.run_id = run_id
        self.artifact_uri = artifact_uri
        self._pending: list[MetricTuple] = []
        self._last_flush = time.monotonic()
        self._closed = False
        self._lock = threading.Lock()

    def log_epoch(self, epoch: int, metrics: Mapping[str, float]) -> None:
        if self.run_id is None:
            return
        now = int(time.time() * 1000)
        self._pending.extend((key, _finite(value), now, epoch) for key, value in metrics.items())
        if time.monotonic() - self._last_flush >= self.tracker.flush_interval_s:
            self._flush()

    def _flush(self, extra_tags: Sequence[Pair] = ()) -> None:
        if self.run_id is None or not (self._pending or extra_tags):
            return
        batch, self._pending = self._pending, []
        self._last_flush = time.monotonic()
        self.tracker.submit_batch(self.run_id, metrics=batch, tags=extra_tags)

    def log_events(self, events: Sequence[Mapping[str, Any]]) -> None:
        if self.run_id is None or not events:
            return
        content = {"rule_events": [dict(event) for event in events]}
        self.tracker.submit_operation(
            Operation(
                "write_artifacts", self.run_id, artifact_uri=self.artifact_uri, contents=content
            )
        )

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
        with self._lock:
            if self.run_id is None or self._closed:
                return
            self._closed = True
        now = int(time.time() * 1000)
        self._pending += [(f"final_{k}", _finite(v), now, 0) for k, v in final_metrics.items()]
        self._pending += [(f"objective_{k}", _finite(v), now, 0) for k, v in (values or {}).items()]
        tags = {"state": state, "feasible": _feasible_tag(state, feasible)}
        if reason:
            tags["stop_reason"] = reason[:MAX_TAG_LENGTH]
        tags[study_run.NOTE_TAG] = _run_note(state, reason, feasible)
        self._flush(_tags(tags))
        run_id = self.run_id
        if artifacts:
            self.tracker.submit_operation(
                Operation(
                    "write_artifacts",
                    run_id,
                    artifact_uri=self.artifact_uri,
                    contents=dict(artifacts),
                )
            )
        self._end(RUN_STATUS.get(state, "FINISHED"))
        self.tracker._run_ended(run_id)

    def _end(self, status: str) -> None:
        assert self.run_id is not None
        self.tracker.submit_operation(
            Operation(
                "set_terminated", self.run_id, status=status, end_time=int(time.time() * 1000)
            )
        )

    def interrupt(self, reason: str) -> None:
        """End a run its trial never finished (Ctrl-C, SIGTERM): KILLED, with the reason."""
        with self._lock:
            if self.run_id is None or self._closed:
                return
            self._closed = True
        text = f"interrupted: {reason}"
        self._flush(
            _tags(
                {
                    "state": "INTERRUPTED",
                    "feasible": "unknown",
                    "stop_reason": text,
                    study_run.NOTE_TAG: f"**Interrupted**: {reason}",
                }
            )
        )
        self._end(INTERRUPTED_STATUS)
        self.tracker._open_runs.pop(self.run_id, None)


@dataclass
class _OperationWrite:
    """An operation queued in the tracker's writer thread."""

    tracker: MlflowTracker
    operation: Operation

    def __call__(self) -> None:
        self.tracker._apply(self.operation)

    def absorb(self, later: Any) -> bool:
        """Take the run's next batch when it is queued right after this one."""
        return isinstance(later, _OperationWrite) and self.operation.absorb(later.operation)


class _SummaryRefresher:
    """Refreshes the parent run's summary (metrics, description, plots) in the background
    thread: at most one refresh queued, the next no sooner than ``refresh_interval_s`` (or twenty
    times the last refresh's duration, so refreshing takes at most 5 % of the time) after the
    last."""

    def __init__(self, tracker: MlflowTracker) -> None:
        self.tracker = tracker
        self.study: Any = None
        self.spec: Any = None
        self.record: StudyRecord | None = None
        self._queued = False
        self._next = 0.0
        self._logged_volumes: set[int] = set()
        self._plots_digest = ""
        self._warned = False

    def watch(self, study: Any, spec: Any, record: StudyRecord) -> None:
        """Refresh ``study``'s summary from now on: the first one after ``refresh_interval_s``
        (a plot of the first trial alone is not worth drawing), the last at ``close_study``."""
        self.study, self.spec, self.record = study, spec, record
        self._next = time.monotonic() + self.tracker.refresh_interval_s

    def maybe_refresh(self) -> None:
        if self.study is None or self._queued or time.monotonic() < self._next:
            return
        self.refresh_now()

    def refresh_now(self) -> None:
        if self.study is None:
            return
        self._queued = True
        if not self.tracker.disabled:
            self.tracker._summary_writer.submit(self._refresh)

    def _refresh(self) -> None:
        """One refresh; an error in it is a warning (once), never the end of tracking."""
        started = time.monotonic()
        try:
            trials = self.study.get_trials(deepcopy=False)
            self._write_summary(trials)
            self._write_plots(trials)
        except Exception as error:
            if not self._warned:
                logger.warning("could not refresh the study's MLflow summary: %s", error)
            self._warned = True
        finally:
            self._queued = False
            duration = time.monotonic() - started
            self._next = time.monotonic() + max(self.tracker.refresh_interval_s, 20 * duration)

    def _write_summary(self, trials: list[Any]) -> None:
        assert self.record is not None
        study = self.study
        names = list(study.metric_names or [f"value_{i}" for i in range(len(study.directions))])
        now = int(time.time() * 1000)
        finished = sum(1 for trial in trials if trial.state.is_finished())
        metrics: list[MetricTuple] = [
            (key, _finite(value), now, finished)
            for key, value in study_run.summary_metrics(
                trials, names, list(study.directions)
            ).items()
        ]
        for number, volume in study_run.hypervolume_points(trials):
            if number not in self._logged_volumes:
                self._logged_volumes.add(number)
                metrics.append(("study_hypervolume", volume, now, number))
        description = study_run.parent_description(study, self.spec, trials)
        self.tracker._log_batch(
            self.record.parent_run_id,
            metrics=metrics,
            tags=_tags({study_run.NOTE_TAG: description[:MAX_TAG_LENGTH]}),
        )

    def _write_plots(self, trials: list[Any]) -> None:
        """The study's figures as one HTML page, uploaded when it changed; a plot that cannot be
        drawn is a warning, never an error."""
        assert self.record is not None
        try:
            figures = study_run.study_figures(self.study, self.spec, trials)
            html = study_run.figures_html(f"Study {self.study.study_name}", figures)
        except Exception as error:
            logger.warning("could not draw the study's plots: %s", error)
            return
        digest = hashlib.sha256(html.encode()).hexdigest()
        if digest == self._plots_digest:
            return
        with tempfile.TemporaryDirectory() as folder:
            path = Path(folder, "plots.html")
            path.write_text(html)
            self.tracker.client.log_artifact(self.record.parent_run_id, str(path))
        self._plots_digest = digest


def _params(values: Mapping[str, Any]) -> list[Pair]:
    return [(key, str(value)[:MAX_PARAM_LENGTH]) for key, value in values.items()]


def _tags(values: Mapping[str, str]) -> list[Pair]:
    return [(key, value) for key, value in values.items()]


def _feasible_tag(state: str, feasible: bool | None) -> str:
    if state != "COMPLETE" or feasible is None:
        return "unknown"
    return "true" if feasible else "false"


def _run_note(state: str, reason: str | None, feasible: bool | None) -> str:
    """A child run's description: how the trial ended, in words."""
    if state == "COMPLETE":
        kind = "" if feasible is None else (", feasible" if feasible else ", infeasible")
        return f"**Complete**{kind}"
    word = {"PRUNED": "Pruned", "FAIL": "Failed"}.get(state, state.title())
    return f"**{word}**: {reason}" if reason else f"**{word}**"


def _finite(value: float) -> float:
    """MLflow stores NaN but not inf portably; clamp infinities."""
    value = float(value)
    if math.isinf(value):
        return math.copysign(1e308, value)
    return value
