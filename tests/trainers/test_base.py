"""The Trainer contract: minimal subclasses, generator functions, checks on first use."""

from __future__ import annotations

import logging
from typing import Any

import pytest

import hpsearch
from hpsearch.errors import SpecError, TrainerContractError, TrainerError
from hpsearch.search_spaces import spec_from_dict
from hpsearch.search_spaces.validate import _WARNED_PRUNERS
from hpsearch.trainers import get_trainer_class


def quadratic_spec(trainer: str = "minimal_trainers:Quadratic", **overrides: Any) -> Any:
    data: dict[str, Any] = {
        "name": "quadratic",
        "trainer": trainer,
        "epochs": 4,
        "fixed": {"decay": 0.9},
        "space": {"x": {"type": "float", "low": 0.0, "high": 1.0, "default": 0.5}},
        "objectives": [{"metric": "loss", "direction": "minimize"}],
    }
    data.update(overrides)
    return spec_from_dict(data)


def test_a_subclass_with_only_epochs_and_final_metrics_runs() -> None:
    outcome = hpsearch.try_config(quadratic_spec())
    assert outcome.state == "COMPLETE", outcome.reason
    assert outcome.epochs_run == 4
    assert outcome.final_metrics["loss"] == pytest.approx((0.04 + 0.1) * 0.9**4)


def test_a_generator_function_is_a_trainer_with_live_knobs() -> None:
    rule = {"name": "slow", "when": "epoch == 2", "then": {"set": {"decay": 0.5}}}
    outcome = hpsearch.try_config(quadratic_spec("minimal_trainers:quadratic", rules=[rule]))
    assert outcome.state == "COMPLETE", outcome.reason
    assert [epoch["decay"] for epoch in outcome.history] == [0.9, 0.9, 0.5, 0.5]
    assert outcome.final_metrics == outcome.history[-1]


def test_reading_a_param_or_knob_the_spec_does_not_give_is_one_clear_error() -> None:
    spec = quadratic_spec(fixed={})  # the knob decay is read but neither fixed nor searched
    with pytest.raises(TrainerContractError, match=r"reads knob 'decay'.*to space or fixed"):
        hpsearch.try_config(spec)
    space = {"decay": {"type": "float", "low": 0.5, "high": 0.9}}
    with pytest.raises(TrainerContractError, match=r"reads param 'x'.*to space or fixed"):
        hpsearch.try_config(quadratic_spec(fixed={}, space=space))


def test_a_missing_final_metric_names_the_metric_and_what_was_reported() -> None:
    spec = quadratic_spec(objectives=[{"metric": "accuracy", "direction": "maximize"}])
    with pytest.raises(TrainerContractError, match=r"no metric 'accuracy'.*: loss, quality"):
        hpsearch.try_config(spec)


def test_a_rule_on_a_knob_the_trainer_lacks_stops_before_training() -> None:
    rule = {"name": "r", "when": "loss > 0", "then": {"scale": {"lr": 0.5}}}
    with pytest.raises(TrainerContractError, match=r"changes knob 'lr'.*knobs: decay, x"):
        hpsearch.try_config(quadratic_spec(rules=[rule]))


def test_the_cli_turns_a_contract_error_into_one_line_and_exit_2(
    tmp_path: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    import yaml

    from hpsearch.cli import main

    path = tmp_path / "spec.yaml"
    data = quadratic_spec(fixed={}).model_dump(mode="json", exclude_defaults=True)
    path.write_text(yaml.safe_dump({**data, "fixed": {}}))
    with pytest.raises(SystemExit) as exit_info:
        main(["try", str(path)])
    assert exit_info.value.code == 2
    error_lines = capsys.readouterr().err.strip().splitlines()
    assert len(error_lines) == 1 and "reads knob 'decay'" in error_lines[0]


def test_a_declared_trainer_is_checked_at_load() -> None:
    with pytest.raises(SpecError, match=r"space.z: trainer .* has no param 'z'"):
        quadratic_spec(
            "minimal_trainers:DeclaredFinalOnly",
            space={"z": {"type": "float", "low": 0.0, "high": 1.0}},
        )


def test_a_pruner_on_an_objective_not_reported_per_epoch_is_an_error_at_load() -> None:
    with pytest.raises(SpecError, match=r"can never prune.*'loss' only at the end"):
        quadratic_spec("minimal_trainers:DeclaredFinalOnly", pruner={"name": "median"})


def test_undeclared_it_is_one_warning_at_the_first_rung(caplog: pytest.LogCaptureFixture) -> None:
    _WARNED_PRUNERS.clear()
    spec = quadratic_spec("minimal_trainers:FinalOnly", pruner={"name": "median"})
    with caplog.at_level(logging.WARNING, logger="hpsearch"):
        hpsearch.try_config(spec)
        hpsearch.try_config(spec)
    warnings = [r.getMessage() for r in caplog.records if "cannot prune" in r.getMessage()]
    assert len(warnings) == 1
    assert "does not report objective metric 'loss' at epoch 1" in warnings[0]


def test_no_warning_when_the_objective_is_reported_every_epoch(
    caplog: pytest.LogCaptureFixture,
) -> None:
    _WARNED_PRUNERS.clear()
    with caplog.at_level(logging.WARNING, logger="hpsearch"):
        hpsearch.try_config(quadratic_spec(pruner={"name": "median"}))
    assert not [r for r in caplog.records if "cannot prune" in r.getMessage()]


def test_a_backoff_after_the_last_epoch_is_not_an_effective_param() -> None:
    rules = [{"name": "late", "when": "epoch >= 3", "then": {"set": {"decay": 0.5}}}]
    outcome = hpsearch.try_config(quadratic_spec(rules=rules))
    assert [event["epoch"] for event in outcome.events] == [3, 4]
    assert outcome.history[-1]["decay"] == 0.5  # epoch 4 trained with the epoch-3 backoff
    assert outcome.effective_params["decay"] == 0.5
    rules = [{"name": "last", "when": "epoch == 4", "then": {"set": {"decay": 0.1}}}]
    outcome = hpsearch.try_config(quadratic_spec(rules=rules))
    assert outcome.events[0]["knobs_after"]["decay"] == 0.1
    assert outcome.effective_params["decay"] == 0.9  # no epoch trained with 0.1


def test_a_file_path_target_is_resolved_next_to_the_spec(tmp_path: Any) -> None:
    (tmp_path / "mine.py").write_text(
        "from hpsearch.trainers import Trainer\n"
        "class Mine(Trainer):\n"
        "    def epochs(self, n):\n"
        "        for i in range(n):\n"
        "            yield {'m': float(i)}\n"
        "    def final_metrics(self):\n"
        "        return {'m': 1.0}\n"
    )
    spec = tmp_path / "spec.yaml"
    spec.write_text(
        "name: mine\ntrainer: mine.py:Mine\nepochs: 2\n"
        "space: {a: {type: float, low: 0, high: 1}}\n"
        "objectives: [{metric: m, direction: maximize}]\n"
    )
    assert hpsearch.try_config(str(spec)).final_metrics == {"m": 1.0}
    with pytest.raises(TrainerError, match=r"file 'nowhere.py' does not exist"):
        get_trainer_class("nowhere.py:Mine")
