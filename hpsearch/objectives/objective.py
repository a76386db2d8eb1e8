"""Spec + tracker -> an Optuna objective (DESIGN.md, Objective).

One trial: suggest params from ``space``, merge ``fixed``, train under the rules, compute the
objective values (bands included) and the constraint values (``trial.set_constraint``, Optuna 5)
from the final metrics, and store on the trial: the effective params after backoffs, the rule
events, the metric history, the final metrics, the MLflow run id and the worker.
A PRUNED trial raises ``optuna.TrialPruned``; a failed one ``TrialFailed`` (caught by
``study.optimize(catch=...)``), with the reason stored in user attr ``fail_reason``.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping
from typing import Any

import optuna
import torch

from hpsearch.errors import HpsearchError
from hpsearch.objectives.execute import EpochHook, execute_trial, pick_device
from hpsearch.objectives.outcome import TrialOutcome, json_safe
from hpsearch.objectives.suggest import suggest_params
from hpsearch.search_spaces import StudySpec
from hpsearch.search_spaces.validate import check_against_trainer
from hpsearch.tracking import Tracker


class TrialFailed(HpsearchError):
    """A trial ended FAIL (its reason is in the message and in user attr ``fail_reason``)."""


def worker_info(device: torch.device) -> dict[str, str]:
    """Who ran a trial: host, pid and device (with the visible GPUs)."""
    return {
        "host": socket.gethostname(),
        "pid": str(os.getpid()),
        "device": str(device),
        "gpu": os.environ.get("CUDA_VISIBLE_DEVICES", "") if device.type == "cuda" else "",
    }


class SpecObjective:
    """The Optuna objective of a spec; call it with a trial, or pass it to ``optimize``."""

    def __init__(
        self,
        spec: StudySpec,
        tracker: Tracker,
        *,
        study_name: str | None = None,
        device: str | None = None,
    ) -> None:
        self.spec = spec
        self.trainer_class = check_against_trainer(spec, spec.source)
        self.tracker = tracker
        self.study_name = study_name or spec.name
        self.device = pick_device(device)

    def __call__(self, trial: optuna.Trial) -> float | list[float]:
        params = {**self.spec.fixed, **suggest_params(trial, self.spec.space)}
        worker = worker_info(self.device)
        tags = {"study": self.study_name, "trial_number": str(trial.number), **worker}
        run = self.tracker.start_trial(self.study_name, trial.number, params, tags)
        if run.run_id is not None:
            trial.set_user_attr("mlflow_run_id", run.run_id)
        trial.set_user_attr("worker", worker)
        outcome = execute_trial(
            self.spec,
            self.trainer_class,
            params,
            seed=self.spec.seed + trial.number,
            run=run,
            device=self.device,
            on_epoch=self._epoch_hook(trial),
        )
        record_outcome(trial, outcome)
        run.finish(outcome.state, outcome.values, outcome.final_metrics, _artifacts(outcome))
        return self._result(trial, outcome)

    def _epoch_hook(self, trial: optuna.Trial) -> EpochHook | None:
        """Single-objective specs report each epoch to Optuna so its pruners can act."""
        if len(self.spec.objectives) != 1:
            return None
        objective = self.spec.objectives[0]

        def report(epoch: int, metrics: Mapping[str, float]) -> str | None:
            if objective.metric not in metrics:
                return None
            trial.report(objective.value(dict(metrics)), epoch)
            if trial.should_prune():
                return (
                    f"pruner {self.spec.pruner.name if self.spec.pruner else ''} at epoch {epoch}"
                )
            return None

        return report

    def _result(self, trial: optuna.Trial, outcome: TrialOutcome) -> float | list[float]:
        if outcome.state == "PRUNED":
            raise optuna.TrialPruned(outcome.reason)
        if outcome.state == "FAIL" or outcome.values is None:
            raise TrialFailed(outcome.reason or "unknown failure")
        for name, violation in outcome.constraints.items():
            trial.set_constraint(name, violation)
        values = [outcome.values[name] for name in self.spec.objective_names]
        return values[0] if len(values) == 1 else values


def record_outcome(trial: optuna.Trial, outcome: TrialOutcome) -> None:
    """Store what the trial produced as user attributes (JSON-safe)."""
    attrs: dict[str, Any] = {
        "effective_params": outcome.effective_params,
        "rule_events": outcome.events,
        "metrics_history": outcome.history,
        "final_metrics": outcome.final_metrics,
        "epochs_run": outcome.epochs_run,
        "state_description": outcome.describe_state(),
    }
    if outcome.report:
        attrs["trainer_report"] = outcome.report
    if outcome.reason:
        attrs["fail_reason" if outcome.state == "FAIL" else "prune_reason"] = outcome.reason
    for key, value in attrs.items():
        trial.set_user_attr(key, json_safe(value))


def _artifacts(outcome: TrialOutcome) -> dict[str, Any]:
    artifacts: dict[str, Any] = {
        "metrics_history": json_safe(outcome.history),
        "rule_events": json_safe(outcome.events),
        "effective_params": json_safe(outcome.effective_params),
    }
    if outcome.report:
        artifacts["trainer_report"] = json_safe(outcome.report)
    return artifacts


def build_objective(
    spec: StudySpec, tracker: Tracker, *, study_name: str | None = None, device: str | None = None
) -> SpecObjective:
    """The objective of a spec. Constraints are set inside it with ``trial.set_constraint``
    (Optuna 5 deprecated the samplers' ``constraints_func``), so no constraints function is
    returned."""
    return SpecObjective(spec, tracker, study_name=study_name, device=device)
