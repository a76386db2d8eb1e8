"""The cvfp trainer: the seed's trade-off table, knobs, schedules, determinism, params."""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch

from hpsearch.errors import ParamError
from hpsearch.pruners import RuleEngine, build_rules
from hpsearch.pruners.presets.cvfp import adaptive_levels
from hpsearch.search_spaces import load_spec
from hpsearch.trainers import get_trainer_class
from hpsearch.trainers.cvfp import CvfpTrainer, diversity_loss, nuclear_spread

CPU = torch.device("cpu")
# Small sizes for the behavioural tests; the seed table runs at the defaults.
SMALL: dict[str, Any] = {"train_tokens": 256, "val_tokens": 64, "streams": 16, "hidden_dim": 64}


def trained(params: dict[str, Any], *, seed: int = 0, epochs: int = 10) -> CvfpTrainer:
    trainer = CvfpTrainer(params, device=CPU, seed=seed)
    list(trainer.epochs(epochs))
    return trainer


def parameters_of(trainer: CvfpTrainer) -> list[torch.Tensor]:
    return [parameter.detach().clone() for parameter in trainer.block.parameters()]


# -- the seed's table (default sizes: context_dim 64, CPU, 10 epochs) ------------------------


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_low_diversity_weight_converges_with_a_collapsed_rank(seed: int) -> None:
    final = trained({"dist_reg_weight": 0.01}, seed=seed).final_metrics()
    assert final["val_convergence_rate"] >= 0.8, final
    assert final["val_effective_rank_ratio"] <= 0.3, final


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_balanced_diversity_weight_keeps_rank_and_converges_little(seed: int) -> None:
    final = trained({"dist_reg_weight": 0.5}, seed=seed).final_metrics()
    assert final["val_convergence_rate"] <= 0.2, final
    assert final["val_effective_rank_ratio"] >= 0.6, final


def run_with_rules(params: dict[str, Any], *, seed: int = 0, epochs: int = 10) -> dict[str, float]:
    """Final metrics of a trial trained under the ``cvfp-health`` rules (adaptive needs them)."""
    trainer = CvfpTrainer(params, device=CPU, seed=seed)
    engine = RuleEngine(build_rules(["cvfp-health"]), trainer.params)
    for epoch, metrics in enumerate(trainer.epochs(epochs), start=1):
        engine.observe(epoch, metrics, trainer.knobs)
    assert engine.aborted_by is None
    return trainer.final_metrics()


@pytest.mark.slow
def test_staged_and_adaptive_beat_a_constant_weight_at_the_same_rank() -> None:
    """The seed's options 1 and 2 converge more than a constant weight that keeps the same rank
    (seed 0, default sizes: 0.32 and 0.27 vs 0.025 and 0.062 at ranks 0.73-0.77)."""
    schedules = [
        run_with_rules({"schedule": "staged", "dist_reg_weight": 0.2}),
        run_with_rules({"schedule": "adaptive", "dist_reg_weight": 0.5}),
    ]
    constants = [run_with_rules({"dist_reg_weight": weight}) for weight in (0.2, 0.3)]
    for final in schedules + constants:
        assert 0.7 <= final["val_effective_rank_ratio"] <= 0.8, final
    assert max(final["val_convergence_rate"] for final in constants) <= 0.1, constants
    assert min(final["val_convergence_rate"] for final in schedules) >= 0.2, schedules


# -- contract ---------------------------------------------------------------------------------


def test_registry_name_and_knobs() -> None:
    assert get_trainer_class("cvfp") is CvfpTrainer
    assert CvfpTrainer.knob_names == ("dist_reg_weight", "lr")


def test_metric_names_cover_every_metric_returned() -> None:
    trainer = CvfpTrainer(SMALL, device=CPU, seed=0)
    history = list(trainer.epochs(2))
    for metrics in [*history, trainer.final_metrics()]:
        assert set(metrics) == set(CvfpTrainer.metric_names)
        assert all(math.isfinite(value) for value in metrics.values())


def test_final_metrics_are_those_of_the_last_iteration() -> None:
    trainer = CvfpTrainer(SMALL, device=CPU, seed=0)
    history = list(trainer.epochs(3))
    assert trainer.final_metrics() == history[-1]


def test_final_metrics_before_any_epoch_is_a_clear_error() -> None:
    trainer = CvfpTrainer(SMALL, device=CPU, seed=0)
    with pytest.raises(RuntimeError, match="run epochs"):
        trainer.final_metrics()


def test_first_iteration_only_records_the_fixed_point_targets() -> None:
    trainer = CvfpTrainer(SMALL, device=CPU, seed=0)
    before = parameters_of(trainer)
    (first,) = list(trainer.epochs(1))
    assert all(torch.equal(a, b) for a, b in zip(before, parameters_of(trainer), strict=True))
    assert first["cvfp_loss"] == 0.0
    assert first["val_convergence_rate"] == 0.0
    list(trainer.epochs(1))
    assert not all(torch.equal(a, b) for a, b in zip(before, parameters_of(trainer), strict=True))


# -- knobs are read every epoch -------------------------------------------------------------


def test_changing_the_weight_knob_between_epochs_changes_the_loss_mix() -> None:
    steady = CvfpTrainer({**SMALL, "dist_reg_weight": 0.01}, device=CPU, seed=0)
    switched = CvfpTrainer({**SMALL, "dist_reg_weight": 0.01}, device=CPU, seed=0)
    steady_history = list(steady.epochs(2))
    switched_history = list(switched.epochs(2))
    assert steady_history == switched_history

    switched.knobs["dist_reg_weight"] = 0.9
    (steady_next,) = list(steady.epochs(1))
    (switched_next,) = list(switched.epochs(1))
    assert steady_next["dist_reg_weight"] == pytest.approx(0.01)
    assert switched_next["dist_reg_weight"] == pytest.approx(0.9)
    assert switched_next["cvfp_loss"] != steady_next["cvfp_loss"]
    assert switched_next["val_effective_rank_ratio"] != steady_next["val_effective_rank_ratio"]
    assert switched.effective_params()["dist_reg_weight"] == pytest.approx(0.9)


def test_changing_the_lr_knob_between_epochs_is_applied() -> None:
    trainer = CvfpTrainer(SMALL, device=CPU, seed=0)
    list(trainer.epochs(2))
    trainer.knobs["lr"] = 0.0
    before = parameters_of(trainer)
    list(trainer.epochs(1))
    assert all(torch.equal(a, b) for a, b in zip(before, parameters_of(trainer), strict=True))
    assert trainer.optimizer.param_groups[0]["lr"] == 0.0


# -- schedules --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("epochs", "expected"),
    [
        (9, [0.8] * 3 + [0.5] * 3 + [0.2] * 3),
        (10, [0.8] * 3 + [0.5] * 3 + [0.2] * 4),
    ],
)
def test_staged_schedule_runs_the_seeds_three_stages(epochs: int, expected: list[float]) -> None:
    trainer = CvfpTrainer(
        {**SMALL, "schedule": "staged", "dist_reg_weight": 0.2}, device=CPU, seed=0
    )
    weights = [metrics["dist_reg_weight"] for metrics in trainer.epochs(epochs)]
    assert weights == pytest.approx(expected)


def test_staged_schedule_keeps_a_rule_change_until_the_next_stage() -> None:
    trainer = CvfpTrainer(
        {**SMALL, "schedule": "staged", "dist_reg_weight": 0.2}, device=CPU, seed=0
    )
    epochs = trainer.epochs(9)
    assert next(epochs)["dist_reg_weight"] == pytest.approx(0.8)
    trainer.knobs["dist_reg_weight"] = 0.3  # a backoff between epochs 1 and 2
    assert [next(epochs)["dist_reg_weight"] for _ in range(3)] == pytest.approx([0.3, 0.3, 0.5])


@pytest.mark.parametrize("schedule", ["constant", "adaptive"])
def test_constant_and_adaptive_schedules_leave_the_knob_to_the_rules(schedule: str) -> None:
    trainer = CvfpTrainer(
        {**SMALL, "schedule": schedule, "dist_reg_weight": 0.4}, device=CPU, seed=0
    )
    weights = [metrics["dist_reg_weight"] for metrics in trainer.epochs(3)]
    assert weights == pytest.approx([0.4, 0.4, 0.4])


# -- the objective's threshold ---------------------------------------------------------------


def test_convergence_is_measured_at_the_seeds_threshold_whatever_the_trials() -> None:
    """A looser training threshold cannot buy convergence: the rates stay those at 0.1; only
    the adaptive schedule's own rate (at the trial's threshold) changes."""
    strict = list(
        CvfpTrainer({**SMALL, "convergence_threshold": 0.1}, device=CPU, seed=0).epochs(4)
    )
    loose = list(CvfpTrainer({**SMALL, "convergence_threshold": 2.0}, device=CPU, seed=0).epochs(4))
    for name in ("val_convergence_rate", "train_convergence_rate"):
        assert [m[name] for m in loose] == [m[name] for m in strict]
    own = "train_convergence_rate_at_threshold"
    assert [m[own] for m in strict] == [m["train_convergence_rate"] for m in strict]
    assert loose[-1][own] > strict[-1][own]
    assert loose[-1][own] == 1.0 and strict[-1]["val_convergence_rate"] < 1.0


# -- the adaptive schedule (cvfp-health) -----------------------------------------------------


def test_adaptive_levels_are_the_seeds_at_0_5_and_scale_with_the_weight() -> None:
    assert adaptive_levels(0.5) == pytest.approx(
        {"more-diversity": 0.7, "more-convergence": 0.2, "balanced": 0.5}
    )
    assert adaptive_levels(0.25) == pytest.approx(
        {"more-diversity": 0.35, "more-convergence": 0.1, "balanced": 0.25}
    )
    assert adaptive_levels(0.9)["more-diversity"] == 1.0  # clamped


def adaptive_weights(dist_reg_weight: float, epochs: int = 4) -> list[float]:
    """The dist_reg_weight each epoch of an adaptive trial used, under the cvfp-health rules."""
    params = {**SMALL, "schedule": "adaptive", "dist_reg_weight": dist_reg_weight}
    trainer = CvfpTrainer(params, device=CPU, seed=0)
    engine = RuleEngine(build_rules(["cvfp-health"]), trainer.params)
    used = []
    for epoch, metrics in enumerate(trainer.epochs(epochs), start=1):
        used.append(metrics["dist_reg_weight"])
        engine.observe(epoch, metrics, trainer.knobs)
    return used


def test_dist_reg_weight_sets_the_adaptive_levels() -> None:
    """Under the adaptive schedule the sampled weight is not overwritten by fixed levels: two
    trials with different weights train with different weights after the first iteration."""
    low, high = adaptive_weights(0.2), adaptive_weights(0.6)
    assert low[0] == 0.2 and high[0] == 0.6
    assert set(low[1:]) <= set(adaptive_levels(0.2).values())
    assert set(high[1:]) <= set(adaptive_levels(0.6).values())
    assert all(a < b for a, b in zip(low[1:], high[1:], strict=True))


# -- the spec -------------------------------------------------------------------------------


def test_spec_objectives_at_the_seeds_threshold_without_a_constraint() -> None:
    spec = load_spec("cvfp")
    assert spec.objective_names == ["val_convergence_rate", "val_effective_rank_ratio"]
    assert spec.constraints == []
    assert "convergence_threshold" not in spec.space and spec.epochs == 10


# -- determinism ------------------------------------------------------------------------------


def test_same_seed_gives_identical_metrics() -> None:
    first = list(CvfpTrainer(SMALL, device=CPU, seed=7).epochs(4))
    second = list(CvfpTrainer(SMALL, device=CPU, seed=7).epochs(4))
    assert first == second


def test_another_seed_gives_other_metrics() -> None:
    first = list(CvfpTrainer(SMALL, device=CPU, seed=7).epochs(3))
    other = list(CvfpTrainer(SMALL, device=CPU, seed=8).epochs(3))
    assert first != other


# -- diversity forms --------------------------------------------------------------------------


def test_nuclear_spread_rewards_spreading_over_many_directions() -> None:
    isotropic = torch.tensor([[1.0, 1.0], [-1.0, -1.0], [1.0, -1.0], [-1.0, 1.0]])
    on_a_line = torch.tensor([[1.0, 1.0], [-1.0, -1.0], [1.0, 1.0], [-1.0, -1.0]])
    # Same distance from the centroid (sqrt 2) for every row of both.
    assert float(nuclear_spread(isotropic)) == pytest.approx(math.sqrt(2.0))
    assert float(nuclear_spread(on_a_line)) == pytest.approx(1.0)


def test_every_diversity_form_is_lower_for_a_wider_spread() -> None:
    narrow = torch.tensor([[1.0, 0.0], [0.9, 0.1], [1.0, 0.1]])
    wide = torch.tensor([[1.0, 0.0], [-1.0, 0.0], [0.0, 1.0]])
    mean = torch.zeros(2)
    for form in ("nuclear", "centroid", "pairwise"):
        assert float(diversity_loss(wide, mean, form)) < float(diversity_loss(narrow, mean, form))


def test_the_seeds_one_stream_loop_runs_with_the_centroid_form() -> None:
    params = {**SMALL, "streams": 1, "train_tokens": 48, "val_tokens": 16, "diversity": "centroid"}
    history = list(CvfpTrainer(params, device=CPU, seed=0).epochs(3))
    assert history[-1]["diversity_loss"] < 0.0


# -- params -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "value", "fix"),
    [
        ("dist_reg_weight", 1.5, "use a number in [0.0, 1.0]"),
        ("lr", -1.0, "use a number in"),
        ("layernorm_mix", 2.0, "use a number in [0.0, 1.0]"),
        ("convergence_threshold", 0.0, "use a number in"),
        ("schedule", "cosine", "use one of constant, staged, adaptive"),
        ("diversity", "cosine", "use one of nuclear, centroid, pairwise"),
        ("context_dim", 64.5, "use an integer >= 1"),
        ("streams", 0, "use an integer >= 1"),
        ("train_tokens", 8, "give at least one token per stream"),
    ],
)
def test_bad_params_raise_a_param_error_naming_param_value_and_fix(
    key: str, value: object, fix: str
) -> None:
    with pytest.raises(ParamError) as raised:
        CvfpTrainer({key: value}, device=CPU, seed=0)
    message = str(raised.value)
    assert f"{key}=" in message
    assert str(value).strip("'") in message
    assert fix in message


def test_unknown_param_raises_a_param_error() -> None:
    with pytest.raises(ParamError, match="no param 'dist_weight'.*known params"):
        CvfpTrainer({"dist_weight": 0.5}, device=CPU, seed=0)


# -- device -----------------------------------------------------------------------------------


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_runs_on_cuda() -> None:
    trainer = CvfpTrainer(SMALL, device=torch.device("cuda"), seed=0)
    history = list(trainer.epochs(3))
    assert trainer.embeddings.is_cuda
    assert next(trainer.block.parameters()).is_cuda
    assert set(history[-1]) == set(CvfpTrainer.metric_names)
    assert all(math.isfinite(value) for value in trainer.final_metrics().values())
