"""``directional-guards``: the seed 003 watch over the lvm trainer's mini-5CAT.

Rules, in the order they run after each epoch:

- ``non-finite``: abort when any metric is NaN or infinite.
- ``backward-drift-backoff`` (the seed's emergency backoff): from epoch 3, once the guards are
  on (``guard_start_epoch``), a mini-5CAT peak that is not at k=+1 with margin(+1) <= 0 and
  falling since the previous epoch (drifting backward) sets ``lambda_dir``, ``lambda_fut`` and
  ``lambda_ac`` to 0 for the epochs that follow. It fires only while there is something to
  drop; from epoch 10 on it ignores ``lambda_ac``, which ``anti-copy-on`` owns from then.
  "Falling, with the guards on" is this preset's reading of the seed's "drift": copying the
  last frame is the early attractor, so most heads are still backward at epoch 3, and the
  residual head turns forward only under its guards (margin rising while still <= 0); the
  seed's bare "peak != +1 and margin <= 0" would drop every trial's guards at epoch 3, before
  most had started.
- ``guard-collapse`` (the V3 collapse): val cosine 0.1 or more below its best so far in the
  first two epochs with the guards on (epochs ``guard_start_epoch`` and the one after) aborts.
- ``anti-copy-on``: from epoch 10, a margin(+1) still <= 0 turns the anti-copy hinge on
  (``lambda_ac`` = 0.002) if it is lower ("enable L_ac only if drift persists").

The seed's epoch-by-epoch P2 success table is not in the preset: its thresholds are the seed's
data's, so a spec adds them as inline abort rules (commented example in ``lvm.yaml``).
"""

from __future__ import annotations

from typing import Any

from hpsearch.pruners.presets import register_preset

ANTI_COPY_EPOCH = 10
ANTI_COPY_LAMBDA = 0.002
COLLAPSE_DROP = 0.1

DIRECTIONAL_GUARDS: list[dict[str, Any]] = [
    {
        "name": "non-finite",
        "when": "any_nonfinite()",
        "then": "abort",
        "message": "a metric is NaN or infinite",
    },
    {
        "name": "backward-drift-backoff",
        "when": (
            "epoch >= 3 and epoch >= guard_start_epoch and val_peak_offset != 1 and "
            "val_margin <= 0 and "
            "val_margin < prev(val_margin) and "
            f"(lambda_dir > 0 or lambda_fut > 0 or (lambda_ac > 0 and epoch < {ANTI_COPY_EPOCH}))"
        ),
        "then": {"set": {"lambda_dir": 0.0, "lambda_fut": 0.0, "lambda_ac": 0.0}},
        "message": "backward drift (peak not at +1, margin <= 0 and falling): guards dropped",
    },
    {
        "name": "guard-collapse",
        "when": (
            "epoch >= guard_start_epoch and epoch <= guard_start_epoch + 1 and "
            f"val_cosine <= best_max(val_cosine) - {COLLAPSE_DROP}"
        ),
        "then": "abort",
        "message": (
            f"val cosine fell {COLLAPSE_DROP} or more below its best right after the guards "
            "started (the V3 collapse)"
        ),
    },
    {
        "name": "anti-copy-on",
        "when": (
            f"epoch >= {ANTI_COPY_EPOCH} and val_margin <= 0 and lambda_ac < {ANTI_COPY_LAMBDA}"
        ),
        "then": {"set": {"lambda_ac": ANTI_COPY_LAMBDA}},
        "message": f"margin still <= 0 after epoch {ANTI_COPY_EPOCH}: anti-copy hinge on",
    },
]

register_preset(
    "directional-guards",
    "seed 003: drop the guards on backward drift, abort the V3 collapse after the guards "
    "start, turn anti-copy on if drift persists after epoch 10",
    rules=DIRECTIONAL_GUARDS,
)
