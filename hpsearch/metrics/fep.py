"""Metrics of free-energy learning (seed 004): prior separation, prior complexity and the CE/KL
gradient ratio."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch


def prior_separation(prior_mu: torch.Tensor) -> float:
    """Mean pairwise Euclidean distance between the rows of ``prior_mu`` ``[vocab, dim]``.

    Falls towards 0 when the token priors converge together (the seed's issue 4); 0 for fewer
    than two rows.
    """
    if prior_mu.dim() != 2:
        raise ValueError(f"prior_separation needs a 2-D matrix, got shape {tuple(prior_mu.shape)}")
    if prior_mu.shape[0] < 2:
        return 0.0
    return float(torch.pdist(prior_mu.detach().to(torch.float64)).mean())


def gradient_ratio(numerator: float, denominator: float) -> float:
    """``numerator / denominator`` of two gradient magnitudes; ``inf`` (or NaN for 0/0) when the
    denominator is 0, so a vanished KL gradient never looks like a weak observation term."""
    if denominator == 0.0:
        return math.nan if numerator == 0.0 else math.inf
    return numerator / denominator


def prior_complexity(
    priors: Sequence[torch.Tensor], initial: Sequence[torch.Tensor], prior_sigma: float
) -> float:
    """How far learning moved the priors: the mean over all prior rows of
    ``KL(N(m, s^2 I) || N(m0, s^2 I)) = |m - m0|^2 / (2 s^2)`` (``m0`` the row at initialisation,
    ``s = prior_sigma``), the parameter-level complexity term of the free energy."""
    if len(priors) != len(initial) or not priors:
        raise ValueError(
            f"prior_complexity needs matching prior lists, got {len(priors)} and {len(initial)}"
        )
    squared = sum(
        float((m.detach() - m0).pow(2).sum()) for m, m0 in zip(priors, initial, strict=True)
    )
    rows = sum(m.shape[0] for m in priors)
    return squared / (2 * prior_sigma**2 * rows)
