"""Choosing among a study's trials: ``--where`` filters, ``--rank-by`` scores, ``--top`` cuts,
with the rules' safe expression language (``hpsearch.pruners.conditions``, strings allowed).

The names an expression may use are the study's objective names, the trials' final metrics,
their sampled params and ``effective_<param>`` for the values the last epoch trained with.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import optuna

from hpsearch.errors import HpsearchError, RuleError
from hpsearch.metrics.pareto import as_losses, pareto_mask
from hpsearch.pruners.conditions import Condition, ConditionScope


class SelectionError(HpsearchError):
    """A ``--where`` / ``--rank-by`` expression is malformed or names an unknown value."""


def trial_names(trial: optuna.trial.FrozenTrial, objective_names: Sequence[str]) -> dict[str, Any]:
    """What an expression sees for one trial: objective values, final metrics, sampled params
    and ``effective_<param>``."""
    names: dict[str, Any] = {}
    effective = trial.user_attrs.get("effective_params", {})
    names.update({f"effective_{key}": value for key, value in effective.items()})
    names.update(trial.params)
    names.update(trial.user_attrs.get("final_metrics", {}))
    names.update(zip(objective_names, trial.values or [], strict=False))
    return names


def parse_expression(source: str, option: str, known: set[str]) -> Condition:
    """A parsed expression whose names all exist; SelectionError names the option and fix."""
    try:
        expression = Condition(source, strings=True)
    except RuleError as error:
        message = str(error).replace("rule condition", f"{option}")
        raise SelectionError(message) from None
    unknown = sorted(expression.names - known)
    if unknown:
        raise SelectionError(
            f"{option} {source!r}: {unknown[0]!r} is not an objective, metric or param of the "
            f"study; use one of {', '.join(sorted(known)) or 'none (no finished trial yet)'}"
        )
    return expression


def select_trials(
    trials: Sequence[optuna.trial.FrozenTrial],
    objective_names: Sequence[str],
    directions: Sequence[str],
    *,
    rank_by: str | None = None,
    where: str | None = None,
    top: int | None = None,
) -> list[optuna.trial.FrozenTrial]:
    """Complete, feasible trials kept by ``where``; then the Pareto-optimal ones by trial
    number, or, with ``rank_by``, all of them highest score first; then the first ``top``."""
    scopes = {trial.number: _scope(trial_names(trial, objective_names)) for trial in trials}
    known = set().union(*(scope.values for scope in scopes.values())) if scopes else set()
    kept = list(trials)
    if where is not None:
        condition = parse_expression(where, "--where", known)
        kept = [trial for trial in kept if condition.evaluate(scopes[trial.number])]
    if rank_by is not None:
        score = parse_expression(rank_by, "--rank-by", known)
        scored = [(score.value(scopes[trial.number]), trial) for trial in kept]
        scored = [(value, trial) for value, trial in scored if value == value]  # drop NaN
        kept = [trial for _, trial in sorted(scored, key=lambda item: (-item[0], item[1].number))]
    else:
        kept = pareto_optimal(kept, directions)
    return kept[:top] if top is not None else kept


def pareto_optimal(
    trials: Sequence[optuna.trial.FrozenTrial], directions: Sequence[str]
) -> list[optuna.trial.FrozenTrial]:
    """The non-dominated trials, by trial number."""
    if not trials:
        return []
    losses = as_losses(np.array([trial.values for trial in trials], dtype=float), directions)
    mask = pareto_mask(losses)
    return sorted((t for t, keep in zip(trials, mask, strict=True) if keep), key=_number)


def feasible(trial: optuna.trial.FrozenTrial) -> bool:
    return all(value <= 0.0 for value in dict(trial.constraints).values())


def _number(trial: optuna.trial.FrozenTrial) -> int:
    return trial.number


def _scope(values: Mapping[str, Any]) -> ConditionScope:
    return ConditionScope(values=dict(values), history=(), metrics={})
