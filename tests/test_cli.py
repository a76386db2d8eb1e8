"""The ``hpsearch`` command as a user runs it (real processes, real stores, real MLflow)."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import mlflow
import pytest
import yaml
from toy_spec import toy_spec

TESTS_DIR = Path(__file__).parent


def hpsearch(
    *args: str, cwd: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    environment = {**os.environ, "PYTHONPATH": str(TESTS_DIR), **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "hpsearch", *args],
        cwd=cwd,
        env=environment,
        capture_output=True,
        text=True,
        timeout=600,
    )


@pytest.fixture
def toy_yaml(tmp_path: Path) -> Path:
    path = tmp_path / "toy.yaml"
    path.write_text(yaml.safe_dump(toy_spec(epochs=3)))
    return path


def test_spaces_lists_the_packaged_specs(tmp_path: Path) -> None:
    result = hpsearch("spaces", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].split()[:3] == ["spec", "trainer", "epochs"]
    assert any(line.startswith("cvfp ") and "val_convergence_rate" in line for line in lines)


def test_run_best_studies_on_the_embedded_defaults(tmp_path: Path, toy_yaml: Path) -> None:
    """No --storage, no MLFLOW_TRACKING_URI: hpsearch.db and mlflow.db in the working dir."""
    result = hpsearch("run", str(toy_yaml), "--trials", "4", "--no-progress", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "study 'toy' in sqlite:///hpsearch.db: 4 complete" in result.stdout
    assert "hpsearch dashboard --storage sqlite:///hpsearch.db" in result.stdout
    assert "mlflow ui --backend-store-uri sqlite:///mlflow.db" in result.stdout
    assert (tmp_path / "hpsearch.db").exists() and (tmp_path / "mlflow.db").exists()

    table = hpsearch("best", str(toy_yaml), cwd=tmp_path)
    assert table.returncode == 0, table.stderr
    assert table.stdout.splitlines()[0].split()[:3] == ["trial", "loss", "quality_band_distance"]

    as_json = hpsearch("best", str(toy_yaml), "--json", cwd=tmp_path)
    configs = json.loads(as_json.stdout)
    assert configs and {
        "params",
        "effective_params",
        "values",
        "metrics",
        "rule_events",
        "mlflow_run_id",
    } <= set(configs[0])
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    runs = mlflow.search_runs(experiment_names=["toy"])
    assert sorted(runs["tags.mlflow.runName"]) == [
        "study",
        "trial-0",
        "trial-1",
        "trial-2",
        "trial-3",
    ]
    assert set(runs["run_id"]) >= {config["mlflow_run_id"] for config in configs}

    studies = hpsearch("studies", cwd=tmp_path)
    row = next(line for line in studies.stdout.splitlines() if line.startswith("toy "))
    assert row.split()[-7:] == ["4", "0", "0", "0", "0", "4", "-"]  # no failures by class


def test_study_name_and_storage_env(tmp_path: Path, toy_yaml: Path) -> None:
    env = {"HPSEARCH_STORAGE": f"sqlite:///{tmp_path / 'env.db'}"}
    for name in ("first", "second"):
        result = hpsearch(
            "run",
            str(toy_yaml),
            "--trials",
            "1",
            "--study-name",
            name,
            "--no-mlflow",
            "--no-progress",
            cwd=tmp_path,
            env=env,
        )
        assert result.returncode == 0, result.stderr
    studies = hpsearch("studies", cwd=tmp_path, env=env).stdout
    assert "first " in studies and "second " in studies
    assert hpsearch("best", "toy", "--study-name", "second", cwd=tmp_path, env=env).returncode == 0


def test_plain_optuna_reads_the_study(tmp_path: Path, toy_yaml: Path) -> None:
    url = f"sqlite:///{tmp_path / 'x.db'}"
    hpsearch("run", str(toy_yaml), "--trials", "2", "--storage", url, "--no-mlflow", cwd=tmp_path)
    optuna_cli = Path(sys.executable).with_name("optuna")
    result = subprocess.run(
        [str(optuna_cli), "best-trials", "--study-name", "toy", "--storage", url],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "values" in result.stdout


def test_try_prints_metrics_state_and_events_and_exits_0_when_pruned(
    tmp_path: Path, toy_yaml: Path
) -> None:
    spec = toy_spec(rules=[{"name": "stop", "when": "epoch >= 2", "then": "abort"}])
    pruning = tmp_path / "pruning.yaml"
    pruning.write_text(yaml.safe_dump(spec))
    result = hpsearch("try", str(pruning), "--set", "x=0.4", "--json", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["state"] == "PRUNED"
    assert data["state_description"] == "pruned by rule stop"
    assert data["params"]["x"] == 0.4
    assert [event["rule"] for event in data["events"]] == ["stop"]
    assert not (tmp_path / "hpsearch.db").exists()
    assert not (tmp_path / "mlflow.db").exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["run", "nope"], "unknown spec 'nope'; use a packaged spec"),
        (["run", "{bad}"], "bad.yaml: colour: unknown key; remove it"),
        (["try", "{toy}", "--set", "z=1"], "'z' is not in the search space"),
        (["try", "{toy}", "--set", "x=abc"], "--set x=abc: not a number"),
        (["best", "{toy}"], "hpsearch.db' does not exist; check --storage"),  # none created
        (
            ["run", "{toy}", "--storage", "mysql://u:secret@h/db"],
            "unsupported storage URL 'mysql://u:***@h/db'",
        ),
    ],
)
def test_bad_input_is_one_line_exit_2_and_nothing_written(
    tmp_path: Path, toy_yaml: Path, args: list[str], message: str
) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(toy_spec(colour="red")))
    args = [arg.format(toy=toy_yaml, bad=bad) for arg in args]
    result = hpsearch(*args, cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1, result.stderr
    assert result.stderr.startswith("hpsearch: error: ")
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    assert "secret" not in result.stderr
    database = tmp_path / "hpsearch.db"
    if database.exists():  # `best` opens the store to look; it must stay empty
        with sqlite3.connect(database) as connection:
            assert connection.execute("select count(*) from studies").fetchone()[0] == 0


def test_a_bad_spec_writes_no_study_into_an_existing_store(tmp_path: Path, toy_yaml: Path) -> None:
    url = f"sqlite:///{tmp_path / 'x.db'}"
    hpsearch("run", str(toy_yaml), "--trials", "1", "--storage", url, "--no-mlflow", cwd=tmp_path)
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(toy_spec(name="other", epochs=-1)))
    result = hpsearch("run", str(bad), "--storage", url, cwd=tmp_path)
    assert result.returncode == 2
    with sqlite3.connect(tmp_path / "x.db") as connection:
        names = [row[0] for row in connection.execute("select study_name from studies")]
    assert names == ["toy"]


def test_help_lists_every_command(tmp_path: Path) -> None:
    result = hpsearch("--help", cwd=tmp_path)
    for command in ("spaces", "run", "best", "studies", "try", "dashboard"):
        assert f"  {command} " in result.stdout


def test_a_crashing_trial_is_one_warning_line_and_the_run_goes_on(tmp_path: Path) -> None:
    crashing = tmp_path / "crash.yaml"
    crashing.write_text(yaml.safe_dump(toy_spec(fixed={"crash_at_epoch": 2})))
    result = hpsearch(
        "run", str(crashing), "--trials", "2", "--no-mlflow", "--no-progress", cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr
    assert "study 'toy' in sqlite:///hpsearch.db: 2 fail" in result.stdout
    assert "Traceback" not in result.stderr
    assert result.stderr.count("RuntimeError: toy crash at epoch 2") == 2
