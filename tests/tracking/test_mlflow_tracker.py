"""The tracker against a real MLflow store (SQLite) and an unreachable server."""

from __future__ import annotations

import logging

import mlflow
import pytest

from hpsearch.tracking import MlflowTracker


def test_one_run_per_trial_with_epoch_history_events_and_artifacts(mlflow_uri: str) -> None:
    tracker = MlflowTracker(mlflow_uri, flush_every=2)
    run = tracker.start_trial(
        "study-a", 3, {"lr": 0.01, "schedule": "staged"}, {"study": "study-a"}
    )
    assert run.run_id is not None
    for epoch in range(1, 6):
        run.log_epoch(epoch, {"loss": 1.0 / epoch, "rank": 0.1 * epoch})
    run.log_events([{"rule": "r", "epoch": 2, "action": "advise"}])
    run.finish("COMPLETE", {"loss": 0.2}, {"loss": 0.2, "rank": 0.5}, {"metrics_history": [1, 2]})

    client = mlflow.MlflowClient(mlflow_uri)
    stored = client.get_run(run.run_id)
    assert stored.info.status == "FINISHED"
    assert stored.info.run_name == "trial-3"
    assert stored.data.params == {"lr": "0.01", "schedule": "staged"}
    assert stored.data.tags["state"] == "COMPLETE"
    assert stored.data.metrics["objective_loss"] == 0.2
    history = client.get_metric_history(run.run_id, "loss")
    assert [(m.step, m.value) for m in history] == [(e, 1.0 / e) for e in range(1, 6)]
    artifacts = {a.path for a in client.list_artifacts(run.run_id)}
    assert {"rule_events.json", "metrics_history.json"} <= artifacts
    mlflow.set_tracking_uri(mlflow_uri)
    assert len(mlflow.search_runs(experiment_names=["study-a"])) == 1


def test_pruned_and_failed_runs_get_their_status(mlflow_uri: str) -> None:
    tracker = MlflowTracker(mlflow_uri)
    for state, status in (("PRUNED", "KILLED"), ("FAIL", "FAILED")):
        run = tracker.start_trial("study-b", 0, {}, {})
        run.finish(state, None, {}, {})
        assert mlflow.MlflowClient(mlflow_uri).get_run(run.run_id).info.status == status


def test_an_unreachable_server_is_one_warning_never_an_error(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "2")
    tracker = MlflowTracker("http://user:pw@127.0.0.1:1")
    with caplog.at_level(logging.WARNING, logger="hpsearch.tracking"):
        run = tracker.start_trial("s", 0, {"a": 1}, {})
        run.log_epoch(1, {"loss": 1.0})
        run.finish("COMPLETE", {"loss": 1.0}, {"loss": 1.0}, {})
    assert run.run_id is None
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "tracking at http://user:***@127.0.0.1:1 is off" in warnings[0].getMessage()
