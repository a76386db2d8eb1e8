"""``cvfp-health``: the seed 001 health checks and its adaptive weighting (option 2).

The seed's option 2, after every iteration of a trial whose ``schedule`` is ``adaptive``::

    effective rank < 0.8 of the dimension    -> dist_reg_weight 0.7   (more diversity)
    else convergence rate < 0.5               -> dist_reg_weight 0.2   (more convergence)
    else                                      -> dist_reg_weight 0.5   (balanced)

The seed wrote the levels for its balanced weight 0.5. Here they are scaled by the trial's
``dist_reg_weight / 0.5`` (the seed's exactly at the default 0.5; clamped to [0, 1]), so that the
searched ``dist_reg_weight`` is the adaptive schedule's balanced level: with fixed levels it would
be dead under this schedule (overwritten after the forward-only first iteration). Convergence is
judged at the trial's own ``convergence_threshold`` (``train_convergence_rate_at_threshold``);
the objective is always measured at the seed's 0.1. A row fires only when it changes the
weight.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from functools import partial
from typing import Any

from hpsearch.pruners.base import Action, EpochState, Rule
from hpsearch.pruners.presets import register_preset

# The seed's option-2 levels at its balanced weight 0.5, and its two thresholds.
SEED_LEVELS = {"more-diversity": 0.7, "more-convergence": 0.2, "balanced": 0.5}
SEED_BALANCED_WEIGHT = 0.5
RANK_TARGET = 0.8
CONVERGENCE_TARGET = 0.5

CVFP_HEALTH: list[dict[str, Any]] = [
    {
        "name": "non-finite",
        "when": "any_nonfinite()",
        "then": "abort",
        "message": "a metric is NaN or infinite",
    },
    {
        # Neither objective can recover: rank collapsed while contexts still do not converge.
        "name": "rank-collapse",
        "when": "val_effective_rank_ratio < 0.02 and val_convergence_rate < 0.5",
        "for_epochs": 3,
        "then": "abort",
        "message": "effective rank ratio < 0.02 for 3 iterations with convergence < 0.5",
    },
]


def adaptive_levels(balanced_weight: float) -> dict[str, float]:
    """The seed's option-2 levels scaled to ``balanced_weight`` (clamped to [0, 1])."""
    scale = balanced_weight / SEED_BALANCED_WEIGHT
    return {
        name: float(f"{min(max(level * scale, 0.0), 1.0):.12g}")  # no float noise
        for name, level in SEED_LEVELS.items()
    }


class AdaptiveWeighting(Rule):
    """One row of the seed's option 2 for ``schedule: adaptive`` trials (the rule is named after
    its row: ``adaptive-more-diversity``, ``adaptive-more-convergence``, ``adaptive-balanced``);
    see the module docstring. A trial without ``dist_reg_weight`` uses the seed's 0.5."""

    def __init__(self, mode: str) -> None:
        if mode not in SEED_LEVELS:
            raise ValueError(f"unknown adaptive mode {mode!r}; use one of {', '.join(SEED_LEVELS)}")
        super().__init__(f"adaptive-{mode}")
        self.mode = mode

    def applies_to(self, params: Mapping[str, Any]) -> bool:
        return bool(params.get("schedule") == "adaptive")

    def watched_metrics(self) -> frozenset[str]:
        return frozenset({"train_effective_rank_ratio", "train_convergence_rate_at_threshold"})

    def check(self, state: EpochState) -> Action | None:
        rank = state.metrics.get("train_effective_rank_ratio", math.nan)
        converged = state.metrics.get("train_convergence_rate_at_threshold", math.nan)
        if not (math.isfinite(rank) and math.isfinite(converged)):
            return None
        if rank < RANK_TARGET:
            mode, why = "more-diversity", f"effective rank ratio {rank:.3g} < {RANK_TARGET:g}"
        elif converged < CONVERGENCE_TARGET:
            mode, why = "more-convergence", f"convergence {converged:.3g} < {CONVERGENCE_TARGET:g}"
        else:
            mode, why = "balanced", "rank and convergence on target"
        if mode != self.mode:
            return None
        balanced = float(state.params.get("dist_reg_weight", SEED_BALANCED_WEIGHT))
        weight = adaptive_levels(balanced)[mode]
        if weight == state.knobs["dist_reg_weight"]:
            return None
        return Action(
            "backoff",
            knob_values={"dist_reg_weight": weight},
            message=f"{why}: dist_reg_weight -> {weight:g}",
        )


register_preset(
    "cvfp-health",
    "seed 001: abort on NaN/inf or a hopeless rank collapse; adaptive diversity weighting",
    rules=CVFP_HEALTH,
    factories=[partial(AdaptiveWeighting, mode) for mode in SEED_LEVELS],
    reads=("train_effective_rank_ratio", "train_convergence_rate_at_threshold"),
    changes=("dist_reg_weight",),
)
