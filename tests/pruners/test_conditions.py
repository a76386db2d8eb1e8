from __future__ import annotations

import math

import pytest

from hpsearch.errors import RuleError
from hpsearch.pruners.conditions import Condition, ConditionScope


def scope(
    values: dict[str, float], history: list[dict[str, float]] | None = None
) -> ConditionScope:
    return ConditionScope(values=values, history=history or [values], metrics=values)


@pytest.mark.parametrize(
    ("source", "values", "expected"),
    [
        ("loss > 2.5", {"loss": 3.0}, True),
        ("loss > 2.5", {"loss": 2.0}, False),
        ("a < 0.02 and b < 0.5", {"a": 0.01, "b": 0.4}, True),
        ("a < 0.02 and b < 0.5", {"a": 0.01, "b": 0.6}, False),
        ("a > 1 or not b", {"a": 0, "b": 0}, True),
        ("0.2 <= x < 0.4", {"x": 0.3}, True),
        ("0.2 <= x < 0.4", {"x": 0.4}, False),
        ("abs(x - 1) * 2 >= max(y, 1) ** 2 / 4", {"x": 3.0, "y": 0.5}, True),
        ("isnan(x)", {"x": math.nan}, True),
        ("epoch >= 3 and x % 2 == 1", {"epoch": 3, "x": 5}, True),
    ],
)
def test_conditions_evaluate(source: str, values: dict[str, float], expected: bool) -> None:
    assert Condition(source).evaluate(scope(values)) is expected


def test_history_functions_see_the_whole_trial() -> None:
    history = [{"cos": 0.5, "sep": 10.0}, {"cos": 0.8, "sep": 4.0}, {"cos": 0.6, "sep": 0.5}]
    now = scope(history[-1], history)
    assert Condition("best_max(cos) - cos >= 0.2").evaluate(now)
    assert Condition("sep < 0.1 * first(sep)").evaluate(now)
    assert Condition("prev(cos) > cos").evaluate(now)
    assert Condition("best_min(sep) == sep").evaluate(now)


def test_prev_is_nan_at_the_first_epoch_so_comparisons_are_false() -> None:
    assert not Condition("prev(cos) > 0").evaluate(scope({"cos": 1.0}))


def test_any_nonfinite_looks_at_every_metric() -> None:
    assert Condition("any_nonfinite()").evaluate(scope({"a": 1.0, "b": math.inf}))
    assert not Condition("any_nonfinite()").evaluate(scope({"a": 1.0}))


def test_undefined_name_or_zero_division_is_false_not_an_error() -> None:
    assert not Condition("missing > 1").evaluate(scope({"x": 1.0}))
    assert not Condition("x / y > 1").evaluate(scope({"x": 1.0, "y": 0.0}))
    assert Condition("missing > 1 or x > 0").names == {"missing", "x"}


@pytest.mark.parametrize(
    "source",
    [
        "__import__('os').system('true')",
        "x.__class__",
        "open('f')",
        "[x for x in y]",
        "lambda: 1",
        "x[0]",
        "'text' == x",
        "best_max(x + 1)",
        "any_nonfinite(x)",
        "x if y else z",
    ],
)
def test_unsafe_or_unknown_constructs_are_rejected(source: str) -> None:
    with pytest.raises(RuleError, match="rule condition"):
        Condition(source)


def test_syntax_error_names_the_condition_and_the_fix() -> None:
    with pytest.raises(RuleError, match=r"'loss >' is not a valid expression.*e\.g\."):
        Condition("loss >")
