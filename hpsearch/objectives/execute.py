"""Run one configuration: trainer epochs judged by the rules, then objectives and constraints.

Knows nothing of Optuna: ``on_epoch`` lets the caller add its own per-epoch pruning decision.
Every exception of the trainer (bad params, NaN, out of memory, a bug) ends the trial as FAIL
with the reason; it never propagates. Why a trial stopped early is a ``StopReason`` record,
made where the decision is taken (a rule, the caller's pruner, a failure).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

import torch

from hpsearch.objectives.outcome import TrialOutcome
from hpsearch.objectives.stop import StopReason
from hpsearch.pruners import RuleEngine, build_rules
from hpsearch.search_spaces import StudySpec
from hpsearch.tracking import TrialRun
from hpsearch.trainers import Trainer

# Returns why to stop the trial (it ends PRUNED), or None to go on.
EpochHook = Callable[[int, Mapping[str, float]], StopReason | None]


class _Stop(Exception):
    def __init__(self, reason: StopReason) -> None:
        super().__init__(reason.text())
        self.reason = reason


def pick_device(device: str | None = None) -> torch.device:
    """``cuda`` when available (or asked for), else ``cpu``."""
    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


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
    """Train ``params`` for ``spec.epochs`` epochs under the spec's rules."""
    outcome = TrialOutcome(state="COMPLETE", params=dict(params), effective_params=dict(params))
    outcome.mlflow_run_id = run.run_id
    trainer: Trainer | None = None
    try:
        trainer = trainer_class(params, device=device, seed=seed)
        outcome.start_params = trainer.effective_params()
        engine = RuleEngine(build_rules(spec.rules), trainer.params)
        _train(spec, trainer, engine, run, outcome, on_epoch)
        outcome.final_metrics = _checked(trainer.final_metrics(), "final metrics", spec.epochs)
        outcome.values = {o.name: o.value(outcome.final_metrics) for o in spec.objectives}
        outcome.constraints = {c.name: c.violation(outcome.final_metrics) for c in spec.constraints}
        outcome.report = trainer.report()
    except _Stop as stop:
        outcome.stop_with(stop.reason)
    except Exception as error:  # a crashing trial never takes the worker down
        epoch = len(outcome.history) + 1 if trainer is not None else None
        outcome.stop_with(StopReason("failure", type(error).__name__, epoch, _describe(error)))
        _release_cuda_memory(error)
    if trainer is not None:
        outcome.effective_params = trainer.effective_params()
    return outcome


def _train(
    spec: StudySpec,
    trainer: Trainer,
    engine: RuleEngine,
    run: TrialRun,
    outcome: TrialOutcome,
    on_epoch: EpochHook | None,
) -> None:
    for epoch, metrics in enumerate(trainer.epochs(spec.epochs), start=1):
        metrics = {key: float(value) for key, value in metrics.items()}
        outcome.history.append(metrics)
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
            reason = on_epoch(epoch, metrics)
            if reason is not None:
                raise _Stop(reason)


def _checked(
    metrics: Mapping[str, float], where: str, epoch: int | None = None
) -> dict[str, float]:
    """The metrics, or a FAIL naming the first NaN/inf metric."""
    for name, value in metrics.items():
        if not math.isfinite(float(value)):
            message = f"metric {name} is {float(value)} at {where}"
            raise _Stop(StopReason("failure", "non-finite metric", epoch, message))
    return dict(metrics)


def _describe(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0]}" if text else type(error).__name__


def _release_cuda_memory(error: BaseException) -> None:
    if isinstance(error, torch.cuda.OutOfMemoryError) and torch.cuda.is_available():
        torch.cuda.empty_cache()
