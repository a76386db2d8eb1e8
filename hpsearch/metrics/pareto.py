"""Pareto math on objective vectors: losses, non-dominated sorting, crowding, hypervolume.

Pure NumPy, no Optuna. Every function works on *losses*: an ``(n, m)`` array where lower is
better in every column (``as_losses`` turns values with directions into losses).
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

Directions = Sequence[str]


def as_losses(values: npt.ArrayLike, directions: Directions) -> np.ndarray:
    """``values`` ``(n, m)`` as losses: maximized columns negated, minimized kept."""
    array = np.asarray(values, dtype=float)
    if array.ndim == 1:
        array = array.reshape(1, -1)
    signs = np.array([-1.0 if direction == "maximize" else 1.0 for direction in directions])
    if array.shape[1] != signs.size:
        raise ValueError(f"{array.shape[1]} values per row but {signs.size} directions")
    return array * signs


def dominates(a: np.ndarray, b: np.ndarray) -> bool:
    """Whether loss vector ``a`` Pareto-dominates ``b``: no worse anywhere, better somewhere."""
    return bool(np.all(a <= b) and np.any(a < b))


def nondominated_ranks(losses: np.ndarray) -> np.ndarray:
    """The non-dominated front of every row, 0 for the Pareto front (NSGA-II's sorting).

    Equal rows share a front. One objective: dense ranking of the values. Two objectives:
    O(n log n) (a sweep in lexicographic order that puts each point on the first front whose
    last point does not dominate it). More: repeated peeling of the Pareto front, O(m n^2)
    in the worst case.
    """
    losses = np.asarray(losses, dtype=float)
    if losses.shape[0] == 0:
        return np.zeros(0, dtype=int)
    if losses.shape[1] == 1:
        return np.unique(losses[:, 0], return_inverse=True)[1].reshape(-1)
    if losses.shape[1] == 2:
        return _ranks_2d(losses)
    return _ranks_by_peeling(losses)


def _ranks_2d(losses: np.ndarray) -> np.ndarray:
    order = np.lexsort((losses[:, 1], losses[:, 0]))  # by first loss, then second
    ranks = [0] * losses.shape[0]
    last_first: list[float] = []  # the last point of each front; its second loss is the
    last_second: list[float] = []  # smallest of the front and ascends with the front index
    for index, first, second in zip(
        order.tolist(), losses[order, 0].tolist(), losses[order, 1].tolist(), strict=True
    ):
        front = bisect_right(last_second, second)  # first front whose last point is worse
        if front and last_second[front - 1] == second and last_first[front - 1] == first:
            front -= 1  # a duplicate of that front's last point: not dominated by it
        if front == len(last_second):
            last_first.append(first)
            last_second.append(second)
        else:
            last_first[front], last_second[front] = first, second
        ranks[index] = front
    return np.array(ranks, dtype=int)


def _ranks_by_peeling(losses: np.ndarray) -> np.ndarray:
    ranks = np.full(losses.shape[0], -1, dtype=int)
    remaining = np.arange(losses.shape[0])
    front = 0
    while remaining.size:
        on_front = pareto_mask(losses[remaining])
        ranks[remaining[on_front]] = front
        remaining = remaining[~on_front]
        front += 1
    return ranks


def pareto_mask(losses: np.ndarray) -> np.ndarray:
    """True for the rows that no other row dominates (equal rows are all on the front).

    In lexicographic order the first remaining row is never dominated; it takes its equals onto
    the front and removes the rows it dominates, so the loop runs once per distinct front row.
    """
    losses = np.asarray(losses, dtype=float)
    n = losses.shape[0]
    order = np.lexsort(losses.T[::-1])
    ordered = losses[order]
    on_front = np.zeros(n, dtype=bool)
    remaining = np.arange(n)
    while remaining.size:
        point = ordered[remaining[0]]
        rest = ordered[remaining]
        equal = np.all(rest == point, axis=1)
        dominated = np.all(rest >= point, axis=1) & ~equal
        on_front[remaining[equal]] = True
        remaining = remaining[~(equal | dominated)]
    mask = np.zeros(n, dtype=bool)
    mask[order] = on_front
    return mask


def crowding_distances(losses: np.ndarray) -> np.ndarray:
    """NSGA-II crowding distance of each row within one front (larger is more isolated).

    Per objective, the two extreme rows get infinity and the others the gap between their
    neighbours over the front's range; the distance is the sum over objectives. Fronts of one
    or two rows are all infinite.
    """
    losses = np.asarray(losses, dtype=float)
    n, m = losses.shape
    distances = np.zeros(n)
    if n <= 2:
        return np.full(n, np.inf)
    for column in range(m):
        order = np.argsort(losses[:, column], kind="stable")
        sorted_values = losses[order, column]
        span = sorted_values[-1] - sorted_values[0]
        distances[order[0]] = distances[order[-1]] = np.inf
        if span <= 0:
            continue
        gaps = (sorted_values[2:] - sorted_values[:-2]) / span
        distances[order[1:-1]] += gaps
    return distances


def hypervolume(losses: npt.ArrayLike, reference: npt.ArrayLike) -> float:
    """The volume dominated by ``losses`` and bounded by ``reference`` (both as losses).

    Rows not strictly better than the reference in every objective add nothing. Exact: a
    sweep for two objectives, slicing along the last objective for more (fine for the fronts
    of a study, exponential in the number of objectives).
    """
    reference = np.asarray(reference, dtype=float)
    losses = np.asarray(losses, dtype=float).reshape(-1, reference.size)
    inside = losses[np.all(losses < reference, axis=1)]
    if inside.shape[0] == 0:
        return 0.0
    inside = inside[pareto_mask(inside)]
    return _volume(inside, reference)


def _volume(points: np.ndarray, reference: np.ndarray) -> float:
    if reference.size == 1:
        return float(reference[0] - points[:, 0].min())
    if reference.size == 2:
        return _area(points, reference)
    order = np.argsort(points[:, -1])
    points = points[order]
    volume = 0.0
    for index in range(points.shape[0]):
        top = points[index + 1, -1] if index + 1 < points.shape[0] else reference[-1]
        height = top - points[index, -1]
        if height > 0:
            volume += height * _volume(points[: index + 1, :-1], reference[:-1])
    return float(volume)


def _area(points: np.ndarray, reference: np.ndarray) -> float:
    order = np.lexsort((points[:, 1], points[:, 0]))
    area, lowest = 0.0, float(reference[1])
    for first, second in points[order]:
        if second < lowest:
            area += (reference[0] - first) * (lowest - second)
            lowest = float(second)
    return float(area)


def derived_reference(losses: np.ndarray, margin: float = 0.1) -> np.ndarray:
    """A reference point (as losses) just beyond the worst rows: ``worst + margin * range``
    per objective (``margin * |worst|``, or ``margin``, where every row has the same value)."""
    losses = np.asarray(losses, dtype=float)
    worst, best = losses.max(axis=0), losses.min(axis=0)
    span = worst - best
    flat = np.where(np.abs(worst) > 0, np.abs(worst), 1.0)
    return worst + margin * np.where(span > 0, span, flat)
