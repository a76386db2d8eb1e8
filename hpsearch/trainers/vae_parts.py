"""Parts shared by the ``vae`` and ``lbo`` trainers: digits data, an MLP VAE, the loss pieces.

Data is scikit-learn's bundled 8x8 digits (``sklearn.datasets.load_digits``: 1797 images, no
download), scaled to [0, 1] and split train / val with a fixed seed. The VAE is an MLP with a
diagonal Gaussian posterior over a flat latent that the trainers view as groups (``vae``: tokens
of equal size; ``lbo``: a core and a detail group). The decoder gives Bernoulli logits per pixel.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch
from torch import nn
from torch.nn import functional

IMAGE_SIDE = 8
IMAGE_PIXELS = IMAGE_SIDE * IMAGE_SIDE
LOGVAR_LIMIT = 10.0


@dataclass(frozen=True)
class DigitSplits:
    """Train and validation images ``[N, 64]`` in [0, 1]."""

    train: torch.Tensor
    val: torch.Tensor


@lru_cache(maxsize=1)
def _digit_pixels() -> np.ndarray:
    from sklearn.datasets import load_digits

    return (load_digits().data / 16.0).astype(np.float32)


def load_digit_splits(
    val_fraction: float, data_seed: int, device: torch.device | str = "cpu"
) -> DigitSplits:
    """The digits split into train / val by a permutation seeded with ``data_seed``."""
    pixels = torch.from_numpy(_digit_pixels())
    order = torch.randperm(len(pixels), generator=torch.Generator().manual_seed(data_seed))
    n_val = max(1, round(len(pixels) * val_fraction))
    return DigitSplits(train=pixels[order[n_val:]].to(device), val=pixels[order[:n_val]].to(device))


class MlpVae(nn.Module):
    """``x [B, 64] -> (mu, logvar) [B, latent]``; ``z [B, latent] -> logits [B, 64]``."""

    def __init__(self, latent_size: int, hidden_dim: int, input_dim: int = IMAGE_PIXELS) -> None:
        super().__init__()
        self.latent_size = latent_size
        self.encoder = nn.Sequential(
            nn.Linear(input_dim, hidden_dim), nn.SiLU(), nn.Linear(hidden_dim, 2 * latent_size)
        )
        self.decoder = nn.Sequential(
            nn.Linear(latent_size, hidden_dim), nn.SiLU(), nn.Linear(hidden_dim, input_dim)
        )

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Posterior mean and log-variance (clamped to +-10 so exp() stays finite)."""
        mu, logvar = self.encoder(x).chunk(2, dim=-1)
        return mu, logvar.clamp(-LOGVAR_LIMIT, LOGVAR_LIMIT)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return self.decoder(z)

    def forward(
        self, x: torch.Tensor, noise: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(logits, mu, logvar)`` with ``z = mu + exp(logvar / 2) * noise`` (fresh noise
        unless given)."""
        mu, logvar = self.encode(x)
        if noise is None:
            noise = torch.randn_like(mu)
        z = mu + (0.5 * logvar).exp() * noise
        return self.decode(z), mu, logvar


def scale_input_layer(model: MlpVae, factor: float) -> None:
    """Multiply the encoder's input layer (weights and bias) by ``factor``: with a small
    factor the hidden features start nearly input-independent, so the posterior means spread
    only as fast as training grows those features (the ``lbo`` trainer's initialisation)."""
    first = model.encoder[0]
    if not isinstance(first, nn.Linear):
        raise TypeError(f"encoder[0] is {type(first).__name__}, not Linear")
    with torch.no_grad():
        first.weight.mul_(factor)
        first.bias.mul_(factor)


def set_output_bias_to_mean(model: MlpVae, images: torch.Tensor) -> None:
    """Set the decoder's output bias to the logit of the mean pixel of ``images``, so the
    untrained decoder already predicts the mean image (clamped to [1e-3, 1 - 1e-3] per pixel:
    a pixel that is always 0 gets a finite logit)."""
    last = model.decoder[-1]
    if not isinstance(last, nn.Linear):
        raise TypeError(f"decoder[-1] is {type(last).__name__}, not Linear")
    mean = images.mean(dim=0).clamp(1e-3, 1.0 - 1e-3)
    with torch.no_grad():
        last.bias.copy_(torch.logit(mean))


def recon_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Bernoulli negative log-likelihood per image (summed over pixels, mean over the batch)."""
    per_pixel = functional.binary_cross_entropy_with_logits(logits, target, reduction="none")
    return per_pixel.sum(dim=-1).mean()


def kl_warmup_weight(
    epoch: int, total_epochs: int, max_weight: float, warmup_fraction: float
) -> float:
    """KL weight for ``epoch`` (from 1): linear in epoch progress, reaching ``max_weight`` once
    ``epoch / total_epochs >= warmup_fraction`` (at once with ``warmup_fraction`` 0)."""
    if warmup_fraction <= 0:
        return max_weight
    progress = epoch / max(total_epochs, 1)
    return max_weight * min(1.0, progress / warmup_fraction)


def batch_indices(n: int, batch_size: int, generator: torch.Generator) -> Iterator[torch.Tensor]:
    """A fresh permutation of ``range(n)`` cut into batches (the last one may be smaller)."""
    order = torch.randperm(n, generator=generator)
    yield from order.split(batch_size)


@dataclass(frozen=True)
class PcaTeacher:
    """A fixed teacher in closed form: the whitened PCA code of each image.

    ``code(x) = (x - mean) @ components.T / scale``: unit variance per component on the
    training images. The student matches it with the posterior mean of its first latent token.
    """

    mean: torch.Tensor
    components: torch.Tensor
    scale: torch.Tensor

    @classmethod
    def fit(cls, train: torch.Tensor, n_components: int) -> PcaTeacher:
        """PCA of the training images by SVD (no iterations, no randomness)."""
        mean = train.mean(dim=0)
        _, singular, vh = torch.linalg.svd(train - mean, full_matrices=False)
        k = min(n_components, vh.shape[0])
        scale = singular[:k] / max(len(train) - 1, 1) ** 0.5
        return cls(mean=mean, components=vh[:k], scale=scale.clamp(min=1e-6))

    def code(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) @ self.components.T / self.scale
