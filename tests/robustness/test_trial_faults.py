"""Faults inside trials: each ends its trial FAIL with the reason and the failure class, and the
worker goes on; a trainer that fails (or runs out of memory) trial after trial stops the worker
with one line. (A worker killed mid-trial, ``os._exit``: tests/workers/test_worker_recovery.py
and test_launcher.py, where the next worker or the launcher fails and retries the trial.)"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import mlflow
import optuna
import pytest
import yaml
from cli_harness import invoke
from faulty_trainer import FAULTS
from optuna.trial import TrialState
from toy_spec import toy_spec

from hpsearch.objectives.failures import MAX_REASON_CHARS
from hpsearch.runner import create_study, run_trials
from hpsearch.search_spaces import spec_from_dict
from hpsearch.storage import open_storage
from hpsearch.workers import WorkerError
from hpsearch.workers.worker import MAX_FAILURES_IN_A_ROW

ROBUSTNESS_DIR = Path(__file__).parent
EXPECTED = {  # fault -> (failure_class, start of fail_reason)
    "init": ("trainer_error", "ValueError: broken in __init__"),
    "epoch": ("trainer_error", "KeyError: 'broken in an epoch'"),
    "final": ("trainer_error", "ZeroDivisionError: broken in final_metrics"),
    "nan": ("divergence", "metric loss is nan at epoch 2"),
    "inf": ("divergence", "metric loss is inf at epoch 2"),
    "text": ("trainer_error", "metric quality is 'high' at epoch 2, not a number"),
    "missing": ("trainer_error", "the final metrics lack 'loss'"),
    "oom": ("out_of_memory", "OutOfMemoryError: CUDA out of memory."),
    "hang": ("timeout", "the trial ran past its trial_timeout of 1.5 s"),
    "exit": ("trainer_error", "the trainer called sys.exit(3)"),
    "output": ("trainer_error", "RuntimeError: yyyyyyyy"),
}


def faulty_spec(**changes: Any) -> dict[str, Any]:
    return toy_spec(
        **{
            "trainer": "faulty_trainer:FaultyTrainer",
            "epochs": 3,
            "trial_timeout": 1.5,
            "space": {
                "x": {"type": "float", "low": 0.0, "high": 1.0},
                "y": {"type": "float", "low": 0.0, "high": 1.0},
                "fault": {"type": "categorical", "choices": list(FAULTS)},
            },
            **changes,
        }
    )


def test_every_fault_ends_its_trial_with_its_reason_and_the_worker_goes_on(
    sqlite_url: str, mlflow_uri: str, capfd: pytest.CaptureFixture[str]
) -> None:
    assert set(EXPECTED) == set(FAULTS) - {"none"}
    spec = spec_from_dict(faulty_spec())
    study = create_study(spec, sqlite_url)
    queue = [fault for fault in EXPECTED for fault in (fault, "none")]  # a good trial after each
    for fault in queue:
        study.enqueue_trial({"x": 0.3, "y": 0.7, "fault": fault})

    _, result = run_trials(spec, len(queue), storage=sqlite_url, tracking_uri=mlflow_uri)

    assert result.trials_run == len(queue) and result.signal is None
    trials = optuna.load_study(study_name="toy", storage=sqlite_url).get_trials()
    assert [t.params["fault"] for t in trials] == queue
    for trial in trials:
        fault = trial.params["fault"]
        if fault == "none":
            assert trial.state == TrialState.COMPLETE, trial.user_attrs
            continue
        failure_class, reason = EXPECTED[fault]
        assert trial.state == TrialState.FAIL, fault
        assert trial.user_attrs["failure_class"] == failure_class, fault
        assert trial.user_attrs["fail_reason"].startswith(reason), trial.user_attrs["fail_reason"]
        assert len(trial.user_attrs["fail_reason"]) <= MAX_REASON_CHARS
    capfd.readouterr()  # the megabytes the "output" trainer printed

    mlflow.set_tracking_uri(mlflow_uri)
    runs = mlflow.search_runs(experiment_names=["toy"])
    runs = runs[runs["tags.trial_number"].notna()]  # the trials' runs, not the study's parent
    by_trial = {int(row["tags.trial_number"]): row for _, row in runs.iterrows()}
    for trial in trials:
        expected = "FINISHED" if trial.state == TrialState.COMPLETE else "FAILED"
        run = by_trial[trial.number]
        assert run["status"] == expected, trial.params["fault"]
        if trial.state == TrialState.FAIL:
            outcome = mlflow.artifacts.load_dict(f"{run['artifact_uri']}/outcome.json")
            assert outcome["reason"] == trial.user_attrs["fail_reason"]
            assert outcome["failure_class"] == trial.user_attrs["failure_class"]


@pytest.mark.parametrize(
    ("fault", "message"),
    [
        ("epoch", "trials in a row failed in the trainer (last: KeyError: 'broken in an epoch')"),
        ("oom", "trials in a row ran out of memory (last: OutOfMemoryError: CUDA out of memory."),
    ],
)
def test_a_trainer_that_always_fails_stops_the_run_after_k_in_a_row(
    fault: str, message: str, sqlite_url: str
) -> None:
    spec = spec_from_dict(faulty_spec(fixed={"fault": fault}, space=toy_spec()["space"]))
    with pytest.raises(WorkerError, match=f"^{MAX_FAILURES_IN_A_ROW} {re.escape(message)}"):
        run_trials(spec, 100, storage=sqlite_url, track=False)
    trials = optuna.load_study(study_name="toy", storage=sqlite_url).get_trials()
    assert [t.state for t in trials] == [TrialState.FAIL] * MAX_FAILURES_IN_A_ROW


def test_the_worker_command_stops_with_one_line_and_exit_2(tmp_path: Path) -> None:
    spec = tmp_path / "faulty.yaml"
    spec.write_text(yaml.safe_dump(faulty_spec(fixed={"fault": "init"}, space=toy_spec()["space"])))
    store = f"sqlite:///{tmp_path / 's.db'}"
    sys.path.insert(0, str(ROBUSTNESS_DIR))
    result = invoke(["worker", str(spec), "--storage", store, "--trials", "50", "--no-mlflow"])
    assert result.code == 2 and not result.traceback, result.stderr + result.traceback
    (line,) = result.stderr_lines
    assert line.startswith(f"hpsearch: error: {MAX_FAILURES_IN_A_ROW} trials in a row failed in")
    assert "fix it and start again" in line
    study = optuna.load_study(study_name="toy", storage=open_storage(store, heartbeat=False))
    states = [t.state for t in study.get_trials()]
    assert states == [TrialState.FAIL] * MAX_FAILURES_IN_A_ROW


def test_launch_does_not_restart_a_worker_whose_trainer_always_fails(tmp_path: Path) -> None:
    spec = tmp_path / "faulty.yaml"
    spec.write_text(yaml.safe_dump(faulty_spec(fixed={"fault": "init"}, space=toy_spec()["space"])))
    store = f"sqlite:///{tmp_path / 's.db'}"
    environment = {"PYTHONPATH": f"{ROBUSTNESS_DIR.parent}:{ROBUSTNESS_DIR}", "PATH": ""}
    result = subprocess.run(
        [sys.executable, "-m", "hpsearch", "launch", str(spec), "--cpu-workers", "1",
         "--trials", "20", "--storage", store, "--no-mlflow"],
        cwd=tmp_path, env=environment, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 1, result.stdout + result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    assert "[launch] worker cpu0 exited with code 2 (bad input, or the trainer fails" in (
        result.stdout
    )
    assert "restart 1/" not in result.stdout
    study = optuna.load_study(study_name="toy", storage=open_storage(store, heartbeat=False))
    assert len(study.get_trials()) == MAX_FAILURES_IN_A_ROW
