"""Context-vector fixed-point learning (seed 001), batched over many token streams.

A context vector is carried along a token stream: ``c_t = f(e_t, c_{t-1})``, where ``f`` is a
residual feed-forward block followed by a layernorm mix
``c = mix * LayerNorm(h) + (1 - mix) * h``. One epoch is one fixed-point iteration: a pass over
every stream, each stream starting from the context it ended the previous pass with. Each token
is one optimizer step on

    (1 - w) * MSE(c_t, c_t from the previous iteration) + w * diversity,
    diversity = -|| c_t - running mean of this pass's contexts ||

with raw MSE (no normalization: a fixed point needs equal values, not equal directions) and the
incoming context detached (no gradient flows between tokens). The seed did this one token at a
time; here ``streams`` token streams advance together, one step per position for all of them.

Metrics per epoch, on the training streams and on held-out validation streams (evaluated
without training, carrying their own contexts from pass to pass): the convergence rate (share
of tokens whose context moved less than ``convergence_threshold`` in per-token MSE since the
last iteration) and the effective-rank ratio (effective rank of all contexts over the
dimension).

Weighting schedules for ``w`` (the knob ``dist_reg_weight``): ``constant``; ``staged`` (the
seed's option 1: three equal stages from ``stage_start_weight`` through the midpoint down to
``dist_reg_weight``, 0.8 / 0.5 / 0.2 with the defaults); ``adaptive`` (the seed's option 2,
applied between epochs by the ``cvfp-health`` rules, which set the knob from the metrics).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import torch
from torch import nn
from torch.nn import functional

from hpsearch.errors import ParamError
from hpsearch.metrics import convergence_rate, effective_rank_ratio, per_token_mse
from hpsearch.trainers.base import Trainer, require_choice, require_range

SCHEDULES = ("constant", "staged", "adaptive")
DIVERSITY_FORMS = ("pairwise", "centroid")


def diversity_loss(contexts: torch.Tensor, running_mean: torch.Tensor, form: str) -> torch.Tensor:
    """Negative spread of one step's contexts ``[streams, dim]`` (lower is more diverse).

    ``centroid`` is the seed's ``-||c - mean||`` against the running mean of the pass;
    ``pairwise`` is the seed's option 4, minus the mean pairwise distance between the streams.
    """
    if form == "centroid":
        return -(contexts - running_mean).norm(dim=-1).mean()
    if contexts.shape[0] < 2:
        return contexts.new_zeros(())
    return -torch.pdist(contexts).mean()


class ContextBlock(nn.Module):
    """``c_t = mix * LN(h) + (1 - mix) * h`` with ``h = c_{t-1} + FFN([c_{t-1}; e_t])``."""

    def __init__(self, context_dim: int, hidden_dim: int, layernorm_mix: float) -> None:
        super().__init__()
        self.ffn = nn.Sequential(
            nn.Linear(2 * context_dim, hidden_dim),
            nn.GELU(),
            nn.Linear(hidden_dim, context_dim),
        )
        # No learnable gain: with one, the diversity term is won by inflating every norm.
        self.norm = nn.LayerNorm(context_dim, elementwise_affine=False)
        self.layernorm_mix = layernorm_mix

    def forward(self, token_embedding: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        hidden = context + self.ffn(torch.cat([context, token_embedding], dim=-1))
        mix = self.layernorm_mix
        return mix * self.norm(hidden) + (1.0 - mix) * hidden


def make_token_streams(
    vocab_size: int, streams: int, length: int, generator: torch.Generator
) -> torch.Tensor:
    """Token ids ``[streams, length]`` from a sparse random Markov chain (text-like structure:
    each token has four likely successors)."""
    successors = torch.randint(0, vocab_size, (vocab_size, 4), generator=generator)
    tokens = torch.empty(streams, length, dtype=torch.long)
    tokens[:, 0] = torch.randint(0, vocab_size, (streams,), generator=generator)
    for position in range(1, length):
        pick = torch.randint(0, 4, (streams,), generator=generator)
        jump = torch.rand(streams, generator=generator) < 0.1
        random_tokens = torch.randint(0, vocab_size, (streams,), generator=generator)
        next_tokens = successors[tokens[:, position - 1], pick]
        tokens[:, position] = torch.where(jump, random_tokens, next_tokens)
    return tokens


class CvfpTrainer(Trainer):
    """Context-vector fixed-point learning; see the module docstring."""

    name = "cvfp"
    param_defaults: ClassVar[Mapping[str, Any]] = {
        "context_dim": 64,
        "hidden_dim": 128,
        "vocab_size": 256,
        "train_tokens": 2048,
        "val_tokens": 512,
        "streams": 64,
        "dist_reg_weight": 0.5,
        "lr": 1.0e-3,
        "convergence_threshold": 0.1,
        "layernorm_mix": 1.0,
        "schedule": "constant",
        "diversity": "pairwise",
        "stage_start_weight": 0.8,
        "data_seed": 0,
    }
    knob_names = ("dist_reg_weight", "lr")
    metric_names = (
        "train_convergence_rate",
        "train_effective_rank_ratio",
        "val_convergence_rate",
        "val_effective_rank_ratio",
        "cvfp_loss",
        "diversity_loss",
        "dist_reg_weight",
    )

    @classmethod
    def validate_params(cls, params: Mapping[str, Any]) -> None:
        for key in ("context_dim", "hidden_dim", "vocab_size", "streams"):
            require_range(params, key, 1, 1_000_000, trainer=cls.name)
        require_range(params, "dist_reg_weight", 0.0, 1.0, trainer=cls.name)
        require_range(params, "stage_start_weight", 0.0, 1.0, trainer=cls.name)
        require_range(params, "lr", 1e-8, 10.0, trainer=cls.name)
        require_range(params, "convergence_threshold", 1e-9, 1e9, trainer=cls.name)
        require_range(params, "layernorm_mix", 0.0, 1.0, trainer=cls.name)
        require_choice(params, "schedule", SCHEDULES, trainer=cls.name)
        require_choice(params, "diversity", DIVERSITY_FORMS, trainer=cls.name)
        for key in ("train_tokens", "val_tokens"):
            if int(params[key]) < int(params["streams"]):
                raise ParamError(
                    f"cvfp: param {key}={params[key]} is smaller than streams="
                    f"{params['streams']}; give at least one token per stream"
                )

    def __init__(self, params: Mapping[str, Any], *, device: torch.device, seed: int) -> None:
        super().__init__(params, device=device, seed=seed)
        p = self.params
        dim, streams = int(p["context_dim"]), int(p["streams"])
        data_generator = torch.Generator().manual_seed(int(p["data_seed"]))
        self.embeddings = torch.randn(int(p["vocab_size"]), dim, generator=data_generator)
        self.train_tokens = make_token_streams(
            int(p["vocab_size"]), streams, int(p["train_tokens"]) // streams, data_generator
        ).to(device)
        self.val_tokens = make_token_streams(
            int(p["vocab_size"]), streams, int(p["val_tokens"]) // streams, data_generator
        ).to(device)
        self.embeddings = self.embeddings.to(device)
        self.block = ContextBlock(dim, int(p["hidden_dim"]), float(p["layernorm_mix"])).to(device)
        self.optimizer = torch.optim.Adam(self.block.parameters(), lr=self.knobs["lr"])
        zeros = torch.zeros(streams, dim, device=device)
        self.train_start, self.val_start = zeros, zeros.clone()
        self.previous_train: torch.Tensor | None = None
        self.previous_val: torch.Tensor | None = None
        self.last_metrics: dict[str, float] = {}

    # -- schedule -------------------------------------------------------------------------

    def scheduled_weight(self, epoch: int, total_epochs: int) -> float:
        """The diversity weight for this epoch under the ``staged`` schedule."""
        start, end = float(self.params["stage_start_weight"]), float(self.params["dist_reg_weight"])
        stage = min(3 * (epoch - 1) // max(total_epochs, 1), 2)
        return start + (end - start) * stage / 2

    # -- one iteration ----------------------------------------------------------------------

    def _run_epoch(self, epoch: int, total_epochs: int) -> dict[str, float]:
        if self.params["schedule"] == "staged":
            self.knobs["dist_reg_weight"] = self.scheduled_weight(epoch, total_epochs)
        for group in self.optimizer.param_groups:
            group["lr"] = self.knobs["lr"]
        train_contexts, cvfp_loss, diversity_loss = self._train_pass()
        val_contexts = self._val_pass()
        metrics = self._measure(train_contexts, val_contexts)
        metrics.update(
            cvfp_loss=cvfp_loss,
            diversity_loss=diversity_loss,
            dist_reg_weight=self.knobs["dist_reg_weight"],
        )
        self.previous_train, self.previous_val = train_contexts, val_contexts
        self.last_metrics = metrics
        return metrics

    def _train_pass(self) -> tuple[torch.Tensor, float, float]:
        """One optimizer step per position, all streams at once; returns the contexts
        ``[streams, length, dim]`` and the mean losses of the pass."""
        weight = self.knobs["dist_reg_weight"]
        streams, length = self.train_tokens.shape
        contexts = torch.empty(streams, length, self.embeddings.shape[1], device=self.device)
        context = self.train_start
        running_mean = torch.zeros_like(context[0])
        cvfp_total = diversity_total = 0.0
        for position in range(length):
            new_context = self.block(self.embeddings[self.train_tokens[:, position]], context)
            cvfp = (
                functional.mse_loss(new_context, self.previous_train[:, position])
                if self.previous_train is not None
                else new_context.new_zeros(())
            )
            diversity = diversity_loss(new_context, running_mean, self.params["diversity"])
            loss = (1.0 - weight) * cvfp + weight * diversity
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            context = new_context.detach()
            contexts[:, position] = context
            running_mean = running_mean + (context.mean(dim=0) - running_mean) / (position + 1)
            cvfp_total += float(cvfp.detach())
            diversity_total += float(diversity.detach())
        self.train_start = context
        return contexts, cvfp_total / length, diversity_total / length

    @torch.no_grad()
    def _val_pass(self) -> torch.Tensor:
        """Contexts of the validation streams under the current model (no training)."""
        streams, length = self.val_tokens.shape
        contexts = torch.empty(streams, length, self.embeddings.shape[1], device=self.device)
        context = self.val_start
        for position in range(length):
            context = self.block(self.embeddings[self.val_tokens[:, position]], context)
            contexts[:, position] = context
        self.val_start = context
        return contexts

    def _measure(self, train: torch.Tensor, val: torch.Tensor) -> dict[str, float]:
        threshold = float(self.params["convergence_threshold"])
        metrics: dict[str, float] = {}
        for split, contexts, previous in (
            ("train", train, self.previous_train),
            ("val", val, self.previous_val),
        ):
            flat = contexts.reshape(-1, contexts.shape[-1])
            metrics[f"{split}_convergence_rate"] = (
                convergence_rate(contexts, previous, threshold) if previous is not None else 0.0
            )
            metrics[f"{split}_effective_rank_ratio"] = effective_rank_ratio(flat)
            if previous is not None:
                metrics[f"{split}_context_mse"] = float(per_token_mse(contexts, previous).mean())
        return metrics

    def final_metrics(self) -> dict[str, float]:
        """The metrics of the last fixed-point iteration (train and validation).

        Convergence is only defined between two iterations of training, so the final figures
        are those of the last epoch; an extra pass with a frozen model would converge trivially.
        """
        if not self.last_metrics:
            raise RuntimeError("final_metrics() needs at least one epoch; run epochs(n) first")
        return dict(self.last_metrics)
