"""Ctrl-C or SIGTERM on `hpsearch run` closes the MLflow runs (KILLED) with the signal as the
reason: nothing is left RUNNING."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import mlflow
import pytest
import yaml
from toy_spec import toy_spec

from hpsearch.tracking.study_run import ROLE_TAG

TESTS_DIR = Path(__file__).parent.parent
DEADLINE_S = 180.0  # generous: process start-up on a loaded 2-core machine


def wait_for_running_trial(client: Any, process: subprocess.Popen[str]) -> Any:
    deadline = time.monotonic() + DEADLINE_S
    while time.monotonic() < deadline:
        assert process.poll() is None, process.communicate()
        experiment = client.get_experiment_by_name("slow")
        if experiment is not None:
            runs = client.search_runs(
                [experiment.experiment_id], filter_string=f"tags.`{ROLE_TAG}` = 'trial'"
            )
            if runs and runs[0].info.status == "RUNNING":
                return runs[0]
        time.sleep(0.2)
    raise AssertionError(f"no running trial within {DEADLINE_S} s")


@pytest.mark.slow
@pytest.mark.parametrize(
    ("signum", "reason"),
    [(signal.SIGINT, "SIGINT (Ctrl-C)"), (signal.SIGTERM, "SIGTERM")],
)
def test_a_stopped_run_closes_its_mlflow_runs_with_the_reason(
    tmp_path: Path, mlflow_uri: str, signum: int, reason: str
) -> None:
    spec = tmp_path / "slow.yaml"
    spec.write_text(yaml.safe_dump(toy_spec(name="slow", epochs=400, fixed={"sleep_s": 0.05})))
    process = subprocess.Popen(
        [sys.executable, "-m", "hpsearch", "run", str(spec), "--trials", "2", "--no-progress"],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(TESTS_DIR), "MLFLOW_TRACKING_URI": mlflow_uri},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    client = mlflow.MlflowClient(mlflow_uri)
    try:
        trial = wait_for_running_trial(client, process)
        process.send_signal(signum)
        process.communicate(timeout=DEADLINE_S)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode != 0

    stopped = client.get_run(trial.info.run_id)
    assert stopped.info.status == "KILLED"
    assert stopped.data.tags["stop_reason"] == f"interrupted: {reason}"
    parent = client.get_run(stopped.data.tags["mlflow.parentRunId"])
    assert parent.info.status == "KILLED"
    assert parent.data.tags["stop_reason"] == f"interrupted: {reason}"
    experiment_id = stopped.info.experiment_id
    assert client.search_runs([experiment_id], filter_string="attributes.status = 'RUNNING'") == []
