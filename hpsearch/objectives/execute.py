"""Run one configuration: trainer epochs judged by the rules, then objectives and constraints.

Knows nothing of Optuna: ``on_epoch`` lets the caller add its own per-epoch pruning decision.
Every fault of the trainer ends the trial as FAIL with a one-line reason and a failure class
(``failures.py``), and never propagates: an exception (bad params, out of memory, a bug), a
``sys.exit()``, a NaN/inf metric, a metric that is not a number or is missing, a hang past the
spec's ``trial_timeout``. Only the worker's own stop signals go through, and a
``TrainerContractError``: an undeclared trainer and its spec disagree (a param or knob it reads
is not given, a final metric the objectives need is missing), so every trial would fail the same
way; it stops the run with one line.

``effective_params`` are the values the last trained epoch ran with: a backoff fired after the
last epoch changed no training and is only in the rule events.
Why a trial stopped early is a ``StopReason`` record (``stop.py``), made where the decision is
taken: a rule, the caller's pruner, or a failure (its ``name`` is the failure class).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

import torch

from hpsearch.errors import ParamError, TrainerContractError
from hpsearch.objectives.deadline import Deadline, TrialTimeout, trial_deadline
from hpsearch.objectives.failures import (
    FailureClass,
    classify_exception,
    describe_exception,
    short_reason,
)
from hpsearch.objectives.outcome import TrialOutcome
from hpsearch.objectives.stop import StopReason
from hpsearch.pruners import RuleEngine, build_rules
from hpsearch.search_spaces import StudySpec
from hpsearch.search_spaces.validate import (
    check_final_metrics,
    check_rule_knobs,
    watch_pruned_objectives,
)
from hpsearch.tracking import TrialRun
from hpsearch.trainers import Trainer

# Returns why to stop the trial (it ends PRUNED), or None to go on.
EpochHook = Callable[[int, Mapping[str, float]], StopReason | None]


class _Stop(Exception):
    def __init__(self, reason: StopReason) -> None:
        super().__init__(reason.text())
        self.reason = reason

    @classmethod
    def failure(cls, failure_class: FailureClass, message: str, epoch: int | None) -> _Stop:
        return cls(StopReason("failure", failure_class, epoch, message))


def pick_device(device: str | None = None) -> torch.device:
    """``cuda`` when available (or asked for), else ``cpu``; ParamError for a device that is
    not a device name, or a CUDA device this machine does not have."""
    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    assert device is not None
    try:
        chosen = torch.device(device)
    except (RuntimeError, ValueError, TypeError):
        raise ParamError(
            f"--device {device!r} is not a device; use auto, cpu, cuda or cuda:N"
        ) from None
    if chosen.type not in ("cpu", "cuda"):
        raise ParamError(f"--device {device!r} is not supported; use auto, cpu, cuda or cuda:N")
    if chosen.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise ParamError(
                f"--device {device!r}: CUDA is not available on this machine; use --device cpu "
                "(or auto)"
            )
        if chosen.index is not None and chosen.index >= count:
            raise ParamError(
                f"--device {device!r}: this machine has {count} CUDA device(s); "
                f"use cuda:0 to cuda:{count - 1}"
            )
    return chosen


def execute_trial(
    spec: StudySpec,
    trainer_class: type[Trainer],
    params: Mapping[str, Any],
    *,
    seed: int,
    run: TrialRun,
    device: torch.device,
    on_epoch: EpochHook | None = None,
) -> TrialOutcome:
    """Train ``params`` for ``spec.epochs`` epochs under the spec's rules, within the spec's
    ``trial_timeout``."""
    outcome = TrialOutcome(state="COMPLETE", params=dict(params), effective_params=dict(params))
    outcome.mlflow_run_id = run.run_id
    trainer: Trainer | None = None
    trained_with: dict[str, Any] = {}  # the params the last epoch trained with
    with trial_deadline(spec.trial_timeout) as deadline:
        try:
            trainer = trainer_class(params, device=device, seed=seed)
            outcome.start_params = _effective_params(trainer, outcome)
            _evaluate(spec, trainer, run, outcome, on_epoch, deadline, trained_with)
        except _Stop as stop:
            outcome.stop_with(stop.reason)
        except TrialTimeout as timeout:
            _fail(outcome, str(timeout), "timeout")
        except TrainerContractError:
            raise
        except (Exception, SystemExit) as error:  # a crashing trial never takes the worker down
            _fail(outcome, describe_exception(error), classify_exception(error))
            _release_cuda_memory(error)
        deadline.disarm()
        if trained_with:
            outcome.effective_params = trained_with
        elif trainer is not None:  # no epoch ran
            outcome.effective_params = _effective_params(trainer, outcome)
    return outcome


def _evaluate(
    spec: StudySpec,
    trainer: Trainer,
    run: TrialRun,
    outcome: TrialOutcome,
    on_epoch: EpochHook | None,
    deadline: Deadline,
    trained_with: dict[str, Any],
) -> None:
    check_rule_knobs(spec, trainer)
    engine = RuleEngine(build_rules(spec.rules), trainer.params)
    _train(spec, trainer, engine, run, outcome, on_epoch, deadline, trained_with)
    deadline.check()
    final = _numbers(trainer.final_metrics(), "the final metrics", spec.epochs)
    outcome.final_metrics = _checked(final, "the final metrics", spec.epochs)
    if trainer.metric_names is None:  # undeclared: checked on first use, stops the run
        check_final_metrics(spec, trainer, outcome.final_metrics)
    _require_metrics(spec, outcome.final_metrics)
    outcome.values = {o.name: o.value(outcome.final_metrics) for o in spec.objectives}
    outcome.constraints = {c.name: c.violation(outcome.final_metrics) for c in spec.constraints}
    outcome.report = trainer.report()
    deadline.check()


def _fail(outcome: TrialOutcome, reason: str, failure_class: FailureClass) -> None:
    epoch = outcome.epochs_run + 1 if outcome.start_params else None  # the epoch it was in
    outcome.stop_with(StopReason("failure", failure_class, epoch, reason))


def _effective_params(trainer: Trainer, outcome: TrialOutcome) -> dict[str, Any]:
    try:
        return trainer.effective_params()
    except (Exception, SystemExit):  # a broken trainer's params: the ones it was given
        return outcome.effective_params


def _train(
    spec: StudySpec,
    trainer: Trainer,
    engine: RuleEngine,
    run: TrialRun,
    outcome: TrialOutcome,
    on_epoch: EpochHook | None,
    deadline: Deadline,
    trained_with: dict[str, Any],
) -> None:
    for epoch, raw in enumerate(trainer.epochs(spec.epochs), start=1):
        deadline.check()
        trained_with.clear()
        trained_with.update(_effective_params(trainer, outcome))  # before this epoch's rules
        metrics = _numbers(raw, f"epoch {epoch}", epoch)
        outcome.history.append(metrics)
        watch_pruned_objectives(spec, epoch, metrics)
        with deadline.hold():  # hpsearch's own writes are not cut by the alarm
            run.log_epoch(epoch, metrics)
            fired = engine.observe(epoch, metrics, trainer.knobs)
            if fired:
                outcome.events = [event.to_dict() for event in engine.events]
                run.log_events(outcome.events)
        if engine.aborted_by is not None:
            event = engine.aborted_by
            raise _Stop(StopReason("rule", event.rule, epoch, event.message))
        _checked(metrics, f"epoch {epoch}", epoch)
        if on_epoch is not None:
            with deadline.hold():
                reason = on_epoch(epoch, metrics)
            if reason is not None:
                raise _Stop(reason)


def _numbers(metrics: object, where: str, epoch: int | None) -> dict[str, float]:
    """The metrics as floats; a FAIL (trainer_error) naming a metric that is not a number."""
    if not isinstance(metrics, Mapping):
        raise _Stop.failure(
            "trainer_error",
            short_reason(
                f"the trainer gave {type(metrics).__name__} for {where}, not a mapping of "
                "metric names to numbers"
            ),
            epoch,
        )
    numbers: dict[str, float] = {}
    for name, value in metrics.items():
        try:
            if value is None or isinstance(value, str | bytes):
                raise TypeError
            numbers[str(name)] = float(value)
        except (TypeError, ValueError, RuntimeError):  # a string, a tensor of many elements
            raise _Stop.failure(
                "trainer_error",
                short_reason(f"metric {name} is {value!r} at {where}, not a number"),
                epoch,
            ) from None
    return numbers


def _checked(
    metrics: Mapping[str, float], where: str, epoch: int | None = None
) -> dict[str, float]:
    """The metrics, or a FAIL (divergence) naming the first NaN/inf metric."""
    for name, value in metrics.items():
        if not math.isfinite(float(value)):
            raise _Stop.failure("divergence", f"metric {name} is {float(value)} at {where}", epoch)
    return dict(metrics)


def _require_metrics(spec: StudySpec, final: Mapping[str, float]) -> None:
    """A FAIL (trainer_error) naming the first objective/constraint metric that is missing."""
    needed = [o.metric for o in spec.objectives] + [c.metric for c in spec.constraints]
    missing = [metric for metric in needed if metric not in final]
    if missing:
        raise _Stop.failure(
            "trainer_error",
            f"the final metrics lack {missing[0]!r}, which the spec's objectives or constraints "
            "need; the trainer's final_metrics() must return it",
            spec.epochs,
        )


def _release_cuda_memory(error: BaseException) -> None:
    if isinstance(error, torch.cuda.OutOfMemoryError) and torch.cuda.is_available():
        torch.cuda.empty_cache()
