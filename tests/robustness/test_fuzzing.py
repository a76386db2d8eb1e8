"""Property-based fuzzing of the spec loader and of the rule-condition parser: any input gives a
result or an ``HpsearchError``, never another exception, within hypothesis's per-example
deadline (a bomb or a power tower evaluated would take minutes, not seconds).
"""

from __future__ import annotations

import contextlib
from datetime import timedelta
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from toy_spec import toy_spec

from hpsearch.errors import HpsearchError, RuleError
from hpsearch.pruners.conditions import Condition, ConditionScope
from hpsearch.search_spaces import parse_yaml, spec_from_dict

FUZZ = settings(
    max_examples=200,
    deadline=timedelta(seconds=5),  # generous for a loaded machine; a bomb takes minutes
    suppress_health_check=[HealthCheck.too_slow],
    database=None,
)
SCOPE = ConditionScope(
    values={"epoch": 3.0, "loss": 0.5, "decay": 0.9, "quality": float("nan")},
    history=[{"loss": 0.7}, {"loss": 0.6}, {"loss": 0.5}],
    metrics={"loss": 0.5, "quality": float("nan")},
)

# pieces of conditions, hostile ones included
TOKENS = st.sampled_from(
    ["epoch", "loss", "decay", "quality", "acc", "9", "0", "1e308", "1e400", "0.5", "-", "+",
     "*", "/", "**", "%", "<", ">", "==", "!=", "<=", "and", "or", "not", "(", ")", ",",
     "abs(", "min(", "max(", "isnan(", "best_max(", "prev(", "any_nonfinite()", "__import__",
     "'x'", "[", "]", "lambda", ":", ".", "__class__", "if", "else", "True", "None", "\x00",
     "9 ** 9 ** 9", "1/0"]
)  # fmt: skip


def _condition_or_error(text: str) -> None:
    try:
        condition = Condition(text)
    except RuleError:
        return
    assert isinstance(condition.evaluate(SCOPE), bool)


@FUZZ
@given(st.lists(TOKENS, max_size=30).map(" ".join))
def test_conditions_from_hostile_tokens(text: str) -> None:
    _condition_or_error(text)


@FUZZ
@given(st.text(max_size=200))
def test_conditions_from_any_text(text: str) -> None:
    _condition_or_error(text)


def test_a_power_tower_is_refused_at_load() -> None:
    with pytest.raises(RuleError, match=r"'9 \*\* 9 \*\* 9' overflows"):
        Condition("9 ** 9 ** 9 > epoch")


# -- the spec loader ------------------------------------------------------------------------------

YAML_PIECES = st.sampled_from(
    ["name: toy\n", "epochs: 2\n", "epochs: ten\n", "space: {}\n", "&a [1, 2]", "*a", "*b",
     "- x\n", "  - y\n", "{", "}", "[", "]", ": ", "? ", "!!python/object:os.system", "!!str",
     "\t", "\n", "---\n", "...\n", "key: &b {a: *b}\n", "<<: *a\n", "'", '"', "#", "%YAML 1.2\n",
     "trainer: toy_trainer:ToyTrainer\n", "\x00", "é", "1e400", ".nan", "~"]
)  # fmt: skip
JSON_LEAVES = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20)
JSON_VALUES = st.recursive(
    JSON_LEAVES,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=20,
)
SPEC_KEYS = [*sorted(toy_spec()), "rules", "pruner", "seed", "fixed", "trial_timeout", "extra"]


def _spec_or_error(make: Any) -> None:
    with contextlib.suppress(HpsearchError):
        make()


@FUZZ
@given(st.lists(YAML_PIECES, max_size=25).map("".join))
def test_yaml_from_hostile_pieces(text: str) -> None:
    _spec_or_error(lambda: spec_from_dict(parse_yaml(text, "fuzz.yaml"), "fuzz.yaml"))


@FUZZ
@given(st.dictionaries(st.sampled_from(SPEC_KEYS), JSON_VALUES, max_size=6))
def test_a_spec_with_any_values_in_its_keys(changes: dict[str, Any]) -> None:
    data = {**toy_spec(), **changes}
    _spec_or_error(lambda: spec_from_dict(data, "fuzz.yaml"))


@FUZZ
@given(
    st.sampled_from(["space", "objectives", "constraints", "rules", "sampler", "pruner"]),
    JSON_VALUES,
)
def test_a_spec_dumped_to_yaml_and_loaded_back(key: str, value: Any) -> None:
    text = yaml.safe_dump({**toy_spec(), key: value})
    _spec_or_error(lambda: spec_from_dict(parse_yaml(text, "fuzz.yaml"), "fuzz.yaml"))
