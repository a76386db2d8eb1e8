"""The vae trainer (seed 000): free-bits metrics, shared VAE parts, knobs, the spec."""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch

from hpsearch.errors import ParamError
from hpsearch.metrics.kl import (
    free_bits_kl,
    kl_per_token,
    penalty_reduction,
    penalty_reduction_for,
)
from hpsearch.search_spaces import load_spec
from hpsearch.trainers import get_trainer_class
from hpsearch.trainers.vae import VaeTrainer
from hpsearch.trainers.vae_parts import (
    PcaTeacher,
    kl_warmup_weight,
    load_digit_splits,
)

CPU = torch.device("cpu")
SMALL: dict[str, Any] = {"num_tokens": 2, "latent_dim": 16, "hidden_dim": 32}


@pytest.fixture(scope="module")
def short_run() -> tuple[VaeTrainer, list[dict[str, float]]]:
    trainer = VaeTrainer(SMALL, device=CPU, seed=0)
    return trainer, list(trainer.epochs(3))


# -- metrics ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kl_raw", "free_bits", "expected"),
    [(0.05, 0.02, 40.0), (0.08, 0.02, 25.0), (0.03, 0.02, 200 / 3), (0.05, 0.1, 100.0)],
)
def test_penalty_reduction_gives_the_seeds_worked_examples(
    kl_raw: float, free_bits: float, expected: float
) -> None:
    assert penalty_reduction_for(kl_raw, free_bits) == pytest.approx(expected)
    assert penalty_reduction(kl_raw, free_bits_kl(kl_raw, free_bits)) == pytest.approx(expected)


def test_penalty_reduction_of_zero_kl_is_zero() -> None:
    assert penalty_reduction(0.0, 0.0) == 0.0


def test_free_bits_clamp_elementwise_on_tensors() -> None:
    kl = torch.tensor([0.01, 0.02, 0.05])
    assert free_bits_kl(kl, 0.02).tolist() == pytest.approx([0.0, 0.0, 0.03])
    assert free_bits_kl(0.01, 0.02) == 0.0


def test_kl_per_token_is_the_mean_over_latent_dims() -> None:
    mu = torch.zeros(3, 4, 8)
    mu[..., 0] = 1.0  # one dim of 8 has KL 0.5, the rest 0
    kl = kl_per_token(mu, torch.zeros_like(mu))
    assert kl.shape == (3, 4)
    assert torch.allclose(kl, torch.full((3, 4), 0.5 / 8))


# -- shared parts -------------------------------------------------------------------------


def test_digit_splits_are_fixed_by_the_data_seed() -> None:
    first, second = load_digit_splits(0.2, 0), load_digit_splits(0.2, 0)
    assert first.train.shape == (1438, 64) and first.val.shape == (359, 64)
    assert torch.equal(first.val, second.val)
    assert float(first.train.min()) >= 0.0 and float(first.train.max()) <= 1.0
    assert not torch.equal(load_digit_splits(0.2, 1).val, first.val)


def test_kl_warmup_reaches_the_max_weight_at_the_warmup_fraction() -> None:
    weights = [kl_warmup_weight(epoch, 10, 15.0, 0.5) for epoch in range(1, 11)]
    assert weights[:5] == pytest.approx([3.0, 6.0, 9.0, 12.0, 15.0])
    assert weights[5:] == [15.0] * 5
    assert kl_warmup_weight(1, 10, 15.0, 0.0) == 15.0


def test_pca_teacher_code_is_whitened_on_the_training_images() -> None:
    train = load_digit_splits(0.2, 0).train
    code = PcaTeacher.fit(train, 8).code(train)
    assert code.shape == (len(train), 8)
    assert torch.allclose(code.mean(dim=0), torch.zeros(8), atol=1e-4)
    assert torch.allclose(code.std(dim=0), torch.ones(8), atol=1e-3)


# -- the trainer --------------------------------------------------------------------------


def test_registry_resolves_vae() -> None:
    assert get_trainer_class("vae") is VaeTrainer


def test_epochs_report_every_declared_metric(short_run: tuple[VaeTrainer, list]) -> None:
    _, history = short_run
    assert len(history) == 3
    for metrics in history:
        assert set(metrics) == set(VaeTrainer.metric_names)
        assert all(math.isfinite(value) for value in metrics.values())


def test_metrics_are_consistent(short_run: tuple[VaeTrainer, list]) -> None:
    trainer, history = short_run
    last = history[-1]
    assert last["penalty_reduction"] == pytest.approx(
        penalty_reduction(last["kl_raw"], last["kl_after"])
    )
    assert last["kl_after"] <= last["kl_raw"]
    assert last["val_train_ratio"] == pytest.approx(last["val_loss"] / last["train_loss"])
    expected_share = 0.3 * last["teacher_loss"] / last["train_loss"] * 100
    assert last["teacher_contribution"] == pytest.approx(expected_share)
    # warm-up: the KL weight grows with epoch progress (3 epochs, warm-up over half the run)
    assert [m["kl_weight"] for m in history] == pytest.approx([10.0, 15.0, 15.0])
    assert trainer.final_metrics() == last


def test_training_lowers_the_loss(short_run: tuple[VaeTrainer, list]) -> None:
    _, history = short_run
    assert history[-1]["train_recon"] < history[0]["train_recon"]


def test_same_seed_same_metrics() -> None:
    first = list(VaeTrainer(SMALL, device=CPU, seed=3).epochs(1))
    second = list(VaeTrainer(SMALL, device=CPU, seed=3).epochs(1))
    assert first == second


def test_knobs_changed_between_epochs_shape_the_next_epoch() -> None:
    trainer = VaeTrainer(SMALL, device=CPU, seed=0)
    epochs = trainer.epochs(2)
    next(epochs)
    trainer.knobs["free_bits"] = 10.0  # every token's KL is now free
    trainer.knobs["teacher_weight"] = 0.0
    metrics = next(epochs)
    assert metrics["free_bits"] == 10.0
    assert metrics["kl_after"] == 0.0
    assert metrics["penalty_reduction"] == pytest.approx(100.0)
    assert metrics["teacher_contribution"] == 0.0


def test_final_metrics_before_training_is_an_error() -> None:
    with pytest.raises(RuntimeError, match="at least one epoch"):
        VaeTrainer(SMALL, device=CPU, seed=0).final_metrics()


@pytest.mark.parametrize(
    ("key", "value"),
    [("free_bits", -0.1), ("max_kl_weight", -1), ("warmup_fraction", 1.5), ("lr", 0)],
)
def test_bad_params_are_param_errors(key: str, value: float) -> None:
    with pytest.raises(ParamError, match=key):
        VaeTrainer({key: value}, device=CPU, seed=0)


def test_unknown_param_is_a_param_error() -> None:
    with pytest.raises(ParamError, match="free_bit"):
        VaeTrainer({"free_bit": 0.02}, device=CPU, seed=0)


# -- the spec -----------------------------------------------------------------------------


def test_spec_objectives_leave_out_the_searched_weights() -> None:
    """The objectives are val reconstruction and rate; the penalty band is a constraint."""
    spec = load_spec("vae")
    assert spec.trainer == "vae"
    assert spec.objective_names == ["val_recon", "val_kl_raw"]
    assert spec.directions == ["minimize", "minimize"]
    assert [c.name for c in spec.constraints] == [
        "penalty_reduction >= 20",
        "penalty_reduction <= 40",
    ]
    assert spec.rules == ["free-bits-health"]
    free_bits = spec.space["free_bits"].model_dump()
    assert (free_bits["low"], free_bits["high"], free_bits["log"]) == (0.005, 0.1, True)
    assert all(param.default is not None for param in spec.space.values())
    in_band = {"penalty_reduction": 30.0}
    assert [c.violation(in_band) for c in spec.constraints] == [-10.0, -10.0]
    assert max(c.violation({"penalty_reduction": 55.0}) for c in spec.constraints) == 15.0


def test_the_objectives_do_not_move_with_the_weights_at_fixed_parameters() -> None:
    """Same network, other max_kl_weight / teacher_weight: the objectives are unchanged (the
    old val_loss moved with both)."""
    trainer = VaeTrainer(SMALL, device=CPU, seed=0)
    list(trainer.epochs(1))
    before = trainer.evaluate()
    trainer.kl_weight *= 3.0
    trainer.knobs["teacher_weight"] = 0.0
    after = trainer.evaluate()
    for name in ("val_recon", "val_kl_raw"):
        assert after[name] == before[name]
    assert after["val_loss"] != before["val_loss"]
