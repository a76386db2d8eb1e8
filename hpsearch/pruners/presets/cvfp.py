"""``cvfp-health``: the seed 001 health checks and its adaptive weighting (option 2)."""

from __future__ import annotations

from typing import Any

from hpsearch.pruners.presets import register_preset

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
    # The seed's option 2, applied between iterations when the trial's schedule is adaptive.
    {
        "name": "adaptive-more-diversity",
        "when": "train_effective_rank_ratio < 0.8",
        "then": {"set": {"dist_reg_weight": 0.7}},
        "if_params": {"schedule": "adaptive"},
    },
    {
        "name": "adaptive-more-convergence",
        "when": "train_effective_rank_ratio >= 0.8 and train_convergence_rate < 0.5",
        "then": {"set": {"dist_reg_weight": 0.2}},
        "if_params": {"schedule": "adaptive"},
    },
    {
        "name": "adaptive-balanced",
        "when": "train_effective_rank_ratio >= 0.8 and train_convergence_rate >= 0.5",
        "then": {"set": {"dist_reg_weight": 0.5}},
        "if_params": {"schedule": "adaptive"},
    },
]

register_preset(
    "cvfp-health",
    "seed 001: abort on NaN/inf or a hopeless rank collapse; adaptive diversity weighting",
    rules=CVFP_HEALTH,
)
