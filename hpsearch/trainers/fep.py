"""Free-energy learning without backprop through the priors (seed 004), on the seed's minimal
overfitting task.

Task: ``batch_size`` fixed random token sequences of ``seq_len + 1`` tokens over ``vocab_size``
tokens (drawn once from ``data_seed``); position ``i`` reads token ``i`` and its target is token
``i + 1``. The model has one learned state, a token prior bank ``pi`` (``vocab_size x
embed_dim``): token ``v`` has the prior ``N(pi_v, prior_sigma^2 I)``.

Fast loop (perception), every epoch: each position holds a Gaussian belief
``q_i = N(mu_i, diag(sigma_i^2))`` that starts uninformed, ``N(0, belief_init_sigma^2 I)``, and
takes ``n_vfe_steps`` natural-gradient steps (``sigma^2 * grad`` for ``mu``, ``sigma^2 / 2 *
grad`` for ``sigma``; gradients by autograd with respect to the beliefs only) on

    F = alpha * sum_i KL(q_i || p_i) + lambda_obs * w * sum_i CE(decode(q_i), target_i)

where ``p_i`` is the prior of position ``i``'s input token and ``decode(q)_v = -KL(q || pi_v) /
temperature`` reads a belief out against every token prior (the seed's PriorBank). The weight
``w`` is the choice ``obs_normalization``:

- ``mean`` (the fix): ``w = 1``: each position's observation term is weighed like its own KL
  term, which is the seed's F divided by the ``B*N`` positions as a whole (KL and CE both
  averaged). Note: averaging the CE alone (``reduction='mean'``, the seed's "Option B") while the
  KL stays summed gives exactly the gradients of the bug below, so that alone fixes nothing.
- ``sum_div_BN`` (the seed's bug): ``w = 1/(B*N)``: the CE is summed over positions and then
  divided by ``B*N`` while the KL stays summed, so the observation gradient of every position
  is ``B*N`` times too weak.

Slow loop (learning), after the fast loop, without gradients: predictions are the argmax of
``decode`` of the final beliefs. For a correct prediction the target's prior is attracted
towards the belief, ``pi_y += base_blend * attraction_mult * (mu - pi_y)`` (when
``attraction`` is on; ``attraction_mult`` 0.5 is the seed's fix 3); for a wrong one it is
repelled from the prior it was confused with, ``pi_y += disc_lr * clip(pi_y - pi_pred)`` with
``disc_lr = base_blend * disc_mult`` and the step's norm clipped to ``disc_clip``. Each token's
updates are averaged over its occurrences.

What decides memorization: at a fixed point of the fast loop a belief sits between its input's
prior and its target's, and it decodes to the target only when the per-position balance
``c = lambda_obs * w * prior_sigma^2 / (alpha * temperature)`` is above about 1 (it is 1.33 with
the defaults and ``mean``; ``sum_div_BN`` divides it by ``B*N``). Just above 1, as with the
defaults, perception gets most positions right and the rest only once repulsion has moved the
confused priors apart, so ``disc_mult`` sets the number of epochs; well above 1 (``lambda_obs``
>= 2) the first epoch is already 100%; below 1 no ``disc_mult`` helps.

Metrics per epoch (from the fast loop of that epoch, before the priors move): ``ce`` and ``kl``
(means per position), ``accuracy``, ``free_energy`` (per position), ``grad_ce`` and ``grad_kl``
(mean |dF/dmu| of the weighted CE term and of the weighted KL term at the fast loop's first
step, on the uninformed beliefs: at a fixed point the two pulls cancel, so later steps always
read a ratio near 1), ``ce_kl_grad_ratio`` (``grad_ce / grad_kl``, the seed's Test 3: healthy at
1-10, too weak below 0.1), ``prior_separation`` (mean pairwise distance of the token priors),
``epochs_to_memorize`` (the first epoch with 100% accuracy; the epoch budget + 1 while it has not
been reached) and ``lambda_obs`` (its live value). Knobs: ``lambda_obs``, ``alpha``, ``vfe_lr``,
``base_blend``, ``disc_mult``.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch.nn import functional

from hpsearch.errors import ParamError
from hpsearch.metrics.fep import gradient_ratio, prior_separation
from hpsearch.trainers.base import Trainer, require_choice, require_range

OBS_NORMALIZATIONS = ("mean", "sum_div_BN")
_MIN_SIGMA = 1e-3


def make_sequences(
    batch_size: int, seq_len: int, vocab_size: int, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Fixed random sequences as (inputs, next-token targets), each ``[batch_size, seq_len]``."""
    tokens = torch.randint(0, vocab_size, (batch_size, seq_len + 1), generator=generator)
    return tokens[:, :-1], tokens[:, 1:]


def gaussian_kl(
    mu_q: torch.Tensor, sigma_q: torch.Tensor, mu_p: torch.Tensor, sigma_p: float
) -> torch.Tensor:
    """KL(N(mu_q, diag sigma_q^2) || N(mu_p, sigma_p^2 I)), summed over the last dimension."""
    variance_ratio = (sigma_q / sigma_p) ** 2
    per_dim = 0.5 * (variance_ratio + ((mu_q - mu_p) / sigma_p) ** 2 - 1.0 - variance_ratio.log())
    return per_dim.sum(dim=-1)


def decode(
    mu: torch.Tensor,
    sigma: torch.Tensor,
    prior_mu: torch.Tensor,
    prior_sigma: float,
    temperature: float,
) -> torch.Tensor:
    """Logits ``[..., vocab]``: ``-KL(q || pi_v) / temperature`` for every token prior."""
    kl = gaussian_kl(mu.unsqueeze(-2), sigma.unsqueeze(-2), prior_mu, prior_sigma)
    return -kl / temperature


def observation_weight(normalization: str, positions: int) -> float:
    """The weight ``w`` of the summed CE in F (see the module docstring)."""
    return 1.0 / positions if normalization == "sum_div_BN" else 1.0


@dataclass(frozen=True)
class FreeEnergy:
    """The settings of F and of the fast loop that descends it."""

    alpha: float
    lambda_obs: float
    obs_weight: float
    temperature: float
    prior_sigma: float
    belief_init_sigma: float
    n_vfe_steps: int
    vfe_lr: float


@dataclass(frozen=True)
class Perception:
    """The outcome of one fast loop: final beliefs, their predictions and its statistics."""

    mu: torch.Tensor
    sigma: torch.Tensor
    predictions: torch.Tensor
    ce: float
    kl: float
    accuracy: float
    free_energy: float
    grad_ce: float
    grad_kl: float


def perceive(
    inputs: torch.Tensor, targets: torch.Tensor, prior_mu: torch.Tensor, settings: FreeEnergy
) -> Perception:
    """Run the fast loop: natural-gradient descent of F with respect to the beliefs only."""
    shape = (*inputs.shape, prior_mu.shape[1])
    mu = torch.zeros(shape, device=prior_mu.device)
    sigma = torch.full(shape, settings.belief_init_sigma, device=prior_mu.device)
    input_priors = prior_mu[inputs].detach()
    priors = prior_mu.detach()
    mu, sigma, pulls = _vfe_step(mu, sigma, input_priors, priors, targets, settings, measure=True)
    for _ in range(settings.n_vfe_steps - 1):
        mu, sigma, _ = _vfe_step(mu, sigma, input_priors, priors, targets, settings)
    return _summarize(mu, sigma, input_priors, priors, targets, settings, *pulls)


def _vfe_step(
    mu: torch.Tensor,
    sigma: torch.Tensor,
    input_priors: torch.Tensor,
    priors: torch.Tensor,
    targets: torch.Tensor,
    settings: FreeEnergy,
    *,
    measure: bool = False,
) -> tuple[torch.Tensor, torch.Tensor, tuple[float, float]]:
    """One natural-gradient step on F.

    Returns the new beliefs and, when ``measure`` is set, the mean |dF/dmu| of the CE term and
    of the KL term before the step (each term's gradient then takes its own backward pass);
    otherwise ``(nan, nan)``.
    """
    mu = mu.detach().requires_grad_(True)
    sigma = sigma.detach().requires_grad_(True)
    kl_term = settings.alpha * gaussian_kl(mu, sigma, input_priors, settings.prior_sigma).sum()
    logits = decode(mu, sigma, priors, settings.prior_sigma, settings.temperature)
    ce_sum = functional.cross_entropy(
        logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), reduction="sum"
    )
    ce_term = settings.lambda_obs * settings.obs_weight * ce_sum
    pulls = (math.nan, math.nan)
    if measure:
        kl_grads = torch.autograd.grad(kl_term, (mu, sigma))
        ce_grads = torch.autograd.grad(ce_term, (mu, sigma))
        grad_mu, grad_sigma = kl_grads[0] + ce_grads[0], kl_grads[1] + ce_grads[1]
        pulls = (float(ce_grads[0].abs().mean()), float(kl_grads[0].abs().mean()))
    else:
        grad_mu, grad_sigma = torch.autograd.grad(kl_term + ce_term, (mu, sigma))
    with torch.no_grad():
        variance = sigma**2
        new_mu = mu - settings.vfe_lr * variance * grad_mu
        new_sigma = (sigma - settings.vfe_lr * variance / 2 * grad_sigma).clamp_min(_MIN_SIGMA)
    return new_mu, new_sigma, pulls


@torch.no_grad()
def _summarize(
    mu: torch.Tensor,
    sigma: torch.Tensor,
    input_priors: torch.Tensor,
    priors: torch.Tensor,
    targets: torch.Tensor,
    settings: FreeEnergy,
    grad_ce: float,
    grad_kl: float,
) -> Perception:
    """The perception's figures for the final beliefs."""
    logits = decode(mu, sigma, priors, settings.prior_sigma, settings.temperature)
    ce = functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1))
    kl = gaussian_kl(mu, sigma, input_priors, settings.prior_sigma).mean()
    predictions = logits.argmax(dim=-1)
    free_energy = settings.alpha * kl + settings.lambda_obs * settings.obs_weight * ce
    return Perception(
        mu=mu,
        sigma=sigma,
        predictions=predictions,
        ce=float(ce),
        kl=float(kl),
        accuracy=float((predictions == targets).float().mean()),
        free_energy=float(free_energy),
        grad_ce=grad_ce,
        grad_kl=grad_kl,
    )


@torch.no_grad()
def update_priors(
    prior_mu: torch.Tensor,
    belief_mu: torch.Tensor,
    targets: torch.Tensor,
    predictions: torch.Tensor,
    *,
    attraction_lr: float,
    disc_lr: float,
    disc_clip: float,
) -> torch.Tensor:
    """The slow loop: new token priors from one fast loop's beliefs and predictions.

    Correct positions attract their target's prior towards the belief (rate ``attraction_lr``;
    0 turns attraction off); wrong ones repel it from the predicted token's prior (rate
    ``disc_lr``, step norm clipped to ``disc_clip``). Each token's steps are averaged over its
    occurrences.
    """
    flat_targets, flat_predictions = targets.reshape(-1), predictions.reshape(-1)
    beliefs = belief_mu.reshape(-1, belief_mu.shape[-1])
    correct = flat_predictions == flat_targets
    step = torch.zeros_like(prior_mu)
    if attraction_lr > 0 and bool(correct.any()):
        pull = beliefs[correct] - prior_mu[flat_targets[correct]]
        step += attraction_lr * _mean_per_token(pull, flat_targets[correct], prior_mu.shape[0])
    wrong = ~correct
    if disc_lr > 0 and bool(wrong.any()):
        push = prior_mu[flat_targets[wrong]] - prior_mu[flat_predictions[wrong]]
        push = push * (disc_clip / push.norm(dim=-1, keepdim=True).clamp_min(1e-12)).clamp(max=1.0)
        step += disc_lr * _mean_per_token(push, flat_targets[wrong], prior_mu.shape[0])
    return prior_mu + step


def _mean_per_token(rows: torch.Tensor, tokens: torch.Tensor, vocab_size: int) -> torch.Tensor:
    """``[vocab, dim]``: the mean of ``rows`` per token id (0 for tokens with none)."""
    total = torch.zeros(vocab_size, rows.shape[1], device=rows.device, dtype=rows.dtype)
    total.index_add_(0, tokens, rows)
    counts = torch.bincount(tokens, minlength=vocab_size).clamp_min(1).to(rows.dtype)
    return total / counts.unsqueeze(-1)


@contextmanager
def single_cpu_thread(device: torch.device) -> Iterator[None]:
    """Run torch's CPU ops on one intra-op thread (restored afterwards); no-op off the CPU.

    Every op here touches a few thousand numbers: one thread is fastest, and on a busy CPU each
    op that wakes the thread pool (log, log_softmax, index_add, ...) waits milliseconds for it.
    """
    if device.type != "cpu":
        yield
        return
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


class FepTrainer(Trainer):
    """Free-energy learning of token priors by attraction / repulsion; see the module docstring."""

    name = "fep"
    param_defaults: ClassVar[Mapping[str, Any]] = {
        "batch_size": 4,
        "seq_len": 8,
        "vocab_size": 16,
        "embed_dim": 16,
        "prior_init_std": 0.25,
        "prior_sigma": 1.0,
        "belief_init_sigma": 1.0,
        "alpha": 1.0,
        "lambda_obs": 1.0,
        "temperature": 0.75,
        "obs_normalization": "mean",
        "n_vfe_steps": 20,
        "vfe_lr": 0.2,
        "base_blend": 0.03,
        "disc_mult": 0.5,
        "attraction": True,
        "attraction_mult": 0.5,
        "disc_clip": 1.0,
        "data_seed": 0,
    }
    knob_names = ("lambda_obs", "alpha", "vfe_lr", "base_blend", "disc_mult")
    metric_names = (
        "ce",
        "kl",
        "accuracy",
        "free_energy",
        "grad_ce",
        "grad_kl",
        "ce_kl_grad_ratio",
        "prior_separation",
        "epochs_to_memorize",
        "lambda_obs",
    )

    @classmethod
    def validate_params(cls, params: Mapping[str, Any]) -> None:
        for key, low in (("batch_size", 1), ("seq_len", 1), ("vocab_size", 2), ("embed_dim", 1)):
            _require_int(params, key, low, 1_000_000)
        _require_int(params, "n_vfe_steps", 1, 100_000)
        _require_int(params, "data_seed", 0, 2**63 - 1)
        for key in ("prior_init_std", "prior_sigma", "belief_init_sigma", "temperature"):
            require_range(params, key, 1e-6, 1e6, trainer=cls.name)
        require_range(params, "alpha", 1e-9, 1e6, trainer=cls.name)
        require_range(params, "lambda_obs", 0.0, 1e6, trainer=cls.name)
        require_range(params, "vfe_lr", 1e-9, 10.0, trainer=cls.name)
        require_range(params, "base_blend", 0.0, 1.0, trainer=cls.name)
        require_range(params, "disc_mult", 0.0, 100.0, trainer=cls.name)
        require_range(params, "attraction_mult", 0.0, 100.0, trainer=cls.name)
        require_range(params, "disc_clip", 1e-9, 1e6, trainer=cls.name)
        require_choice(params, "obs_normalization", OBS_NORMALIZATIONS, trainer=cls.name)
        if not isinstance(params["attraction"], bool):
            raise ParamError(
                f"fep: param attraction={params['attraction']!r} is not valid; use true or false"
            )

    def __init__(self, params: Mapping[str, Any], *, device: torch.device, seed: int) -> None:
        super().__init__(params, device=device, seed=seed)
        p = self.params
        data_generator = torch.Generator().manual_seed(int(p["data_seed"]))
        inputs, targets = make_sequences(
            int(p["batch_size"]), int(p["seq_len"]), int(p["vocab_size"]), data_generator
        )
        self.inputs, self.targets = inputs.to(device), targets.to(device)
        prior_generator = torch.Generator().manual_seed(seed)
        prior_mu = torch.randn(int(p["vocab_size"]), int(p["embed_dim"]), generator=prior_generator)
        self.prior_mu = (prior_mu * float(p["prior_init_std"])).to(device)
        self.total_epochs = 0
        self.memorized_at: int | None = None

    def free_energy_settings(self) -> FreeEnergy:
        """F and fast-loop settings from the params and the live knobs."""
        p, knobs = self.params, self.knobs
        return FreeEnergy(
            alpha=knobs["alpha"],
            lambda_obs=knobs["lambda_obs"],
            obs_weight=observation_weight(str(p["obs_normalization"]), self.inputs.numel()),
            temperature=float(p["temperature"]),
            prior_sigma=float(p["prior_sigma"]),
            belief_init_sigma=float(p["belief_init_sigma"]),
            n_vfe_steps=int(p["n_vfe_steps"]),
            vfe_lr=knobs["vfe_lr"],
        )

    def _run_epoch(self, epoch: int, total_epochs: int) -> dict[str, float]:
        with single_cpu_thread(self.device):
            return self._train_epoch(epoch, total_epochs)

    def _train_epoch(self, epoch: int, total_epochs: int) -> dict[str, float]:
        """One fast loop, then one slow update of the priors; the fast loop's metrics."""
        self.total_epochs = max(total_epochs, epoch)
        perception = perceive(self.inputs, self.targets, self.prior_mu, self.free_energy_settings())
        if perception.accuracy == 1.0 and self.memorized_at is None:
            self.memorized_at = epoch
        metrics = self._metrics(perception)
        self.prior_mu = update_priors(
            self.prior_mu,
            perception.mu,
            self.targets,
            perception.predictions,
            attraction_lr=self._attraction_lr(),
            disc_lr=self.knobs["base_blend"] * self.knobs["disc_mult"],
            disc_clip=float(self.params["disc_clip"]),
        )
        return metrics

    def _attraction_lr(self) -> float:
        if not self.params["attraction"]:
            return 0.0
        return self.knobs["base_blend"] * float(self.params["attraction_mult"])

    def _metrics(self, perception: Perception) -> dict[str, float]:
        return {
            "ce": perception.ce,
            "kl": perception.kl,
            "accuracy": perception.accuracy,
            "free_energy": perception.free_energy,
            "grad_ce": perception.grad_ce,
            "grad_kl": perception.grad_kl,
            "ce_kl_grad_ratio": gradient_ratio(perception.grad_ce, perception.grad_kl),
            "prior_separation": prior_separation(self.prior_mu),
            "epochs_to_memorize": float(self.epochs_to_memorize()),
            "lambda_obs": self.knobs["lambda_obs"],
        }

    def epochs_to_memorize(self) -> int:
        """The first epoch with 100% accuracy, else the epoch budget + 1."""
        return self.memorized_at if self.memorized_at is not None else self.total_epochs + 1

    def final_metrics(self) -> dict[str, float]:
        """A fresh fast loop on the final priors (no learning), with ``epochs_to_memorize``
        from training."""
        if self.total_epochs == 0:
            raise RuntimeError("final_metrics() needs at least one epoch; run epochs(n) first")
        with single_cpu_thread(self.device):
            perception = perceive(
                self.inputs, self.targets, self.prior_mu, self.free_energy_settings()
            )
            return self._metrics(perception)

    def report(self) -> dict[str, Any]:
        """When the batch was memorized and the final token priors' separation."""
        return {
            "memorized_at_epoch": self.memorized_at,
            "epoch_budget": self.total_epochs,
            "final_prior_separation": prior_separation(self.prior_mu),
        }


def _require_int(params: Mapping[str, Any], key: str, low: int, high: int) -> None:
    value = params[key]
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ParamError(
            f"fep: param {key}={value!r} is not valid; use an integer in [{low}, {high}]"
        )


__all__ = [
    "OBS_NORMALIZATIONS",
    "FepTrainer",
    "FreeEnergy",
    "Perception",
    "decode",
    "gaussian_kl",
    "make_sequences",
    "observation_weight",
    "perceive",
    "update_priors",
]
