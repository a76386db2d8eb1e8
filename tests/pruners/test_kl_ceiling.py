"""The ``kl-ceiling`` preset (seed 002), driven with metric sequences, and its effect on the
lbo trainer's ceiling."""

from __future__ import annotations

import math
from collections.abc import Iterable

import pytest
import torch

from hpsearch.pruners import RuleEngine, build_rules, get_preset
from hpsearch.trainers.lbo import LboTrainer

PARAMS = LboTrainer.resolve_params({})
QUIET: dict[str, float] = {
    "rollback_rate": 2.0,
    "upper_violations": 0.0,
    "kl_total": 20.0,
    "steps_left": 2.0,
    "epochs_left": 5.0,
    "at_target": 0.0,
}


def make_engine(squeeze_step: float = 0.0) -> tuple[RuleEngine, dict[str, float]]:
    knobs = {"lr": 2e-3, "squeeze_step": squeeze_step, "squeeze_hold": 0.0}
    return RuleEngine(build_rules(["kl-ceiling"]), PARAMS), knobs


def feed(
    engine: RuleEngine, knobs: dict[str, float], epochs: Iterable[dict[str, float]], start: int = 1
) -> list[list[str]]:
    """Observe each epoch (QUIET overlaid with its changes); the rule names fired per epoch."""
    fired = []
    for epoch, changes in enumerate(epochs, start=start):
        fired.append([event.rule for event in engine.observe(epoch, {**QUIET, **changes}, knobs)])
        if engine.aborted_by is not None:
            break
    return fired


def test_preset_is_registered() -> None:
    preset = get_preset("kl-ceiling")
    assert {
        "rollback_rate",
        "upper_violations",
        "epoch",
        "steps_left",
        "epochs_left",
        "at_target",
    } <= preset.names_read()
    assert preset.knobs_changed() == {"squeeze_step", "squeeze_hold"}


def test_quiet_epochs_fire_nothing() -> None:
    engine, knobs = make_engine()
    assert feed(engine, knobs, [QUIET] * 8) == [[]] * 8


def test_rollbacks_at_the_seeds_5_percent_relax_one_step_and_pause() -> None:
    engine, knobs = make_engine(squeeze_step=3.0)
    fired = feed(engine, knobs, [{"rollback_rate": 4.9}, {"rollback_rate": 5.0}], start=5)
    assert fired == [[], ["relax-squeeze"]]  # the seed's check: < 5 % is healthy
    event = engine.events[0]
    assert (event.epoch, event.action) == (6, "backoff")
    assert event.knobs_before["squeeze_step"] == 3.0
    assert event.knobs_after == {"lr": 2e-3, "squeeze_step": 2.0, "squeeze_hold": 1.0}
    assert knobs["squeeze_step"] == 2.0 and knobs["squeeze_hold"] == 1.0


def test_relax_never_goes_before_the_discovered_ceiling() -> None:
    engine, knobs = make_engine(squeeze_step=0.0)
    feed(engine, knobs, [{"rollback_rate": 20.0}], start=2)
    assert knobs["squeeze_step"] == 0.0 and knobs["squeeze_hold"] == 1.0


def test_epoch_1_rollbacks_are_advice_not_a_relax() -> None:
    """Epoch 1 has no squeeze to relax: 5 % rollbacks there is the seed's failed check."""
    engine, knobs = make_engine()
    fired = feed(engine, knobs, [{"rollback_rate": 4.0}], start=1)
    assert fired == [[]]
    engine, knobs = make_engine()
    fired = feed(engine, knobs, [{"rollback_rate": 6.0}], start=1)
    assert fired == [["discovery-rollbacks"]]
    assert engine.events[0].action == "advise" and knobs["squeeze_step"] == 0.0


def test_a_ceiling_violation_in_the_discovery_epoch_is_an_event() -> None:
    engine, knobs = make_engine()
    fired = feed(engine, knobs, [{"upper_violations": 1.0}, {"upper_violations": 3.0}])
    assert fired == [["discovery-violation"], []]  # only epoch 1 has an open ceiling
    event = engine.events[0]
    assert event.action == "advise" and "discovery epoch" in event.message
    assert event.knobs_before == event.knobs_after


def test_a_schedule_longer_than_the_epochs_left_is_flagged_once() -> None:
    engine, knobs = make_engine()
    epochs = [{"steps_left": 4.0, "epochs_left": 4.0}, {"steps_left": 4.0, "epochs_left": 3.0}]
    fired = feed(engine, knobs, [*epochs, {"steps_left": 3.0, "epochs_left": 2.0}], start=2)
    assert fired == [[], ["target-out-of-reach"], []]


def test_the_target_must_be_reached_by_the_last_epoch() -> None:
    engine, knobs = make_engine()
    last = {"steps_left": 0.0, "epochs_left": 0.0}
    assert feed(engine, knobs, [{**last, "at_target": 1.0}], start=12) == [[]]
    assert feed(engine, knobs, [{**last, "at_target": 0.0}], start=12) == [["target-missed"]]
    # before the last epoch, not being at the target yet is no event
    assert feed(engine, knobs, [{"epochs_left": 1.0, "steps_left": 1.0}], start=11) == [[]]


def test_non_finite_metric_aborts() -> None:
    engine, knobs = make_engine()
    feed(engine, knobs, [{"kl_total": math.inf}])
    assert engine.aborted_by is not None and engine.aborted_by.rule == "non-finite"


def test_relax_on_the_trainer_moves_the_ceiling_back_and_pauses_the_squeeze() -> None:
    """Epochs 1-4 run the schedule (step 2 at epoch 4); a spike at epoch 4 relaxes: epoch 5 runs
    one step back (step 1), paused; epoch 6 resumes at step 2."""
    trainer = LboTrainer(
        {"core_dim": 8, "detail_dim": 24, "hidden_dim": 32, "batch_size": 64, "squeeze_epochs": 4},
        device=torch.device("cpu"),
        seed=0,
    )
    engine = RuleEngine(build_rules(["kl-ceiling"]), trainer.params)
    ceilings = []
    for metrics in trainer.epochs(6):
        if trainer.epoch == 4:
            metrics = {**metrics, "rollback_rate": 25.0}
        else:
            metrics = {**metrics, "rollback_rate": 0.0}
        engine.observe(trainer.epoch, metrics, trainer.knobs)
        ceilings.append(metrics["ceiling"])
    schedule = trainer.schedule
    assert ceilings == pytest.approx(
        [schedule[0], schedule[0], schedule[1], schedule[2], schedule[1], schedule[2]]
    )
    # the relax costs an epoch: the schedule ends 2 steps short of the target
    assert [(event.epoch, event.rule) for event in engine.events] == [
        (4, "relax-squeeze"),
        (5, "target-out-of-reach"),
        (6, "target-missed"),
    ]
