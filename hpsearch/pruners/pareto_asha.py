"""``pareto-asha``: multi-objective asynchronous successive halving (MO-ASHA).

Optuna cannot prune multi-objective trials (``Trial.report`` raises), so the objective calls
``ParetoAshaPruner.judge`` after each epoch. At a rung (an epoch in ``rungs``: the spec's list,
or ``min_epochs * eta**k`` below the spec's epochs) the trial's objective vector joins those of
every trial that reached the rung before it, in any worker, and the trial continues only when
its rank among them is within the top ``max(1, n // eta)`` (n counts this trial). The ranking
(``rung_standing``):

1. feasibility at the rung: trials whose known constraint values all hold come first;
2. within each of the two groups, the non-dominated front (NSGA-II sorting, directions
   respected);
3. within a front, the crowding distance, larger first.

A trial ranks after the trials strictly ahead of it on these keys; ties favour it. Nothing
waits for a rung to fill (asynchronous, as in ASHA): the first trial at a rung always
continues, and a later one must beat enough of the earlier ones. The decision reads only the
rung's own vectors (``rung_store``), never every trial of the study.

How far an infeasible trial is from feasibility does not rank it: mid-training constraint
values can be a poor guide to the final ones. Replayed on the epoch vectors of cvfp trials,
ranking infeasible trials by their violation gave mixed results, a few points better in some
settings and, in one, none of the hypervolume where this ranking kept 94%. Where even
feasibility mid-training says little, option ``constraints: false`` ranks every trial by its
objectives alone.

Options: ``rungs`` (epochs) or ``min_epochs`` (default 1) and ``eta`` (3); ``min_trials`` (1):
a rung prunes only once that many trials reached it; ``constraints`` (true);
``reference_point``: objective values that bound the study's hypervolume (read by the
objective; pruning does not use it).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import optuna
from optuna.storages import BaseStorage

from hpsearch.metrics.pareto import as_losses, crowding_distances, nondominated_ranks
from hpsearch.pruners.rung_store import RungEntries, RungStore, rung_store_for
from hpsearch.storage.internals import backend_of

PRUNER_NAME = "pareto-asha"
OPTIONS = ("rungs", "min_epochs", "eta", "min_trials", "constraints", "reference_point")


@dataclass(frozen=True)
class Standing:
    """Where one trial stands at a rung: ``rank`` 1 is best (ties share the better rank),
    ``front`` is its non-dominated front (1 = Pareto front) within its feasibility group."""

    rank: int
    front: int
    feasible: bool


def rung_standing(losses: np.ndarray, violations: np.ndarray, index: int) -> Standing:
    """The standing of row ``index`` among ``losses`` ``(n, m)`` (lower is better) and their
    total constraint violations ``(n,)`` (0 is feasible)."""
    feasible = violations <= 0.0
    own_group = bool(feasible[index])
    ahead = 0 if own_group else int(np.count_nonzero(feasible))
    peers = np.flatnonzero(feasible == own_group)
    peer_losses = losses[peers]
    fronts = nondominated_ranks(peer_losses)
    own = int(np.flatnonzero(peers == index)[0])
    front = fronts[own]
    on_front = np.flatnonzero(fronts == front)
    crowding = crowding_distances(peer_losses[on_front])
    own_crowding = crowding[int(np.flatnonzero(on_front == own)[0])]
    better_fronts = int(np.count_nonzero(fronts < front))
    less_crowded = int(np.count_nonzero(crowding > own_crowding))
    return Standing(
        rank=ahead + better_fronts + less_crowded + 1, front=int(front) + 1, feasible=own_group
    )


def keep_count(trials_at_rung: int, eta: float) -> int:
    """How many of the trials at a rung continue: the top ``1/eta``, at least one."""
    return max(1, math.floor(trials_at_rung / eta))


@dataclass(frozen=True)
class RungDecision:
    """The verdict at one rung, as stored on the trial (user attr ``rung_decisions``)."""

    rung: int
    rank: int
    front: int
    feasible: bool
    trials_at_rung: int
    keep: int
    proceed: bool

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def verdict(self) -> str:
        """``rank 4 of 5 at rung 3 (front 2), only the top 1 continue``."""
        feasibility = "" if self.feasible else ", infeasible"
        return (
            f"rank {self.rank} of {self.trials_at_rung} at rung {self.rung} "
            f"(front {self.front}{feasibility}), only the top {self.keep} continue"
        )

    def reason(self) -> str:
        """Why the trial was stopped; starts with ``pruner pareto-asha at epoch N``."""
        return f"pruner {PRUNER_NAME} at epoch {self.rung}: {self.verdict()}"


def decide(
    entries: RungEntries,
    number: int,
    rung: int,
    directions: Sequence[str],
    *,
    eta: float,
    min_trials: int = 1,
    constraints: bool = True,
) -> RungDecision:
    """The verdict for trial ``number`` among the ``entries`` of its rung (``constraints``
    False: every trial counts as feasible)."""
    index = entries.index_of(number)
    violations = entries.violations if constraints else np.zeros_like(entries.violations)
    standing = rung_standing(as_losses(entries.values, directions), violations, index)
    trials = len(entries.numbers)
    keep = keep_count(trials, eta)
    proceed = trials < min_trials or standing.rank <= keep
    return RungDecision(
        rung, standing.rank, standing.front, standing.feasible, trials, keep, proceed
    )


def geometric_rungs(min_epochs: int, eta: float, epochs: int) -> list[int]:
    """``min_epochs * eta**k`` (rounded) for every k that stays below ``epochs``."""
    rungs: list[int] = []
    rung = float(min_epochs)
    while round(rung) < epochs:
        if not rungs or round(rung) > rungs[-1]:
            rungs.append(round(rung))
        rung *= eta
    return rungs


class ParetoAshaPruner(optuna.pruners.BasePruner):
    """MO-ASHA over the rungs of one spec; the objective calls ``judge`` after each epoch.

    It is also the study's Optuna pruner so that the study records it, but Optuna never asks a
    multi-objective study's pruner, and for a single objective the objective judges too:
    ``prune`` always answers False.
    """

    def __init__(
        self,
        directions: Sequence[str],
        rungs: Sequence[int],
        *,
        eta: float = 3.0,
        min_trials: int = 1,
        constraints: bool = True,
        reference_point: Sequence[float] | None = None,
        store: RungStore | None = None,
    ) -> None:
        self.directions = list(directions)
        self.rungs = sorted(set(rungs))
        self.eta = eta
        self.min_trials = min_trials
        self.constraints = constraints
        self.reference_point = None if reference_point is None else list(reference_point)
        self._store = store
        self._stores: dict[int, RungStore] = {}

    @classmethod
    def from_options(
        cls, directions: Sequence[str], epochs: int, options: Mapping[str, Any]
    ) -> ParetoAshaPruner:
        """From a spec's ``pruner:`` options; ValueError naming the bad option and the fix."""
        unknown = sorted(set(options) - set(OPTIONS))
        if unknown:
            raise ValueError(f"unknown option(s) {', '.join(unknown)}; use {', '.join(OPTIONS)}")
        eta = _number(options, "eta", 3.0, minimum=1.0, strict=True)
        min_epochs = int(_number(options, "min_epochs", 1, minimum=1))
        rungs = _rungs(options, epochs) or geometric_rungs(min_epochs, eta, epochs)
        reference = options.get("reference_point")
        if reference is not None and (
            not isinstance(reference, list | tuple) or len(reference) != len(directions)
        ):
            raise ValueError(
                f"reference_point must list {len(directions)} numbers, one per objective"
            )
        constraints = options.get("constraints", True)
        if not isinstance(constraints, bool):
            raise ValueError(f"constraints must be true or false, got {constraints!r}")
        return cls(
            directions,
            rungs,
            eta=eta,
            min_trials=int(_number(options, "min_trials", 1, minimum=1)),
            constraints=constraints,
            reference_point=reference,
        )

    def prune(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> bool:
        return False

    def judge(
        self, trial: optuna.Trial, epoch: int, values: Sequence[float], violation: float
    ) -> RungDecision | None:
        """At a rung, record ``values`` (spec order) and decide; None at other epochs."""
        if epoch not in self.rungs:
            return None
        entries = self.store_for(trial.storage).record(trial, epoch, values, violation)
        return decide(
            entries,
            trial.number,
            epoch,
            self.directions,
            eta=self.eta,
            min_trials=self.min_trials,
            constraints=self.constraints,
        )

    def store_for(self, storage: BaseStorage) -> RungStore:
        """The rung store of ``storage`` (the one given at construction, if any)."""
        if self._store is not None:
            return self._store
        key = id(backend_of(storage))
        if key not in self._stores:
            self._stores[key] = rung_store_for(storage)
        return self._stores[key]


def _number(
    options: Mapping[str, Any], key: str, default: float, *, minimum: float, strict: bool = False
) -> float:
    value = options.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{key} must be a number, got {value!r}")
    if value < minimum or (strict and value == minimum):
        bound = f"> {minimum:g}" if strict else f">= {minimum:g}"
        raise ValueError(f"{key} must be {bound}, got {value}")
    return float(value)


def _rungs(options: Mapping[str, Any], epochs: int) -> list[int]:
    rungs = options.get("rungs")
    if rungs is None:
        return []
    if (
        not isinstance(rungs, list)
        or not rungs
        or not all(isinstance(r, int) and not isinstance(r, bool) for r in rungs)
    ):
        raise ValueError(f"rungs must be a list of epoch numbers, e.g. [2, 4, 8]; got {rungs!r}")
    if sorted(set(rungs)) != rungs or rungs[0] < 1 or rungs[-1] >= epochs:
        raise ValueError(
            f"rungs {rungs} must increase, from 1 to below the spec's epochs ({epochs})"
        )
    return list(rungs)
