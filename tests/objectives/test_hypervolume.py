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


def test_each_trial_stores_the_hypervolume_at_the_one_reference_point_of_the_study(
    sqlite_url: str,
) -> None:
    from toy_spec import toy_spec

    import hpsearch
    from hpsearch.objectives.hypervolume import REFERENCE_AFTER_TRIALS, derive_reference
    from hpsearch.search_spaces import spec_from_dict

    spec = spec_from_dict(  # TPE reads the trials through Optuna's per-trial cache
        toy_spec(
            constraints=[{"metric": "loss", "op": "<=", "value": 0.3}],
            sampler={"name": "tpe", "seed": 1, "options": {"n_startup_trials": 2}},
        )
    )
    study = hpsearch.run(spec, REFERENCE_AFTER_TRIALS + 3, storage=sqlite_url, track=False)
    directions = spec.directions
    first = [list(t.values) for t in study.trials[:REFERENCE_AFTER_TRIALS]]
    reference = study.user_attrs["hypervolume_reference"]
    assert reference == pytest.approx(derive_reference(first, directions))
    for trial in study.trials[:REFERENCE_AFTER_TRIALS]:  # before the point was fixed
        assert "study_hypervolume" not in trial.user_attrs
    for trial in study.trials[REFERENCE_AFTER_TRIALS:]:
        feasible = [
            list(t.values)
            for t in study.trials
            if t.number <= trial.number and all(c <= 0 for c in t.constraints.values())
        ]
        expected = (
            hypervolume(as_losses(feasible, directions), as_losses([reference], directions)[0])
            if feasible
            else 0.0
        )
        assert trial.user_attrs["study_hypervolume"] == pytest.approx(expected, rel=1e-6)


def test_the_spec_reference_point_is_stored_on_the_study(sqlite_url: str) -> None:
    from toy_spec import toy_spec

    import hpsearch
    from hpsearch.search_spaces import spec_from_dict

    pruner = {"name": "pareto-asha", "rungs": [2], "reference_point": [0.5, 0.4]}
    study = hpsearch.run(
        spec_from_dict(toy_spec(pruner=pruner)), 2, storage=sqlite_url, track=False
    )
    assert study.user_attrs["hypervolume_reference"] == [0.5, 0.4]
    assert all("study_hypervolume" in t.user_attrs for t in study.trials if t.values)
