"""``kl-ceiling``: the seed 002 watch on the adaptive KL ceiling's rollbacks.

- rollback rate > 10% in an epoch -> relax: the ceiling goes back one schedule step
  (``squeeze_step - 1``, not below 0) and the squeeze pauses an epoch (``squeeze_hold = 1``);
- rollback rate > 50% for 2 epochs -> abort (the box cannot be kept);
- a step rolled back through the ceiling during the discovery epoch -> an event (it must not
  happen: the ceiling is open in epoch 1);
- any NaN/inf metric -> abort.

Rollback rates are in percent of the epoch's optimizer steps (the ``lbo`` trainer's
``rollback_rate``).
"""

from __future__ import annotations

from typing import Any

from hpsearch.pruners.presets import register_preset

KL_CEILING: list[dict[str, Any]] = [
    {
        "name": "non-finite",
        "when": "any_nonfinite()",
        "then": "abort",
        "message": "a metric is NaN or infinite",
    },
    {
        "name": "discovery-violation",
        "when": "epoch == 1 and upper_violations > 0",
        "then": "advise",
        "message": "a step was rolled back through the ceiling in the discovery epoch, "
        "where the ceiling must be open",
    },
    {
        "name": "rollback-runaway",
        "when": "rollback_rate > 50",
        "for_epochs": 2,
        "then": "abort",
        "message": "rollback rate > 50% for 2 epochs: the box cannot be kept",
    },
    {
        "name": "relax-squeeze",
        "when": "rollback_rate > 10",
        "then": {"add": {"squeeze_step": -1}, "set": {"squeeze_hold": 1}},
        "bounds": {"squeeze_step": [0, 1_000_000]},
        "message": "rollback rate > 10%: ceiling back one schedule step, squeeze paused an epoch",
    },
]

register_preset(
    "kl-ceiling",
    "seed 002: relax the KL-ceiling squeeze when rollbacks spike, abort when they run away",
    rules=KL_CEILING,
)
