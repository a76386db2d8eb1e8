"""What one trial produced, independent of Optuna (``hpsearch try`` uses it directly)."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from hpsearch.objectives.stop import StopReason

TrialStateName = Literal["COMPLETE", "PRUNED", "FAIL"]


@dataclass
class TrialOutcome:
    """The result of running one configuration: its state, why it ended that way, its
    objective and constraint values, the metric history and the rule events."""

    state: TrialStateName
    params: dict[str, Any]
    effective_params: dict[str, Any]
    start_params: dict[str, Any] = field(default_factory=dict)
    values: dict[str, float] | None = None
    constraints: dict[str, float] = field(default_factory=dict)
    final_metrics: dict[str, float] = field(default_factory=dict)
    history: list[dict[str, float]] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)
    stop: StopReason | None = None
    report: dict[str, Any] = field(default_factory=dict)
    mlflow_run_id: str | None = None

    @property
    def feasible(self) -> bool:
        return all(value <= 0.0 for value in self.constraints.values())

    @property
    def reason(self) -> str | None:
        """Why the trial stopped early, in one line (None when it completed)."""
        return self.stop.text() if self.stop is not None else None

    @property
    def pruned_by(self) -> str | None:
        """``rule X`` / ``pruner X`` for a PRUNED trial, else None."""
        if self.stop is None or self.state != "PRUNED":
            return None
        return self.stop.stopper

    @property
    def failure_class(self) -> str | None:
        """Of a FAIL: see ``hpsearch.objectives.failures``; else None."""
        if self.stop is None or self.stop.by != "failure":
            return None
        return self.stop.name

    def stop_with(self, reason: StopReason) -> None:
        """End the trial early: PRUNED, or FAIL for a failure."""
        self.stop = reason
        self.state = "FAIL" if reason.by == "failure" else "PRUNED"

    @property
    def epochs_run(self) -> int:
        return len(self.history)

    def describe_state(self) -> str:
        """``complete``, ``pruned by rule X`` / ``pruned by pruner X``, or ``failed: ...``."""
        if self.state == "COMPLETE":
            return "complete"
        if self.state == "PRUNED":
            return f"pruned by {self.pruned_by}" if self.pruned_by else "pruned"
        return f"failed: {self.reason}"

    def to_json(self) -> dict[str, Any]:
        """JSON-safe (non-finite floats as strings)."""
        data = asdict(self)
        data["stop"] = self.stop.to_dict() if self.stop is not None else None
        data["reason"], data["pruned_by"] = self.reason, self.pruned_by
        data["failure_class"] = self.failure_class
        data["state_description"] = self.describe_state()
        data["feasible"] = self.feasible
        return json_safe(data)


def json_safe(value: Any) -> Any:
    """Recursively replace NaN/inf by strings so the result is strict JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {str(key): json_safe(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(item) for item in value]
    return value
