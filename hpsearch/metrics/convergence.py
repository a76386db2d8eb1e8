"""Convergence of per-token vectors between two iterations."""

from __future__ import annotations

import torch


def per_token_mse(current: torch.Tensor, previous: torch.Tensor) -> torch.Tensor:
    """Mean squared difference per token (row) between two ``[tokens, dim]`` matrices."""
    if current.shape != previous.shape:
        raise ValueError(
            f"shapes differ: current {tuple(current.shape)} vs previous {tuple(previous.shape)}"
        )
    return (current.detach() - previous.detach()).pow(2).mean(dim=-1)


def convergence_rate(current: torch.Tensor, previous: torch.Tensor, threshold: float) -> float:
    """Share of tokens whose vector moved less than ``threshold`` (per-token MSE) since
    the previous iteration: in [0, 1]."""
    if threshold <= 0:
        raise ValueError(f"threshold must be > 0, got {threshold}")
    moved = per_token_mse(current, previous).reshape(-1)
    return float((moved < threshold).to(torch.float64).mean())
