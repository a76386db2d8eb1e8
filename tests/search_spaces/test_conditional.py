"""Conditional params: ``when`` in the space."""

from __future__ import annotations

from typing import Any

import optuna
import pytest
from toy_spec import toy_spec

import hpsearch
from hpsearch.errors import SpecError
from hpsearch.objectives.suggest import try_params
from hpsearch.search_spaces import spec_from_dict


def conditional_spec(**space_overrides: Any) -> Any:
    space = {
        "mode": {"type": "categorical", "choices": ["plain", "fancy"]},
        "x": {"type": "float", "low": 0.0, "high": 1.0, "when": "mode != 'plain'"},
        "y": {"type": "float", "low": 0.0, "high": 1.0, "default": 0.7, "when": "x > 0.5"},
        **space_overrides,
    }
    return spec_from_dict(toy_spec(space=space, sampler={"name": "random", "seed": 3}))


def test_a_conditional_param_is_sampled_only_where_its_condition_holds(sqlite_url: str) -> None:
    hpsearch.run(conditional_spec(), 16, storage=sqlite_url, track=False)
    trials = optuna.load_study(study_name="toy", storage=sqlite_url).get_trials()
    assert {trial.params["mode"] for trial in trials} == {"plain", "fancy"}
    for trial in trials:
        searched_x = "x" in trial.params
        assert searched_x == (trial.params["mode"] != "plain")
        assert ("y" in trial.params) == (searched_x and trial.params["x"] > 0.5)
        if "y" not in trial.params:  # not searched: the trainer got the default
            assert trial.user_attrs["effective_params"]["y"] == 0.7


def test_a_condition_names_fixed_or_earlier_params_only() -> None:
    with pytest.raises(SpecError, match=r"space.x.when: 'later' is not a fixed param or a space"):
        conditional_spec(x={"type": "float", "low": 0.0, "high": 1.0, "when": "later > 1"})
    with pytest.raises(SpecError, match=r"space.x.when: condition .* is not a valid expression"):
        conditional_spec(x={"type": "float", "low": 0.0, "high": 1.0, "when": "mode =="})


def test_a_try_gives_inactive_params_as_a_trial_would_and_notes_values_outside() -> None:
    spec = conditional_spec()
    params, notes = try_params(spec, {"mode": "plain"})
    assert params == {"mode": "plain", "y": 0.7}  # x inactive, no default: trainer default
    params, notes = try_params(spec, {"mode": "plain", "x": 1.5})
    assert params["x"] == 1.5
    assert any("outside the searched range [0.0, 1.0]" in note for note in notes)
    assert any("x is not searched here (when: mode != 'plain')" in note for note in notes)
