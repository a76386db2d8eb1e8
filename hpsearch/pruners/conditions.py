"""Safe rule conditions: a small expression language parsed with ``ast``, never ``eval``.

A condition is a Python-like boolean expression over the names available in one epoch:
this epoch's metrics, the live knobs, the trial params that are numbers, and ``epoch``.
Allowed: numbers, ``True``/``False``, names, ``+ - * / ** %``, unary ``- not``, comparisons
(chains too), ``and``/``or``, and these functions:

- ``abs(x)``, ``min(a, b, ...)``, ``max(a, b, ...)``, ``isnan(x)``, ``isfinite(x)``,
  ``any_nonfinite()`` (true when any metric of this epoch is NaN or infinite);
- history of a metric over this trial's epochs so far, this one included: ``best_max(m)``,
  ``best_min(m)``, ``first(m)``, ``prev(m)`` (the previous epoch's value, NaN at epoch 1).

Conditions on params (a search space's ``when``, ``hpsearch best --where``) also allow string
constants, to compare a categorical param: ``"schedule != 'adaptive'"`` (``strings=True``).

A condition has at most ``MAX_CONDITION_CHARS`` characters, ``MAX_NODES`` parts and
``MAX_DEPTH`` levels of nesting. Numbers are floats when evaluated (no big-integer arithmetic),
and an expression of constants alone is computed when the condition is parsed: one that
overflows or divides by zero (``9 ** 9 ** 9``, ``1 / 0``) is refused then, never evaluated.

A name with no value in an epoch makes the condition false for that epoch (a metric a trainer
reports only from some epoch on); the spec validator checks every name against the trainer's
metrics, knobs and params when the spec is loaded, so a typo is an error before any trial runs.
"""

from __future__ import annotations

import ast
import math
import operator
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from hpsearch.errors import RuleError

_BINARY: dict[type[ast.operator], Callable[[Any, Any], Any]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.Pow: operator.pow,
    ast.Mod: operator.mod,
}
_COMPARE: dict[type[ast.cmpop], Callable[[Any, Any], bool]] = {
    ast.Lt: operator.lt,
    ast.LtE: operator.le,
    ast.Gt: operator.gt,
    ast.GtE: operator.ge,
    ast.Eq: operator.eq,
    ast.NotEq: operator.ne,
}
_PLAIN_FUNCTIONS: dict[str, Callable[..., Any]] = {
    "abs": abs,
    "min": min,
    "max": max,
    "isnan": math.isnan,
    "isfinite": math.isfinite,
}
_HISTORY_FUNCTIONS = ("best_max", "best_min", "first", "prev")
_STATE_FUNCTIONS = ("any_nonfinite",)
MAX_CONDITION_CHARS = 1000
MAX_NODES = 300
MAX_DEPTH = 40


class UndefinedName(Exception):
    """A name the condition uses has no value this epoch."""


@dataclass(frozen=True)
class ConditionScope:
    """What a condition can see in one epoch."""

    values: Mapping[str, float]
    history: Sequence[Mapping[str, float]]
    metrics: Mapping[str, float]


class Condition:
    """A parsed, validated condition; ``evaluate(scope)`` returns a bool."""

    def __init__(self, source: str, *, strings: bool = False) -> None:
        if not isinstance(source, str) or not source.strip():
            raise RuleError(f"empty rule condition {source!r}; write e.g. 'val_loss > 2.5'")
        if len(source) > MAX_CONDITION_CHARS:
            raise RuleError(
                f"rule condition {source[:40]!r}... has {len(source)} characters; write one of "
                f"at most {MAX_CONDITION_CHARS} (split it into several rules)"
            )
        self.source = source
        try:
            tree = ast.parse(source.strip(), mode="eval")
        except (SyntaxError, ValueError, RecursionError, MemoryError) as error:
            reason = getattr(error, "msg", None) or type(error).__name__
            raise RuleError(
                f"rule condition {source!r} is not a valid expression ({reason}); "
                "use comparisons joined by and/or, e.g. 'kl_raw > 0.2 and epoch >= 3'"
            ) from None
        _check_size(tree.body, source)
        self._tree = tree.body
        self.names: frozenset[str] = frozenset(_check_node(self._tree, source, strings))
        _fold_constants(self._tree, source)

    def evaluate(self, scope: ConditionScope) -> bool:
        """True when the condition holds; False when it does not or uses an undefined name."""
        try:
            return bool(_evaluate(self._tree, scope))
        except UndefinedName:
            return False
        except (ZeroDivisionError, OverflowError, ValueError, TypeError):
            return False

    def value(self, scope: ConditionScope) -> float:
        """The expression's number (``hpsearch best --rank-by``); NaN when it uses an undefined
        name or cannot be computed."""
        try:
            return float(_evaluate(self._tree, scope))
        except (UndefinedName, ZeroDivisionError, OverflowError, ValueError, TypeError):
            return math.nan

    def __repr__(self) -> str:
        return f"Condition({self.source!r})"


def _check_size(root: ast.AST, source: str) -> None:
    """RuleError when the expression has more than ``MAX_NODES`` parts or is nested deeper
    than ``MAX_DEPTH`` (walked without recursion)."""
    stack: list[tuple[ast.AST, int]] = [(root, 1)]
    count = 0
    while stack:
        node, depth = stack.pop()
        count += 1
        if count > MAX_NODES or depth > MAX_DEPTH:
            what = f"more than {MAX_NODES} parts" if count > MAX_NODES else "too deep a nesting"
            raise RuleError(
                f"rule condition {source[:60]!r} has {what}; write a simpler condition "
                "(or split it into several rules)"
            )
        stack.extend((child, depth + 1) for child in ast.iter_child_nodes(node))


def _fold_constants(node: ast.AST, source: str) -> float | None:
    """The value of an expression of constants alone (None if it reads a name or calls a
    function); RuleError when computing it overflows, divides by zero or is not finite."""
    if isinstance(node, ast.Constant):
        return float(node.value) if isinstance(node.value, int | float) else None
    if isinstance(node, ast.UnaryOp):
        operand = _fold_constants(node.operand, source)
        if operand is None or isinstance(node.op, ast.Not):
            return None
        return -operand if isinstance(node.op, ast.USub) else operand
    if isinstance(node, ast.BinOp):
        left, right = _fold_constants(node.left, source), _fold_constants(node.right, source)
        if left is None or right is None:
            return None
        try:
            value = _BINARY[type(node.op)](left, right)
        except OverflowError:
            raise _constant_error(node, source, "overflows") from None
        except (ZeroDivisionError, ValueError):
            raise _constant_error(node, source, "divides by zero or has no value") from None
        if not isinstance(value, float) or not math.isfinite(value):
            raise _constant_error(node, source, f"gives {value}")
        return value
    for child in ast.iter_child_nodes(node):
        _fold_constants(child, source)
    return None


def _constant_error(node: ast.AST, source: str, problem: str) -> RuleError:
    part = ast.get_source_segment(source.strip(), node) or "a constant part"
    return RuleError(
        f"rule condition {source!r}: {part[:60]!r} {problem}; use numbers within float range"
    )


def _check_node(node: ast.AST, source: str, strings: bool = False) -> set[str]:
    """Reject anything outside the whitelist; return the plain names used."""
    names: set[str] = set()
    if isinstance(node, ast.Constant):
        if isinstance(node.value, bool) or (strings and isinstance(node.value, str)):
            return names
        if isinstance(node.value, int | float):
            try:
                if math.isfinite(float(node.value)):
                    return names
            except OverflowError:
                pass
            raise RuleError(
                f"rule condition {source[:60]!r}: the number {str(node.value)[:20]}... is out of "
                "float range; use a smaller number"
            )
        raise _not_allowed(source, f"constant {node.value!r}")
    if isinstance(node, ast.Name):
        names.add(node.id)
        return names
    if isinstance(node, ast.BoolOp):
        for value in node.values:
            names |= _check_node(value, source, strings)
        return names
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub | ast.UAdd | ast.Not):
        return _check_node(node.operand, source, strings)
    if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
        return _check_node(node.left, source, strings) | _check_node(node.right, source, strings)
    if isinstance(node, ast.Compare) and all(type(op) in _COMPARE for op in node.ops):
        names |= _check_node(node.left, source, strings)
        for comparator in node.comparators:
            names |= _check_node(comparator, source, strings)
        return names
    if isinstance(node, ast.Call):
        return _check_call(node, source, strings)
    raise _not_allowed(source, type(node).__name__)


def _check_call(node: ast.Call, source: str, strings: bool) -> set[str]:
    if not isinstance(node.func, ast.Name) or node.keywords:
        raise _not_allowed(source, "this call")
    function = node.func.id
    if function in _PLAIN_FUNCTIONS:
        names: set[str] = set()
        for argument in node.args:
            names |= _check_node(argument, source, strings)
        return names
    if function in _HISTORY_FUNCTIONS:
        if len(node.args) != 1 or not isinstance(node.args[0], ast.Name):
            raise RuleError(
                f"rule condition {source!r}: {function}() takes one metric name, "
                f"e.g. {function}(val_loss)"
            )
        return {node.args[0].id}
    if function in _STATE_FUNCTIONS:
        if node.args:
            raise RuleError(f"rule condition {source!r}: {function}() takes no arguments")
        return set()
    allowed = sorted([*_PLAIN_FUNCTIONS, *_HISTORY_FUNCTIONS, *_STATE_FUNCTIONS])
    raise RuleError(
        f"rule condition {source!r}: unknown function {function!r}; use one of {', '.join(allowed)}"
    )


def _not_allowed(source: str, what: str) -> RuleError:
    return RuleError(
        f"rule condition {source!r}: {what} is not allowed; use numbers, metric/knob names, "
        "arithmetic, comparisons, and/or/not and the documented functions"
    )


def _evaluate(node: ast.AST, scope: ConditionScope) -> Any:
    if isinstance(node, ast.Constant):
        value = node.value
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)  # never big-int arithmetic
        return value
    if isinstance(node, ast.Name):
        if node.id not in scope.values:
            raise UndefinedName(node.id)
        return scope.values[node.id]
    if isinstance(node, ast.BoolOp):
        if isinstance(node.op, ast.And):
            return all(_evaluate(value, scope) for value in node.values)
        return any(_evaluate(value, scope) for value in node.values)
    if isinstance(node, ast.UnaryOp):
        operand = _evaluate(node.operand, scope)
        if isinstance(node.op, ast.Not):
            return not operand
        return -operand if isinstance(node.op, ast.USub) else +operand
    if isinstance(node, ast.BinOp):
        return _BINARY[type(node.op)](_evaluate(node.left, scope), _evaluate(node.right, scope))
    if isinstance(node, ast.Compare):
        return _evaluate_compare(node, scope)
    if isinstance(node, ast.Call):
        return _evaluate_call(node, scope)
    raise TypeError(f"unexpected node {type(node).__name__}")  # unreachable after _check_node


def _evaluate_compare(node: ast.Compare, scope: ConditionScope) -> bool:
    left = _evaluate(node.left, scope)
    for op, comparator in zip(node.ops, node.comparators, strict=True):
        right = _evaluate(comparator, scope)
        if not _COMPARE[type(op)](left, right):
            return False
        left = right
    return True


def _evaluate_call(node: ast.Call, scope: ConditionScope) -> Any:
    assert isinstance(node.func, ast.Name)
    function = node.func.id
    if function in _PLAIN_FUNCTIONS:
        return _PLAIN_FUNCTIONS[function](*(_evaluate(arg, scope) for arg in node.args))
    if function == "any_nonfinite":
        return any(not math.isfinite(value) for value in scope.metrics.values())
    assert isinstance(node.args[0], ast.Name)
    return _history_value(function, node.args[0].id, scope.history)


def _history_value(function: str, name: str, history: Sequence[Mapping[str, float]]) -> float:
    series = [epoch[name] for epoch in history if name in epoch]
    if not series:
        raise UndefinedName(name)
    if function == "first":
        return series[0]
    if function == "prev":
        return series[-2] if len(series) >= 2 else math.nan
    finite = [value for value in series if math.isfinite(value)]
    if not finite:
        return math.nan
    return max(finite) if function == "best_max" else min(finite)
