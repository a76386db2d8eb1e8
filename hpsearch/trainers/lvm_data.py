"""Synthetic "articles" for the ``lvm`` trainer (seed 003): unit-vector sequences drifting forward.

An article is a walk on the unit sphere of R^d. Its clean path moves along a great circle at an
article-specific angular step ``theta`` (the drift, drawn from ``[step_low, step_high]``), with
per-step jitter on the angle, and its direction of travel turns a little at every step
(``curvature``), so the path never repeats. Each observed frame is the clean point plus Gaussian
noise of norm about ``noise``, renormalized. The next frame is thus predictable from the context
(extrapolate the motion), while the last frame stays close to it: copying it is the tempting
shortcut.

A split holds whole articles (``[articles, length, d]``) and every window of
``context + horizon`` consecutive frames in them: ``context`` frames in, the next ``horizon``
frames ahead (the target is the first of them). Train and val come from one generator and are
split by article; the OOD split comes from a generator with other drift and noise parameters.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch.nn import functional

from hpsearch.metrics.five_cat import EvalSet


def unit(vectors: torch.Tensor) -> torch.Tensor:
    """Rows scaled to unit norm."""
    return functional.normalize(vectors, dim=-1)


def _orthogonal_unit(vectors: torch.Tensor, to: torch.Tensor) -> torch.Tensor:
    """The part of ``vectors`` orthogonal to the unit rows ``to``, normalized."""
    return unit(vectors - (vectors * to).sum(-1, keepdim=True) * to)


@dataclass(frozen=True)
class ArticleGenerator:
    """Draws articles: a topic plus a great-circle drift with jitter and turning, plus
    observation noise, in a ``manifold_dim``-dimensional subspace of R^``dim``.

    The subspace is fixed by ``basis_seed`` (shared by every split drawn with the same seed), so
    the model sees ``dim``-dimensional vectors, as the seed's 768-d embeddings, while the
    articles have few degrees of freedom; ``manifold_dim >= dim`` uses the whole space.
    """

    dim: int = 768
    manifold_dim: int = 32
    step_low: float = 0.8
    step_high: float = 1.0
    jitter: float = 0.05
    curvature: float = 0.1
    noise: float = 0.2
    topic: float = 1.0
    basis_seed: int = 0

    def sample(self, count: int, length: int, generator: torch.Generator) -> torch.Tensor:
        """``count`` articles of ``length`` unit frames, ``[count, length, dim]``."""
        width = min(self.manifold_dim, self.dim)
        point = unit(torch.randn(count, width, generator=generator))
        heading = _orthogonal_unit(torch.randn(count, width, generator=generator), point)
        step = self.step_low + (self.step_high - self.step_low) * torch.rand(
            count, 1, generator=generator
        )
        path = torch.empty(count, length, width)
        for position in range(length):
            path[:, position] = point
            angle = step + self.jitter * torch.randn(count, 1, generator=generator)
            point, heading = (
                torch.cos(angle) * point + torch.sin(angle) * heading,
                -torch.sin(angle) * point + torch.cos(angle) * heading,
            )
            turn = _orthogonal_unit(torch.randn(count, width, generator=generator), point)
            heading = _orthogonal_unit(heading + self.curvature * turn, point)
        noise = torch.randn(count, length, width, generator=generator) / math.sqrt(width)
        topic = unit(torch.randn(count, 1, width, generator=generator))
        frames = unit(self.topic * topic + path + self.noise * noise)
        return frames if width == self.dim else frames @ self.basis().T

    def basis(self) -> torch.Tensor:
        """The fixed orthonormal ``[dim, manifold_dim]`` embedding of the articles' subspace."""
        seeded = torch.Generator().manual_seed(self.basis_seed)
        basis, _ = torch.linalg.qr(torch.randn(self.dim, self.manifold_dim, generator=seeded))
        return basis


class ArticleSplit:
    """Whole articles ``[articles, length, d]`` and every window of ``context + horizon`` frames."""

    def __init__(self, articles: torch.Tensor, context: int, horizon: int) -> None:
        count, length, _ = articles.shape
        starts_per_article = length - context - horizon + 1
        if starts_per_article < 1:
            raise ValueError(
                f"articles of {length} frames are too short for windows of "
                f"{context}+{horizon} frames"
            )
        self.articles = articles
        self.context = context
        self.horizon = horizon
        self.starts_per_article = starts_per_article
        device = articles.device
        self.article_of = torch.arange(count, device=device).repeat_interleave(starts_per_article)
        self.start = torch.arange(starts_per_article, device=device).repeat(count)
        self._offsets = torch.arange(context + horizon, device=device)

    def __len__(self) -> int:
        return int(self.article_of.shape[0])

    @property
    def dim(self) -> int:
        return int(self.articles.shape[-1])

    def frames(self, index: torch.Tensor) -> torch.Tensor:
        """Windows ``index`` as ``[n, context + horizon, d]``: context first, then the future."""
        positions = self.start[index, None] + self._offsets
        return self.articles[self.article_of[index, None], positions]

    def eval_set(self, limit: int, seed: int) -> EvalSet:
        """Up to ``limit`` windows drawn without replacement (fixed by ``seed``) for 5CAT.

        The retrieval bank is every frame of the split's articles; positions are the window
        starts relative to the article (for the bins of gate E).
        """
        generator = torch.Generator().manual_seed(seed)
        order = torch.randperm(len(self), generator=generator)[:limit].to(self.articles.device)
        length = self.articles.shape[1]
        target_index = self.article_of[order] * length + self.start[order] + self.context
        return EvalSet(
            frames=self.frames(order),
            context=self.context,
            bank=self.articles.reshape(-1, self.dim),
            target_index=target_index,
            positions=self.start[order].float() / self.starts_per_article,
        )


@dataclass(frozen=True)
class LvmData:
    """The three splits of one data set."""

    train: ArticleSplit
    val: ArticleSplit
    ood: ArticleSplit


def make_lvm_data(
    generator: ArticleGenerator,
    ood_generator: ArticleGenerator,
    *,
    train_articles: int,
    val_articles: int,
    ood_articles: int,
    length: int,
    context: int,
    horizon: int,
    seed: int,
    device: torch.device | None = None,
) -> LvmData:
    """Train / val split by article from ``generator``; OOD articles from ``ood_generator``."""
    rng = torch.Generator().manual_seed(seed)
    articles = generator.sample(train_articles + val_articles, length, rng)
    order = torch.randperm(train_articles + val_articles, generator=rng)
    ood = ood_generator.sample(ood_articles, length, rng)
    device = device or torch.device("cpu")

    def split(tensor: torch.Tensor) -> ArticleSplit:
        return ArticleSplit(tensor.to(device), context, horizon)

    return LvmData(
        train=split(articles[order[:train_articles]]),
        val=split(articles[order[train_articles:]]),
        ood=split(ood),
    )
