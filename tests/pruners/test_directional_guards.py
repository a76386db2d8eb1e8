"""The ``directional-guards`` preset, driven rule by rule with metric sequences."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import pytest

from hpsearch.pruners import RuleEngine, build_rules, get_preset

GUARDS = {"lambda_dir": 0.002, "lambda_fut": 0.002, "lambda_ac": 0.0, "lambda_res": 1e-4}
HEALTHY = {"val_cosine": 0.8, "val_margin": 0.15, "val_peak_offset": 1.0}
BACKWARD = {"val_cosine": 0.6, "val_margin": -0.05, "val_peak_offset": -1.0}


def drifting(count: int) -> list[dict[str, float]]:
    """Backward epochs whose margin falls every epoch (-0.05, -0.06, ...)."""
    return [{**BACKWARD, "val_margin": -0.05 - 0.01 * i} for i in range(count)]


def engine_for(guard_start_epoch: int = 6) -> RuleEngine:
    params: dict[str, Any] = {**GUARDS, "guard_start_epoch": guard_start_epoch, "lr": 1e-3}
    return RuleEngine(build_rules(["directional-guards"]), params)


def drive(
    engine: RuleEngine, epochs: Sequence[dict[str, float]], knobs: dict[str, float]
) -> list[tuple[int, str]]:
    """Feed the epochs until an abort; (epoch, rule) of every firing."""
    for epoch, metrics in enumerate(epochs, start=1):
        engine.observe(epoch, metrics, knobs)
        if engine.aborted_by is not None:
            break
    return [(event.epoch, event.rule) for event in engine.events]


def test_preset_rules_in_order() -> None:
    names = [rule.name for rule in get_preset("directional-guards").build()]
    assert names == ["non-finite", "backward-drift-backoff", "guard-collapse", "anti-copy-on"]


def test_healthy_run_fires_nothing() -> None:
    engine, knobs = engine_for(), dict(GUARDS)
    assert drive(engine, [HEALTHY] * 12, knobs) == []
    assert knobs == GUARDS and engine.aborted_by is None


def test_backward_drift_drops_guards_from_epoch_3_once() -> None:
    engine, knobs = engine_for(guard_start_epoch=2), dict(GUARDS)
    fired = drive(engine, drifting(5), knobs)
    assert fired == [(3, "backward-drift-backoff")]  # not at 1-2; once there is nothing to drop
    assert knobs["lambda_dir"] == knobs["lambda_fut"] == knobs["lambda_ac"] == 0.0
    assert knobs["lambda_res"] == GUARDS["lambda_res"]  # always on
    event = engine.events[0]
    assert event.action == "backoff"
    assert event.knobs_before["lambda_dir"] == 0.002 and event.knobs_after["lambda_dir"] == 0.0
    assert event.metrics["val_margin"] == pytest.approx(-0.07)


def test_no_backoff_before_the_guards_start() -> None:
    engine, knobs = engine_for(guard_start_epoch=6), dict(GUARDS)
    assert drive(engine, drifting(6), knobs) == [(6, "backward-drift-backoff")]


def test_no_backoff_while_a_backward_head_recovers() -> None:
    # Copying is the early attractor: a head still backward but with its margin rising (the
    # residual head under its guards) keeps them.
    engine, knobs = engine_for(), dict(GUARDS)
    epochs = [{**BACKWARD, "val_margin": -0.2 + 0.03 * i} for i in range(8)]
    assert drive(engine, epochs, knobs) == [] and knobs == GUARDS


@pytest.mark.parametrize(
    "metrics",
    [
        {"val_cosine": 0.7, "val_margin": 0.02, "val_peak_offset": 2.0},  # margin > 0
        {"val_cosine": 0.7, "val_margin": 0.0, "val_peak_offset": 1.0},  # peak at +1
    ],
    ids=["positive-margin", "peak-plus-one"],
)
def test_backoff_needs_both_a_wrong_peak_and_no_margin(metrics: dict[str, float]) -> None:
    engine, knobs = engine_for(), dict(GUARDS)
    assert drive(engine, [metrics] * 6, knobs) == []


def test_v3_collapse_right_after_guards_start_aborts() -> None:
    # The seed's V3 log: guards on at epoch 4, val cosine 0.540 -> 0.354.
    cosines = [0.459, 0.523, 0.540, 0.354]
    epochs = [{**HEALTHY, "val_cosine": cosine} for cosine in cosines]
    engine = engine_for(guard_start_epoch=4)
    assert drive(engine, epochs, dict(GUARDS)) == [(4, "guard-collapse")]
    assert engine.aborted_by is not None and engine.aborted_by.action == "abort"
    assert engine.aborted_by.metrics["val_cosine"] == 0.354


def test_collapse_counts_the_second_guarded_epoch_too() -> None:
    cosines = [0.70, 0.75, 0.74, 0.70, 0.64]  # start at 4; 0.64 <= 0.75 - 0.1 at epoch 5
    epochs = [{**HEALTHY, "val_cosine": cosine} for cosine in cosines]
    assert drive(engine_for(guard_start_epoch=4), epochs, dict(GUARDS)) == [(5, "guard-collapse")]


@pytest.mark.parametrize(
    "cosines",
    [
        [0.70, 0.75, 0.74, 0.70, 0.70, 0.60],  # drop at epoch 6: outside the window (4, 5)
        [0.70, 0.75, 0.70, 0.66, 0.68],  # 0.09 below the best: not a collapse
        [0.70, 0.60, 0.60],  # before the guards start
    ],
    ids=["late", "small", "before-start"],
)
def test_no_collapse_outside_the_window_or_below_the_drop(cosines: list[float]) -> None:
    epochs = [{**HEALTHY, "val_cosine": cosine} for cosine in cosines]
    engine = engine_for(guard_start_epoch=4)
    assert drive(engine, epochs, dict(GUARDS)) == [] and engine.aborted_by is None


def test_anti_copy_turns_on_when_drift_persists_after_epoch_10() -> None:
    engine, knobs = engine_for(), dict(GUARDS)
    epochs = [HEALTHY] * 9 + drifting(3)
    fired = drive(engine, epochs, knobs)
    # Epoch 10: drop the guards, then anti-copy on; epochs 11-12: nothing left to change.
    assert fired == [(10, "backward-drift-backoff"), (10, "anti-copy-on")]
    assert knobs["lambda_ac"] == 0.002
    assert knobs["lambda_dir"] == knobs["lambda_fut"] == 0.0


def test_anti_copy_keeps_a_stronger_setting() -> None:
    engine, knobs = engine_for(), {**GUARDS, "lambda_ac": 0.004}
    drive(engine, [HEALTHY] * 9 + [{**BACKWARD, "val_peak_offset": 1.0}] * 2, knobs)
    assert knobs["lambda_ac"] == 0.004 and engine.events == []


def test_backoff_before_epoch_10_also_drops_anti_copy() -> None:
    engine, knobs = engine_for(guard_start_epoch=3), {**GUARDS, "lambda_ac": 0.004}
    assert drive(engine, drifting(3), knobs) == [(3, "backward-drift-backoff")]
    assert knobs["lambda_ac"] == 0.0


def test_non_finite_metric_aborts() -> None:
    engine = engine_for()
    fired = drive(engine, [HEALTHY, {**HEALTHY, "val_cosine": math.nan}], dict(GUARDS))
    assert fired == [(2, "non-finite")]
