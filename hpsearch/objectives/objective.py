"""Spec + tracker -> an Optuna objective (docs/design.md, Objective).

One trial: suggest params from ``space``, merge ``fixed``, train under the rules, compute the
objective values (bands included) and the constraint values from the final metrics, and store
on the trial what a person reads in optuna-dashboard (``summary.py``): the effective params
(and those a rule changed), one line per rule event, the stop reason, the final metrics, the
MLflow run id and the worker; machine-readable rule events and rung decisions go to trial
system attributes. Metric histories and trainer reports go to MLflow, not to the trial.

Constraint values are stored as Optuna's list-form system attribute ``constraints`` (spec
order): Optuna 5 reads it as it reads ``set_constraint``'s ``constraints:<name>`` keys, and
optuna-dashboard 0.21 reads only this form, so it greys infeasible trials. Both forms at once
would make Optuna count every constraint twice.
A PRUNED trial raises ``optuna.TrialPruned``; a failed one ``TrialFailed`` (caught by
``study.optimize(catch=...)``), with the reason stored in user attr ``fail_reason`` and the
typed record in ``stop``.
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
from hpsearch.objectives.attrs import set_system_attrs, set_user_attrs
from hpsearch.objectives.execute import EpochHook, execute_trial, pick_device
from hpsearch.objectives.factories import make_pareto_asha
from hpsearch.objectives.failures import FAILURE_CLASS_ATTR
from hpsearch.objectives.hypervolume import (
    REFERENCE_AFTER_TRIALS,
    StudyHypervolume,
    fix_reference,
    stored_reference,
)
from hpsearch.objectives.log_filter import install_failed_trial_filter
from hpsearch.objectives.outcome import TrialOutcome, json_safe
from hpsearch.objectives.stop import STOP_ATTR, StopReason
from hpsearch.objectives.suggest import suggest_params
from hpsearch.objectives.summary import (
    FINAL_METRICS_SYSTEM_ATTR,
    RULE_EVENTS_SYSTEM_ATTR,
    RUNG_DECISIONS_SYSTEM_ATTR,
    changed_params,
    event_lines,
    rounded,
)
from hpsearch.pruners.pareto_asha import PRUNER_NAME, ParetoAshaPruner
from hpsearch.pruners.rung_store import VECTORS_ATTR, vector_entry, violation_of
from hpsearch.search_spaces import StudySpec
from hpsearch.search_spaces.validate import check_against_trainer
from hpsearch.tracking import Tracker, TrialRun

logger = logging.getLogger("hpsearch")
HYPERVOLUME_ATTR = "study_hypervolume"
CONSTRAINTS_SYSTEM_ATTR = "constraints"  # Optuna's list form, read by optuna-dashboard too


class TrialFailed(HpsearchError):
    """A trial ended FAIL (its reason is in the message and in user attr ``fail_reason``; its
    class, see ``failures.py``, in ``failure_class`` and the user attr of that name)."""

    def __init__(self, reason: str, failure_class: str | None = None) -> None:
        super().__init__(reason)
        self.failure_class = failure_class


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
        self.pareto_asha = _pareto_asha(spec)
        self._study_hypervolume: StudyHypervolume | None = None

    def __call__(self, trial: optuna.Trial) -> float | list[float]:
        params = {**self.spec.fixed, **suggest_params(trial, self.spec.space, self.spec.fixed)}
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
        record_outcome(trial, outcome, attrs, record.system_attrs())
        run.finish(outcome.state, outcome.values, outcome.final_metrics, _artifacts(outcome))
        return self._result(trial, outcome)

    def _epoch_hook(self, trial: optuna.Trial, record: EpochRecord) -> EpochHook:
        """Keep each epoch's objective vector; report it to Optuna (one objective) and to
        pareto-asha (at its rungs). Epochs that lack an objective's metric are skipped.

        With pareto-asha the vectors are written to the trial every epoch (other workers read
        them while it runs); otherwise once, with the trial's other attributes at its end."""

        def hook(epoch: int, metrics: Mapping[str, float]) -> StopReason | None:
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
    ) -> StopReason | None:
        """Single-objective specs report each epoch to Optuna so its pruners can act."""
        if len(values) != 1:
            return None
        trial.report(values[0], epoch)
        if self.pareto_asha is None and trial.should_prune():
            name = self.spec.pruner.name if self.spec.pruner else "optuna"
            return StopReason("optuna-pruner", name, epoch, "")
        return None

    def _judge(
        self,
        trial: optuna.Trial,
        epoch: int,
        values: list[float],
        constraints: list[float | None],
        record: EpochRecord,
    ) -> StopReason | None:
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
        return StopReason("pareto-asha", PRUNER_NAME, decision.rung, decision.verdict())

    def _hypervolume(self, study: optuna.Study) -> StudyHypervolume:
        """The study's running hypervolume, at the study's reference point if it has one
        (the spec's is stored on the study on first use)."""
        if self._study_hypervolume is None:
            given = self.pareto_asha.reference_point if self.pareto_asha else None
            reference = fix_reference(study, given) if given else stored_reference(study)
            self._study_hypervolume = StudyHypervolume(self.spec.directions, reference)
        return self._study_hypervolume

    @staticmethod
    def _fix_reference(study: optuna.Study, tracker: StudyHypervolume) -> bool:
        """Take the reference point another worker stored, or store one derived from the
        complete trials seen once there are enough; whether the tracker now has one."""
        stored = stored_reference(study)
        derived = tracker.derived_reference_values()
        if stored is None and derived and len(tracker.seen) >= REFERENCE_AFTER_TRIALS:
            stored = fix_reference(study, derived)
        if stored is not None:
            tracker.set_reference(stored)
        return stored is not None

    def _hypervolume_attrs(
        self, trial: optuna.Trial, outcome: TrialOutcome, run: TrialRun
    ) -> dict[str, Any]:
        """The study's hypervolume once this trial is done, as a user attr (and an MLflow
        metric), once the study has its reference point; never fails the trial."""
        if len(self.spec.objectives) < 2:
            return {}
        own = None
        if outcome.state == "COMPLETE" and outcome.values is not None:
            own = ([outcome.values[name] for name in self.spec.objective_names], outcome.feasible)
        try:
            tracker = self._hypervolume(trial.study)
            volume, _used = tracker.update(trial.study, own)
            if tracker.reference is None and self._fix_reference(trial.study, tracker):
                volume, _used = tracker.update(trial.study, own)
        except Exception as error:  # a statistic must never fail a trial
            logger.warning("trial %d: could not compute the hypervolume: %s", trial.number, error)
            return {}
        if tracker.reference is None:
            return {}
        run.log_epoch(trial.number, {HYPERVOLUME_ATTR: volume})
        return {HYPERVOLUME_ATTR: rounded(volume, 8)}

    def _result(self, trial: optuna.Trial, outcome: TrialOutcome) -> float | list[float]:
        if outcome.state == "PRUNED":
            raise optuna.TrialPruned(outcome.reason)
        if outcome.state == "FAIL" or outcome.values is None:
            raise TrialFailed(outcome.reason or "unknown failure", outcome.failure_class)
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
        return {VECTORS_ATTR: self.vectors, **self.pruned}

    def system_attrs(self) -> dict[str, Any]:
        return {RUNG_DECISIONS_SYSTEM_ATTR: self.decisions} if self.decisions else {}


def record_outcome(
    trial: optuna.Trial,
    outcome: TrialOutcome,
    extra: Mapping[str, Any] | None = None,
    system_extra: Mapping[str, Any] | None = None,
) -> None:
    """Store what the trial produced: short user attributes a person reads (JSON-safe, one
    transaction), and the machine-readable lists and constraint values as system attributes."""
    set_user_attrs(
        trial,
        {key: json_safe(value) for key, value in trial_attrs(outcome).items()}
        | {key: json_safe(value) for key, value in (extra or {}).items()},
    )
    system: dict[str, Any] = dict(system_extra or {})
    if outcome.events:
        system[RULE_EVENTS_SYSTEM_ATTR] = json_safe(outcome.events)
    if outcome.final_metrics:
        system[FINAL_METRICS_SYSTEM_ATTR] = json_safe(outcome.final_metrics)
    if outcome.state == "COMPLETE" and outcome.constraints:
        system[CONSTRAINTS_SYSTEM_ATTR] = [float(v) for v in outcome.constraints.values()]
    set_system_attrs(trial, system)


def trial_attrs(outcome: TrialOutcome) -> dict[str, Any]:
    """The user attributes of a finished trial: ``effective_params`` (dict), ``params_changed``
    (``free_bits 0.015 (was 0.02)``), ``rule_events`` (one line per event), ``final_metrics``
    (or ``last_metrics`` of a trial stopped early; 6 significant digits), ``feasible``,
    ``epochs_run``, ``state_description`` and, for a PRUNED / FAIL trial, ``prune_reason`` /
    ``fail_reason`` with the typed record ``stop``."""
    effective = {
        key: value
        for key, value in outcome.effective_params.items()
        if key in outcome.params or outcome.start_params.get(key, value) != value
    }
    attrs: dict[str, Any] = {
        "effective_params": effective,  # the trial's own params, and any a rule changed
        "epochs_run": outcome.epochs_run,
        "state_description": outcome.describe_state(),
    }
    changed = changed_params(outcome.start_params, outcome.effective_params)
    if changed:
        attrs["params_changed"] = changed
    if outcome.events:
        attrs["rule_events"] = event_lines(outcome.events)
    if outcome.state == "COMPLETE":
        attrs["final_metrics"] = {k: rounded(v) for k, v in outcome.final_metrics.items()}
        if outcome.constraints:
            attrs["feasible"] = _feasibility_line(outcome.constraints)
    elif outcome.history:
        attrs["last_metrics"] = {k: rounded(v) for k, v in outcome.history[-1].items()}
    if outcome.stop is not None:
        attrs["fail_reason" if outcome.state == "FAIL" else "prune_reason"] = outcome.stop.text()
        attrs[STOP_ATTR] = outcome.stop.to_dict()
    if outcome.failure_class:
        attrs[FAILURE_CLASS_ATTR] = outcome.failure_class
    return attrs


def _feasibility_line(constraints: Mapping[str, float]) -> str:
    """``yes``, or ``no: loss <= 0.2 (off by 0.053)``."""
    broken = [f"{name} (off by {value:.3g})" for name, value in constraints.items() if value > 0]
    return "no: " + ", ".join(broken) if broken else "yes"


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
    returned. Optuna's log of a trial hpsearch failed on purpose becomes one line from here on
    (a filter on Optuna's trial logger; nothing is set when the package is imported)."""
    install_failed_trial_filter(TrialFailed)
    return SpecObjective(spec, tracker, study_name=study_name, device=device)
