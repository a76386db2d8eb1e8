"""The ``free-bits-health`` preset (seed 000), driven with metric sequences: every rule's knob
values and events, and the fallback ladder step by step to its final abort."""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import pytest

from hpsearch.pruners import RuleEngine, build_rules, get_preset
from hpsearch.pruners.base import EpochState
from hpsearch.pruners.presets.vae import FALLBACK_STEPS, Epoch10Decision, FallbackLadder
from hpsearch.trainers.vae import VaeTrainer

PARAMS = VaeTrainer.resolve_params({})
HEALTHY: dict[str, float] = {
    "kl_raw": 0.05,
    "kl_after": 0.03,
    "penalty_reduction": 40.0,
    "teacher_contribution": 5.0,
    "val_train_ratio": 1.0,
    "val_loss": 20.0,
    "train_loss": 20.0,
    "kl_weight": 15.0,  # the warm-up is over (max_kl_weight is 15)
}


def make_engine() -> tuple[RuleEngine, dict[str, float]]:
    knobs = {name: float(PARAMS[name]) for name in VaeTrainer.knob_names}
    return RuleEngine(build_rules(["free-bits-health"]), PARAMS), knobs


def feed(
    engine: RuleEngine, knobs: dict[str, float], epochs: Iterable[dict[str, float]], start: int = 1
) -> list[list[str]]:
    """Observe each epoch (HEALTHY overlaid with its changes); the rule names fired per epoch."""
    fired = []
    for epoch, changes in enumerate(epochs, start=start):
        events = engine.observe(epoch, {**HEALTHY, **changes}, knobs)
        fired.append([event.rule for event in events])
        if engine.aborted_by is not None:
            break
    return fired


def test_preset_is_registered_with_what_it_reads_and_changes() -> None:
    preset = get_preset("free-bits-health")
    assert {"kl_raw", "kl_after", "penalty_reduction", "val_loss"} <= preset.names_read()
    assert preset.knobs_changed() == {"free_bits", "max_kl_weight"}
    assert any(isinstance(rule, FallbackLadder) for rule in preset.build())


def test_healthy_epochs_fire_nothing() -> None:
    engine, knobs = make_engine()
    assert feed(engine, knobs, [{}] * 12) == [[]] * 12
    assert knobs["free_bits"] == 0.02 and engine.events == []


def test_all_kl_free_sets_free_bits_to_0_01() -> None:
    engine, knobs = make_engine()
    fired = feed(engine, knobs, [{"kl_after": 0.0, "kl_raw": 0.02}, {"kl_after": 0.0}])
    assert fired == [[], ["all-kl-free"]]  # kl_raw must exceed 0.02
    event = engine.events[0]
    assert (event.epoch, event.action) == (2, "backoff")
    assert event.knobs_before["free_bits"] == 0.02 and event.knobs_after["free_bits"] == 0.01
    assert knobs["free_bits"] == 0.01


def test_nothing_adjusts_free_bits_before_epoch_5() -> None:
    """The seed's phase 1 (epochs 1-5) collects statistics: no penalty-reduction rule fires
    before its decision point at epoch 5."""
    for penalty in (5.0, 12.0, 65.0, 80.0):
        engine, knobs = make_engine()
        assert feed(engine, knobs, [{"penalty_reduction": penalty}] * 4) == [[]] * 4
        assert knobs["free_bits"] == 0.02


@pytest.mark.parametrize(
    ("penalty", "sampled", "rule", "expected"),
    [
        (5.0, 0.005, "health-too-tight", 0.025),  # < 10 % -> 0.025
        (65.0, 0.05, "health-too-generous", 0.015),  # > 60 % -> 0.015
    ],
)
def test_the_seeds_primary_health_table_from_epoch_5(
    penalty: float, sampled: float, rule: str, expected: float
) -> None:
    engine, knobs = make_engine()
    knobs["free_bits"] = sampled
    fired = feed(engine, knobs, [{"penalty_reduction": penalty}] * 6)
    assert fired[4] == [rule] and all(rule not in rules for rules in fired[:4] + fired[5:])
    assert knobs["free_bits"] == expected


@pytest.mark.parametrize(
    ("penalty", "sampled"), [(5.0, 0.03), (65.0, 0.01), (30.0, 0.005), (30.0, 0.1)]
)
def test_the_table_never_moves_free_bits_against_its_intent(penalty: float, sampled: float) -> None:
    """Too tight never lowers free bits, too generous never raises them, 20-40 % is healthy."""
    engine, knobs = make_engine()
    knobs["free_bits"] = sampled
    fired = feed(engine, knobs, [{"penalty_reduction": penalty}] * 6)
    assert not any(
        rule in rules for rules in fired for rule in ("health-too-tight", "health-too-generous")
    )


def test_generous_free_bits_keep_stepping_down_every_3_epochs_not_below_0_005() -> None:
    engine, knobs = make_engine()
    values = []
    for epoch in range(1, 14):
        engine.observe(epoch, {**HEALTHY, "penalty_reduction": 80.0}, knobs)
        values.append(round(knobs["free_bits"], 6))
    # table at epoch 5 (0.015), then -0.005 at epochs 7, 10, 13 (3 epochs each, bounded)
    assert values == [0.02] * 4 + [0.015] * 2 + [0.01] * 3 + [0.005] * 4
    fired = [event.epoch for event in engine.events if event.rule == "free-bits-too-generous"]
    assert fired == [7, 10, 13]
    assert engine.events[-1].knobs_after["free_bits"] == pytest.approx(0.005)


def test_tight_free_bits_step_up_after_3_epochs_in_a_row_from_epoch_5() -> None:
    engine, knobs = make_engine()
    broken = [{"penalty_reduction": 12.0}] * 5 + [{}] + [{"penalty_reduction": 12.0}] * 3
    fired = feed(engine, knobs, broken)
    assert fired == [[]] * 8 + [["free-bits-too-tight"]]
    assert knobs["free_bits"] == pytest.approx(0.025)


def test_epoch_5_low_kl_sets_free_bits_0_01() -> None:
    engine, knobs = make_engine()
    fired = feed(engine, knobs, [{"kl_raw": 0.015}] * 5)
    assert fired[3] == [] and fired[4] == ["epoch5-kl-low"]  # only at epoch 5
    assert knobs["free_bits"] == 0.01


def test_epoch_5_high_kl_raises_free_bits_to_0_03_and_never_lowers_them() -> None:
    engine, knobs = make_engine()
    fired = feed(engine, knobs, [{"kl_raw": 0.15}] * 6)
    assert [rules for rules in fired if rules] == [["epoch5-kl-high"]]
    assert engine.events[0].epoch == 5 and knobs["free_bits"] == 0.03
    engine, knobs = make_engine()
    knobs["free_bits"] = 0.05  # a sampled value above 0.03 is not "too tight"
    assert feed(engine, knobs, [{"kl_raw": 0.15}] * 6) == [[]] * 6
    assert knobs["free_bits"] == 0.05


def test_epoch_10_decision_on_the_mean_penalty_reduction_of_epochs_5_to_10() -> None:
    """Tight: 12 % from epoch 5 (no table row: >= 10 %); the quick rule steps 0.005 -> 0.01
    (epoch 7) -> 0.015 (epoch 10); the mean over epochs 5-10 is < 15 %, so the decision sets
    0.025 at epoch 10."""
    engine, knobs = make_engine()
    knobs["free_bits"] = 0.005
    fired = feed(engine, knobs, [{}] * 4 + [{"penalty_reduction": 12.0}] * 6)
    assert fired[6] == ["free-bits-too-tight"]
    assert fired[9] == ["free-bits-too-tight", "epoch10-decision"]
    decision = engine.events[-1]
    assert decision.knobs_before["free_bits"] == 0.015 and knobs["free_bits"] == 0.025
    assert "mean penalty reduction 12% over epochs 5-10" in decision.message


@pytest.mark.parametrize(
    ("penalties", "free_bits", "expected"),
    [
        ([80.0] * 6, 0.02, 0.015),  # mean 80 % > 70 %: too generous
        ([40.0] + [80.0] * 5, 0.02, 0.015),  # mean 73 %
        ([60.0] + [70.0] * 5, 0.02, None),  # mean 68 %: continue
        ([10.0] * 6, 0.02, 0.025),  # too tight
        ([10.0] * 6, 0.03, None),  # would lower free bits: no
        ([80.0] * 6, 0.01, None),  # would raise free bits: no
    ],
)
def test_epoch_10_decision_rule(
    penalties: list[float], free_bits: float, expected: float | None
) -> None:
    rule = Epoch10Decision()
    history = [{"penalty_reduction": 0.0}] * 4 + [{"penalty_reduction": p} for p in penalties]
    knobs = {"free_bits": free_bits}
    actions = [
        rule.check(EpochState(epoch, history[epoch - 1], history[:epoch], knobs, PARAMS))
        for epoch in range(1, 11)
    ]
    assert actions[:9] == [None] * 9
    if expected is None:
        assert actions[9] is None
    else:
        assert actions[9] is not None and actions[9].knob_values == {"free_bits": expected}


def test_teacher_contribution_advice_changes_nothing_and_fires_once() -> None:
    engine, knobs = make_engine()
    before = dict(knobs)
    fired = feed(
        engine, knobs, [{"teacher_contribution": 2.0}] * 3 + [{"teacher_contribution": 12.0}] * 2
    )
    assert fired == [["teacher-weak"], [], [], ["teacher-strong"], []]
    assert [event.action for event in engine.events] == ["advise", "advise"]
    assert "0.5" in engine.events[0].message and "0.15" in engine.events[1].message
    assert knobs == before


def test_no_teacher_advice_during_the_kl_warmup() -> None:
    engine, knobs = make_engine()
    warmup = [{"teacher_contribution": 20.0, "kl_weight": weight} for weight in (5.0, 10.0)]
    assert feed(engine, knobs, warmup) == [[], []]
    assert feed(engine, knobs, [{"teacher_contribution": 20.0}], start=3) == [["teacher-strong"]]


def test_no_teacher_advice_without_a_teacher() -> None:
    engine, knobs = make_engine()
    knobs["teacher_weight"] = 0.0
    assert feed(engine, knobs, [{"teacher_contribution": 0.0}] * 3) == [[]] * 3


def test_overfitting_aborts() -> None:
    engine, knobs = make_engine()
    fired = feed(engine, knobs, [{"val_train_ratio": 2.4}, {"val_train_ratio": 2.6}, {}])
    assert fired == [[], ["overfitting"]]
    assert engine.aborted_by is not None
    assert engine.aborted_by.rule == "overfitting" and engine.aborted_by.epoch == 2
    assert engine.aborted_by.metrics == {"val_train_ratio": 2.6}


def test_non_finite_metric_aborts() -> None:
    engine, knobs = make_engine()
    feed(engine, knobs, [{"kl_raw": math.nan}])
    assert engine.aborted_by is not None and engine.aborted_by.rule == "non-finite"


def test_fallback_ladder_step_by_step_then_abort() -> None:
    """Val loss stays above 3x its best from epoch 2: option 1 at epoch 2, held 5 epochs;
    option 2 at epoch 7; option 3 at epoch 12; the ladder is spent and epoch 17 aborts."""
    engine, knobs = make_engine()
    unstable: dict[str, Any] = {"val_loss": 70.0}  # best is 20 (epoch 1): 70 > 3 x 20
    knob_trace = []
    for epoch in range(1, 21):
        engine.observe(epoch, {**HEALTHY, **(unstable if epoch > 1 else {})}, knobs)
        knob_trace.append((knobs["free_bits"], knobs["max_kl_weight"]))
        if engine.aborted_by is not None:
            break
    ladder = [event for event in engine.events if event.rule == "fallback-ladder"]
    assert [(event.epoch, event.action) for event in ladder] == [
        (2, "backoff"),
        (7, "backoff"),
        (12, "backoff"),
        (17, "abort"),
    ]
    assert [event.knobs_after for event in ladder[:3]] == [
        {**event.knobs_before, **step} for event, step in zip(ladder, FALLBACK_STEPS, strict=False)
    ]
    assert knob_trace[0] == (0.02, 15.0)
    assert knob_trace[1:6] == [(0.025, 15.0)] * 5  # option 1, held epochs 3-7
    assert knob_trace[6:11] == [(0.025, 10.0)] * 5  # option 2
    assert knob_trace[11:16] == [(0.025, 12.0)] * 5  # option 3
    assert knob_trace[16:] == [(0.025, 12.0)]  # epoch 17 aborts; the knobs stay
    assert engine.aborted_by is ladder[-1]
    assert "ladder spent" in ladder[-1].message
    assert "fallback option 2/3" in ladder[1].message


def test_fallback_ladder_on_kl_explosion_stops_when_stable_and_resumes_later() -> None:
    engine, knobs = make_engine()
    sequence = [{"kl_raw": 0.25}] + [{}] * 6 + [{"kl_raw": 0.3}]
    fired = feed(engine, knobs, sequence, start=6)  # after the epoch-5 checks
    assert fired[0] == ["fallback-ladder"] and knobs["free_bits"] == 0.025
    assert fired[1:7] == [[]] * 6  # stable after the hold: no further step
    assert fired[7] == ["fallback-ladder"]  # a new instability takes the next option
    assert knobs["max_kl_weight"] == 10.0
    assert "kl_raw 0.3 > 0.2" in engine.events[-1].message


def test_instability_during_the_hold_is_not_a_new_decision() -> None:
    ladder = FallbackLadder(hold_epochs=2)
    engine = RuleEngine([ladder], PARAMS)
    knobs = {name: float(PARAMS[name]) for name in VaeTrainer.knob_names}
    fired = feed(engine, knobs, [{"kl_raw": 0.25}] * 5)
    assert fired == [["fallback-ladder"], [], ["fallback-ladder"], [], ["fallback-ladder"]]
    assert engine.aborted_by is None
    feed(engine, knobs, [{"kl_raw": 0.25}] * 2, start=6)
    assert engine.aborted_by is not None and engine.aborted_by.epoch == 7
