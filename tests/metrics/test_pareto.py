"""Pareto math: non-dominated sorting, crowding distance, hypervolume."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from hpsearch.metrics.pareto import (
    as_losses,
    crowding_distances,
    derived_reference,
    dominates,
    hypervolume,
    nondominated_ranks,
    pareto_mask,
)


def brute_force_ranks(losses: np.ndarray) -> np.ndarray:
    """Fronts by definition: peel the rows that no remaining row dominates."""
    ranks = np.full(len(losses), -1)
    front = 0
    while (ranks == -1).any():
        remaining = np.flatnonzero(ranks == -1)
        for i in remaining:
            if not any(dominates(losses[j], losses[i]) for j in remaining if j != i):
                ranks[i] = front
        front += 1
    return ranks


@pytest.mark.parametrize("objectives", [1, 2, 3, 4])
def test_nondominated_ranks_match_the_definition_duplicates_included(objectives: int) -> None:
    rng = np.random.default_rng(objectives)
    for size in (1, 2, 9, 40):
        losses = rng.integers(0, 5, size=(size, objectives)).astype(float)
        expected = brute_force_ranks(losses)
        assert nondominated_ranks(losses).tolist() == expected.tolist()
        assert pareto_mask(losses).tolist() == (expected == 0).tolist()


def test_as_losses_negates_maximized_objectives() -> None:
    losses = as_losses([[1.0, 2.0], [3.0, 4.0]], ["maximize", "minimize"])
    assert losses.tolist() == [[-1.0, 2.0], [-3.0, 4.0]]
    with pytest.raises(ValueError, match="2 values per row but 3 directions"):
        as_losses([[1.0, 2.0]], ["minimize"] * 3)


def test_crowding_distance_favours_the_extremes_and_the_isolated() -> None:
    front = np.array([[0.0, 4.0], [1.0, 3.0], [3.5, 0.5], [4.0, 0.0]])
    distances = crowding_distances(front)
    assert np.isinf(distances[[0, 3]]).all()
    # (3.5 - 0) / 4 + (4 - 0.5) / 4 against (4 - 1) / 4 + (3 - 0) / 4
    assert distances[1:3].tolist() == pytest.approx([1.75, 1.5])
    assert np.isinf(crowding_distances(front[:2])).all()


def test_hypervolume_of_a_staircase_and_of_a_cube_corner() -> None:
    staircase = np.array([[1.0, 3.0], [2.0, 2.0], [3.0, 1.0], [3.0, 3.0]])  # last one dominated
    assert hypervolume(staircase, [4.0, 4.0]) == pytest.approx(3 + 2 + 1)
    corners = np.array([[0.0, 1.0, 1.0], [1.0, 0.0, 1.0], [1.0, 1.0, 0.0]])
    # three 2x1x1 boxes, overlapping pairwise and all three in the same unit cube
    assert hypervolume(corners, [2.0, 2.0, 2.0]) == pytest.approx(3 * 2 - 3 * 1 + 1)
    assert hypervolume(np.array([[5.0, 0.0]]), [4.0, 4.0]) == 0.0  # outside the reference


def test_hypervolume_matches_inclusion_exclusion_on_random_points() -> None:
    rng = np.random.default_rng(7)
    points = rng.random((6, 3))
    reference = np.ones(3)
    total = 0.0
    for size in range(1, len(points) + 1):
        for subset in itertools.combinations(points, size):
            corner = np.max(subset, axis=0)
            total += (-1) ** (size + 1) * float(np.prod(reference - corner))
    assert hypervolume(points, reference) == pytest.approx(total)


def test_derived_reference_lies_beyond_the_worst_values() -> None:
    losses = np.array([[0.0, 10.0], [2.0, 5.0]])
    assert derived_reference(losses).tolist() == pytest.approx([2.2, 10.5])
    assert derived_reference(np.array([[3.0, 0.0]])).tolist() == pytest.approx([3.3, 0.1])
