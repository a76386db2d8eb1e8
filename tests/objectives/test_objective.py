"""One trial through Optuna: attributes stored, failures contained, rules applied."""

from __future__ import annotations

import optuna
import pytest
from toy_spec import toy_spec

import hpsearch
from hpsearch.search_spaces import spec_from_dict

COMPLETE, PRUNED, FAIL = (
    optuna.trial.TrialState.COMPLETE,
    optuna.trial.TrialState.PRUNED,
    optuna.trial.TrialState.FAIL,
)


def run_toy(sqlite_url: str, n_trials: int = 3, **changes: object) -> optuna.Study:
    spec = spec_from_dict(toy_spec(**changes))
    return hpsearch.run(spec, n_trials, storage=sqlite_url, track=False)


def test_a_complete_trial_stores_what_it_produced(sqlite_url: str) -> None:
    study = run_toy(sqlite_url, 2)
    assert study.metric_names == ["loss", "quality_band_distance"]
    trial = study.trials[0]
    assert trial.state == COMPLETE
    attrs = trial.user_attrs
    assert "metrics_history" not in attrs and attrs["epochs_run"] == 4  # histories: MLflow
    assert attrs["final_metrics"]["loss"] == pytest.approx(trial.values[0], rel=1e-5)
    assert attrs["effective_params"]["x"] == trial.params["x"]
    assert attrs["worker"]["pid"]
    assert attrs["state_description"] == "complete"
    loss = trial.values[0]
    # Optuna's list form, the one optuna-dashboard reads too; Optuna names it by position
    assert trial.system_attrs["constraints"] == [pytest.approx(loss - 0.2)]
    assert trial.constraints == {"0": pytest.approx(loss - 0.2)}
    assert attrs["feasible"] == (
        "yes" if loss <= 0.2 else f"no: loss <= 0.2 (off by {loss - 0.2:.3g})"
    )
    quality = 1 - loss
    assert trial.values[1] == pytest.approx(max(0.9 - quality, 0.0, quality - 0.95))


def test_a_crashing_trainer_fails_its_trial_and_the_study_goes_on(sqlite_url: str) -> None:
    study = run_toy(sqlite_url, 3, fixed={"crash_at_epoch": 2})
    assert [t.state for t in study.trials] == [FAIL] * 3
    attrs = study.trials[0].user_attrs
    assert attrs["fail_reason"] == "RuntimeError: toy crash at epoch 2"
    assert attrs["stop"] == {
        "by": "failure",
        "name": "trainer_error",
        "epoch": 2,
        "message": "RuntimeError: toy crash at epoch 2",
    }
    assert attrs["epochs_run"] == 1 and set(attrs["last_metrics"]) == {"loss", "quality", "decay"}


def test_a_nan_metric_fails_the_trial_with_the_metric_named(sqlite_url: str) -> None:
    study = run_toy(sqlite_url, 1, fixed={"nan_at_epoch": 3})
    assert study.trials[0].state == FAIL
    assert study.trials[0].user_attrs["fail_reason"] == "metric loss is nan at epoch 3"
    stop = study.trials[0].user_attrs["stop"]
    assert (stop["by"], stop["name"], stop["epoch"]) == ("failure", "divergence", 3)


def test_bad_params_fail_the_trial_with_the_reason(sqlite_url: str) -> None:
    study = run_toy(
        sqlite_url, 1, space={"x": {"type": "float", "low": 0.0, "high": 2.0}}, fixed={"decay": 0.9}
    )
    reasons = {t.user_attrs.get("fail_reason") for t in study.trials if t.state == FAIL}
    assert all("param x=" in reason for reason in reasons if reason)


def test_a_rule_abort_prunes_the_trial_and_records_why(sqlite_url: str) -> None:
    rule = {
        "name": "too-slow",
        "when": "epoch >= 2 and loss > 0.01",
        "then": "abort",
        "message": "loss not falling fast enough",
    }
    study = run_toy(sqlite_url, 1, rules=[rule])
    trial = study.trials[0]
    assert trial.state == PRUNED
    assert trial.user_attrs["prune_reason"] == (
        "rule too-slow at epoch 2: loss not falling fast enough"
    )
    assert trial.user_attrs["stop"] == {
        "by": "rule",
        "name": "too-slow",
        "epoch": 2,
        "message": "loss not falling fast enough",
    }
    (event,) = trial.system_attrs["hpsearch:rule_events"]
    assert (event["rule"], event["action"], event["epoch"]) == ("too-slow", "abort", 2)
    assert trial.user_attrs["rule_events"] == (
        "epoch 2 too-slow: abort (loss not falling fast enough)"
    )
    assert trial.user_attrs["state_description"] == "pruned by rule too-slow"


def test_a_backoff_shapes_the_next_epoch_and_the_effective_params(sqlite_url: str) -> None:
    rule = {"name": "faster", "when": "epoch == 1", "then": {"set": {"decay": 0.5}}}
    study = run_toy(sqlite_url, 1, rules=[rule])
    trial = study.trials[0]
    assert trial.user_attrs["final_metrics"]["decay"] == 0.5
    assert trial.user_attrs["effective_params"]["decay"] == 0.5
    assert trial.user_attrs["params_changed"] == "decay 0.5 (was 0.9)"
    event = trial.system_attrs["hpsearch:rule_events"][0]
    assert (event["knobs_before"], event["knobs_after"]) == ({"decay": 0.9}, {"decay": 0.5})
    assert trial.user_attrs["rule_events"] == "epoch 1 faster: decay 0.9 -> 0.5"


def test_single_objective_specs_report_to_optunas_pruners(sqlite_url: str) -> None:
    study = run_toy(
        sqlite_url,
        8,
        objectives=[{"metric": "loss", "direction": "minimize"}],
        pruner={"name": "median", "n_startup_trials": 2, "n_warmup_steps": 1},
        sampler={"name": "random", "seed": 3},
    )
    vectors = study.trials[0].user_attrs["intermediate_objectives"]
    assert study.trials[0].intermediate_values == pytest.approx(
        {int(epoch): entry["values"][0] for epoch, entry in vectors.items()}
    )
    pruned = [t for t in study.trials if t.state == PRUNED]
    assert pruned, "the median pruner should stop some of 8 random trials"
    assert pruned[0].user_attrs["prune_reason"].startswith("pruner median at epoch")
    stop = pruned[0].user_attrs["stop"]
    assert (stop["by"], stop["name"]) == ("optuna-pruner", "median")
    assert stop["epoch"] == pruned[0].user_attrs["epochs_run"]


def test_existing_study_with_other_directions_is_refused(sqlite_url: str) -> None:
    run_toy(sqlite_url, 1)
    with pytest.raises(
        hpsearch.SpecError, match="exists with directions .* pass another --study-name"
    ):
        run_toy(sqlite_url, 1, objectives=[{"metric": "loss", "direction": "maximize"}])


def test_try_config_runs_one_config_without_a_store() -> None:
    outcome = hpsearch.try_config(spec_from_dict(toy_spec()), ["x=0.3", "y=0.7"])
    assert outcome.state == "COMPLETE"
    assert outcome.params["x"] == 0.3
    assert outcome.feasible
    assert outcome.to_json()["state_description"] == "complete"


@pytest.mark.parametrize(
    ("assignment", "message"),
    [
        ("x", r"--set 'x': write key=value"),
        ("z=1", r"--set z: 'z' is not in the search space of 'toy'; use one of x, y"),
        ("x=abc", r"--set x=abc: not a number"),
    ],
)
def test_bad_assignments_name_the_fix(assignment: str, message: str) -> None:
    with pytest.raises(hpsearch.ParamError, match=message):
        hpsearch.try_config(spec_from_dict(toy_spec()), [assignment])
