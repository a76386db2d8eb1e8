"""A VAE with free bits on the 8x8 digits (seed 000): the penalty-reduction band.

The latent is ``num_tokens`` tokens of ``latent_dim`` dims. KL per token is the MEAN over its
latent dims (the seed's scale: a few hundredths of a nat), free bits are applied per image and
token, ``kl_after = max(kl_raw - free_bits, 0)``, and the loss of a batch is

    recon + kl_weight * sum over tokens of kl_after + teacher_weight * teacher_loss

(each a mean over the batch; recon is the Bernoulli NLL summed over the 64 pixels). The KL
weight warms up linearly with epoch progress to ``max_kl_weight`` at ``warmup_fraction`` of the
run. The optional teacher is fixed and in closed form: the whitened PCA code (top
``teacher_components`` components of the training images), matched by the sampled code of the
first latent token (squared error summed over the components); ``teacher_weight`` 0 turns it off.

After every epoch the model is evaluated on the whole train and val splits with fixed noise
(deterministic): losses, recon, ``kl_raw`` / ``kl_after`` (means over images and tokens, train
split), ``penalty_reduction = (kl_raw - kl_after) / kl_raw * 100``, the teacher loss and its
share of the train loss in percent, and the val/train loss ratio. The knobs ``free_bits``,
``max_kl_weight``, ``teacher_weight`` and ``lr`` are read at the start of every epoch, so the
``free-bits-health`` rules shape the next epoch.

``val_loss`` / ``train_loss`` contain the searched weights (``kl_weight`` and ``teacher_weight``),
so they rank trials by their own settings; the packaged study's objectives are ``val_recon`` (the
seed's task loss) and ``val_kl_raw`` (the rate on the seed's scale), which no weight enters.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from hpsearch.metrics.kl import free_bits_kl, kl_per_token, penalty_reduction
from hpsearch.trainers.base import Trainer, require_range
from hpsearch.trainers.vae_parts import (
    MlpVae,
    PcaTeacher,
    batch_indices,
    kl_warmup_weight,
    load_digit_splits,
    recon_loss,
)


@dataclass(frozen=True)
class LossParts:
    """The terms of the loss on one batch or split (tensors, means over the images)."""

    total: torch.Tensor
    recon: torch.Tensor
    kl_raw: torch.Tensor
    kl_after: torch.Tensor
    teacher: torch.Tensor


class VaeTrainer(Trainer):
    """VAE with free bits, KL warm-up and an optional PCA teacher; see the module docstring."""

    name = "vae"
    param_defaults: ClassVar[Mapping[str, Any]] = {
        "num_tokens": 4,
        "latent_dim": 64,
        "hidden_dim": 128,
        "batch_size": 64,
        "val_fraction": 0.2,
        "data_seed": 0,
        "free_bits": 0.02,
        "max_kl_weight": 15.0,
        "warmup_fraction": 0.5,
        "teacher_weight": 0.3,
        "teacher_components": 16,
        "lr": 2.0e-3,
    }
    knob_names = ("free_bits", "max_kl_weight", "teacher_weight", "lr")
    metric_names = (
        "train_loss",
        "val_loss",
        "train_recon",
        "val_recon",
        "kl_raw",
        "kl_after",
        "penalty_reduction",
        "val_kl_raw",
        "val_penalty_reduction",
        "teacher_loss",
        "teacher_contribution",
        "val_train_ratio",
        "kl_weight",
        "free_bits",
        "max_kl_weight",
        "teacher_weight",
    )

    @classmethod
    def validate_params(cls, params: Mapping[str, Any]) -> None:
        for key in ("num_tokens", "latent_dim", "hidden_dim", "batch_size"):
            require_range(params, key, 1, 1_000_000, trainer=cls.name)
        require_range(params, "teacher_components", 1, 64, trainer=cls.name)
        require_range(params, "val_fraction", 0.01, 0.9, trainer=cls.name)
        require_range(params, "free_bits", 0.0, 10.0, trainer=cls.name)
        require_range(params, "max_kl_weight", 0.0, 1000.0, trainer=cls.name)
        require_range(params, "warmup_fraction", 0.0, 1.0, trainer=cls.name)
        require_range(params, "teacher_weight", 0.0, 100.0, trainer=cls.name)
        require_range(params, "lr", 1e-8, 10.0, trainer=cls.name)

    def __init__(self, params: Mapping[str, Any], *, device: torch.device, seed: int) -> None:
        super().__init__(params, device=device, seed=seed)
        p = self.params
        self.tokens, self.latent_dim = int(p["num_tokens"]), int(p["latent_dim"])
        self.data = load_digit_splits(float(p["val_fraction"]), int(p["data_seed"]), device)
        self.model = MlpVae(self.tokens * self.latent_dim, int(p["hidden_dim"])).to(device)
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=self.knobs["lr"])
        components = min(int(p["teacher_components"]), self.latent_dim)
        self.teacher = PcaTeacher.fit(self.data.train, components)
        self.batch_generator = torch.Generator().manual_seed(seed)
        noise_generator = torch.Generator().manual_seed(seed + 1)
        latent = self.tokens * self.latent_dim
        self.eval_noise = {
            split: torch.randn(len(images), latent, generator=noise_generator).to(device)
            for split, images in (("train", self.data.train), ("val", self.data.val))
        }
        self.kl_weight = 0.0
        self.last_metrics: dict[str, float] = {}

    # -- loss ---------------------------------------------------------------------------

    def loss_parts(self, images: torch.Tensor, noise: torch.Tensor | None = None) -> LossParts:
        """The loss terms on ``images`` under the current knobs and KL weight."""
        mu, logvar = self.model.encode(images)
        if noise is None:
            noise = torch.randn_like(mu)
        z = mu + (0.5 * logvar).exp() * noise
        recon = recon_loss(self.model.decode(z), images)
        shape = (-1, self.tokens, self.latent_dim)
        kl_raw = kl_per_token(mu.view(shape), logvar.view(shape))
        kl_after = free_bits_kl(kl_raw, self.knobs["free_bits"])
        teacher = self._teacher_loss(z.view(shape)[:, 0], images)
        total = (
            recon
            + self.kl_weight * kl_after.sum(dim=1).mean()
            + self.knobs["teacher_weight"] * teacher
        )
        return LossParts(total, recon, kl_raw.mean(), kl_after.mean(), teacher)

    def _teacher_loss(self, first_token: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
        code = self.teacher.code(images)
        return (first_token[:, : code.shape[1]] - code).pow(2).sum(dim=1).mean()

    # -- one epoch ------------------------------------------------------------------------

    def _run_epoch(self, epoch: int, total_epochs: int) -> dict[str, float]:
        self.kl_weight = kl_warmup_weight(
            epoch, total_epochs, self.knobs["max_kl_weight"], float(self.params["warmup_fraction"])
        )
        for group in self.optimizer.param_groups:
            group["lr"] = self.knobs["lr"]
        self._train_pass()
        self.last_metrics = self.evaluate()
        return dict(self.last_metrics)

    def _train_pass(self) -> None:
        self.model.train()
        train = self.data.train
        for indices in batch_indices(
            len(train), int(self.params["batch_size"]), self.batch_generator
        ):
            loss = self.loss_parts(train[indices.to(train.device)]).total
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()

    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        """Metrics of the current model on both splits, with fixed noise (deterministic)."""
        self.model.eval()
        train = self.loss_parts(self.data.train, self.eval_noise["train"])
        val = self.loss_parts(self.data.val, self.eval_noise["val"])
        kl_raw, kl_after = float(train.kl_raw), float(train.kl_after)
        train_total, teacher = float(train.total), float(train.teacher)
        teacher_share = self.knobs["teacher_weight"] * teacher / train_total * 100.0
        return {
            "train_loss": train_total,
            "val_loss": float(val.total),
            "train_recon": float(train.recon),
            "val_recon": float(val.recon),
            "kl_raw": kl_raw,
            "kl_after": kl_after,
            "penalty_reduction": penalty_reduction(kl_raw, kl_after),
            "val_kl_raw": float(val.kl_raw),
            "val_penalty_reduction": penalty_reduction(float(val.kl_raw), float(val.kl_after)),
            "teacher_loss": teacher,
            "teacher_contribution": teacher_share if train_total > 0 else 0.0,
            "val_train_ratio": float(val.total) / train_total if train_total > 0 else 0.0,
            "kl_weight": self.kl_weight,
            "free_bits": self.knobs["free_bits"],
            "max_kl_weight": self.knobs["max_kl_weight"],
            "teacher_weight": self.knobs["teacher_weight"],
        }

    def final_metrics(self) -> dict[str, float]:
        """The evaluation after the last epoch (both splits, fixed noise).

        The same figures as the last epoch's metrics: that evaluation already ran on the final
        parameters with the last epoch's KL weight and knobs.
        """
        if not self.last_metrics:
            raise RuntimeError("final_metrics() needs at least one epoch; run epochs(n) first")
        return dict(self.last_metrics)
