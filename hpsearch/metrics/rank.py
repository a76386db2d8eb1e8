"""Effective rank (Roy & Vetterli 2007): exp of the entropy of normalized singular values."""

from __future__ import annotations

import torch


def effective_rank(matrix: torch.Tensor) -> float:
    """Effective rank of a 2-D matrix (rows are samples, columns are dimensions).

    ``exp(-sum p_i log p_i)`` with ``p_i = s_i / sum(s)`` over the singular values ``s``.
    It is 1 for a rank-one matrix and ``min(rows, cols)`` when all singular values are equal.
    A zero matrix has effective rank 0.
    """
    if matrix.dim() != 2:
        raise ValueError(f"effective_rank needs a 2-D matrix, got shape {tuple(matrix.shape)}")
    singular_values = torch.linalg.svdvals(matrix.detach().to(torch.float64))
    total = singular_values.sum()
    if total <= 0:
        return 0.0
    probabilities = singular_values / total
    probabilities = probabilities[probabilities > 0]
    entropy = -(probabilities * probabilities.log()).sum()
    return float(entropy.exp())


def effective_rank_ratio(matrix: torch.Tensor) -> float:
    """Effective rank divided by the dimension (number of columns): in [0, 1]."""
    return effective_rank(matrix) / matrix.shape[1]
