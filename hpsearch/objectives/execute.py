"""Run one configuration: trainer epochs judged by the rules, then objectives and constraints.

Knows nothing of Optuna: ``on_epoch`` lets the caller add its own per-epoch pruning decision.
Every exception of the trainer (bad params, NaN, out of memory, a bug) ends the trial as FAIL
with the reason; it never propagates, except a ``TrainerContractError`` (the trainer and the spec
disagree: every trial would fail the same way), which stops the run with one line.

``effective_params`` are the values the last trained epoch ran with: a backoff fired after the
last epoch changed no training and is only in the rule events.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

import torch

from hpsearch.errors import TrainerContractError
from hpsearch.objectives.outcome import TrialOutcome
from hpsearch.pruners import RuleEngine, build_rules
from hpsearch.search_spaces import StudySpec
from hpsearch.search_spaces.validate import (
    check_final_metrics,
    check_rule_knobs,
    watch_pruned_objectives,
)
from hpsearch.tracking import TrialRun
from hpsearch.trainers import Trainer

# Returns a reason to stop the trial (it ends PRUNED), or None to go on.
EpochHook = Callable[[int, Mapping[str, float]], str | None]


class _Stop(Exception):
    def __init__(self, state: str, reason: str, pruned_by: str | None = None) -> None:
        super().__init__(reason)
        self.state, self.reason, self.pruned_by = state, reason, pruned_by


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
    trained_with: dict[str, Any] = {}  # the params the last epoch trained with
    try:
        trainer = trainer_class(params, device=device, seed=seed)
        check_rule_knobs(spec, trainer)
        engine = RuleEngine(build_rules(spec.rules), trainer.params)
        _train(spec, trainer, engine, run, outcome, on_epoch, trained_with)
        outcome.final_metrics = _checked(trainer.final_metrics(), "final metrics")
        check_final_metrics(spec, trainer, outcome.final_metrics)
        outcome.values = {o.name: o.value(outcome.final_metrics) for o in spec.objectives}
        outcome.constraints = {c.name: c.violation(outcome.final_metrics) for c in spec.constraints}
        outcome.report = trainer.report()
    except _Stop as stop:
        outcome.state, outcome.reason, outcome.pruned_by = stop.state, stop.reason, stop.pruned_by  # type: ignore[assignment]
    except TrainerContractError:
        raise
    except Exception as error:  # a crashing trial never takes the worker down
        outcome.state, outcome.reason = "FAIL", _describe(error)
        _release_cuda_memory(error)
    if trained_with:
        outcome.effective_params = trained_with
    elif trainer is not None:
        outcome.effective_params = trainer.effective_params()  # no epoch ran
    return outcome


def _train(
    spec: StudySpec,
    trainer: Trainer,
    engine: RuleEngine,
    run: TrialRun,
    outcome: TrialOutcome,
    on_epoch: EpochHook | None,
    trained_with: dict[str, Any],
) -> None:
    for epoch, metrics in enumerate(trainer.epochs(spec.epochs), start=1):
        trained_with.clear()
        trained_with.update(trainer.effective_params())  # before this epoch's rules act
        metrics = {key: float(value) for key, value in metrics.items()}
        outcome.history.append(metrics)
        watch_pruned_objectives(spec, epoch, metrics)
        run.log_epoch(epoch, metrics)
        fired = engine.observe(epoch, metrics, trainer.knobs)
        if fired:
            outcome.events = [event.to_dict() for event in engine.events]
            run.log_events(outcome.events)
        if engine.aborted_by is not None:
            event = engine.aborted_by
            raise _Stop(
                "PRUNED",
                f"rule {event.rule} at epoch {epoch}: {event.message}",
                pruned_by=f"rule {event.rule}",
            )
        _checked(metrics, f"epoch {epoch}")
        if on_epoch is not None:
            reason = on_epoch(epoch, metrics)
            if reason is not None:
                raise _Stop("PRUNED", reason, pruned_by=reason.split(" at epoch")[0])


def _checked(metrics: Mapping[str, float], where: str) -> dict[str, float]:
    """The metrics, or a FAIL naming the first NaN/inf metric."""
    for name, value in metrics.items():
        if not math.isfinite(float(value)):
            raise _Stop("FAIL", f"metric {name} is {float(value)} at {where}")
    return dict(metrics)


def _describe(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0]}" if text else type(error).__name__


def _release_cuda_memory(error: BaseException) -> None:
    if isinstance(error, torch.cuda.OutOfMemoryError) and torch.cuda.is_available():
        torch.cuda.empty_cache()
