"""``kl-ceiling``: the seed 002 checks on the adaptive KL ceiling, as rules.

Every threshold is one of the seed's own checks ("Testing Checklist"):

- epoch 1 has an open ceiling, so no step may be rolled back through it
  (``discovery-violation``, advice) and the epoch's rollback rate must stay below 5 %
  (``discovery-rollbacks``, advice);
- during the squeeze, a rollback rate of 5 % or more is the seed's "tight bounds" regime (its
  hard-coded ceilings rolled back 5-10 %, the adaptive one < 2 %), where its "adaptive squeeze
  backoff kicks in": the ceiling goes back one schedule step (``squeeze_step - 1``, not below 0)
  and the squeeze pauses an epoch (``squeeze_hold = 1``) (``relax-squeeze``);
- the KL must reach the target by the last epoch: advice once the schedule has more steps left
  than there are epochs (``target-out-of-reach``), and at the last epoch when a KL term is still
  above the target (``target-missed``, reads the trainer's ``at_target``);
- any NaN/inf metric -> abort.

Rollback rates are in percent of the epoch's optimizer steps (the ``lbo`` trainer's
``rollback_rate``).
"""

from __future__ import annotations

from typing import Any

from hpsearch.pruners.presets import register_preset

SEED_ROLLBACK_LIMIT = 5  # percent: the seed's "Epoch 1: rollback rate < 5%"

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
        "name": "discovery-rollbacks",
        "when": f"epoch == 1 and rollback_rate >= {SEED_ROLLBACK_LIMIT}",
        "then": "advise",
        "message": f"epoch-1 rollback rate >= {SEED_ROLLBACK_LIMIT}% (the seed's check: < "
        f"{SEED_ROLLBACK_LIMIT}%): the lower bound is too high for this model",
    },
    {
        "name": "relax-squeeze",
        "when": f"epoch > 1 and rollback_rate >= {SEED_ROLLBACK_LIMIT}",
        "then": {"add": {"squeeze_step": -1}, "set": {"squeeze_hold": 1}},
        "bounds": {"squeeze_step": [0, 1_000_000]},
        "message": f"rollback rate >= {SEED_ROLLBACK_LIMIT}%: ceiling back one schedule step, "
        "squeeze paused an epoch",
    },
    {
        "name": "target-out-of-reach",
        "when": "steps_left > epochs_left",
        "then": "advise",
        "max_firings": 1,
        "message": "the squeeze has more steps left than epochs: the KL cannot reach the target "
        "by the last epoch",
    },
    {
        "name": "target-missed",
        "when": "epochs_left == 0 and at_target == 0",
        "then": "advise",
        "message": "last epoch: a KL term is above the target (the seed's check: the target is "
        "reached by the last epoch)",
    },
]

register_preset(
    "kl-ceiling",
    "seed 002: relax the KL-ceiling squeeze when rollbacks reach 5%, check the target is reached",
    rules=KL_CEILING,
)
