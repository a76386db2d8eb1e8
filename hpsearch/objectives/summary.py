"""Short, human lines about a trial, as stored on it for optuna-dashboard and ``best``.

optuna-dashboard shows every user attribute in the trial table and on the trial page, cutting
JSON values at 1,024 characters; strings are shown whole. So the trial keeps short strings a
person reads (one line per rule event, the stop reason, the params the rules changed), and the
machine-readable lists (rule events, rung decisions) go to trial *system* attributes, which the
dashboard does not show. Histories and trainer reports are not stored on the trial at all (they
go to MLflow and, where configured, Optuna's artifact store).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

RULE_EVENTS_SYSTEM_ATTR = "hpsearch:rule_events"
RUNG_DECISIONS_SYSTEM_ATTR = "hpsearch:rung_decisions"
FINAL_METRICS_SYSTEM_ATTR = "hpsearch:final_metrics"  # full precision; the user attr is rounded


def short_number(value: Any, digits: int = 4) -> str:
    """``value`` with ``digits`` significant digits (non-numbers as they are)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return str(value)
    if isinstance(value, int):
        return str(value)
    if not math.isfinite(value):
        return str(value)
    return f"{value:.{digits}g}"


def rounded(value: float, digits: int = 6) -> float:
    """``value`` rounded to ``digits`` significant digits (non-finite values unchanged)."""
    if not math.isfinite(value) or value == 0.0:
        return value
    return float(f"{value:.{digits}g}")


def event_line(event: Mapping[str, Any]) -> str:
    """``epoch 5 free-bits-down: free_bits 0.02 -> 0.015`` (a backoff), ``epoch 7 collapse:
    abort (aborted: ...)``, ``epoch 3 teacher-low: advice: raise teacher_weight``."""
    head = f"epoch {event.get('epoch')} {event.get('rule')}"
    action, message = event.get("action"), str(event.get("message") or "")
    if action == "backoff":
        before, after = event.get("knobs_before") or {}, event.get("knobs_after") or {}
        changes = [
            f"{knob} {short_number(before.get(knob))} -> {short_number(value)}"
            for knob, value in after.items()
            if before.get(knob) != value
        ]
        text = ", ".join(changes) or "no knob changed"
        return f"{head}: {text}" + (f" ({message})" if message else "")
    if action == "abort":
        return f"{head}: abort" + (f" ({message})" if message else "")
    return f"{head}: {message or 'advice'}"


def event_lines(events: Sequence[Mapping[str, Any]]) -> str:
    """One line per rule event, in order."""
    return "\n".join(event_line(event) for event in events)


def changed_params(start: Mapping[str, Any], effective: Mapping[str, Any]) -> str:
    """``free_bits 0.015 (was 0.02)``, one entry per param a rule changed (``start``: the
    params the trainer started with); empty when none changed."""
    return ", ".join(
        f"{name} {short_number(effective[name])} (was {short_number(value)})"
        for name, value in start.items()
        if name in effective and effective[name] != value
    )


def metrics_line(metrics: Mapping[str, float], digits: int = 4) -> str:
    """``val_loss 0.1234, penalty_reduction 31.2``."""
    return ", ".join(f"{name} {short_number(value, digits)}" for name, value in metrics.items())
