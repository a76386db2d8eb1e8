from __future__ import annotations

import numpy as np
import optuna
import pytest

from hpsearch.metrics.pareto import as_losses, derived_reference, hypervolume
from hpsearch.objectives.hypervolume import StudyHypervolume

DIRECTIONS = ["maximize", "minimize"]


def add(study: optuna.Study, values: list[float], violation: float = 0.0) -> None:
    study.add_trial(
        optuna.trial.create_trial(
            values=values,
            distributions={},
            params={},
            constraints={"c": violation},
        )
    )


def recomputed(rows: list[tuple[list[float], bool]]) -> float:
    losses = as_losses([values for values, _ in rows], DIRECTIONS)
    reference = derived_reference(losses)
    feasible = [values for values, ok in rows if ok]
    return hypervolume(as_losses(feasible, DIRECTIONS), reference) if feasible else 0.0


def test_incremental_hypervolume_equals_a_full_recompute() -> None:
    rng = np.random.default_rng(0)
    study = optuna.create_study(directions=DIRECTIONS)
    tracker = StudyHypervolume(DIRECTIONS)
    rows: list[tuple[list[float], bool]] = []
    for _ in range(6):
        for _ in range(int(rng.integers(1, 4))):  # several trials of other workers at once
            values = [float(rng.uniform(0, 1)), float(rng.uniform(0, 1))]
            violation = float(rng.choice([-0.1, 0.2]))
            add(study, values, violation)
            rows.append((values, violation <= 0))
        pending = [float(rng.uniform(0, 1)), float(rng.uniform(0, 1))]
        volume, reference = tracker.update(study, (pending, True))
        assert volume == pytest.approx(recomputed([*rows, (pending, True)]))
        assert reference is not None


def test_a_fixed_reference_point_is_used_as_given() -> None:
    study = optuna.create_study(directions=DIRECTIONS)
    add(study, [0.5, 0.5])
    volume, reference = StudyHypervolume(DIRECTIONS, [0.0, 1.0]).update(study)
    assert reference == [0.0, 1.0]
    assert volume == pytest.approx(0.25)


def test_no_trials_no_hypervolume() -> None:
    study = optuna.create_study(directions=DIRECTIONS)
    assert StudyHypervolume(DIRECTIONS).update(study) == (0.0, None)


def test_each_trial_of_a_study_stores_the_hypervolume_of_the_trials_so_far(
    sqlite_url: str,
) -> None:
    from toy_spec import toy_spec

    import hpsearch
    from hpsearch.search_spaces import spec_from_dict

    spec = spec_from_dict(  # TPE reads the trials through Optuna's per-trial cache
        toy_spec(
            constraints=[{"metric": "loss", "op": "<=", "value": 0.3}],
            sampler={"name": "tpe", "seed": 1, "options": {"n_startup_trials": 2}},
        )
    )
    study = hpsearch.run(spec, 6, storage=sqlite_url, track=False)
    directions = spec.directions
    for trial in study.trials:
        rows = [
            (list(t.values), all(c <= 0 for c in t.constraints.values()))
            for t in study.trials
            if t.number <= trial.number and t.values is not None
        ]
        losses = as_losses([values for values, _ in rows], directions)
        feasible = [values for values, ok in rows if ok]
        expected = (
            hypervolume(as_losses(feasible, directions), derived_reference(losses))
            if feasible
            else 0.0
        )
        assert trial.user_attrs["study_hypervolume"] == pytest.approx(expected)
