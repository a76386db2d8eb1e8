"""``fep-health``: the seed 004 health checks of free-energy learning.

- ``non-finite``: a NaN or infinite metric aborts the trial.
- ``obs-weight-ladder`` (a custom rule): the CE/KL gradient ratio below 0.1 for 2 epochs in a
  row means the observation term is too weak (the seed's Test 3); the first time, ``lambda_obs``
  is scaled by 10 (the seed's priority 4); if the ratio is still below 0.1 for 2 epochs in a row
  after that, the trial is aborted.
- ``prior-collapse``: the token priors' separation below 10% of its first value aborts the trial
  (priors converging together, the seed's issue 4).
- ``fast-loop-unstable``: from epoch 5, the prediction CE 20% above its best for 2 epochs in a row
  means the fast loop's natural-gradient steps overshoot (the seed's issue 7: with a strong
  observation or alignment term F is stiffer than ``vfe_lr`` allows); ``vfe_lr`` is halved, at
  most twice.
"""

from __future__ import annotations

from typing import Any

from hpsearch.pruners.base import Action, EpochState, Rule
from hpsearch.pruners.presets import register_preset

RATIO_METRIC = "ce_kl_grad_ratio"
WEIGHT_KNOB = "lambda_obs"


class ObservationWeightLadder(Rule):
    """Scale the observation weight once when the CE/KL ratio stays low; abort if it stays low.

    A streak is ``for_epochs`` epochs in a row with ``ce_kl_grad_ratio < threshold`` (a missing
    or NaN ratio breaks it). The first streak scales ``lambda_obs`` by ``factor`` (a backoff); any
    later streak, counted from the epoch after the backoff, aborts the trial.
    """

    def __init__(
        self,
        name: str = "obs-weight-ladder",
        *,
        threshold: float = 0.1,
        for_epochs: int = 2,
        factor: float = 10.0,
    ) -> None:
        super().__init__(name)
        self.threshold = threshold
        self.for_epochs = for_epochs
        self.factor = factor
        self.streak = 0
        self.raised = False

    def watched_metrics(self) -> frozenset[str]:
        return frozenset({RATIO_METRIC})

    def check(self, state: EpochState) -> Action | None:
        ratio = state.metrics.get(RATIO_METRIC)
        weak = ratio is not None and ratio < self.threshold
        self.streak = self.streak + 1 if weak else 0
        if self.streak < self.for_epochs:
            return None
        self.streak = 0
        if self.raised:
            return Action(
                "abort",
                message=(
                    f"{RATIO_METRIC} < {self.threshold:g} for {self.for_epochs} epochs even after "
                    f"{WEIGHT_KNOB} x{self.factor:g}: the observation term is still too weak"
                ),
            )
        self.raised = True
        value = float(state.knobs[WEIGHT_KNOB]) * self.factor
        return Action(
            "backoff",
            knob_values={WEIGHT_KNOB: value},
            message=(
                f"{RATIO_METRIC} < {self.threshold:g} for {self.for_epochs} epochs: observation "
                f"term too weak; {WEIGHT_KNOB} x{self.factor:g}"
            ),
        )


FEP_HEALTH: list[dict[str, Any]] = [
    {
        "name": "non-finite",
        "when": "any_nonfinite()",
        "then": "abort",
        "message": "a metric is NaN or infinite",
    },
    {
        "name": "prior-collapse",
        "when": "prior_separation < 0.1 * first(prior_separation)",
        "then": "abort",
        "message": "token priors converged together: separation below 10% of its start",
    },
    {
        "name": "fast-loop-unstable",
        "when": "epoch >= 5 and ce > 1.2 * best_min(ce)",
        "for_epochs": 2,
        "then": {"scale": {"vfe_lr": 0.5}},
        "max_firings": 2,
        "message": "prediction CE 20% above its best: fast-loop steps overshoot; vfe_lr x0.5",
    },
]

register_preset(
    "fep-health",
    "seed 004: abort on NaN/inf or collapsed priors; CE/KL ratio < 0.1 for 2 epochs -> "
    "lambda_obs x10, then abort if it stays < 0.1; CE 20% above its best for 2 epochs -> "
    "vfe_lr x0.5 (at most twice)",
    rules=FEP_HEALTH,
    factories=[ObservationWeightLadder],
    reads=[RATIO_METRIC],
    changes=[WEIGHT_KNOB],
)
