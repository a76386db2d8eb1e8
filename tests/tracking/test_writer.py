"""The background writer: order kept, drain waits, a backlog of one run's batches combined."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

import mlflow
from mlflow.entities import Metric, Param, RunTag

from hpsearch.tracking import MlflowTracker
from hpsearch.tracking.writer import BackgroundWriter


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
    mlflow_uri: str,
) -> None:
    tracker = MlflowTracker(mlflow_uri)
    run = tracker.start_trial("study-w", 0, {}, {})
    assert run.run_id is not None
    gate = threading.Event()
    tracker._writer.submit(gate.wait)
    calls: list[str] = []
    log_batch = tracker._log_batch

    def counted(run_id: str, **parts: object) -> None:
        calls.append(run_id)
        log_batch(run_id, **parts)  # type: ignore[arg-type]

    tracker._log_batch = counted  # type: ignore[method-assign]
    tracker.submit_batch(run.run_id, params=[Param("lr", "0.1")], tags=[RunTag("state", "a")])
    tracker.submit_batch(run.run_id, metrics=[Metric("loss", 1.0, 0, 1)])
    tracker.submit_batch(run.run_id, params=[Param("lr", "0.1")], tags=[RunTag("state", "b")])
    gate.set()
    assert tracker.drain()
    assert calls == [run.run_id]
    stored = mlflow.MlflowClient(mlflow_uri).get_run(run.run_id)
    assert stored.data.params == {"lr": "0.1"}
    assert stored.data.tags["state"] == "b"
    assert stored.data.metrics == {"loss": 1.0}
