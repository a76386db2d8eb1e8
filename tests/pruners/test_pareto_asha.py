"""pareto-asha's rung logic on hand-made objective vectors (no store, no training)."""

from __future__ import annotations

from collections.abc import Sequence
from types import SimpleNamespace
from typing import Any

import optuna
import pytest
from toy_spec import toy_spec

from hpsearch.errors import SpecError
from hpsearch.objectives import make_pruner
from hpsearch.pruners.pareto_asha import (
    ParetoAshaPruner,
    RungDecision,
    decide,
    geometric_rungs,
    keep_count,
)
from hpsearch.pruners.rung_store import RungEntries, RungStore
from hpsearch.search_spaces import spec_from_dict

MIN_MIN = ["minimize", "minimize"]


def verdict(
    rows: Sequence[tuple[float, ...]],
    who: int,
    directions: Sequence[str] = MIN_MIN,
    violations: Sequence[float] | None = None,
    constraints: bool = True,
) -> RungDecision:
    """The decision for row ``who`` among ``rows`` (trial numbers are the row indices)."""
    violations = violations or [0.0] * len(rows)
    entries = RungEntries.from_rows(
        [(n, row, v) for n, (row, v) in enumerate(zip(rows, violations, strict=True))]
    )
    return decide(entries, who, 4, directions, eta=3, constraints=constraints)


# Six trials at a rung (eta 3: the top 2 continue). Fronts when both are minimized: {0, 1},
# {2, 3} (2 is dominated by 1 only, 3 by 0 only), {4}, {5} (dominated by everyone).
SIX = [(1.0, 5.0), (4.0, 1.0), (4.5, 1.5), (3.0, 6.0), (5.0, 5.5), (6.0, 7.0)]


def test_a_pareto_trial_continues_and_a_dominated_one_stops() -> None:
    pareto = verdict(SIX, 0)
    assert (pareto.proceed, pareto.rank, pareto.front, pareto.keep) == (True, 1, 1, 2)
    dominated = verdict(SIX, 5)
    assert not dominated.proceed
    assert (dominated.rank, dominated.front, dominated.trials_at_rung) == (6, 4, 6)
    assert verdict(SIX, 2).rank == 3  # second front: behind both Pareto trials
    assert dominated.reason() == (
        "pruner pareto-asha at epoch 4: rank 6 of 6 at rung 4 (front 4), only the top 2 continue"
    )


def test_directions_are_respected() -> None:
    assert not verdict(SIX, 5).proceed
    best_when_maximized = verdict(SIX, 5, directions=["maximize", "maximize"])
    assert (best_when_maximized.proceed, best_when_maximized.rank) == (True, 1)
    mixed = verdict(SIX, 0, directions=["maximize", "minimize"])  # small x is now bad
    assert (mixed.proceed, mixed.front, mixed.rank) == (False, 2, 5)
    assert verdict(SIX, 5, directions=["maximize", "minimize"]).rank == 1


def test_crowding_distance_breaks_ties_within_a_front() -> None:
    front = [(0.0, 4.0), (1.0, 3.0), (3.5, 0.5), (4.0, 0.0), (5.0, 5.0), (6.0, 6.0)]
    ranks = [verdict(front, who).rank for who in range(4)]
    assert ranks == [1, 3, 4, 1]  # the extremes, then the more isolated interior point
    assert [verdict(front, who).front for who in range(4)] == [1, 1, 1, 1]


def test_infeasible_trials_rank_after_feasible_ones() -> None:
    violations = [0.0, 0.0, 0.0, 0.0, 0.3, 0.1]
    rows = [(5.0, 5.0), (6.0, 6.0), (7.0, 7.0), (8.0, 8.0), (0.0, 0.0), (9.0, 9.0)]
    best_values_but_infeasible = verdict(rows, 4, violations=violations)
    assert not best_values_but_infeasible.proceed
    assert (best_values_but_infeasible.rank, best_values_but_infeasible.front) == (5, 1)
    assert not best_values_but_infeasible.feasible
    assert verdict(rows, 1, violations=violations).rank == 2
    assert "infeasible" in best_values_but_infeasible.reason()
    ignoring = verdict(rows, 4, violations=violations, constraints=False)
    assert (ignoring.rank, ignoring.feasible, ignoring.proceed) == (1, True, True)


def test_among_infeasible_trials_the_objectives_decide_not_the_violation() -> None:
    rows = [(1.0, 1.0), (2.0, 2.0), (3.0, 3.0)]
    assert verdict(rows, 0, violations=[0.9, 0.1, 0.5]).rank == 1
    assert verdict(rows, 2, violations=[0.9, 0.1, 0.5]).rank == 3


class MemoryStore(RungStore):
    """A rung store in a dict, for arrival-order tests."""

    def __init__(self) -> None:
        self.rungs: dict[int, list[tuple[int, Sequence[float], float]]] = {}

    def record(
        self, trial: Any, rung: int, values: Sequence[float], violation: float
    ) -> RungEntries:
        self.rungs.setdefault(rung, []).append((trial.number, values, violation))
        return RungEntries.from_rows(self.rungs[rung])


def arrive(pruner: ParetoAshaPruner, order: Sequence[int]) -> dict[int, bool]:
    """Trials of SIX reach rung 2 in ``order``; whether each one continues."""
    outcome = {}
    for number in order:
        trial: Any = SimpleNamespace(number=number, storage=None)
        decision = pruner.judge(trial, 2, SIX[number], 0.0)
        assert decision is not None
        outcome[number] = decision.proceed
    return outcome


def test_asynchronous_the_first_arrivals_continue_and_late_dominated_ones_stop() -> None:
    early = arrive(ParetoAshaPruner(MIN_MIN, [2], store=MemoryStore()), [5, 4, 3, 2, 1, 0])
    assert early[5] is True  # the first trial at a rung always continues
    assert early[4] is True  # beats the only trial before it
    late = arrive(ParetoAshaPruner(MIN_MIN, [2], store=MemoryStore()), [0, 1, 2, 3, 4, 5])
    assert late == {0: True, 1: True, 2: False, 3: False, 4: False, 5: False}


def test_no_decision_between_rungs_and_min_trials_delays_pruning() -> None:
    pruner = ParetoAshaPruner(MIN_MIN, [2], store=MemoryStore())
    assert pruner.judge(SimpleNamespace(number=0, storage=None), 1, (1.0, 1.0), 0.0) is None  # type: ignore[arg-type]
    patient = ParetoAshaPruner(MIN_MIN, [2], min_trials=3, store=MemoryStore())
    assert arrive(patient, [0, 5, 4]) == {0: True, 5: True, 4: False}


def test_keep_count_is_the_top_third_and_at_least_one() -> None:
    assert [keep_count(n, 3) for n in (1, 2, 3, 5, 6, 9)] == [1, 1, 1, 1, 2, 3]


def test_rungs_from_min_epochs_and_eta_or_listed() -> None:
    assert geometric_rungs(1, 3, 10) == [1, 3, 9]
    assert geometric_rungs(2, 2, 10) == [2, 4, 8]
    assert geometric_rungs(1, 1.5, 5) == [1, 2, 3]
    spec = spec_from_dict(toy_spec(epochs=10, pruner={"name": "pareto-asha", "rungs": [2, 4, 8]}))
    pruner = make_pruner(spec.pruner, spec)
    assert isinstance(pruner, ParetoAshaPruner)
    assert (pruner.rungs, pruner.eta, pruner.directions) == ([2, 4, 8], 3.0, MIN_MIN)
    assert pruner.prune(optuna.create_study(), None) is False  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"rungs": [4, 2]}, r"rungs \[4, 2\] must increase, from 1 to below the spec's epochs"),
        ({"rungs": [2, 10]}, r"rungs \[2, 10\] must increase, .* epochs \(10\)"),
        ({"eta": 1}, r"eta must be > 1, got 1"),
        ({"min_epochs": "two"}, r"min_epochs must be a number"),
        ({"reduction": 3}, r"unknown option\(s\) reduction; use rungs, min_epochs, eta"),
        ({"constraints": "no"}, r"constraints must be true or false, got 'no'"),
        ({"reference_point": [0.0]}, r"reference_point must list 2 numbers"),
    ],
)
def test_bad_options_are_one_spec_error_naming_the_fix(
    options: dict[str, Any], message: str
) -> None:
    spec = spec_from_dict(toy_spec(epochs=10, pruner={"name": "pareto-asha", **options}))
    with pytest.raises(SpecError, match=r"pruner \(pareto-asha\): " + message):
        make_pruner(spec.pruner, spec)


def test_optunas_pruners_still_refuse_several_objectives() -> None:
    spec = spec_from_dict(toy_spec(pruner={"name": "median"}))
    with pytest.raises(SpecError, match="use 'pareto-asha' for several objectives"):
        make_pruner(spec.pruner, spec)
