"""The tracker against a real MLflow store (SQLite) and an unreachable server."""

from __future__ import annotations

import logging
import threading
from typing import Any

import mlflow
import optuna
import pytest
from toy_spec import toy_spec

import hpsearch
from hpsearch.search_spaces import spec_from_dict
from hpsearch.tracking import MlflowTracker
from hpsearch.tracking.study_run import (
    EXPERIMENT_KIND,
    EXPERIMENT_KIND_TAG,
    NOTE_TAG,
    PARENT_ID_TAG,
    PARENT_RUN_TAG,
    ROLE_TAG,
)


def runs_by_name(uri: str, experiment: str) -> dict[str, Any]:
    client = mlflow.MlflowClient(uri)
    found = client.get_experiment_by_name(experiment)
    assert found is not None, f"no experiment {experiment!r}"
    return {run.info.run_name: run for run in client.search_runs([found.experiment_id])}


def test_a_trial_is_a_child_of_the_study_run_with_history_events_and_artifacts(
    mlflow_uri: str,
) -> None:
    tracker = MlflowTracker(mlflow_uri, flush_interval_s=3600)
    run = tracker.start_trial(
        "study-a", 3, {"lr": 0.01, "schedule": "staged"}, {"study": "study-a", "gpu": ""}
    )
    assert run.run_id is not None
    for epoch in range(1, 51):
        run.log_epoch(epoch, {"loss": 1.0 / epoch, "rank": 0.1 * epoch})
    tracker.drain()
    client = mlflow.MlflowClient(mlflow_uri)
    assert client.get_metric_history(run.run_id, "loss") == []  # buffered: no write per epoch
    run.log_events([{"rule": "r", "epoch": 2, "action": "advise"}])
    run.finish(
        "COMPLETE",
        {"loss": 0.2},
        {"loss": 0.2, "rank": 0.5},
        {"metrics_history": [1, 2]},
        feasible=True,
    )
    tracker.drain()

    stored = client.get_run(run.run_id)
    assert stored.info.status == "FINISHED"
    assert stored.info.run_name == "trial-3"
    assert stored.data.params == {"lr": "0.01", "schedule": "staged"}
    assert stored.data.tags["state"] == "COMPLETE"
    assert stored.data.tags["feasible"] == "true"
    assert "gpu" not in stored.data.tags  # an empty value is no tag
    assert stored.data.metrics["objective_loss"] == 0.2
    history = client.get_metric_history(run.run_id, "loss")
    assert sorted((m.step, m.value) for m in history) == [(e, 1.0 / e) for e in range(1, 51)]
    artifacts = {a.path for a in client.list_artifacts(run.run_id)}
    assert {"rule_events.json", "metrics_history.json"} <= artifacts
    runs = runs_by_name(mlflow_uri, "study-a")
    assert set(runs) == {"study", "trial-3"}
    assert stored.data.tags[PARENT_RUN_TAG] == runs["study"].info.run_id
    assert runs["study"].data.tags[ROLE_TAG] == "study"


def test_pruned_failed_and_interrupted_runs_are_told_apart(mlflow_uri: str) -> None:
    tracker = MlflowTracker(mlflow_uri)
    pruned = tracker.start_trial("study-b", 0, {}, {})
    pruned.finish("PRUNED", None, {}, {}, reason="pareto-asha at epoch 4: rung 1, rank 3 of 4")
    failed = tracker.start_trial("study-b", 1, {}, {})
    failed.finish("FAIL", None, {}, {}, reason="RuntimeError: toy crash at epoch 2")
    complete = tracker.start_trial("study-b", 2, {}, {})
    complete.finish("COMPLETE", {"loss": 1.0}, {"loss": 1.0}, {}, feasible=False)
    interrupted = tracker.start_trial("study-b", 3, {}, {})
    tracker.close_study(optuna.create_study(study_name="study-b"), "SIGTERM")

    runs = runs_by_name(mlflow_uri, "study-b")
    seen = {
        name: (run.info.status, run.data.tags.get("state"), run.data.tags.get("feasible"))
        for name, run in runs.items()
        if name != "study"
    }
    assert seen == {
        "trial-0": ("FINISHED", "PRUNED", "unknown"),
        "trial-1": ("FAILED", "FAIL", "unknown"),
        "trial-2": ("FINISHED", "COMPLETE", "false"),
        "trial-3": ("KILLED", "INTERRUPTED", "unknown"),
    }
    assert runs["trial-0"].data.tags["stop_reason"].startswith("pareto-asha at epoch 4")
    assert runs["trial-1"].data.tags[NOTE_TAG] == "**Failed**: RuntimeError: toy crash at epoch 2"
    assert runs["trial-3"].data.tags["stop_reason"] == "interrupted: SIGTERM"
    assert interrupted.run_id == runs["trial-3"].info.run_id


def test_workers_starting_together_share_one_study_run(mlflow_uri: str) -> None:
    """Four trackers (as four worker processes would) race to create the experiment and its
    parent run; all of them end up with the same parent and it is the only one."""
    mlflow.MlflowClient(mlflow_uri).search_experiments()  # the store's tables exist first
    trackers = [MlflowTracker(mlflow_uri) for _ in range(4)]
    barrier = threading.Barrier(len(trackers))
    parents: list[str] = []

    def start(tracker: MlflowTracker) -> None:
        barrier.wait()
        parents.append(tracker.study_record("raced").parent_run_id)

    threads = [threading.Thread(target=start, args=(tracker,)) for tracker in trackers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(parents) == 4 and len(set(parents)) == 1
    assert list(runs_by_name(mlflow_uri, "raced")) == ["study"]


def test_an_experiment_without_a_parent_gets_exactly_one(mlflow_uri: str) -> None:
    """An experiment made before parent runs existed: two processes find it untagged, one
    creates the parent, the other adopts it; two parents made at once collapse to the older."""
    client = mlflow.MlflowClient(mlflow_uri)
    experiment_id = client.create_experiment("old")
    client.create_run(experiment_id, run_name="trial-0")  # an old flat trial run
    first = MlflowTracker(mlflow_uri).study_record("old").parent_run_id
    second = MlflowTracker(mlflow_uri).study_record("old").parent_run_id
    assert first == second
    experiment = client.get_experiment(experiment_id)
    assert experiment.tags[PARENT_ID_TAG] == first
    assert experiment.tags[EXPERIMENT_KIND_TAG] == EXPERIMENT_KIND


def test_two_parents_made_at_once_collapse_to_the_older(mlflow_uri: str) -> None:
    from hpsearch.tracking.study_run import find_or_create_parent

    client = mlflow.MlflowClient(mlflow_uri)
    experiment_id = client.create_experiment("twice")
    older = client.create_run(experiment_id, run_name="study", tags={ROLE_TAG: "study"})
    client.create_run(experiment_id, run_name="study", tags={ROLE_TAG: "study"})
    assert find_or_create_parent(client, experiment_id, "twice", created=False, wait_s=0) == (
        older.info.run_id
    )


def test_a_study_run_has_the_summary_plots_and_opens_on_its_runs(mlflow_uri: str) -> None:
    spec = spec_from_dict(toy_spec(name="summed", description="a toy study"))
    hpsearch.run(spec, 4, storage="sqlite:///studies.db", tracking_uri=mlflow_uri)

    client = mlflow.MlflowClient(mlflow_uri)
    experiment = client.get_experiment_by_name("summed")
    assert experiment.tags[EXPERIMENT_KIND_TAG] == EXPERIMENT_KIND  # not the GenAI page
    assert "a toy study" in experiment.tags[NOTE_TAG]
    runs = runs_by_name(mlflow_uri, "summed")
    assert set(runs) == {"study", "trial-0", "trial-1", "trial-2", "trial-3"}
    parent = runs["study"]
    assert parent.info.status == "FINISHED"
    assert parent.data.metrics["trials_complete"] == 4
    assert parent.data.params["objectives"] == (
        '{"loss": "minimize", "quality_band_distance": "band [0.9, 0.95]"}'
    )
    assert "**Pareto front**" in parent.data.tags[NOTE_TAG]
    artifacts = {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert {"plots.html", "spec.json"} <= artifacts
    html = client.download_artifacts(parent.info.run_id, "plots.html")
    with open(html) as page:
        text = page.read()
    assert "pareto front" in text and "plotly" in text.lower()
    children = {run.data.tags[PARENT_RUN_TAG] for name, run in runs.items() if name != "study"}
    assert children == {parent.info.run_id}
    assert (
        optuna.load_study(study_name="summed", storage="sqlite:///studies.db")
        .trials[0]
        .user_attrs["mlflow_run_id"]
        == runs["trial-0"].info.run_id
    )
    no_summary = mlflow.MlflowClient(mlflow_uri).get_experiment_by_name("summed.summary")
    assert no_summary is None

    hpsearch.run(spec, 1, storage="sqlite:///studies.db", tracking_uri=mlflow_uri)  # again
    runs = runs_by_name(mlflow_uri, "summed")
    assert len(runs) == 6 and runs["study"].info.run_id == parent.info.run_id
    assert runs["study"].info.status == "FINISHED"
    assert runs["study"].data.metrics["trials_complete"] == 5


def test_a_worker_logs_the_study_summary(mlflow_uri: str) -> None:
    from hpsearch.workers import run_worker

    spec = spec_from_dict(toy_spec(name="worked"))
    run_worker(spec, storage="sqlite:///studies.db", n_trials=3, tracking_uri=mlflow_uri)
    parent = runs_by_name(mlflow_uri, "worked")["study"]
    assert parent.info.status == "FINISHED"
    assert parent.data.metrics["trials_complete"] == 3
    client = mlflow.MlflowClient(mlflow_uri)
    assert "plots.html" in {a.path for a in client.list_artifacts(parent.info.run_id)}


def test_the_study_run_stays_running_while_other_trials_run(mlflow_uri: str) -> None:
    study = optuna.create_study(study_name="shared", directions=["minimize", "minimize"])
    other_worker_trial = study.ask()
    tracker = MlflowTracker(mlflow_uri)
    tracker.open_study(study, spec_from_dict(toy_spec(name="shared")))
    tracker.close_study(study)
    assert runs_by_name(mlflow_uri, "shared")["study"].info.status == "RUNNING"
    study.tell(other_worker_trial, [1.0, 1.0])
    tracker.close_study(study)
    assert runs_by_name(mlflow_uri, "shared")["study"].info.status == "FINISHED"


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
        tracker.close_study(optuna.create_study(study_name="s"))
    assert run.run_id is None
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "tracking at http://user:***@127.0.0.1:1 is off" in warnings[0].getMessage()
