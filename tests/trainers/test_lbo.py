"""The lbo trainer (seed 002): the ceiling discovery and schedule, rollback, SSIM, the spec."""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch
from torch import nn

from hpsearch.errors import ParamError
from hpsearch.metrics.ssim import ssim
from hpsearch.search_spaces import load_spec
from hpsearch.trainers import get_trainer_class
from hpsearch.trainers.lbo import LboTrainer, StepRollback, ceiling_at, ceiling_schedule

CPU = torch.device("cpu")
# mechanics only: a small model (the phenomenon tests below use the packaged spec's sizes)
SMALL: dict[str, Any] = {
    "core_dim": 8,
    "detail_dim": 24,
    "hidden_dim": 32,
    "batch_size": 64,
    "squeeze_epochs": 3,
}


@pytest.fixture(scope="module")
def squeeze_run() -> tuple[LboTrainer, list[dict[str, float]]]:
    """Six epochs: discovery, hold, three squeeze steps, then the target held."""
    trainer = LboTrainer(SMALL, device=CPU, seed=0)
    return trainer, list(trainer.epochs(6))


def spec_sizes() -> dict[str, Any]:
    """The packaged spec's fixed sizes with its space defaults (lr 2e-3)."""
    spec = load_spec("lbo")
    return {**spec.fixed, **spec.default_params()}


@pytest.fixture(scope="module")
def seed_run() -> tuple[LboTrainer, list[dict[str, float]]]:
    """The seed's regime at the spec's sizes: discovery, hold, then the abrupt squeeze in
    three steps (30 % of the ceiling, then down to the 7 % target at epoch 5)."""
    trainer = LboTrainer({**spec_sizes(), "squeeze_epochs": 3}, device=CPU, seed=0)
    return trainer, list(trainer.epochs(5))


# -- SSIM ---------------------------------------------------------------------------------


def test_ssim_of_identical_images_is_one_and_drops_with_noise() -> None:
    images = torch.rand(4, 8, 8, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(ssim(images, images), torch.ones(4, dtype=images.dtype))
    noisy = images + 0.3 * torch.randn(4, 8, 8, generator=torch.Generator().manual_seed(1))
    scores = ssim(noisy.clamp(0, 1), images)
    assert scores.shape == (4,) and bool((scores < 0.9).all())
    assert ssim(1 - images, images).mean() < 0.2


def test_ssim_rejects_mismatched_or_too_small_images() -> None:
    with pytest.raises(ValueError, match="shapes differ"):
        ssim(torch.zeros(2, 8, 8), torch.zeros(2, 8, 7))
    with pytest.raises(ValueError, match="smaller than the window"):
        ssim(torch.zeros(2, 4, 4), torch.zeros(2, 4, 4))


# -- the schedule -------------------------------------------------------------------------


def test_schedule_drops_abruptly_then_descends_geometrically_to_the_target() -> None:
    assert ceiling_schedule(100.0, 30.0, 7.5, 3) == pytest.approx([100.0, 30.0, 15.0, 7.5])
    assert ceiling_schedule(100.0, 30.0, 7.0, 1) == [100.0, 7.0]


def test_schedule_values_above_the_current_ceiling_are_skipped() -> None:
    schedule = [10.0, 20.0, 15.0, 5.0]
    assert [ceiling_at(schedule, step) for step in range(6)] == [10, 10, 10, 5, 5, 5]
    assert ceiling_at(schedule, -1) == 10.0


# -- the initialisation -------------------------------------------------------------------


def test_the_untrained_decoder_predicts_the_mean_image() -> None:
    trainer = LboTrainer(SMALL, device=CPU, seed=0)
    bias = trainer.model.decoder[-1].bias
    mean = trainer.data.train.mean(dim=0).clamp(1e-3, 1 - 1e-3)
    assert torch.allclose(torch.sigmoid(bias), mean, atol=1e-5)
    plain = LboTrainer({**SMALL, "mean_image_bias": False}, device=CPU, seed=0)
    assert plain.model.decoder[-1].bias.abs().max() < 0.2  # PyTorch's U(+-1/sqrt(32))


def test_input_init_scale_scales_the_encoder_input_layer() -> None:
    scaled = LboTrainer({**SMALL, "input_init_scale": 0.3}, device=CPU, seed=0)
    plain = LboTrainer({**SMALL, "input_init_scale": 1.0}, device=CPU, seed=0)
    for name in ("weight", "bias"):
        assert torch.allclose(
            getattr(scaled.model.encoder[0], name), 0.3 * getattr(plain.model.encoder[0], name)
        )
    assert torch.equal(scaled.model.encoder[2].weight, plain.model.encoder[2].weight)


# -- the trainer --------------------------------------------------------------------------


def test_registry_resolves_lbo() -> None:
    assert get_trainer_class("lbo") is LboTrainer


def test_epochs_report_every_declared_metric(squeeze_run: tuple[LboTrainer, list]) -> None:
    _, history = squeeze_run
    for metrics in history:
        assert set(metrics) == set(LboTrainer.metric_names)
        assert all(math.isfinite(value) for value in metrics.values())
        assert metrics["kl_total"] == pytest.approx(metrics["kl_core"] + metrics["kl_detail"])
        assert 0.0 <= metrics["rollback_rate"] <= 100.0
        assert -1.0 <= metrics["ssim"] <= 1.0


def test_discovered_ceiling_is_the_max_epoch_1_kl_then_follows_the_schedule(
    squeeze_run: tuple[LboTrainer, list],
) -> None:
    trainer, history = squeeze_run
    epoch_1_kls = [
        kl for epoch, core, detail in trainer.kl_trace if epoch == 1 for kl in (core, detail)
    ]
    discovered = max(epoch_1_kls)
    assert trainer.discovered_ceiling == discovered
    assert history[0]["discovered_ceiling"] == discovered
    # epoch 1: the ceiling was open, so no step could leave through it
    assert history[0]["upper_violations"] == 0.0
    target = 0.07 * discovered  # the default target fraction
    expected = ceiling_schedule(discovered, 0.3 * discovered, target, 3)
    assert trainer.schedule == pytest.approx(expected)
    ceilings = [metrics["ceiling"] for metrics in history]
    # epoch 1 reports the discovery, epoch 2 holds it, epochs 3-5 squeeze, epoch 6 holds the target
    assert ceilings == pytest.approx([discovered, discovered, *expected[1:], target])
    assert [metrics["squeeze_step"] for metrics in history] == [0, 0, 1, 2, 3, 3]


def test_the_squeeze_lowers_the_kl(squeeze_run: tuple[LboTrainer, list]) -> None:
    _, history = squeeze_run
    assert history[-1]["train_kl_max"] < history[0]["train_kl_max"]
    assert history[-1]["ssim"] > history[0]["ssim"]


# -- the seed's phenomenon, at the spec's sizes -------------------------------------------


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_discovered_ceiling_follows_the_learning_rate(
    seed: int, seed_run: tuple[LboTrainer, list]
) -> None:
    """The seed's "works with any LR" table (1e-3 / 2e-3 / 3e-3 / 5e-3 -> ~15k / 30k / 60k /
    100k): the KL is still running when epoch 1 ends, so the ceiling rises with the lr, at least
    3x from the lowest to the highest, at each of three seeds."""
    ceilings = {2e-3: seed_run[0].discovered_ceiling} if seed == 0 else {}
    for lr in (1e-3, 2e-3, 3e-3, 5e-3):
        if lr not in ceilings:
            trainer = LboTrainer({**spec_sizes(), "lr": lr}, device=CPU, seed=seed)
            next(trainer.epochs(1))
            ceilings[lr] = trainer.discovered_ceiling
    by_lr = [ceilings[lr] for lr in sorted(ceilings)]
    assert by_lr == sorted(by_lr), ceilings
    assert by_lr[-1] >= 3.0 * by_lr[0], ceilings


def test_seed_checks_hold_through_the_abrupt_squeeze(seed_run: tuple[LboTrainer, list]) -> None:
    """The seed's checklist: epoch 1 has no ceiling violation and < 5 % rollbacks; the squeeze
    steps to ~30 % of the ceiling first, then down to the ~7 % target, which the KL reaches by
    the last epoch; the KL descends with the ceiling."""
    trainer, history = seed_run
    first, last = history[0], history[-1]
    assert first["upper_violations"] == 0.0 and first["rollback_rate"] < 5.0
    discovered = trainer.discovered_ceiling
    ceilings = [metrics["ceiling"] / discovered for metrics in history]
    assert ceilings == pytest.approx([1.0, 1.0, 0.3, 0.3 * (0.07 / 0.3) ** 0.5, 0.07])
    assert last["at_target"] == 1.0 and last["kl_max"] <= last["target_ceiling"]
    assert last["target_ceiling"] == pytest.approx(0.07 * discovered)
    assert [m["steps_left"] for m in history] == [3.0, 3.0, 2.0, 1.0, 0.0]
    assert [m["epochs_left"] for m in history] == [4.0, 3.0, 2.0, 1.0, 0.0]
    kl_max = [metrics["kl_max"] for metrics in history]
    assert kl_max[2:] == sorted(kl_max[2:], reverse=True) and kl_max[-1] < 0.1 * kl_max[0]
    assert last["run_rollback_rate"] < 5.0


def test_rollback_counts_add_up(squeeze_run: tuple[LboTrainer, list]) -> None:
    trainer, history = squeeze_run
    for metrics in history:
        assert metrics["rollbacks"] == metrics["upper_violations"] + metrics["lower_violations"]
        assert metrics["rollback_rate"] == pytest.approx(
            metrics["rollbacks"] / metrics["steps"] * 100
        )
    total = sum(metrics["rollbacks"] for metrics in history)
    steps = sum(metrics["steps"] for metrics in history)
    assert history[-1]["run_rollback_rate"] == pytest.approx(total / steps * 100)
    assert trainer.final_metrics() == history[-1]


def test_a_target_above_the_ceiling_leaves_nothing_to_squeeze() -> None:
    trainer = LboTrainer({**SMALL, "target_kl": 1e6}, device=CPU, seed=0)
    ceilings = [metrics["ceiling"] for metrics in trainer.epochs(4)]
    assert ceilings == [trainer.discovered_ceiling] * 4


def test_relaxed_knobs_move_the_ceiling_back_and_pause() -> None:
    trainer = LboTrainer(SMALL, device=CPU, seed=0)
    next(trainer.epochs(1))
    trainer.knobs.update(squeeze_step=2.0, squeeze_hold=1.0)
    trainer._advance_schedule(epoch=5)  # paused: the step stays
    assert (trainer.knobs["squeeze_step"], trainer.knobs["squeeze_hold"]) == (2.0, 0.0)
    assert trainer.ceiling == trainer.schedule[2]
    trainer._advance_schedule(epoch=6)
    assert trainer.knobs["squeeze_step"] == 3.0 and trainer.ceiling == trainer.schedule[3]


def snapshot(trainer: LboTrainer) -> tuple[list[torch.Tensor], dict[str, Any]]:
    params = [param.detach().clone() for param in trainer.model.parameters()]
    state = {
        str(index): {key: value.clone() for key, value in state.items()}
        for index, state in enumerate(trainer.optimizer.state.values())
    }
    return params, state


def assert_same(left: tuple[list, dict], right: tuple[list, dict]) -> None:
    assert all(torch.equal(a, b) for a, b in zip(left[0], right[0], strict=True))
    assert left[1].keys() == right[1].keys()
    for key in left[1]:
        assert left[1][key].keys() == right[1][key].keys()
        assert all(torch.equal(left[1][key][name], right[1][key][name]) for name in left[1][key])


def test_a_step_that_leaves_the_box_is_rolled_back_exactly() -> None:
    """With the KL far above the ceiling and no box penalty, every step raises the KL further
    out of the box: each is undone (parameters and Adam state as before). With the box open
    on both sides, steps are kept."""
    trainer = LboTrainer({**SMALL, "box_weight": 0.0}, device=CPU, seed=0)
    next(trainer.epochs(1))
    batches = trainer.data.train[:320].split(64)
    trainer.ceiling = 1e-3
    for images in batches:
        before = snapshot(trainer)
        _, _, cause = trainer.train_step(images)
        assert cause == "upper"
        assert_same(snapshot(trainer), before)
    trainer.ceiling, trainer.lower = math.inf, 0.0
    for images in batches:
        before = snapshot(trainer)
        _, _, cause = trainer.train_step(images)
        assert cause is None
        assert not torch.equal(next(trainer.model.parameters()), before[0][0])


def test_step_rollback_restores_parameters_and_optimizer_state() -> None:
    torch.manual_seed(0)
    model = nn.Linear(4, 3)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.1)
    rollback = StepRollback(model.parameters(), optimizer)

    def step() -> None:
        optimizer.zero_grad()
        model(torch.randn(8, 4)).pow(2).sum().backward()
        optimizer.step()

    rollback.save()  # before the first step: no optimizer state yet
    step()
    rollback.restore()
    assert len(optimizer.state) == 0
    step()
    step()
    params = [param.detach().clone() for param in model.parameters()]
    state = {
        id(param): {key: value.clone() for key, value in optimizer.state[param].items()}
        for param in model.parameters()
    }
    rollback.save()
    step()
    rollback.restore()
    assert all(torch.equal(a, b) for a, b in zip(params, model.parameters(), strict=True))
    for param in model.parameters():
        for key, value in optimizer.state[param].items():
            assert torch.equal(value, state[id(param)][key]), key
    assert float(optimizer.state[next(model.parameters())]["step"]) == 2.0


def test_without_rollback_nothing_is_rolled_back() -> None:
    trainer = LboTrainer({**SMALL, "rollback": False}, device=CPU, seed=0)
    metrics = list(trainer.epochs(3))
    assert [m["rollbacks"] for m in metrics] == [0.0, 0.0, 0.0]


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("squeeze_start", 1),
        ("target", 1.5),
        ("squeeze_first", 0.0),
        ("barrier_weight", -1.0),
        ("lower", -1.0),
        ("rollback", "yes"),
        ("mean_image_bias", 1),
        ("input_init_scale", 0.0),
    ],
)
def test_bad_params_are_param_errors(key: str, value: Any) -> None:
    with pytest.raises(ParamError, match=key):
        LboTrainer({key: value}, device=CPU, seed=0)


# -- the spec -----------------------------------------------------------------------------


def test_spec_loads() -> None:
    spec = load_spec("lbo")
    assert spec.trainer == "lbo" and spec.rules == ["kl-ceiling"]
    assert spec.objective_names == ["ssim", "kl_total"]
    assert spec.directions == ["maximize", "minimize"]
    lr = spec.space["lr"]
    assert (lr.type, lr.low, lr.high, lr.log, lr.default) == ("float", 1e-3, 5e-3, True, 2e-3)
    assert not {"lower", "squeeze_start"} & set(spec.space)  # fixed: no effect / the seed's
    assert spec.quick is not None and spec.quick_variant().epochs == 8
    assert all(param.default is not None for param in spec.space.values())
    (constraint,) = spec.constraints
    assert (
        constraint.violation({"run_rollback_rate": 3.0})
        <= 0
        < constraint.violation({"run_rollback_rate": 6.0})
    )
