"""Spec + tracker -> an Optuna objective (DESIGN.md, Objective).

One trial: suggest params from ``space``, merge ``fixed``, train under the rules, compute the
objective values (bands included) and the constraint values (``trial.set_constraint``, Optuna 5)
from the final metrics, and store on the trial: the effective params after backoffs, the rule
events, the metric history, the final metrics, the MLflow run id and the worker.
A PRUNED trial raises ``optuna.TrialPruned``; a failed one ``TrialFailed`` (caught by
``study.optimize(catch=...)``), with the reason stored in user attr ``fail_reason``.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Mapping, Sequence
from typing import Any

import optuna
import torch

from hpsearch.errors import HpsearchError
from hpsearch.objectives.attrs import set_user_attrs
from hpsearch.objectives.execute import EpochHook, execute_trial, pick_device
from hpsearch.objectives.factories import make_pareto_asha
from hpsearch.objectives.hypervolume import StudyHypervolume
from hpsearch.objectives.outcome import TrialOutcome, json_safe
from hpsearch.objectives.suggest import suggest_params
from hpsearch.pruners.pareto_asha import PRUNER_NAME, ParetoAshaPruner
from hpsearch.pruners.rung_store import VECTORS_ATTR, vector_entry, violation_of
from hpsearch.search_spaces import StudySpec
from hpsearch.search_spaces.validate import check_against_trainer
from hpsearch.tracking import Tracker, TrialRun

logger = logging.getLogger("hpsearch")
HYPERVOLUME_ATTR = "study_hypervolume"


class TrialFailed(HpsearchError):
    """A trial ended FAIL (its reason is in the message and in user attr ``fail_reason``; its
    class, see ``failures.py``, in ``failure_class`` and the user attr of that name)."""

    def __init__(self, reason: str, failure_class: str | None = None) -> None:
        super().__init__(reason)
        self.failure_class = failure_class


def worker_info(device: torch.device) -> dict[str, str]:
    """Who ran a trial: host, pid and device (with the visible GPUs); under a scheduler also
    ``slot`` (``HPSEARCH_WORKER_SLOT``: e.g. ``slurm:JOB_TASK``, ``ray:NODE``, ``gpu0``) and
    ``visible_gpus`` (``CUDA_VISIBLE_DEVICES`` as the scheduler set it, whatever the device)."""
    info = {
        "host": socket.gethostname(),
        "pid": str(os.getpid()),
        "device": str(device),
        "gpu": os.environ.get("CUDA_VISIBLE_DEVICES", "") if device.type == "cuda" else "",
    }
    scheduler = {"slot": "HPSEARCH_WORKER_SLOT", "visible_gpus": "CUDA_VISIBLE_DEVICES"}
    for key, variable in scheduler.items():
        if os.environ.get(variable):
            info[key] = os.environ[variable]
    return info


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
        self.pareto_asha = _pareto_asha(spec)
        self._study_hypervolume: StudyHypervolume | None = None

    def __call__(self, trial: optuna.Trial) -> float | list[float]:
        params = {**self.spec.fixed, **suggest_params(trial, self.spec.space)}
        worker = worker_info(self.device)
        tags = {"study": self.study_name, "trial_number": str(trial.number), **worker}
        run = self.tracker.start_trial(self.study_name, trial.number, params, tags)
        # Written at the start, so a trial whose worker dies still says where it ran.
        started = {"worker": worker, "mlflow_run_id": run.run_id}
        set_user_attrs(trial, {key: value for key, value in started.items() if value is not None})
        record = EpochRecord()
        outcome = execute_trial(
            self.spec,
            self.trainer_class,
            params,
            seed=self.spec.seed + trial.number,
            run=run,
            device=self.device,
            on_epoch=self._epoch_hook(trial, record),
        )
        attrs = {**record.attrs(), **self._hypervolume_attrs(trial, outcome, run)}
        record_outcome(trial, outcome, attrs)
        run.finish(outcome.state, outcome.values, outcome.final_metrics, _artifacts(outcome))
        return self._result(trial, outcome)

    def _epoch_hook(self, trial: optuna.Trial, record: EpochRecord) -> EpochHook:
        """Keep each epoch's objective vector; report it to Optuna (one objective) and to
        pareto-asha (at its rungs). Epochs that lack an objective's metric are skipped.

        With pareto-asha the vectors are written to the trial every epoch (other workers read
        them while it runs); otherwise once, with the trial's other attributes at its end."""

        def hook(epoch: int, metrics: Mapping[str, float]) -> str | None:
            measured = epoch_vector(self.spec, metrics)
            if measured is None:
                return None
            values, constraints = measured
            record.vectors[str(epoch)] = vector_entry(values, constraints)
            reason = self._report_to_optuna(trial, epoch, values)
            if self.pareto_asha is not None:
                trial.set_user_attr(VECTORS_ATTR, record.vectors)
                if reason is None:
                    reason = self._judge(trial, epoch, values, constraints, record)
            return reason

        return hook

    def _report_to_optuna(
        self, trial: optuna.Trial, epoch: int, values: Sequence[float]
    ) -> str | None:
        """Single-objective specs report each epoch to Optuna so its pruners can act."""
        if len(values) != 1:
            return None
        trial.report(values[0], epoch)
        if self.pareto_asha is None and trial.should_prune():
            return f"pruner {self.spec.pruner.name if self.spec.pruner else ''} at epoch {epoch}"
        return None

    def _judge(
        self,
        trial: optuna.Trial,
        epoch: int,
        values: list[float],
        constraints: list[float | None],
        record: EpochRecord,
    ) -> str | None:
        """pareto-asha's verdict at a rung, recorded; the reason to stop, or None. A store
        error lets the trial go on (with a warning) rather than fail it."""
        assert self.pareto_asha is not None
        try:
            decision = self.pareto_asha.judge(trial, epoch, values, violation_of(constraints))
        except Exception as error:
            logger.warning("trial %d: no rung decision at epoch %d: %s", trial.number, epoch, error)
            return None
        if decision is None:
            return None
        record.decisions.append(decision.to_dict())
        if decision.proceed:
            return None
        record.pruned = {"pruned_rung": decision.rung, "pruned_rank": decision.rank}
        return decision.reason()

    def _hypervolume(self, reference: Sequence[float] | None) -> StudyHypervolume:
        if self._study_hypervolume is None:
            self._study_hypervolume = StudyHypervolume(self.spec.directions, reference)
        return self._study_hypervolume

    def _hypervolume_attrs(
        self, trial: optuna.Trial, outcome: TrialOutcome, run: TrialRun
    ) -> dict[str, Any]:
        """The study's hypervolume once this trial is done, as user attrs (and an MLflow
        metric); never fails the trial."""
        if len(self.spec.objectives) < 2:
            return {}
        own = None
        if outcome.state == "COMPLETE" and outcome.values is not None:
            own = ([outcome.values[name] for name in self.spec.objective_names], outcome.feasible)
        reference = self.pareto_asha.reference_point if self.pareto_asha else None
        try:
            volume, used = self._hypervolume(reference).update(trial.study, own)
        except Exception as error:  # a statistic must never fail a trial
            logger.warning("trial %d: could not compute the hypervolume: %s", trial.number, error)
            return {}
        run.log_epoch(trial.number, {HYPERVOLUME_ATTR: volume})
        attrs: dict[str, Any] = {HYPERVOLUME_ATTR: volume}
        if used is not None:
            attrs["hypervolume_reference"] = used
        return attrs

    def _result(self, trial: optuna.Trial, outcome: TrialOutcome) -> float | list[float]:
        if outcome.state == "PRUNED":
            raise optuna.TrialPruned(outcome.reason)
        if outcome.state == "FAIL" or outcome.values is None:
            raise TrialFailed(outcome.reason or "unknown failure", outcome.failure_class)
        for name, violation in outcome.constraints.items():
            trial.set_constraint(name, violation)
        values = [outcome.values[name] for name in self.spec.objective_names]
        return values[0] if len(values) == 1 else values


def epoch_vector(
    spec: StudySpec, metrics: Mapping[str, float]
) -> tuple[list[float], list[float | None]] | None:
    """This epoch's objective values (spec order) and constraint values (None where the
    metric is not measured per epoch); None when an objective's metric is missing."""
    if any(objective.metric not in metrics for objective in spec.objectives):
        return None
    values = [objective.value(dict(metrics)) for objective in spec.objectives]
    constraints = [
        c.violation(dict(metrics)) if c.metric in metrics else None for c in spec.constraints
    ]
    return values, constraints


def _pareto_asha(spec: StudySpec) -> ParetoAshaPruner | None:
    if spec.pruner is None or spec.pruner.name != PRUNER_NAME:
        return None
    return make_pareto_asha(spec.pruner, spec)


class EpochRecord:
    """What the epoch hook gathers for the trial's attributes: the per-epoch objective
    vectors, pareto-asha's rung decisions and, if it stopped the trial, the rung and rank."""

    def __init__(self) -> None:
        self.vectors: dict[str, Any] = {}
        self.decisions: list[dict[str, Any]] = []
        self.pruned: dict[str, Any] = {}

    def attrs(self) -> dict[str, Any]:
        attrs: dict[str, Any] = {VECTORS_ATTR: self.vectors, **self.pruned}
        if self.decisions:
            attrs["rung_decisions"] = self.decisions
        return attrs


def record_outcome(
    trial: optuna.Trial, outcome: TrialOutcome, extra: Mapping[str, Any] | None = None
) -> None:
    """Store what the trial produced as user attributes (JSON-safe), in one transaction."""
    attrs: dict[str, Any] = {
        "effective_params": outcome.effective_params,
        "rule_events": outcome.events,
        "metrics_history": outcome.history,
        "final_metrics": outcome.final_metrics,
        "epochs_run": outcome.epochs_run,
        "state_description": outcome.describe_state(),
        **(extra or {}),
    }
    if outcome.report:
        attrs["trainer_report"] = outcome.report
    if outcome.reason:
        attrs["fail_reason" if outcome.state == "FAIL" else "prune_reason"] = outcome.reason
    if outcome.failure_class:
        attrs["failure_class"] = outcome.failure_class
    set_user_attrs(trial, {key: json_safe(value) for key, value in attrs.items()})


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
