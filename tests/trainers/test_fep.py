"""The fep trainer (seed 004): the fast and slow loops, the seed's fixes against its bugs, the
ratio rule on a real run, params, seeding and the spec."""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch

from hpsearch.errors import ParamError
from hpsearch.metrics.fep import gradient_ratio, prior_separation
from hpsearch.pruners import RuleEngine, build_rules
from hpsearch.search_spaces import FloatParam, load_spec
from hpsearch.trainers import get_trainer_class
from hpsearch.trainers.fep import (
    FepTrainer,
    FreeEnergy,
    decode,
    gaussian_kl,
    make_sequences,
    observation_weight,
    perceive,
    update_priors,
)

CPU = torch.device("cpu")
SPEC = load_spec("fep")
FIXES: dict[str, Any] = {**SPEC.fixed, **SPEC.default_params()}
BUGS: dict[str, Any] = {
    **FIXES,
    "obs_normalization": "sum_div_BN",
    "disc_mult": 0.01,
    "attraction": False,
}


def settings(**changes: Any) -> FreeEnergy:
    values: dict[str, Any] = {
        "alpha": 1.0,
        "lambda_obs": 1.0,
        "obs_weight": 1.0,
        "temperature": 0.75,
        "prior_sigma": 1.0,
        "belief_init_sigma": 1.0,
        "n_vfe_steps": 20,
        "vfe_lr": 0.2,
    }
    values.update(changes)
    return FreeEnergy(**values)


def train_until_memorized(params: dict[str, Any], epochs: int) -> tuple[FepTrainer, list[dict]]:
    trainer = FepTrainer(params, device=CPU, seed=0)
    history = []
    for metrics in trainer.epochs(epochs):
        history.append(metrics)
        if metrics["accuracy"] == 1.0:
            break
    return trainer, history


# -- the seed's fixes against its bugs ------------------------------------------------------


def test_with_the_seeds_fixes_the_batch_is_memorized_within_the_default_epochs() -> None:
    assert (FIXES["obs_normalization"], FIXES["disc_mult"], FIXES["attraction"]) == (
        "mean",
        0.5,
        True,
    )
    trainer, history = train_until_memorized(FIXES, SPEC.epochs)
    memorized_at = len(history)
    assert history[-1]["accuracy"] == 1.0
    assert memorized_at > 1  # the priors had to learn: perception alone was not enough
    assert trainer.epochs_to_memorize() == memorized_at <= SPEC.epochs
    assert history[-1]["epochs_to_memorize"] == memorized_at
    assert all(m["epochs_to_memorize"] == SPEC.epochs + 1 for m in history[:-1])
    assert history[-1]["prior_separation"] > history[0]["prior_separation"]
    assert all(1.0 <= m["ce_kl_grad_ratio"] <= 10.0 for m in history)  # the seed's healthy band


def test_with_the_seeds_bugs_it_never_memorizes_and_the_ratio_rule_fires() -> None:
    trainer = FepTrainer(BUGS, device=CPU, seed=0)
    engine = RuleEngine(build_rules(SPEC.rules), trainer.params)
    history = []
    for epoch, metrics in enumerate(trainer.epochs(SPEC.epochs), start=1):
        history.append(metrics)
        engine.observe(epoch, metrics, trainer.knobs)
        if engine.aborted_by is not None:
            break
    assert max(m["accuracy"] for m in history) < 1.0
    assert history[0]["ce_kl_grad_ratio"] < 0.1 and history[1]["ce_kl_grad_ratio"] < 0.1
    ladder = [event for event in engine.events if event.rule == "obs-weight-ladder"]
    assert ladder and ladder[0].epoch == 2 and ladder[0].action == "backoff"
    assert ladder[0].knobs_before["lambda_obs"] == pytest.approx(1.0)
    assert ladder[0].knobs_after["lambda_obs"] == pytest.approx(10.0)
    assert trainer.knobs["lambda_obs"] == pytest.approx(10.0)
    assert history[2]["lambda_obs"] == pytest.approx(10.0)  # read by the next epoch
    final = trainer.final_metrics()
    assert final["epochs_to_memorize"] == SPEC.epochs + 1
    assert final["accuracy"] < 1.0


def test_the_normalization_bug_alone_prevents_memorization() -> None:
    trainer, history = train_until_memorized({**FIXES, "obs_normalization": "sum_div_BN"}, 30)
    assert max(m["accuracy"] for m in history) < 0.5
    assert trainer.epochs_to_memorize() == 31


def test_healthy_run_fires_no_rule() -> None:
    trainer = FepTrainer(FIXES, device=CPU, seed=0)
    engine = RuleEngine(build_rules(SPEC.rules), trainer.params)
    for epoch, metrics in enumerate(trainer.epochs(5), start=1):
        engine.observe(epoch, metrics, trainer.knobs)
    assert engine.events == [] and engine.aborted_by is None


# -- the fast loop --------------------------------------------------------------------------


def test_gaussian_kl_is_zero_for_equal_gaussians_and_matches_the_closed_form() -> None:
    mu = torch.tensor([[0.5, -1.0]])
    assert gaussian_kl(mu, torch.ones(1, 2), mu, 1.0).item() == pytest.approx(0.0, abs=1e-7)
    kl = gaussian_kl(torch.zeros(1, 1), torch.full((1, 1), 0.5), torch.ones(1, 1), 2.0)
    expected = math.log(2.0 / 0.5) + (0.25 + 1.0) / (2 * 4.0) - 0.5
    assert kl.item() == pytest.approx(expected, rel=1e-6)


def test_decode_prefers_the_nearest_prior() -> None:
    priors = torch.tensor([[0.0, 0.0], [3.0, 0.0], [0.0, 3.0]])
    beliefs = torch.tensor([[2.5, 0.1], [0.2, 0.1]])
    logits = decode(beliefs, torch.ones(2, 2), priors, 1.0, 1.0)
    assert logits.argmax(dim=-1).tolist() == [1, 0]


def test_without_observations_beliefs_relax_onto_their_input_priors() -> None:
    priors = torch.randn(16, 8, generator=torch.Generator().manual_seed(0))
    inputs, targets = make_sequences(4, 8, 16, torch.Generator().manual_seed(0))
    perception = perceive(inputs, targets, priors, settings(lambda_obs=0.0, n_vfe_steps=60))
    assert torch.allclose(perception.mu, priors[inputs], atol=1e-3)
    assert torch.allclose(perception.sigma, torch.ones_like(perception.sigma), atol=1e-3)
    assert perception.kl == pytest.approx(0.0, abs=1e-5)
    assert perception.grad_ce == 0.0 and perception.grad_kl > 0.0


def test_sum_div_bn_weakens_every_positions_observation_gradient_by_b_times_n() -> None:
    priors = 0.25 * torch.randn(16, 16, generator=torch.Generator().manual_seed(0))
    inputs, targets = make_sequences(4, 8, 16, torch.Generator().manual_seed(0))
    assert observation_weight("mean", 32) == 1.0 and observation_weight("sum_div_BN", 32) == 1 / 32
    fixed = perceive(inputs, targets, priors, settings(obs_weight=1.0))
    buggy = perceive(inputs, targets, priors, settings(obs_weight=1 / 32))
    assert buggy.grad_kl == pytest.approx(fixed.grad_kl)
    assert buggy.grad_ce == pytest.approx(fixed.grad_ce / 32)


# -- the slow loop --------------------------------------------------------------------------


def test_correct_predictions_attract_the_target_prior_towards_the_belief() -> None:
    priors = torch.tensor([[0.0, 0.0], [1.0, 0.0]])
    beliefs = torch.tensor([[[0.0, 2.0], [1.0, 4.0]]])  # targets 1 and 1, both predicted right
    targets = predictions = torch.tensor([[1, 1]])
    new = update_priors(
        priors, beliefs, targets, predictions, attraction_lr=0.5, disc_lr=0.5, disc_clip=10.0
    )
    # mean pull of token 1: ((0, 2) - (1, 0) + (1, 4) - (1, 0)) / 2 = (-0.5, 3)
    assert new.tolist() == [[0.0, 0.0], [0.75, 1.5]]
    off = update_priors(
        priors, beliefs, targets, predictions, attraction_lr=0.0, disc_lr=0.5, disc_clip=10.0
    )
    assert torch.equal(off, priors)


def test_wrong_predictions_repel_the_target_from_the_confused_prior_with_clipping() -> None:
    priors = torch.tensor([[0.0, 0.0], [4.0, 0.0], [0.0, 1.0]])
    beliefs = torch.zeros(1, 2, 2)
    targets, predictions = torch.tensor([[1, 2]]), torch.tensor([[0, 0]])
    new = update_priors(
        priors, beliefs, targets, predictions, attraction_lr=0.5, disc_lr=0.1, disc_clip=2.0
    )
    # token 1 is pushed away from token 0 by a step clipped to norm 2; token 2 by its raw diff
    assert new[1].tolist() == pytest.approx([4.2, 0.0])
    assert new[2].tolist() == pytest.approx([0.0, 1.1])
    assert new[0].tolist() == [0.0, 0.0]


# -- knobs, seeding, device, params ---------------------------------------------------------


def test_knobs_are_read_every_epoch() -> None:
    trainer = FepTrainer(FIXES, device=CPU, seed=0)
    assert set(trainer.knobs) == {"lambda_obs", "alpha", "vfe_lr", "base_blend", "disc_mult"}
    first = next(trainer.epochs(1))
    trainer.knobs["lambda_obs"] = 0.0
    second = next(trainer.epochs(1))
    assert first["ce_kl_grad_ratio"] > 1.0 and second["ce_kl_grad_ratio"] == 0.0
    assert second["lambda_obs"] == 0.0


def test_runs_are_seeded() -> None:
    def run(seed: int) -> list[dict[str, float]]:
        return list(FepTrainer(FIXES, device=CPU, seed=seed).epochs(3))

    assert run(0) == run(0)
    assert run(0)[0]["prior_separation"] != run(1)[0]["prior_separation"]


def test_the_task_is_the_same_for_every_seed() -> None:
    one, two = FepTrainer(FIXES, device=CPU, seed=0), FepTrainer(FIXES, device=CPU, seed=1)
    assert torch.equal(one.inputs, two.inputs) and torch.equal(one.targets, two.targets)
    assert torch.equal(one.inputs[:, 1:], one.targets[:, :-1])  # next-token targets
    assert one.inputs.shape == (4, 8) and int(one.inputs.max()) < 16


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_runs_on_cuda() -> None:
    trainer = FepTrainer(FIXES, device=torch.device("cuda"), seed=0)
    metrics = list(trainer.epochs(2))[-1]
    assert trainer.prior_mu.is_cuda and math.isfinite(metrics["ce"])


@pytest.mark.parametrize(
    ("params", "named"),
    [
        ({"obs_normalization": "sum"}, "obs_normalization"),
        ({"attraction": "yes"}, "attraction"),
        ({"vocab_size": 1}, "vocab_size"),
        ({"n_vfe_steps": 0}, "n_vfe_steps"),
        ({"embed_dim": 8.5}, "embed_dim"),
        ({"base_blend": -0.1}, "base_blend"),
        ({"temperature": 0.0}, "temperature"),
        ({"no_such_param": 1}, "no_such_param"),
    ],
)
def test_bad_params_are_a_clear_param_error(params: dict[str, Any], named: str) -> None:
    with pytest.raises(ParamError, match=named):
        FepTrainer(params, device=CPU, seed=0)


def test_final_metrics_need_an_epoch() -> None:
    with pytest.raises(RuntimeError, match="at least one epoch"):
        FepTrainer(FIXES, device=CPU, seed=0).final_metrics()


def test_report_says_when_the_batch_was_memorized() -> None:
    trainer, history = train_until_memorized(FIXES, SPEC.epochs)
    report = trainer.report()
    assert report["memorized_at_epoch"] == len(history)
    assert report["final_prior_separation"] > 0


# -- metrics and the spec -------------------------------------------------------------------


def test_prior_separation_and_gradient_ratio() -> None:
    assert prior_separation(torch.tensor([[0.0, 0.0], [3.0, 4.0]])) == pytest.approx(5.0)
    assert prior_separation(torch.ones(5, 3)) == 0.0
    assert prior_separation(torch.ones(1, 3)) == 0.0
    with pytest.raises(ValueError, match="2-D"):
        prior_separation(torch.ones(3))
    assert gradient_ratio(1.0, 4.0) == 0.25
    assert gradient_ratio(1.0, 0.0) == math.inf and math.isnan(gradient_ratio(0.0, 0.0))


def test_the_spec_validates_against_the_trainer() -> None:
    spec = load_spec("fep")
    assert get_trainer_class(spec.trainer) is FepTrainer
    assert spec.objective_names == ["ce", "epochs_to_memorize"]
    assert spec.directions == ["minimize", "minimize"]
    assert spec.rules == ["fep-health"]
    assert set(spec.space) == {
        "disc_mult",
        "lambda_obs",
        "obs_normalization",
        "base_blend",
        "attraction",
    }
    for key in ("disc_mult", "base_blend"):
        param = spec.space[key]
        assert isinstance(param, FloatParam) and param.log
    assert spec.sampler.name == "tpe" and spec.sampler.seed == 0
    assert set(FepTrainer.metric_names) >= {o.metric for o in spec.objectives}
