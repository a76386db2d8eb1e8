"""Spec + trainer + rules + tracker -> one trial, and the Optuna objective around it."""

from __future__ import annotations

from hpsearch.objectives.execute import execute_trial, pick_device
from hpsearch.objectives.factories import make_pruner, make_sampler
from hpsearch.objectives.objective import SpecObjective, TrialFailed, build_objective
from hpsearch.objectives.outcome import TrialOutcome
from hpsearch.objectives.suggest import parse_assignments, suggest_params

__all__ = [
    "SpecObjective",
    "TrialFailed",
    "TrialOutcome",
    "build_objective",
    "execute_trial",
    "make_pruner",
    "make_sampler",
    "parse_assignments",
    "pick_device",
    "suggest_params",
]
