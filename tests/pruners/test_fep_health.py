"""The ``fep-health`` preset (seed 004), driven with hand-made metric sequences."""

from __future__ import annotations

import math
from collections.abc import Iterable

from hpsearch.pruners import RuleEngine, build_rules, get_preset
from hpsearch.pruners.base import EpochState
from hpsearch.pruners.presets.fep import ObservationWeightLadder
from hpsearch.trainers.fep import FepTrainer

PARAMS = FepTrainer.resolve_params({})
HEALTHY: dict[str, float] = {"ce_kl_grad_ratio": 1.3, "prior_separation": 1.0, "ce": 1.0}
WEAK = {"ce_kl_grad_ratio": 0.05}


def make_engine(lambda_obs: float = 1.0) -> tuple[RuleEngine, dict[str, float]]:
    knobs = {"lambda_obs": lambda_obs, "alpha": 1.0, "vfe_lr": 0.2}
    return RuleEngine(build_rules(["fep-health"]), PARAMS), knobs


def feed(
    engine: RuleEngine, knobs: dict[str, float], epochs: Iterable[dict[str, float]]
) -> list[list[str]]:
    """Observe each epoch (HEALTHY overlaid with its changes); the rules fired per epoch."""
    fired = []
    for epoch, changes in enumerate(epochs, start=1):
        fired.append([event.rule for event in engine.observe(epoch, {**HEALTHY, **changes}, knobs)])
        if engine.aborted_by is not None:
            break
    return fired


def test_preset_is_registered_with_what_it_reads_and_changes() -> None:
    preset = get_preset("fep-health")
    assert {"ce_kl_grad_ratio", "prior_separation", "ce"} <= preset.names_read()
    assert preset.knobs_changed() == {"lambda_obs", "vfe_lr"}
    assert [rule.name for rule in preset.build()] == [
        "non-finite",
        "prior-collapse",
        "fast-loop-unstable",
        "obs-weight-ladder",
    ]


def test_healthy_epochs_fire_nothing() -> None:
    engine, knobs = make_engine()
    assert feed(engine, knobs, [{}] * 6) == [[]] * 6
    assert knobs["lambda_obs"] == 1.0


def test_one_weak_epoch_is_not_enough() -> None:
    engine, knobs = make_engine()
    assert feed(engine, knobs, [WEAK, {}, WEAK, {}, {"ce_kl_grad_ratio": 0.1}]) == [[]] * 5
    assert knobs["lambda_obs"] == 1.0  # 0.1 itself is not below the threshold


def test_two_weak_epochs_scale_lambda_obs_by_ten() -> None:
    engine, knobs = make_engine(lambda_obs=2.0)
    assert feed(engine, knobs, [WEAK, WEAK, {}]) == [[], ["obs-weight-ladder"], []]
    event = engine.events[0]
    assert (event.epoch, event.action) == (2, "backoff")
    assert event.knobs_before["lambda_obs"] == 2.0 and event.knobs_after["lambda_obs"] == 20.0
    assert event.metrics == {"ce_kl_grad_ratio": 0.05}
    assert knobs["lambda_obs"] == 20.0 and engine.aborted_by is None


def test_still_weak_two_epochs_after_the_backoff_aborts() -> None:
    engine, knobs = make_engine()
    fired = feed(engine, knobs, [WEAK, WEAK, WEAK, WEAK, WEAK])
    assert fired == [[], ["obs-weight-ladder"], [], ["obs-weight-ladder"]]
    assert engine.aborted_by is not None
    assert (engine.aborted_by.rule, engine.aborted_by.epoch) == ("obs-weight-ladder", 4)
    assert engine.aborted_by.action == "abort"
    assert "still too weak" in engine.aborted_by.message
    assert knobs["lambda_obs"] == 10.0  # scaled once, never twice


def test_recovery_after_the_backoff_goes_on() -> None:
    engine, knobs = make_engine()
    fired = feed(engine, knobs, [WEAK, WEAK, {}, WEAK, {}, {}, WEAK])
    assert fired == [[], ["obs-weight-ladder"], [], [], [], [], []]
    assert engine.aborted_by is None and knobs["lambda_obs"] == 10.0


def test_a_missing_or_nan_ratio_breaks_the_streak() -> None:
    rule = ObservationWeightLadder()

    def check(epoch: int, metrics: dict[str, float]) -> str | None:
        state = EpochState(epoch, metrics, [metrics], {"lambda_obs": 1.0}, PARAMS)
        action = rule.check(state)
        return None if action is None else action.kind

    assert check(1, WEAK) is None
    assert check(2, {"ce_kl_grad_ratio": math.nan}) is None
    assert check(3, WEAK) is None
    assert check(4, {}) is None
    assert check(5, WEAK) is None
    assert check(6, WEAK) == "backoff"


def test_prior_collapse_aborts_below_ten_percent_of_the_start() -> None:
    engine, knobs = make_engine()
    separations = [2.0, 1.0, 0.5, 0.2, 0.19]
    fired = feed(engine, knobs, [{"prior_separation": s} for s in separations])
    assert fired == [[], [], [], [], ["prior-collapse"]]
    assert engine.aborted_by is not None
    assert engine.aborted_by.metrics == {"prior_separation": 0.19}


def test_a_non_finite_metric_aborts_first() -> None:
    engine, knobs = make_engine()
    fired = feed(engine, knobs, [WEAK, {"ce_kl_grad_ratio": 0.05, "ce": math.inf}])
    assert fired == [[], ["non-finite"]]
    assert knobs["lambda_obs"] == 1.0


def test_ce_rising_above_its_best_halves_vfe_lr_at_most_twice() -> None:
    engine, knobs = make_engine()
    ces = [2.0, 1.5, 1.0, 0.8, 0.9, 0.97, 0.97, 0.97, 0.99, 1.0, 1.0, 1.0, 1.0]
    fired = feed(engine, knobs, [{"ce": ce} for ce in ces])
    # 0.97 > 1.2 * 0.8 from epoch 6: the 2-epoch streak completes at 7, again at 9 (capped after)
    assert fired == [[]] * 6 + [["fast-loop-unstable"], [], ["fast-loop-unstable"]] + [[]] * 4
    assert knobs["vfe_lr"] == 0.05 and engine.aborted_by is None
    assert [event.knobs_after["vfe_lr"] for event in engine.events] == [0.1, 0.05]


def test_ce_rising_before_epoch_5_or_once_is_not_enough() -> None:
    engine, knobs = make_engine()
    ces = [1.0, 2.0, 2.0, 2.0, 1.0, 1.3, 1.0, 1.0]
    assert feed(engine, knobs, [{"ce": ce} for ce in ces]) == [[]] * 8
    assert knobs["vfe_lr"] == 0.2
