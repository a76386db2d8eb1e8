"""``free-bits-health``: the seed 000 health checks on free bits, and its fallback ladder.

Declarative rules, each as the seed writes it. The penalty-reduction rules watch from epoch 5
on (the seed: "watch KL diagnostics after epoch 5"; epochs 1-5 only collect statistics), and a
rule that *sets* free_bits fires only when that moves it the way the seed intends (the epoch-5
"KL too high -> 0.03" raises free bits; it never lowers a sampled 0.05 to 0.03):

- the seed's primary health table (train.py): all KL free (``kl_after == 0`` while
  ``kl_raw > 0.02``) -> ``free_bits = 0.01``; ``penalty_reduction < 10`` -> ``0.025``;
  ``penalty_reduction > 60`` -> ``0.015``; 20-40 % is healthy;
- its quick adjustments: ``penalty_reduction > 70`` for 3 epochs -> ``free_bits - 0.005`` (not
  below 0.005); ``< 15`` for 3 epochs -> ``+ 0.005`` (not above 0.1, the value the seed found
  10x too high);
- its decision at epoch 5: ``kl_raw < 0.02`` -> ``free_bits = 0.01``; ``kl_raw > 0.12`` -> 0.03;
- its decision at epoch 10 (``Epoch10Decision``): the mean penalty reduction over epochs 5-10
  above 70 % -> 0.015, below 15 % -> 0.025;
- teacher contribution < 3% -> advise ``teacher_weight`` 0.5; > 10% -> advise 0.15 (advice only,
  once per trial: the seed keeps the weight fixed for reproducibility), judged once the KL
  warm-up is over (the seed reads it in its last stage; during the warm-up the small KL weight
  inflates the teacher's share);
- val/train loss ratio > 2.5 -> abort (overfitting);
- any NaN/inf metric -> abort.

The custom ``FallbackLadder`` rule handles instability (``kl_raw > 0.2`` or val loss above 3x its
best so far) with the seed's fallback options, one step at a time, each held 5 epochs before the
next is considered: ``free_bits = 0.025``; then ``max_kl_weight = 10``; then ``free_bits = 0.025``
with ``max_kl_weight = 12``; an instability after the last step's hold aborts the trial.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from hpsearch.pruners.base import Action, EpochState, Rule
from hpsearch.pruners.presets import register_preset

FREE_BITS_BOUNDS = (0.005, 0.1)
# The seed watches the KL diagnostics "after epoch 5" (phase 1 only collects statistics).
WATCH_FROM = 5

FREE_BITS_HEALTH: list[dict[str, Any]] = [
    {
        "name": "non-finite",
        "when": "any_nonfinite()",
        "then": "abort",
        "message": "a metric is NaN or infinite",
    },
    # The seed's primary health table (train.py), in its order. Each row moves free_bits the
    # way the seed intends (a row that would move it the other way does not fire).
    {
        "name": "all-kl-free",
        "when": "kl_after == 0 and kl_raw > 0.02 and free_bits > 0.01",
        "then": {"set": {"free_bits": 0.01}},
        "message": "free bits made all KL free; free_bits -> 0.01",
    },
    {
        "name": "health-too-tight",
        "when": f"epoch >= {WATCH_FROM} and penalty_reduction < 10 and free_bits < 0.025",
        "then": {"set": {"free_bits": 0.025}},
        "message": "penalty reduction < 10%: free bits too tight; free_bits -> 0.025",
    },
    {
        "name": "health-too-generous",
        "when": f"epoch >= {WATCH_FROM} and penalty_reduction > 60 and free_bits > 0.015",
        "then": {"set": {"free_bits": 0.015}},
        "message": "penalty reduction > 60%: free bits too generous; free_bits -> 0.015",
    },
    # The seed's quick adjustment rules (concern 1), while it persists after the table's step.
    {
        "name": "free-bits-too-generous",
        "when": f"epoch >= {WATCH_FROM} and penalty_reduction > 70",
        "for_epochs": 3,
        "then": {"add": {"free_bits": -0.005}},
        "bounds": {"free_bits": FREE_BITS_BOUNDS},
        "message": "penalty reduction > 70% for 3 epochs; free_bits - 0.005",
    },
    {
        "name": "free-bits-too-tight",
        "when": f"epoch >= {WATCH_FROM} and penalty_reduction < 15",
        "for_epochs": 3,
        "then": {"add": {"free_bits": 0.005}},
        "bounds": {"free_bits": FREE_BITS_BOUNDS},
        "message": "penalty reduction < 15% for 3 epochs; free_bits + 0.005",
    },
    # The seed's decision point at epoch 5 (phase 1).
    {
        "name": "epoch5-kl-low",
        "when": "epoch == 5 and kl_raw < 0.02 and free_bits > 0.01",
        "then": {"set": {"free_bits": 0.01}},
        "message": "kl_raw < 0.02 at epoch 5: free bits too high; free_bits -> 0.01",
    },
    {
        "name": "epoch5-kl-high",
        "when": "epoch == 5 and kl_raw > 0.12 and free_bits < 0.03",
        "then": {"set": {"free_bits": 0.03}},
        "message": "kl_raw > 0.12 at epoch 5: free bits too tight; free_bits -> 0.03",
    },
    {
        "name": "teacher-weak",
        "when": "teacher_weight > 0 and kl_weight >= max_kl_weight and teacher_contribution < 3",
        "then": "advise",
        "max_firings": 1,
        "message": "teacher contribution < 3%: increase teacher_weight to 0.5",
    },
    {
        "name": "teacher-strong",
        "when": "teacher_weight > 0 and kl_weight >= max_kl_weight and teacher_contribution > 10",
        "then": "advise",
        "max_firings": 1,
        "message": "teacher contribution > 10%: decrease teacher_weight to 0.15",
    },
    {
        "name": "overfitting",
        "when": "val_train_ratio > 2.5",
        "then": "abort",
        "message": "val/train loss ratio > 2.5 (overfitting)",
    },
]


class Epoch10Decision(Rule):
    """The seed's decision point at epoch 10 (phase 2): the mean penalty reduction over epochs
    5..10 above 70% -> ``free_bits`` 0.015, below 15% -> 0.025, else continue. Like the table's
    rows it only moves free_bits the intended way (down when too generous, up when too tight).
    """

    def __init__(
        self, name: str = "epoch10-decision", *, epoch: int = 10, window_start: int = WATCH_FROM
    ) -> None:
        super().__init__(name)
        self.epoch = epoch
        self.window_start = window_start

    def watched_metrics(self) -> frozenset[str]:
        return frozenset({"penalty_reduction"})

    def check(self, state: EpochState) -> Action | None:
        if state.epoch != self.epoch:
            return None
        window = [
            epoch["penalty_reduction"]
            for epoch in state.history[self.window_start - 1 : self.epoch]
            if "penalty_reduction" in epoch
        ]
        if not window:
            return None
        average = sum(window) / len(window)
        free_bits = state.knobs["free_bits"]
        if average > 70 and free_bits > 0.015:
            target, why = 0.015, "too generous"
        elif average < 15 and free_bits < 0.025:
            target, why = 0.025, "too tight"
        else:
            return None
        return Action(
            "backoff",
            knob_values={"free_bits": target},
            message=(
                f"mean penalty reduction {average:.3g}% over epochs {self.window_start}-"
                f"{self.epoch}: free bits {why}; free_bits -> {target:g}"
            ),
        )


# The seed's fallback options, tried in order.
FALLBACK_STEPS: tuple[dict[str, float], ...] = (
    {"free_bits": 0.025},
    {"max_kl_weight": 10.0},
    {"free_bits": 0.025, "max_kl_weight": 12.0},
)


class FallbackLadder(Rule):
    """On instability, apply the next fallback step; hold each step ``hold_epochs`` epochs.

    Unstable: ``kl_raw > kl_limit`` or ``val_loss > val_loss_factor * best val_loss so far``.
    A step applied after epoch E shapes epochs E+1 .. E+hold_epochs; instability is judged again
    after epoch E+hold_epochs (instability during the hold is the step being monitored, not a
    new decision). When every step has been tried and its hold is over, instability aborts.
    """

    def __init__(
        self,
        name: str = "fallback-ladder",
        *,
        steps: Sequence[Mapping[str, float]] = FALLBACK_STEPS,
        hold_epochs: int = 5,
        kl_limit: float = 0.2,
        val_loss_factor: float = 3.0,
    ) -> None:
        super().__init__(name)
        self.steps = [dict(step) for step in steps]
        self.hold_epochs = hold_epochs
        self.kl_limit = kl_limit
        self.val_loss_factor = val_loss_factor
        self.next_step = 0
        self.hold_left = 0

    def watched_metrics(self) -> frozenset[str]:
        return frozenset({"kl_raw", "val_loss"})

    def check(self, state: EpochState) -> Action | None:
        if self.hold_left > 0:
            self.hold_left -= 1
            if self.hold_left > 0:
                return None
        reason = self.instability(state)
        if reason is None:
            return None
        if self.next_step >= len(self.steps):
            return Action(
                "abort",
                message=f"{reason}; fallback ladder spent ({len(self.steps)} options tried)",
            )
        step = self.steps[self.next_step]
        self.next_step += 1
        self.hold_left = self.hold_epochs
        changes = ", ".join(f"{knob}={value:g}" for knob, value in step.items())
        return Action(
            "backoff",
            knob_values=step,
            message=(
                f"{reason}; fallback option {self.next_step}/{len(self.steps)}: {changes} "
                f"(held {self.hold_epochs} epochs)"
            ),
        )

    def instability(self, state: EpochState) -> str | None:
        """Why this epoch is unstable, or None."""
        kl_raw = state.metrics.get("kl_raw", math.nan)
        if kl_raw > self.kl_limit:
            return f"kl_raw {kl_raw:.4g} > {self.kl_limit:g}"
        val_loss = state.metrics.get("val_loss", math.nan)
        history = [epoch["val_loss"] for epoch in state.history if "val_loss" in epoch]
        finite = [value for value in history if math.isfinite(value)]
        if finite and val_loss > self.val_loss_factor * min(finite):
            return f"val_loss {val_loss:.4g} > {self.val_loss_factor:g}x its best {min(finite):.4g}"
        return None


register_preset(
    "free-bits-health",
    "seed 000: free-bits health table, quick adjustments, epoch-5 and epoch-10 decisions, "
    "teacher share, overfitting, and the fallback ladder on instability",
    rules=FREE_BITS_HEALTH,
    factories=[Epoch10Decision, FallbackLadder],
    reads=("kl_raw", "val_loss", "penalty_reduction"),
    changes=("free_bits", "max_kl_weight"),
)
