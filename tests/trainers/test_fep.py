"""The fep trainer (seed 004): predictions that never see their target, the seed's fixes against
its bugs, the disc_mult sweep, the rules on real runs, the fast and slow loops, params, seeding
and the spec."""

from __future__ import annotations

import math
from functools import cache
from typing import Any

import pytest
import torch

from hpsearch.errors import ParamError
from hpsearch.metrics.fep import gradient_ratio, prior_complexity, prior_separation
from hpsearch.pruners import RuleEngine, build_rules
from hpsearch.search_spaces import FloatParam, load_spec
from hpsearch.trainers import get_trainer_class
from hpsearch.trainers.fep import (
    Beliefs,
    FepTrainer,
    FreeEnergy,
    Priors,
    decode,
    free_energy_gradients,
    free_energy_terms,
    gaussian_kl,
    learn_from_prediction_error,
    make_sequences,
    observation_weight,
    perceive,
    predict,
    term_gradients,
    update_token_priors,
)

CPU = torch.device("cpu")
SPEC = load_spec("fep")
EPOCHS = SPEC.epochs
FIXES: dict[str, Any] = FepTrainer.resolve_params({**SPEC.fixed, **SPEC.default_params()})
BUGS: dict[str, Any] = {
    **FIXES,
    "obs_normalization": "sum_div_BN",
    "disc_mult": 0.01,
    "attraction": False,
}
# A trial of the spec's first study whose fast loop overshoots (alignment + observation make F
# stiffer than vfe_lr = 0.4 allows): its CE climbs back from 0.83 at epoch 30.
UNSTABLE: dict[str, Any] = {
    **FIXES,
    "lambda_obs": 2.889,
    "prior_lr": 0.443,
    "base_blend": 0.068,
    "disc_mult": 0.846,
    "lambda_align": 0.383,
}


def settings(**changes: Any) -> FreeEnergy:
    values: dict[str, Any] = {
        "alpha": 1.0,
        "alpha_pos": 1.0,
        "lambda_align": 0.0,
        "align_temperature": 1.0,
        "lambda_obs": 1.0,
        "obs_weight": 1.0,
        "temperature": 0.75,
        "prior_sigma": 1.0,
        "belief_init_sigma": 1.0,
        "n_vfe_steps": 10,
        "vfe_lr": 0.4,
    }
    values.update(changes)
    return FreeEnergy(**values)


def random_priors(seed: int = 0, vocab: int = 16, dim: int = 16, seq_len: int = 8) -> Priors:
    generator = torch.Generator().manual_seed(seed)
    return Priors(
        token=torch.randn(vocab, dim, generator=generator),
        transition=torch.randn(vocab, dim, generator=generator),
        position=torch.randn(seq_len, dim, generator=generator),
    )


def task(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    return make_sequences(4, 8, 16, torch.Generator().manual_seed(seed))


@cache
def _run(changes: tuple[tuple[str, Any], ...], seed: int, epochs: int, stop: bool) -> Any:
    trainer = FepTrainer({**FIXES, **dict(changes)}, device=CPU, seed=seed)
    history = []
    for metrics in trainer.epochs(epochs):
        history.append(metrics)
        if stop and trainer.memorized_at is not None:
            break
    return trainer, history


def train(
    changes: dict[str, Any], seed: int = 0, epochs: int = EPOCHS, *, stop: bool = False
) -> tuple[FepTrainer, list[dict[str, float]]]:
    """Train (cached per arguments: do not mutate the result); ``stop`` at memorization."""
    return _run(tuple(sorted(changes.items())), seed, epochs, stop)  # type: ignore[no-any-return]


# -- no leakage: predictions never see their target -----------------------------------------


def test_predictions_do_not_depend_on_the_targets() -> None:
    priors, (inputs, targets) = random_priors(), task()
    other_targets = (targets + 1) % 16
    one = perceive(inputs, targets, priors, settings(lambda_align=0.3))
    two = perceive(inputs, other_targets, priors, settings(lambda_align=0.3))
    assert torch.equal(one.predicted.mu, two.predicted.mu)
    assert torch.equal(one.predictions, two.predictions)
    assert not torch.allclose(one.posterior.mu, two.posterior.mu)  # the targets teach
    assert one.ce != two.ce


def test_a_position_does_not_see_later_inputs_through_the_alignment() -> None:
    priors, (inputs, _) = random_priors(), task()
    changed = inputs.clone()
    changed[:, 5] = (changed[:, 5] + 3) % 16  # position 4's target is position 5's input
    before, _ = predict(inputs, priors, settings(lambda_align=1.0))
    after, _ = predict(changed, priors, settings(lambda_align=1.0))
    assert torch.equal(before.mu[:, :5], after.mu[:, :5])
    assert not torch.allclose(before.mu[:, 5:], after.mu[:, 5:])  # later ones do see it


@pytest.mark.parametrize("lambda_obs", [1.5, 10.0])
def test_lambda_obs_alone_cannot_memorize_at_epoch_1(lambda_obs: float) -> None:
    trainer = FepTrainer({**FIXES, "lambda_obs": lambda_obs}, device=CPU, seed=0)
    first = next(trainer.epochs(1))
    assert first["accuracy"] <= 0.25  # untrained priors: about chance (1/16)
    assert first["ce"] > 2.5 and trainer.memorized_at is None


def test_the_reported_accuracy_is_that_of_predictions_made_with_lambda_obs_zero() -> None:
    trained, history = train({}, stop=True)
    assert history[-1]["accuracy"] == 1.0
    trainer = FepTrainer(FIXES, device=CPU, seed=0)
    trainer.priors, trainer.total_epochs = trained.priors, trained.total_epochs
    with_target = trainer.final_metrics()
    trainer.knobs["lambda_obs"] = 0.0
    without = trainer.final_metrics()
    assert with_target["accuracy"] == without["accuracy"] == 1.0
    assert with_target["ce"] == without["ce"]


# -- the seed's fixes against its bugs ------------------------------------------------------


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_the_seeds_fixes_drive_train_ce_towards_zero(seed: int) -> None:
    assert (FIXES["obs_normalization"], FIXES["disc_mult"], FIXES["attraction"]) == (
        "mean",
        0.5,
        True,
    )
    trainer, history = train({}, seed)
    ce = [m["ce"] for m in history]
    assert ce[0] > 2.5  # about log(16): the untrained priors predict nothing
    assert ce[0] > ce[9] > ce[29] > ce[-1]
    assert ce[-1] < 0.1  # measured 0.074 / 0.079 / 0.087 at seeds 0-2
    memorized_at = trainer.epochs_to_memorize()
    assert 10 < memorized_at <= EPOCHS  # the priors had to learn (measured 43 / 31 / 33)
    assert history[memorized_at - 1]["accuracy"] == 1.0
    assert all(m["accuracy"] < 1.0 for m in history[: memorized_at - 1])
    assert history[-1]["memorized"] == 1.0 and history[memorized_at - 2]["memorized"] == 0.0
    assert history[-1]["prior_separation"] > history[0]["prior_separation"]


def test_the_seeds_bugs_keep_ce_near_chance() -> None:
    trainer, history = train(BUGS)
    assert history[-1]["ce"] > 2.0  # measured 2.37 (fixes: 0.074)
    assert trainer.memorized_at is None and trainer.epochs_to_memorize() == EPOCHS + 1


def test_the_normalization_bug_alone_keeps_ce_near_chance() -> None:
    trainer, history = train({"obs_normalization": "sum_div_BN"})
    assert history[-1]["ce"] > 2.0 and trainer.memorized_at is None


def test_without_attraction_ce_stays_several_times_higher() -> None:
    _, fixed = train({})
    _, history = train({"attraction": False})
    assert history[-1]["ce"] > 3 * fixed[-1]["ce"]  # measured 0.36 against 0.074


def test_the_disc_mult_sweep_keeps_its_order() -> None:
    """Seed 1 (bench/fep_lr_sweep.py has seeds 0-2: 46 46 43 40 / 38 36 31 25 / 36 35 33 30)."""
    epochs = [
        train({"disc_mult": disc_mult}, seed=1, stop=True)[0].epochs_to_memorize()
        for disc_mult in (0.01, 0.1, 0.5, 1.0)
    ]
    assert epochs == sorted(epochs, reverse=True), epochs  # measured 38 36 31 25
    assert epochs[-1] < epochs[0] <= EPOCHS


# -- the rules on real runs -----------------------------------------------------------------


def test_with_the_seeds_bugs_the_ratio_rule_raises_lambda_obs_then_aborts() -> None:
    trainer = FepTrainer(BUGS, device=CPU, seed=0)
    engine = RuleEngine(build_rules(SPEC.rules), trainer.params)
    history = []
    for epoch, metrics in enumerate(trainer.epochs(EPOCHS), start=1):
        history.append(metrics)
        engine.observe(epoch, metrics, trainer.knobs)
        if engine.aborted_by is not None:
            break
    assert history[0]["ce_kl_grad_ratio"] < 0.1 and history[1]["ce_kl_grad_ratio"] < 0.1
    ladder = [event for event in engine.events if event.rule == "obs-weight-ladder"]
    assert ladder[0].epoch == 2 and ladder[0].action == "backoff"
    assert ladder[0].knobs_after["lambda_obs"] == pytest.approx(10.0)
    assert history[2]["lambda_obs"] == pytest.approx(10.0)  # read by the next epoch
    assert engine.aborted_by is not None and engine.aborted_by.rule == "obs-weight-ladder"
    assert max(m["accuracy"] for m in history) < 1.0


def test_a_healthy_run_fires_no_rule() -> None:
    trainer, history = train({})
    engine = RuleEngine(build_rules(SPEC.rules), trainer.params)
    knobs = dict(FepTrainer(FIXES, device=CPU, seed=0).knobs)
    for epoch, metrics in enumerate(history, start=1):
        engine.observe(epoch, metrics, knobs)
    assert engine.events == [] and engine.aborted_by is None


def test_an_overshooting_fast_loop_is_caught_and_halving_vfe_lr_helps() -> None:
    _, unruled = train(UNSTABLE)
    best = min(m["ce"] for m in unruled)
    assert unruled[-1]["ce"] > 1.2 * best  # measured 1.14 against its best 0.83
    trainer = FepTrainer(UNSTABLE, device=CPU, seed=0)
    engine = RuleEngine(build_rules(SPEC.rules), trainer.params)
    history = []
    for epoch, metrics in enumerate(trainer.epochs(EPOCHS), start=1):
        history.append(metrics)
        engine.observe(epoch, metrics, trainer.knobs)
    fired = [event for event in engine.events if event.rule == "fast-loop-unstable"]
    assert fired and fired[0].knobs_after["vfe_lr"] == pytest.approx(0.2)
    assert history[-1]["ce"] < unruled[-1]["ce"]  # measured 0.46 against 1.14


# -- the fast loop --------------------------------------------------------------------------


def test_closed_form_gradients_match_autograd() -> None:
    priors, (inputs, targets) = random_priors(), task()
    generator = torch.Generator().manual_seed(1)
    mu = torch.randn(4, 8, 16, generator=generator).requires_grad_(True)
    sigma = (0.5 + torch.rand(4, 8, 16, generator=generator)).requires_grad_(True)
    free = settings(alpha=0.7, alpha_pos=1.3, lambda_align=0.4, lambda_obs=2.0, prior_sigma=1.3)
    terms = free_energy_terms(Beliefs(mu, sigma), inputs, targets, priors, free)
    expected = torch.autograd.grad(terms.prior_kl + terms.align + terms.observation, (mu, sigma))
    got = free_energy_gradients(Beliefs(mu.detach(), sigma.detach()), inputs, targets, priors, free)
    assert torch.allclose(got[0], expected[0], atol=1e-4)
    assert torch.allclose(got[1], expected[1], atol=1e-4)


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


def test_predictions_relax_onto_the_weighted_mean_of_their_priors() -> None:
    priors, (inputs, _) = random_priors(), task()
    beliefs, _ = predict(inputs, priors, settings(alpha=1.0, alpha_pos=3.0, n_vfe_steps=60))
    expected = (priors.transition[inputs] + 3.0 * priors.position) / 4.0
    assert torch.allclose(beliefs.mu, expected, atol=1e-4)
    assert torch.allclose(beliefs.sigma, torch.ones_like(beliefs.sigma), atol=1e-4)


def test_sum_div_bn_weakens_every_positions_observation_gradient_by_b_times_n() -> None:
    priors, (inputs, targets) = random_priors(), task()
    assert observation_weight("mean", 32) == 1.0 and observation_weight("sum_div_BN", 32) == 1 / 32
    fixed_ce, fixed_kl = term_gradients(inputs, targets, priors, settings(obs_weight=1.0))
    buggy_ce, buggy_kl = term_gradients(inputs, targets, priors, settings(obs_weight=1 / 32))
    assert buggy_kl == pytest.approx(fixed_kl) and fixed_kl > 0
    assert buggy_ce == pytest.approx(fixed_ce / 32)
    assert term_gradients(inputs, targets, priors, settings(lambda_obs=0.0))[0] == 0.0


# -- the slow loop --------------------------------------------------------------------------


def test_the_prediction_error_moves_transition_and_position_priors() -> None:
    priors = Priors(torch.zeros(3, 2), torch.zeros(3, 2), torch.zeros(2, 2))
    inputs = torch.tensor([[1, 2], [1, 1]])
    predicted = Beliefs(torch.zeros(2, 2, 2), torch.ones(2, 2, 2))
    posterior_mu = torch.tensor([[[1.0, 0.0], [0.0, 4.0]], [[3.0, 0.0], [2.0, 2.0]]])
    new = learn_from_prediction_error(
        priors, inputs, predicted, Beliefs(posterior_mu, torch.ones(2, 2, 2)), 0.5
    )
    # token 1 is read at (0, 0), (1, 0), (1, 1): mean error (2, 2/3); token 2 at (0, 1)
    assert torch.allclose(new.transition, torch.tensor([[0, 0], [1.0, 1 / 3], [0.0, 2.0]]))
    assert torch.allclose(new.position, torch.tensor([[1.0, 0.0], [0.5, 1.5]]))  # batch means
    assert torch.equal(new.token, priors.token)


def test_correct_predictions_attract_the_target_prior_towards_the_belief() -> None:
    priors = torch.tensor([[0.0, 0.0], [1.0, 0.0]])
    beliefs = torch.tensor([[[0.0, 2.0], [1.0, 4.0]]])  # targets 1 and 1, both predicted right
    targets = predictions = torch.tensor([[1, 1]])
    new = update_token_priors(
        priors, beliefs, targets, predictions, attraction_lr=0.5, disc_lr=0.5, disc_clip=10.0
    )
    # mean pull of token 1: ((0, 2) - (1, 0) + (1, 4) - (1, 0)) / 2 = (-0.5, 3)
    assert new.tolist() == [[0.0, 0.0], [0.75, 1.5]]
    off = update_token_priors(
        priors, beliefs, targets, predictions, attraction_lr=0.0, disc_lr=0.5, disc_clip=10.0
    )
    assert torch.equal(off, priors)


def test_wrong_predictions_repel_the_target_from_the_confused_prior_with_clipping() -> None:
    priors = torch.tensor([[0.0, 0.0], [4.0, 0.0], [0.0, 1.0]])
    beliefs = torch.zeros(1, 2, 2)
    targets, predictions = torch.tensor([[1, 2]]), torch.tensor([[0, 0]])
    new = update_token_priors(
        priors, beliefs, targets, predictions, attraction_lr=0.5, disc_lr=0.1, disc_clip=2.0
    )
    # token 1 is pushed away from token 0 by a step clipped to norm 2; token 2 by its raw diff
    assert new[1].tolist() == pytest.approx([4.2, 0.0])
    assert new[2].tolist() == pytest.approx([0.0, 1.1])
    assert new[0].tolist() == [0.0, 0.0]


@pytest.mark.parametrize("sync_steps", [0, 40])
def test_the_token_update_reads_predictions_synced_to_the_moved_priors(sync_steps: int) -> None:
    trainer = FepTrainer({**FIXES, "sync_steps": sync_steps}, device=CPU, seed=0)
    next(trainer.epochs(3))
    free = trainer.free_energy_settings()
    perception = perceive(trainer.inputs, trainer.targets, trainer.priors, free)
    moved = learn_from_prediction_error(
        trainer.priors,
        trainer.inputs,
        perception.predicted,
        perception.posterior,
        float(FIXES["prior_lr"]),
    )
    fresh_beliefs, fresh_predictions = predict(trainer.inputs, moved, free)
    stale = (perception.predicted.mu, perception.predictions)
    beliefs, predictions = (fresh_beliefs.mu, fresh_predictions) if sync_steps else stale
    expected = update_token_priors(
        moved.token,
        beliefs,
        trainer.targets,
        predictions,
        attraction_lr=FIXES["base_blend"] * FIXES["attraction_mult"],
        disc_lr=FIXES["base_blend"] * FIXES["disc_mult"],
        disc_clip=FIXES["disc_clip"],
    )
    trainer._learn(perception, free)
    assert torch.allclose(trainer.priors.token, expected, atol=1e-5)
    assert torch.equal(trainer.priors.transition, moved.transition)


# -- knobs, seeding, device, params ---------------------------------------------------------


def test_knobs_are_read_every_epoch() -> None:
    trainer = FepTrainer(FIXES, device=CPU, seed=0)
    assert set(trainer.knobs) == {"lambda_obs", "alpha", "vfe_lr", "base_blend", "disc_mult"}
    first = next(trainer.epochs(1))
    trainer.knobs["lambda_obs"] = 0.0
    second = next(trainer.epochs(1))
    assert first["ce_kl_grad_ratio"] > 0.5 and second["ce_kl_grad_ratio"] == 0.0
    assert second["lambda_obs"] == 0.0


def test_runs_are_seeded() -> None:
    def run(seed: int) -> list[dict[str, float]]:
        return list(FepTrainer(FIXES, device=CPU, seed=seed).epochs(3))

    assert run(0) == run(0)
    assert run(0)[0]["prior_separation"] != run(1)[0]["prior_separation"]


def test_the_task_is_the_same_for_every_seed_and_its_columns_differ() -> None:
    one, two = FepTrainer(FIXES, device=CPU, seed=0), FepTrainer(FIXES, device=CPU, seed=1)
    assert torch.equal(one.inputs, two.inputs) and torch.equal(one.targets, two.targets)
    assert torch.equal(one.inputs[:, 1:], one.targets[:, :-1])  # next-token targets
    assert one.inputs.shape == (4, 8) and int(one.inputs.max()) < 16
    tokens = torch.cat([one.inputs, one.targets[:, -1:]], dim=1)
    assert all(len(set(column.tolist())) == 4 for column in tokens.T)


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
        ({"sync_steps": -1}, "sync_steps"),
        ({"embed_dim": 8.5}, "embed_dim"),
        ({"base_blend": -0.1}, "base_blend"),
        ({"lambda_align": -1.0}, "lambda_align"),
        ({"temperature": 0.0}, "temperature"),
        ({"batch_size": 17}, "batch_size"),
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
    trainer, history = train({}, stop=True)
    report = trainer.report()
    assert report["memorized_at_epoch"] == len(history)
    assert report["final_prior_separation"] > 0


# -- metrics and the spec -------------------------------------------------------------------


def test_prior_separation_complexity_and_gradient_ratio() -> None:
    assert prior_separation(torch.tensor([[0.0, 0.0], [3.0, 4.0]])) == pytest.approx(5.0)
    assert prior_separation(torch.ones(5, 3)) == 0.0
    assert prior_separation(torch.ones(1, 3)) == 0.0
    with pytest.raises(ValueError, match="2-D"):
        prior_separation(torch.ones(3))
    start = [torch.zeros(2, 2), torch.zeros(1, 2)]
    moved = [torch.tensor([[3.0, 4.0], [0.0, 0.0]]), torch.tensor([[0.0, 2.0]])]
    assert prior_complexity(moved, start, 1.0) == pytest.approx((25 + 4) / (2 * 3))
    assert prior_complexity(start, start, 2.0) == 0.0
    with pytest.raises(ValueError, match="matching"):
        prior_complexity(moved, start[:1], 1.0)
    assert gradient_ratio(1.0, 4.0) == 0.25
    assert gradient_ratio(1.0, 0.0) == math.inf and math.isnan(gradient_ratio(0.0, 0.0))


def test_complexity_grows_as_the_priors_learn() -> None:
    _, history = train({})
    assert history[0]["complexity"] == 0.0
    assert 0 < history[9]["complexity"] < history[-1]["complexity"]


def test_the_spec_validates_against_the_trainer() -> None:
    spec = load_spec("fep")
    assert get_trainer_class(spec.trainer) is FepTrainer
    assert spec.objective_names == ["ce", "complexity"]
    assert spec.directions == ["minimize", "minimize"]
    assert [(c.metric, c.op, c.value) for c in spec.constraints] == [("memorized", ">=", 1)]
    assert spec.rules == ["fep-health"]
    assert set(spec.space) == {"lambda_obs", "prior_lr", "base_blend", "lambda_align"}
    for key in ("lambda_obs", "prior_lr", "base_blend"):
        param = spec.space[key]
        assert isinstance(param, FloatParam) and param.log
    assert spec.sampler.name == "tpe" and spec.sampler.seed == 0
    assert set(FepTrainer.metric_names) >= {o.metric for o in spec.objectives}
