"""Effective rank and convergence rate on hand-made tensors."""

from __future__ import annotations

import pytest
import torch

from hpsearch.metrics import convergence_rate, effective_rank, effective_rank_ratio, per_token_mse


def test_effective_rank_of_rank_one_matrix_is_one() -> None:
    column = torch.arange(1.0, 9.0).unsqueeze(1)
    row = torch.tensor([[1.0, -2.0, 0.5, 3.0]])
    assert effective_rank(column @ row) == pytest.approx(1.0, abs=1e-6)


def test_effective_rank_of_identity_equals_dim() -> None:
    assert effective_rank(torch.eye(16)) == pytest.approx(16.0, rel=1e-9)


def test_effective_rank_of_orthogonal_matrix_equals_dim() -> None:
    generator = torch.Generator().manual_seed(0)
    orthogonal, _ = torch.linalg.qr(torch.randn(12, 12, generator=generator, dtype=torch.float64))
    assert effective_rank(orthogonal) == pytest.approx(12.0, rel=1e-6)
    assert effective_rank_ratio(orthogonal) == pytest.approx(1.0, rel=1e-6)


def test_effective_rank_of_scaled_orthonormal_rows_is_number_of_rows() -> None:
    # Three orthogonal rows of equal norm in 8 dimensions: rank 3, ratio 3/8.
    matrix = 5.0 * torch.eye(8)[:3]
    assert effective_rank(matrix) == pytest.approx(3.0, rel=1e-9)
    assert effective_rank_ratio(matrix) == pytest.approx(3.0 / 8.0, rel=1e-9)


def test_effective_rank_of_zero_matrix_is_zero() -> None:
    assert effective_rank(torch.zeros(5, 4)) == 0.0
    assert effective_rank_ratio(torch.zeros(5, 4)) == 0.0


@pytest.mark.parametrize("shape", [(64, 8), (8, 64), (100, 100)])
def test_effective_rank_ratio_is_in_unit_interval(shape: tuple[int, int]) -> None:
    generator = torch.Generator().manual_seed(1)
    ratio = effective_rank_ratio(torch.randn(*shape, generator=generator))
    assert 0.0 <= ratio <= 1.0


def test_effective_rank_needs_a_matrix() -> None:
    with pytest.raises(ValueError, match="2-D"):
        effective_rank(torch.ones(2, 3, 4))


def test_per_token_mse_is_the_mean_over_the_last_dim() -> None:
    current = torch.tensor([[1.0, 1.0], [0.0, 0.0]])
    previous = torch.tensor([[0.0, 0.0], [0.0, 2.0]])
    assert per_token_mse(current, previous).tolist() == [1.0, 2.0]


def test_convergence_rate_counts_tokens_below_threshold() -> None:
    previous = torch.zeros(4, 3)
    # Per-token MSE: 0, 0.01, 0.25, 1.0 -> with threshold 0.1, two of four tokens moved less.
    current = torch.tensor([[0.0] * 3, [0.1] * 3, [0.5] * 3, [1.0] * 3])
    assert convergence_rate(current, previous, 0.1) == pytest.approx(0.5)
    assert convergence_rate(current, previous, 10.0) == pytest.approx(1.0)
    assert convergence_rate(current, previous, 1e-6) == pytest.approx(0.25)


def test_convergence_rate_is_strict_at_the_threshold() -> None:
    previous = torch.zeros(2, 1)
    current = torch.tensor([[0.5], [0.1]])  # MSE 0.25 and 0.01
    assert convergence_rate(current, previous, 0.25) == pytest.approx(0.5)


def test_convergence_rate_works_on_stream_batches() -> None:
    previous = torch.zeros(2, 3, 4)  # [streams, positions, dim]
    current = previous.clone()
    current[0, 0] = 1.0
    assert convergence_rate(current, previous, 0.5) == pytest.approx(5 / 6)


def test_shape_mismatch_raises() -> None:
    with pytest.raises(ValueError, match="shapes differ"):
        convergence_rate(torch.zeros(3, 4), torch.zeros(4, 4), 0.1)
    with pytest.raises(ValueError, match="shapes differ"):
        per_token_mse(torch.zeros(3, 4), torch.zeros(3, 5))


def test_non_positive_threshold_raises() -> None:
    with pytest.raises(ValueError, match="threshold"):
        convergence_rate(torch.zeros(2, 2), torch.zeros(2, 2), 0.0)
