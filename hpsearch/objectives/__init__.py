"""Spec + trainer + rules + tracker -> one trial, and the Optuna objective around it.

The names below are imported on first use (torch comes with ``execute``), so that light
modules of this package (``failures``, ``summary``, ``outcome``) load without torch: ``hpsearch
studies`` and ``best`` need their constants only.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from hpsearch._util import lazy_attribute

if TYPE_CHECKING:
    from hpsearch.objectives.execute import execute_trial, pick_device
    from hpsearch.objectives.factories import make_pruner, make_sampler
    from hpsearch.objectives.objective import SpecObjective, TrialFailed, build_objective
    from hpsearch.objectives.outcome import TrialOutcome
    from hpsearch.objectives.suggest import parse_assignments, suggest_params

_HOMES = {
    "SpecObjective": "objective",
    "TrialFailed": "objective",
    "TrialOutcome": "outcome",
    "build_objective": "objective",
    "execute_trial": "execute",
    "make_pruner": "factories",
    "make_sampler": "factories",
    "parse_assignments": "suggest",
    "pick_device": "execute",
    "suggest_params": "suggest",
}


def __getattr__(name: str) -> Any:
    return lazy_attribute(__name__, _HOMES, name)


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
