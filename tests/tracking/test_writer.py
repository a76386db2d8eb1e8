"""The background writer and the writer process: order kept, drain waits, a backlog of one
run's batches combined, stop signals and a dead or failing child handled."""

from __future__ import annotations

import dataclasses
import io
import logging
import os
import signal
import threading
from dataclasses import dataclass, field
from typing import Any

import mlflow
import pytest
from toy_spec import toy_spec

import hpsearch
from hpsearch.search_spaces import spec_from_dict
from hpsearch.tracking import MlflowTracker, operations
from hpsearch.tracking.operations import Operation
from hpsearch.tracking.writer import BackgroundWriter
from hpsearch.tracking.writer_process import _Inbox, _line
from tests.workers.worker_helpers import wait_for


@dataclass
class Joinable:
    """A write that takes over queued writes of the same key."""

    key: str
    done: list[str]
    parts: list[str] = field(default_factory=list)

    def __call__(self) -> None:
        self.done.append("+".join([self.key, *self.parts]))

    def absorb(self, later: object) -> bool:
        if isinstance(later, Joinable) and later.key == self.key:
            self.parts.append(later.key)
            return True
        return False


def test_writes_run_in_order_and_a_backlog_of_joinable_writes_is_combined() -> None:
    writer, done, gate = BackgroundWriter("test-writer"), [], threading.Event()
    writer.submit(gate.wait)  # the thread is busy: the next writes queue up
    for key in ("a", "a", "a", "b", "a"):
        writer.submit(Joinable(key, done))
    writer.submit(lambda: done.append("plain"))
    assert writer.pending == 7
    gate.set()
    assert writer.drain(timeout_s=60)
    assert done == ["a+a+a", "b", "a", "plain"]
    assert writer.pending == 0


def test_a_failing_write_is_logged_and_the_next_ones_still_run() -> None:
    writer, done = BackgroundWriter("test-writer"), []

    def broken() -> None:
        raise RuntimeError("boom")

    writer.submit(broken)
    writer.submit(lambda: done.append("after"))
    assert writer.drain(timeout_s=60)
    assert done == ["after"]


def test_a_runs_queued_batches_become_one_log_batch_with_the_last_tag_values(
    mlflow_uri: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    tracker = MlflowTracker(mlflow_uri, writer="thread")
    run = tracker.start_trial("study-w", 0, {}, {})
    assert run.run_id is not None
    gate = threading.Event()
    tracker._writer.submit(gate.wait)
    calls: list[str] = []
    log_batch = operations.log_batch

    def counted(client: object, run_id: str, **parts: object) -> None:
        calls.append(run_id)
        log_batch(client, run_id, **parts)  # type: ignore[arg-type]

    monkeypatch.setattr(operations, "log_batch", counted)
    tracker.submit_batch(run.run_id, params=[("lr", "0.1")], tags=[("state", "a")])
    tracker.submit_batch(run.run_id, metrics=[("loss", 1.0, 0, 1)])
    tracker.submit_batch(run.run_id, params=[("lr", "0.1")], tags=[("state", "b")])
    gate.set()
    assert tracker.drain()
    assert calls == [run.run_id]
    stored = mlflow.MlflowClient(mlflow_uri).get_run(run.run_id)
    assert stored.data.params == {"lr": "0.1"}
    assert stored.data.tags["state"] == "b"
    assert stored.data.metrics == {"loss": 1.0}


def test_the_writer_process_combines_a_backlog_of_one_runs_batches_in_order() -> None:
    def batch(run_id: str, step: int) -> Operation:
        return Operation("log_batch", run_id, metrics=[("loss", 1.0, 0, step)])

    end = Operation("set_terminated", "r1", status="FINISHED", end_time=0)
    stream = io.BytesIO()
    for message in (batch("r1", 1), batch("r1", 2), batch("r2", 3), end, batch("r1", 4)):
        stream.write(_line({"operation": dataclasses.asdict(message)}))
    stream.seek(0)
    inbox = _Inbox(stream)
    wait_for(lambda: len(inbox._messages) == 6, timeout=60, what="the inbox to read every message")
    taken = [inbox.take() for _ in range(5)]
    assert [(m.name, m.run_id, [s for *_, s in m.metrics or ()]) for m in taken[:4]] == [
        ("log_batch", "r1", [1, 2]),
        ("log_batch", "r2", [3]),
        ("set_terminated", "r1", []),
        ("log_batch", "r1", [4]),
    ]
    assert taken[4] is None  # the end of the input


def _finished_run(tracker: MlflowTracker, mlflow_uri: str, number: int) -> Any:
    run = tracker.start_trial("study-p", number, {"lr": 0.1}, {})
    run.log_epoch(0, {"loss": 2.0})
    run.finish("COMPLETE", {"loss": 1.5}, {"loss": 1.5}, {"report": {"ok": True}})
    assert tracker.drain()
    return mlflow.MlflowClient(mlflow_uri).get_run(run.run_id)


def test_trial_writes_are_applied_by_a_child_process_that_ignores_stop_signals(
    mlflow_uri: str,
) -> None:
    tracker = MlflowTracker(mlflow_uri)
    stored = _finished_run(tracker, mlflow_uri, 0)
    assert (stored.info.status, stored.data.params, stored.data.metrics["final_loss"]) == (
        "FINISHED",
        {"lr": "0.1"},
        1.5,
    )
    assert tracker._process is not None
    child = tracker._process._process
    assert child is not None and child.poll() is None and child.pid != os.getpid()
    child.send_signal(signal.SIGTERM)  # the parent handles stop signals; the child goes on
    child.send_signal(signal.SIGINT)
    assert _finished_run(tracker, mlflow_uri, 1).info.status == "FINISHED"
    assert child.poll() is None
    tracker._process.close(timeout_s=60)
    assert child.returncode == 0


def test_a_dead_writer_process_is_one_warning_and_writes_go_on_here(
    mlflow_uri: str, caplog: pytest.LogCaptureFixture
) -> None:
    tracker = MlflowTracker(mlflow_uri)
    _finished_run(tracker, mlflow_uri, 0)
    assert tracker._process is not None and tracker._process._process is not None
    with caplog.at_level(logging.WARNING, logger="hpsearch.tracking"):
        tracker._process._process.kill()  # what it was sent and had not applied is lost
        wait_for(lambda: tracker._process._ended, timeout=60, what="the parent to see it")
        stored = _finished_run(tracker, mlflow_uri, 1)
    assert stored.info.status == "FINISHED" and stored.data.metrics["final_loss"] == 1.5
    assert [r.getMessage() for r in caplog.records if "writer process ended" in r.getMessage()]
    assert not tracker.disabled


def test_a_write_that_fails_in_the_child_turns_tracking_off_with_one_warning(
    mlflow_uri: str, caplog: pytest.LogCaptureFixture
) -> None:
    tracker = MlflowTracker(mlflow_uri)
    with caplog.at_level(logging.WARNING, logger="hpsearch.tracking"):
        for _ in range(2):
            tracker.submit_operation(
                Operation("set_terminated", "no-such-run", status="FINISHED", end_time=0)
            )
        tracker.drain()
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "set terminated failed" in warnings[0], warnings
    assert tracker.disabled


@pytest.mark.parametrize("repeat", range(3))
def test_a_new_mlflow_database_is_made_once_beside_the_writer_process(
    tmp_path: Any, caplog: pytest.LogCaptureFixture, repeat: int
) -> None:
    """A first run on a new MLflow database (``make demo`` from a clean clone): no warning,
    every run finished. The writer process starts after this process made the tables; with the
    opposite order the two could race to make them (not seen in 3 tries: the child's imports
    usually take longer)."""
    uri = f"sqlite:///{tmp_path}/new-mlflow.db"
    spec = spec_from_dict(toy_spec(name="fresh"))
    with caplog.at_level(logging.WARNING, logger="hpsearch.tracking"):
        hpsearch.run(spec, 2, storage=f"sqlite:///{tmp_path}/s.db", tracking_uri=uri)
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == []
    client = mlflow.MlflowClient(uri)
    experiment = client.get_experiment_by_name("fresh")
    assert experiment is not None
    statuses = sorted(run.info.status for run in client.search_runs([experiment.experiment_id]))
    assert statuses == ["FINISHED"] * 3  # the study's run and its two trials
