"""Every file in examples/ runs as a user runs it, and the digits study prunes."""

from __future__ import annotations

import runpy
import sys
from collections import Counter
from pathlib import Path

import optuna
import pytest

import hpsearch
from hpsearch.objectives.summary import RULE_EVENTS_SYSTEM_ATTR

EXAMPLES = Path(__file__).parents[2] / "examples"


@pytest.mark.parametrize("script", sorted(EXAMPLES.glob("*.py")), ids=lambda path: path.name)
def test_each_example_file_runs(
    script: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """As `python examples/FILE.py` from another folder (in this process: no second start-up)."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", [str(script)])
    runpy.run_path(str(script), run_name="__main__")
    printed = capsys.readouterr().out
    assert printed.startswith("complete {"), printed
    assert "'val_accuracy': 0.9" in printed  # the default config learns the digits


def test_the_digits_study_prunes_and_its_rules_fire(sqlite_url: str) -> None:
    study = hpsearch.run(str(EXAMPLES / "digits.yaml"), 12, storage=sqlite_url, track=False)
    trials = study.get_trials()
    states = Counter(trial.state.name for trial in trials)
    assert states["PRUNED"] >= 3 and states["COMPLETE"] >= 2, states
    pruned = [t for t in trials if t.state == optuna.trial.TrialState.PRUNED]
    assert all(t.user_attrs["epochs_run"] < 12 for t in pruned)
    fired = {
        event["rule"] for t in trials for event in t.system_attrs.get(RULE_EVENTS_SYSTEM_ATTR, [])
    }
    assert "halve-lr" in fired
    sgd = [t for t in trials if t.params["optimizer"] == "sgd"]
    adam = [t for t in trials if t.params["optimizer"] == "adam"]
    assert sgd and adam
    assert all("momentum" in t.params for t in sgd)
    assert not any("momentum" in t.params for t in adam)
