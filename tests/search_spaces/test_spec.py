from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from toy_spec import toy_spec

from hpsearch.errors import SpecError
from hpsearch.search_spaces import load_spec, packaged_spec_names, spec_from_dict


def test_every_packaged_spec_loads_and_validates() -> None:
    names = packaged_spec_names()
    assert "cvfp" in names
    for name in names:
        spec = load_spec(name)
        assert spec.name and spec.objectives and spec.space


def test_cvfp_spec_has_the_seed_space() -> None:
    spec = load_spec("cvfp")
    space = spec.space
    weight = space["dist_reg_weight"]
    assert (weight.low, weight.high, weight.log) == (0.01, 0.9, True)  # the seed's 0.01 and 0.5
    assert (space["lr"].low, space["lr"].high, space["lr"].log) == (5e-4, 5e-3, True)
    # measured at the seed's 0.1, a trial's threshold only steers the adaptive schedule
    assert "convergence_threshold" not in space
    assert (space["layernorm_mix"].low, space["layernorm_mix"].high) == (0.5, 1.0)
    assert space["schedule"].choices == ["constant", "staged", "adaptive"]
    assert spec.directions == ["maximize", "maximize"]
    assert spec.rules == ["cvfp-health"]


def test_a_path_to_a_yaml_file_loads(tmp_path: Path) -> None:
    path = tmp_path / "mine.yaml"
    path.write_text(yaml.safe_dump(toy_spec(name="mine")))
    spec = load_spec(str(path))
    assert spec.name == "mine"
    assert spec.source == str(path)


def test_band_objective_is_zero_inside_and_the_distance_outside() -> None:
    spec = spec_from_dict(toy_spec())
    band = spec.objectives[1]
    assert band.name == "quality_band_distance"
    assert band.optuna_direction == "minimize"
    assert band.value({"quality": 0.92}) == 0.0
    assert band.value({"quality": 0.8}) == pytest.approx(0.1)
    assert band.value({"quality": 1.0}) == pytest.approx(0.05)


def test_constraint_values_are_optuna_style() -> None:
    spec = spec_from_dict(toy_spec(constraints=[{"metric": "quality", "op": ">=", "value": 0.5}]))
    (constraint,) = spec.constraints
    assert constraint.violation({"quality": 0.7}) == pytest.approx(-0.2)
    assert constraint.violation({"quality": 0.4}) == pytest.approx(0.1)


def bad(**changes: Any) -> dict[str, Any]:
    return toy_spec(**changes)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (bad(colour="red"), r"bad\.yaml: colour: unknown key; remove it"),
        (bad(epochs="ten"), r"epochs: Input should be a valid integer"),
        (
            bad(space={"x": {"type": "float", "low": 1.0, "high": 0.0}}),
            r"space\.x: low \(1\.0\) must be < high \(0\.0\); swap them",
        ),
        (
            bad(space={"x": {"type": "float", "low": 0.0, "high": 1.0, "log": True}}),
            r"space\.x: log: true needs low > 0",
        ),
        (bad(trainer="nope"), r"trainer: unknown trainer 'nope'; use one of .*cvfp"),
        (bad(trainer="no_such_module:T"), r"cannot import module 'no_such_module'"),
        (
            bad(objectives=[{"metric": "accuracy", "direction": "maximize"}]),
            r"objectives\[0\]\.metric: trainer .* reports no metric 'accuracy'; use one of",
        ),
        (
            bad(constraints=[{"metric": "acc", "op": ">=", "value": 1}]),
            r"constraints\[0\]\.metric: .*no metric 'acc'",
        ),
        (bad(rules=["nope"]), r"rules\[0\]: unknown rule preset 'nope'"),
        (
            bad(rules=[{"name": "r", "when": "los > 1", "then": "abort"}]),
            r"rules\[0\]: 'los' is not a metric, param or knob",
        ),
        (
            bad(rules=[{"name": "r", "when": "loss >", "then": "abort"}]),
            r"rules\.0\.when: rule condition 'loss >' is not a valid expression",
        ),
        (
            bad(rules=[{"name": "r", "when": "loss > 1", "then": {"set": {"x": 1}}}]),
            r"rules\[0\]: 'x' is not a knob of trainer",
        ),
        (bad(space={"z": {"type": "float", "low": 0, "high": 1}}), r"space\.z: .*has no param 'z'"),
        (bad(fixed={"x": 0.1}), r"'x' is both in fixed and in space"),
        (bad(fixed={"mode": 3.0}, epochs=0), r"epochs: Input should be greater than or equal to 1"),
        (
            bad(objectives=[{"metric": "loss", "direction": "minimize", "band": [0, 1]}]),
            r"give exactly one of direction .* or band",
        ),
        (
            bad(space={"x": {"type": "categorical", "choices": [1, 2], "default": 3}}),
            r"default 3 is not one of the choices",
        ),
    ],
)
def test_bad_specs_fail_with_one_line_naming_file_key_and_fix(
    data: dict[str, Any], message: str
) -> None:
    with pytest.raises(SpecError, match=message) as error:
        spec_from_dict(data, "bad.yaml")
    assert "\n" not in str(error.value)
    assert str(error.value).startswith("bad.yaml: ")


def test_fixed_values_are_checked_by_the_trainer() -> None:
    with pytest.raises(SpecError, match=r"fixed/space defaults: toy: param x=2\.0 is out of range"):
        spec_from_dict(bad(space={"y": {"type": "float", "low": 0, "high": 1}}, fixed={"x": 2.0}))


def test_unknown_spec_name_and_missing_file(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match=r"unknown spec 'nope'; use a packaged spec \(.*cvfp"):
        load_spec("nope")
    with pytest.raises(SpecError, match=r"spec file .*missing\.yaml' does not exist"):
        load_spec(str(tmp_path / "missing.yaml"))
    broken = tmp_path / "broken.yaml"
    broken.write_text("name: [unclosed")
    with pytest.raises(SpecError, match=r"broken\.yaml: not valid YAML"):
        load_spec(str(broken))


def test_quick_variant_overrides_epochs_and_fixed_and_renames_the_study() -> None:
    data = toy_spec(name="q")
    full = spec_from_dict({**data, "quick": {"epochs": 1, "fixed": {}}})
    quick = load_spec(full, quick=True)
    assert quick.name == "q-quick"
    assert quick.epochs == 1 and full.epochs != 1
    assert quick.quick is None and full.quick is not None


def test_quick_without_a_quick_section_is_a_spec_error() -> None:
    spec = spec_from_dict(toy_spec(name="q"))
    with pytest.raises(SpecError, match="no quick: section"):
        load_spec(spec, quick=True)


def test_a_quick_section_with_an_unknown_param_is_refused_at_load() -> None:
    with pytest.raises(SpecError, match="quick"):
        spec_from_dict({**toy_spec(name="q"), "quick": {"fixed": {"no_such_param": 1}}})
