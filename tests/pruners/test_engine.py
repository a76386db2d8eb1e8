from __future__ import annotations

import math

import pytest
from pydantic import ValidationError

from hpsearch.errors import RuleError
from hpsearch.pruners import RuleConfig, RuleEngine, build_rules, get_preset


def engine_for(*rules: dict, params: dict | None = None) -> RuleEngine:
    return RuleEngine(
        build_rules([RuleConfig.model_validate(rule) for rule in rules]), params or {}
    )


def test_for_epochs_needs_consecutive_epochs_and_restarts_after_a_firing() -> None:
    engine = engine_for(
        {"name": "down", "when": "pr > 70", "for_epochs": 3, "then": {"add": {"fb": -0.005}}}
    )
    knobs = {"fb": 0.05}
    fired_at = []
    for epoch, pr in enumerate([80, 80, 50, 80, 80, 80, 80, 80, 80], start=1):
        if engine.observe(epoch, {"pr": pr}, knobs):
            fired_at.append(epoch)
    assert fired_at == [6, 9]
    assert knobs["fb"] == pytest.approx(0.04)
    first = engine.events[0]
    assert (first.rule, first.action, first.epoch) == ("down", "backoff", 6)
    assert first.knobs_before == {"fb": 0.05}
    assert first.knobs_after == {"fb": pytest.approx(0.045)}
    assert first.metrics == {"pr": 80}


def test_set_add_scale_apply_in_order_and_bounds_clamp() -> None:
    engine = engine_for(
        {
            "name": "mix",
            "when": "x > 0",
            "then": {"set": {"a": 1.0}, "add": {"a": 1.0, "b": -5.0}, "scale": {"c": 10.0}},
            "bounds": {"b": [0.0, 1.0], "c": [0.0, 5.0]},
        }
    )
    knobs = {"a": 0.0, "b": 2.0, "c": 0.3}
    engine.observe(1, {"x": 1.0}, knobs)
    assert knobs == {"a": 2.0, "b": 0.0, "c": 3.0}
    engine.observe(2, {"x": 1.0}, knobs)
    assert knobs["c"] == 5.0


def test_abort_stops_the_epoch_and_is_recorded() -> None:
    engine = engine_for(
        {"name": "stop", "when": "loss > 2", "then": "abort", "message": "diverged"},
        {"name": "later", "when": "loss > 0", "then": "advise"},
    )
    assert engine.observe(1, {"loss": 1.0}, {})[0].action == "advise"
    events = engine.observe(2, {"loss": 3.0}, {})
    assert [event.rule for event in events] == ["stop"]
    assert engine.aborted_by is not None
    assert engine.aborted_by.message == "diverged"
    assert engine.aborted_by.epoch == 2


def test_advise_changes_nothing() -> None:
    engine = engine_for({"name": "tip", "when": "t < 3", "then": {"advise": "teacher 0.5"}})
    knobs = {"teacher_weight": 0.15}
    (event,) = engine.observe(1, {"t": 1.0}, knobs)
    assert event.action == "advise"
    assert event.message == "teacher 0.5"
    assert knobs == {"teacher_weight": 0.15}


def test_if_params_selects_the_trials_a_rule_applies_to() -> None:
    rule = {"name": "r", "when": "x > 0", "then": "abort", "if_params": {"schedule": "adaptive"}}
    assert engine_for(rule, params={"schedule": "constant"}).rules == []
    assert len(engine_for(rule, params={"schedule": "adaptive"}).rules) == 1


def test_max_firings_caps_a_rule() -> None:
    engine = engine_for(
        {"name": "x10", "when": "r < 0.1", "then": {"scale": {"lam": 10}}, "max_firings": 1}
    )
    knobs = {"lam": 1.0}
    for epoch in range(1, 5):
        engine.observe(epoch, {"r": 0.01}, knobs)
    assert knobs["lam"] == 10.0
    assert len(engine.events) == 1


def test_conditions_see_knobs_params_and_epoch() -> None:
    engine = engine_for(
        {"name": "late", "when": "epoch >= 3 and lam < 5 and size == 8", "then": "abort"},
        params={"size": 8, "name": "text is ignored"},
    )
    assert not engine.observe(2, {}, {"lam": 1.0})
    assert engine.observe(3, {}, {"lam": 1.0})


def test_event_json_keeps_non_finite_values_readable() -> None:
    engine = engine_for({"name": "nan", "when": "any_nonfinite()", "then": "abort"})
    engine.observe(1, {"loss": math.nan}, {})
    assert engine.events[0].to_dict()["metrics"] == {"loss": "nan"}


def test_rule_config_errors_name_the_problem() -> None:
    with pytest.raises(ValidationError, match="unknown function 'eval'"):
        RuleConfig.model_validate({"name": "r", "when": "eval(x)", "then": "abort"})
    with pytest.raises(ValidationError, match="low 2.0 > high 1.0"):
        RuleConfig.model_validate(
            {"name": "r", "when": "x", "then": {"set": {"a": 1}}, "bounds": {"a": [2, 1]}}
        )
    with pytest.raises(ValidationError, match="at least one of set, add, scale or advise"):
        RuleConfig.model_validate({"name": "r", "when": "x", "then": {}})


def test_unknown_preset_lists_the_known_ones() -> None:
    with pytest.raises(RuleError, match="unknown rule preset 'nope'.*cvfp-health"):
        get_preset("nope")


class TestCvfpHealth:
    def run(self, params: dict, sequence: list[dict], knobs: dict | None = None) -> RuleEngine:
        engine = RuleEngine(build_rules(["cvfp-health"]), params)
        knobs = knobs if knobs is not None else {"dist_reg_weight": 0.3, "lr": 1e-3}
        for epoch, metrics in enumerate(sequence, start=1):
            engine.observe(epoch, metrics, knobs)
            if engine.aborted_by:
                break
        self.knobs = knobs
        return engine

    @staticmethod
    def metrics(rank: float, conv: float, train_rank: float = 0.5, train_conv: float = 0.5) -> dict:
        return {
            "val_effective_rank_ratio": rank,
            "val_convergence_rate": conv,
            "train_effective_rank_ratio": train_rank,
            "train_convergence_rate": train_conv,
            "train_convergence_rate_at_threshold": train_conv,
        }

    def test_nan_aborts_at_once(self) -> None:
        engine = self.run({}, [self.metrics(0.5, 0.5), self.metrics(math.nan, 0.5)])
        assert engine.aborted_by is not None
        assert (engine.aborted_by.rule, engine.aborted_by.epoch) == ("non-finite", 2)

    def test_rank_collapse_aborts_after_three_iterations_without_convergence(self) -> None:
        collapsed = self.metrics(0.01, 0.2)
        engine = self.run({}, [collapsed, collapsed, self.metrics(0.01, 0.9), collapsed, collapsed])
        assert engine.aborted_by is None  # the streak was broken by a converged iteration
        engine = self.run({}, [collapsed] * 3)
        assert engine.aborted_by is not None
        assert (engine.aborted_by.rule, engine.aborted_by.epoch) == ("rank-collapse", 3)

    def test_adaptive_weighting_follows_the_seed_option_2(self) -> None:
        sequence = [
            self.metrics(0.5, 0.5, train_rank=0.6, train_conv=0.9),  # rank low -> 0.7
            self.metrics(0.5, 0.5, train_rank=0.85, train_conv=0.3),  # conv low -> 0.2
            self.metrics(0.5, 0.5, train_rank=0.9, train_conv=0.6),  # balanced -> 0.5
        ]
        engine = self.run({"schedule": "adaptive"}, sequence)
        weights = [event.knobs_after["dist_reg_weight"] for event in engine.events]
        assert weights == [0.7, 0.2, 0.5]
        assert [event.rule for event in engine.events] == [
            "adaptive-more-diversity",
            "adaptive-more-convergence",
            "adaptive-balanced",
        ]

    def test_adaptive_rules_leave_other_schedules_alone(self) -> None:
        engine = self.run({"schedule": "constant"}, [self.metrics(0.5, 0.5, train_rank=0.1)])
        assert engine.events == []
        assert self.knobs["dist_reg_weight"] == 0.3


def test_repeated_backoffs_leave_no_float_noise() -> None:
    engine = engine_for({"name": "down", "when": "x > 0", "then": {"add": {"fb": -0.005}}})
    knobs = {"fb": 0.1}
    for epoch in range(1, 4):
        engine.observe(epoch, {"x": 1.0}, knobs)
    assert knobs["fb"] == 0.085
