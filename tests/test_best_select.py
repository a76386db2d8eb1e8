"""Best configs a program can use: --where / --rank-by / --top, --export yaml, try --config;
read-only commands; --trials as the study's total; bad try values."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest
import yaml
from toy_spec import toy_spec

import hpsearch
from hpsearch.cli import main
from hpsearch.errors import HpsearchError, SpecError


def cli(*args: str) -> int:
    with pytest.raises(SystemExit) as exit_info:
        main(list(args))
    return int(exit_info.value.code or 0)


@pytest.fixture
def toy_yaml(tmp_path: Path) -> Path:
    path = tmp_path / "toy.yaml"
    spec = toy_spec(epochs=3, constraints=[])
    spec["rules"] = [{"name": "slow", "when": "epoch == 2", "then": {"set": {"decay": 0.5}}}]
    spec["space"]["decay"] = {"type": "float", "low": 0.6, "high": 0.95}
    path.write_text(yaml.safe_dump(spec))
    return path


@pytest.fixture
def study_url(toy_yaml: Path, sqlite_url: str) -> str:
    assert (
        cli(
            "run",
            str(toy_yaml),
            "--trials",
            "8",
            "--storage",
            sqlite_url,
            "--no-mlflow",
            "--no-progress",
        )
        == 0
    )
    return sqlite_url


def test_rank_by_where_and_top_choose_among_all_feasible_trials(study_url: str) -> None:
    trials = optuna.load_study(study_name="toy", storage=study_url).get_trials()
    everyone = hpsearch.best_configs("toy", study_url, rank_by="-loss")
    assert [c.values["loss"] for c in everyone] == sorted(t.values[0] for t in trials)
    kept = hpsearch.best_configs("toy", study_url, rank_by="x", where="y > 0.5", top=2)
    expected = sorted((t for t in trials if t.params["y"] > 0.5), key=lambda t: -t.params["x"])
    assert [c.trial_number for c in kept] == [t.number for t in expected[:2]]
    front = hpsearch.best_configs("toy", study_url)
    assert hpsearch.best_configs("toy", study_url, top=1) == front[:1]


def test_a_where_on_an_unknown_name_lists_the_names(study_url: str) -> None:
    with pytest.raises(HpsearchError, match=r"--where 'los < 1': 'los' is not .* use one of"):
        hpsearch.best_configs("toy", study_url, where="los < 1")


def test_sampled_and_effective_values_are_labelled(
    study_url: str, toy_yaml: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli("best", str(toy_yaml), "--storage", study_url) == 0
    header = capsys.readouterr().out.splitlines()[0]
    assert "decay (sampled)" in header and "decay (effective)" in header
    config = hpsearch.best_configs("toy", study_url)[0]
    assert config.effective_params["decay"] == 0.5 != config.params["decay"]


def test_an_exported_config_re_runs_the_same_trial(
    study_url: str, toy_yaml: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    capsys.readouterr()
    assert (
        cli("best", str(toy_yaml), "--storage", study_url, "--rank-by", "x", "--export", "yaml")
        == 0
    )
    exported = tmp_path / "best.yaml"
    exported.write_text(capsys.readouterr().out)
    document = yaml.safe_load(exported.read_text())
    assert cli("try", "--config", str(exported), "--json") == 0
    import json

    outcome = json.loads(capsys.readouterr().out)
    assert outcome["params"]["x"] == document["params"]["x"]
    assert outcome["final_metrics"]["loss"] == pytest.approx(document["metrics"]["loss"])


def test_read_only_commands_never_create_a_store(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "typo.db"
    assert cli("studies", "--storage", f"sqlite:///{missing}") == 2
    assert cli("best", "toy", "--storage", f"sqlite:///{missing}") == 2
    errors = capsys.readouterr().err.strip().splitlines()
    assert len(errors) == 2 and all("typo.db' does not exist" in line for line in errors)
    assert not missing.exists()


def test_trials_is_the_study_total_and_a_met_budget_exits_0(
    study_url: str, toy_yaml: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    capsys.readouterr()
    common = ["--storage", study_url, "--no-mlflow"]
    assert cli("run", str(toy_yaml), "--trials", "8", *common, "--no-progress") == 0
    assert "already has 8 finished trials" in capsys.readouterr().out
    assert cli("launch", str(toy_yaml), "--cpu-workers", "2", "--trials", "5", *common) == 0
    assert "already has 8 finished trials" in capsys.readouterr().out
    assert cli("run", str(toy_yaml), "--more-trials", "2", *common, "--no-progress") == 0
    assert len(optuna.load_study(study_name="toy", storage=study_url).get_trials()) == 10
    assert cli("run", str(toy_yaml), "--trials", "3", "--more-trials", "2", *common) == 2


def test_try_a_value_the_trainer_rejects_is_bad_input(
    toy_yaml: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli("try", str(toy_yaml), "--set", "x=5") == 2
    error = capsys.readouterr().err.strip().splitlines()
    assert len(error) == 1 and "param x=5.0 is out of range" in error[0]
    assert cli("try", str(toy_yaml), "--set", "decay=0.5") == 0  # valid, outside the space
    assert "note: decay=0.5 is outside the searched range [0.6, 0.95]" in capsys.readouterr().err


def test_best_quick_names_the_quick_study_and_a_spec_without_quick_is_an_error(
    toy_yaml: Path,
) -> None:
    from hpsearch.cli import _study_name_for

    assert _study_name_for("lvm", None, quick=True) == "lvm-quick"
    assert _study_name_for("lvm", "mine", quick=True) == "mine"
    with pytest.raises(SpecError, match="has no quick: section"):
        _study_name_for(str(toy_yaml), None, quick=True)
