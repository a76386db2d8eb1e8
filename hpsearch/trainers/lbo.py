"""A VAE whose two KL terms are kept in a box, with an adaptive KL ceiling (seed 002).

The latent has a core group (``core_dim``) and a detail group (``detail_dim``); each group's KL
(summed over its dims, mean over the batch) is kept in the box ``[lower, ceiling]``. The loss of
a batch is

    recon + kl_weight * (kl_core + kl_detail)
          + box_weight * sum over the two terms of (relu(kl - ceiling) + relu(lower - kl))
          + barrier_weight * sum over the terms inside the ceiling of -log(1 - kl / ceiling)

(the log barrier is the seed's "LBO": steps turn back before they reach the ceiling), and, with
``rollback`` on, every optimizer step is checked: the KL terms of the same batch are measured
again after the step (encoder only), and a step that leaves the box (or moves a term further
outside it) is rolled back, parameters and optimizer state restored to before the step, and
counted.

The ceiling is discovered, not guessed:

- epoch 1: no ceiling (the box is ``[lower, inf)``, no barrier); the largest batch KL of either
  term is tracked, and at the end of the epoch the ceiling is set to it (the discovery);
- epoch 2 (up to ``squeeze_start - 1``): the discovered ceiling holds;
- from ``squeeze_start``: one schedule step per epoch, the seed's abrupt squeeze: the first step
  drops to ``squeeze_first`` x the discovered ceiling (seed: 13k of ~42k, ~30 %), the next ones
  descend geometrically to the target (``target_kl`` when > 0, else ``target`` x the discovered
  ceiling; seed: 3k, ~7 %), reached after ``squeeze_epochs`` steps. A schedule value above the
  current ceiling is skipped (the ceiling at step ``s`` is the minimum of the schedule up to
  ``s``): already below, nothing to squeeze.

Why the ceiling follows the learning rate (the seed's "works with any LR" table): with the KL
free in epoch 1 (``kl_weight`` 0, no ceiling) nothing but the reconstruction drives it, and Adam
moves every weight by about ``lr`` per step. Part of that is a run with no end: the
log-variances of the 128 latent dims drift down (less noise, better reconstructions) at a rate
proportional to ``lr`` times the encoder's width, so the KL is still running when epoch 1 ends
and how far it got is set by the lr. Part of it reaches a fixed goal: the decoder learning the
mean image, the posterior means spreading to their equilibrium (mean square ~0.8 of the prior's).
A fixed goal is reached after about the same displacement at any lr (~1/lr steps of size ~lr),
so it adds the same KL at every lr, and by default init it does so within the first ~10 steps:
with the default init (hidden 1024, batch 28) the encoder shifted every posterior mean to fit the
mean image through the latent, the means spread to the equilibrium even at lr 1e-3, and that
~60-80 nat offset left ceilings of ~70 / 110 / 160 / 225 at lr 1e-3 .. 5e-3 (2.9-3.3x, seeds
0-2). Two initialisation choices take the offset away (``bench/lbo_lr_table.py`` compares):

- ``mean_image_bias``: the decoder's output bias starts at the logit of the mean training pixel,
  so there is no mean image left to fit through the latent;
- ``input_init_scale`` 0.3: the encoder's input layer starts 0.3x PyTorch's default, so the
  hidden features start nearly input-independent and the means spread only as fast as training
  grows them (a product of two layers: far slower at lr 1e-3 than at 5e-3).

With both, at the default sizes (hidden 1024, latent 16 + 112, batch 56: 26 steps in epoch 1)
the KL starts near 0 and the ceilings are ~23 / 81 / 137 / 209 nats (means over seeds 0-9;
6.8-10.2x from lr 1e-3 to 5e-3 at each seed; the seed's 15k / 30k / 60k / 100k is 6.7x).
The drift slows where the noise no longer costs reconstruction (log-variance ~-4, ~2 nats a
dim): a longer epoch 1 or a faster drift saturates the high lrs first and compresses the
ratio (batch 28 with this init: 2.8-3.6x at seeds 0-2).

The knobs ``squeeze_step`` (the schedule position) and ``squeeze_hold`` (epochs to pause before
the next step) let the ``kl-ceiling`` rules relax the squeeze: one step back and a pause.

Metrics per epoch: KL of both terms (and the larger, ``kl_max``), SSIM and recon of the
validation digits (decoded from the posterior mean), the ceiling in force (epoch 1 reports the
discovered value; its box was open), the schedule's target, steps left in it and epochs left
in the run, ``at_target`` (1 when the schedule is done and both validation KL terms are at or
below the target: the seed's final check), steps rolled back (by cause: ceiling or floor), the
rollback rate of the epoch and of the run so far, and the mean training loss.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any, ClassVar

import torch
from torch.nn import functional

from hpsearch.errors import ParamError
from hpsearch.metrics.kl import box_violation, gaussian_kl
from hpsearch.metrics.ssim import ssim
from hpsearch.trainers.base import Trainer, require_range
from hpsearch.trainers.vae_parts import (
    IMAGE_SIDE,
    MlpVae,
    batch_indices,
    load_digit_splits,
    recon_loss,
    scale_input_layer,
    set_output_bias_to_mean,
)


def ceiling_schedule(
    discovered: float, first_value: float, target_value: float, steps: int
) -> list[float]:
    """``[discovered, v1, ..., v_steps]``: the seed's abrupt squeeze. The first step drops
    straight to ``first_value``; the rest descend geometrically (a constant ratio per step) to
    ``target_value``, reached at step ``steps``. One step goes straight to the target."""
    if steps == 1:
        return [discovered, target_value]
    ratio = (target_value / first_value) ** (1.0 / (steps - 1))
    return [discovered, *(first_value * ratio**k for k in range(steps))]


def ceiling_at(schedule: list[float], step: int) -> float:
    """The ceiling at schedule position ``step`` (clamped to the schedule): the minimum of the
    values so far, so a value above the current ceiling is skipped."""
    step = min(max(step, 0), len(schedule) - 1)
    return min(schedule[: step + 1])


class StepRollback:
    """Undo one optimizer step: ``save()`` before it, ``restore()`` after it.

    Saves the parameters and every tensor of the optimizer's per-parameter state (Adam's
    moments and step count) into preallocated buffers, copied in one fused call. Before the
    optimizer's first step its state is empty; restoring then empties it again.
    """

    def __init__(self, parameters: Iterable[torch.nn.Parameter], optimizer: torch.optim.Optimizer):
        self.parameters = list(parameters)
        self.optimizer = optimizer
        self._buffers: list[torch.Tensor] = []
        self._had_state = False
        self._live_cache: list[torch.Tensor] = []

    def _live(self) -> list[torch.Tensor]:
        """Parameters, then each parameter's state tensors (cached once the state exists:
        Adam updates its state tensors in place)."""
        if len(self._live_cache) > len(self.parameters):
            return self._live_cache
        tensors: list[torch.Tensor] = [param.data for param in self.parameters]
        for param in self.parameters:
            state = self.optimizer.state.get(param, {})
            tensors.extend(value for _, value in sorted(state.items()) if torch.is_tensor(value))
        self._live_cache = tensors
        return tensors

    def save(self) -> None:
        live = self._live()
        self._had_state = len(live) > len(self.parameters)
        if len(self._buffers) != len(live):
            self._buffers = [tensor.detach().clone() for tensor in live]
        else:
            with torch.no_grad():
                torch._foreach_copy_(self._buffers, live)

    def restore(self) -> None:
        if not self._had_state:
            self.optimizer.state.clear()
            self._live_cache = []
        live = self._live()
        with torch.no_grad():
            torch._foreach_copy_(live, self._buffers[: len(live)])


class LboTrainer(Trainer):
    """Box-constrained VAE with the adaptive KL ceiling; see the module docstring."""

    name = "lbo"
    param_defaults: ClassVar[Mapping[str, Any]] = {
        "core_dim": 16,
        "detail_dim": 112,
        "hidden_dim": 1024,
        "batch_size": 56,
        "input_init_scale": 0.3,
        "mean_image_bias": True,
        "val_fraction": 0.2,
        "data_seed": 0,
        "lr": 2.0e-3,
        "kl_weight": 0.0,
        "box_weight": 1.0,
        "barrier_weight": 1.0,
        "lower": 0.05,
        "squeeze_first": 0.3,
        "target": 0.07,
        "target_kl": 0.0,
        "squeeze_start": 3,
        "squeeze_epochs": 10,
        "squeeze_step": 0,
        "squeeze_hold": 0,
        "rollback": True,
    }
    knob_names = ("lr", "squeeze_step", "squeeze_hold")
    metric_names = (
        "loss",
        "recon",
        "ssim",
        "kl_core",
        "kl_detail",
        "kl_total",
        "train_kl_max",
        "ceiling",
        "discovered_ceiling",
        "lower",
        "squeeze_step",
        "target_ceiling",
        "steps_left",
        "epochs_left",
        "kl_max",
        "at_target",
        "steps",
        "rollbacks",
        "rollback_rate",
        "run_rollback_rate",
        "upper_violations",
        "lower_violations",
    )

    @classmethod
    def validate_params(cls, params: Mapping[str, Any]) -> None:
        for key in ("core_dim", "detail_dim", "hidden_dim", "batch_size", "squeeze_epochs"):
            require_range(params, key, 1, 1_000_000, trainer=cls.name)
        require_range(params, "squeeze_start", 2, 1_000_000, trainer=cls.name)
        require_range(params, "squeeze_step", 0, 1_000_000, trainer=cls.name)
        require_range(params, "squeeze_hold", 0, 1_000_000, trainer=cls.name)
        require_range(params, "val_fraction", 0.01, 0.9, trainer=cls.name)
        require_range(params, "lr", 1e-8, 10.0, trainer=cls.name)
        require_range(params, "kl_weight", 0.0, 1000.0, trainer=cls.name)
        require_range(params, "box_weight", 0.0, 1000.0, trainer=cls.name)
        require_range(params, "barrier_weight", 0.0, 1000.0, trainer=cls.name)
        require_range(params, "lower", 0.0, 1e9, trainer=cls.name)
        require_range(params, "target", 1e-6, 1.0, trainer=cls.name)
        require_range(params, "squeeze_first", 1e-6, 1.0, trainer=cls.name)
        require_range(params, "target_kl", 0.0, 1e9, trainer=cls.name)
        require_range(params, "input_init_scale", 1e-6, 100.0, trainer=cls.name)
        for key in ("rollback", "mean_image_bias"):
            if not isinstance(params[key], bool):
                raise ParamError(f"lbo: param {key}={params[key]!r}; use true or false")

    def __init__(self, params: Mapping[str, Any], *, device: torch.device, seed: int) -> None:
        super().__init__(params, device=device, seed=seed)
        p = self.params
        self.sizes = (int(p["core_dim"]), int(p["detail_dim"]))
        self.data = load_digit_splits(float(p["val_fraction"]), int(p["data_seed"]), device)
        self.model = MlpVae(sum(self.sizes), int(p["hidden_dim"])).to(device)
        scale_input_layer(self.model, float(p["input_init_scale"]))
        if p["mean_image_bias"]:
            set_output_bias_to_mean(self.model, self.data.train)
        # [latent, 2]: column j sums the dims of group j (core, detail).
        self.group_matrix = torch.block_diag(*(torch.ones(size, 1) for size in self.sizes)).to(
            device
        )
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=self.knobs["lr"])
        self.rollback = StepRollback(self.model.parameters(), self.optimizer)
        self.batch_generator = torch.Generator().manual_seed(seed)
        self.lower = float(p["lower"])
        self.ceiling = math.inf
        self.discovered_ceiling = math.nan
        self.schedule: list[float] = []
        self.kl_trace: list[tuple[int, float, float]] = []
        self.run_steps = 0
        self.run_rollbacks = 0
        self.last_metrics: dict[str, float] = {}

    # -- the ceiling ----------------------------------------------------------------------

    def _discover(self, epoch_max_kl: float) -> None:
        """End of epoch 1: the ceiling becomes the largest KL seen (not below ``lower``)."""
        p = self.params
        self.discovered_ceiling = max(epoch_max_kl, self.lower)
        target_kl = float(p["target_kl"])
        target_value = target_kl if target_kl > 0 else float(p["target"]) * self.discovered_ceiling
        target_value = max(target_value, self.lower)
        first_value = max(float(p["squeeze_first"]) * self.discovered_ceiling, target_value)
        self.schedule = ceiling_schedule(
            self.discovered_ceiling, first_value, target_value, int(p["squeeze_epochs"])
        )
        self.ceiling = self.discovered_ceiling

    def _advance_schedule(self, epoch: int) -> None:
        """Start of an epoch after the discovery: hold, or take one squeeze step."""
        if epoch >= int(self.params["squeeze_start"]):
            if self.knobs["squeeze_hold"] > 0:
                self.knobs["squeeze_hold"] = max(self.knobs["squeeze_hold"] - 1.0, 0.0)
            else:
                self.knobs["squeeze_step"] += 1.0
        last = len(self.schedule) - 1
        self.knobs["squeeze_step"] = float(min(max(round(self.knobs["squeeze_step"]), 0), last))
        self.ceiling = ceiling_at(self.schedule, int(self.knobs["squeeze_step"]))

    # -- one epoch ------------------------------------------------------------------------

    def _run_epoch(self, epoch: int, total_epochs: int) -> dict[str, float]:
        for group in self.optimizer.param_groups:
            group["lr"] = self.knobs["lr"]
        if epoch > 1:
            self._advance_schedule(epoch)
        counts = self._train_pass(epoch)
        if epoch == 1:
            self._discover(counts["train_kl_max"])
        evaluation = self.evaluate()
        self.last_metrics = {
            **counts,
            **evaluation,
            **self._box_metrics(counts),
            **self._schedule_metrics(epoch, total_epochs, evaluation["kl_max"]),
        }
        return dict(self.last_metrics)

    def _train_pass(self, epoch: int) -> dict[str, float]:
        self.model.train()
        train = self.data.train
        steps = rollbacks = upper = lower = 0
        loss_sum, kl_max = 0.0, 0.0
        for indices in batch_indices(
            len(train), int(self.params["batch_size"]), self.batch_generator
        ):
            images = train[indices.to(train.device)]
            loss, kls, cause = self.train_step(images)
            self.kl_trace.append((epoch, kls[0], kls[1]))
            steps += 1
            loss_sum += loss
            kl_max = max(kl_max, *kls)
            rollbacks += cause is not None
            upper += cause == "upper"
            lower += cause == "lower"
        self.run_steps += steps
        self.run_rollbacks += rollbacks
        return {
            "loss": loss_sum / max(steps, 1),
            "train_kl_max": kl_max,
            "steps": float(steps),
            "rollbacks": float(rollbacks),
            "upper_violations": float(upper),
            "lower_violations": float(lower),
        }

    def train_step(self, images: torch.Tensor) -> tuple[float, tuple[float, float], str | None]:
        """One optimizer step on a batch, rolled back when it leaves the box.

        Returns the loss, the batch's KL terms before the step, and why the step was rolled
        back (``"upper"`` through the ceiling, ``"lower"`` through the floor) or None.
        """
        logits, mu, logvar = self.model(images)
        kls = self.kl_terms(mu, logvar)
        loss = (
            recon_loss(logits, images)
            + float(self.params["kl_weight"]) * kls.sum()
            + float(self.params["box_weight"]) * self._box_penalty(kls)
            + float(self.params["barrier_weight"]) * self._barrier(kls)
        )
        before = kls.detach().tolist()
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        cause = None
        if self.params["rollback"]:
            self.rollback.save()
            self.optimizer.step()
            cause = self._left_box(images, before)
            if cause is not None:
                self.rollback.restore()
        else:
            self.optimizer.step()
        return float(loss.detach()), (before[0], before[1]), cause

    def kl_terms(self, mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
        """``[kl_core, kl_detail]``: each group's KL summed over its dims, mean over images."""
        return gaussian_kl(mu, logvar).mean(dim=0) @ self.group_matrix

    def _box_penalty(self, kls: torch.Tensor) -> torch.Tensor:
        """Sum over the terms of their distance outside ``[lower, ceiling]``."""
        penalty = functional.relu(self.lower - kls).sum()
        if math.isfinite(self.ceiling):
            penalty = penalty + functional.relu(kls - self.ceiling).sum()
        return penalty

    def _barrier(self, kls: torch.Tensor) -> torch.Tensor:
        """The log barrier inside the ceiling: ``-log(1 - kl / ceiling)`` summed over the terms
        below it (0 at kl = 0, steep near the ceiling, so steps turn back before they cross
        it); a term at or above the ceiling has only the box penalty. 0 while the ceiling is
        open (epoch 1)."""
        if not math.isfinite(self.ceiling):
            return kls.new_zeros(())
        room = (1.0 - kls / self.ceiling).clamp(min=1e-6)
        inside = kls < self.ceiling
        return torch.where(inside, -torch.log(room), torch.zeros_like(kls)).sum()

    @torch.no_grad()
    def _left_box(self, images: torch.Tensor, before: list[float]) -> str | None:
        """``"upper"``/``"lower"`` when the step moved a KL term (further) outside the box."""
        after = self.kl_terms(*self.model.encode(images)).tolist()
        for old, new in zip(before, after, strict=True):
            if box_violation(new, self.lower, self.ceiling) > box_violation(
                old, self.lower, self.ceiling
            ):
                return "upper" if new > self.ceiling else "lower"
        return None

    # -- evaluation -----------------------------------------------------------------------

    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        """KL terms, recon and SSIM on the validation digits, decoded from the posterior mean."""
        self.model.eval()
        images = self.data.val
        mu, logvar = self.model.encode(images)
        kl_core, kl_detail = self.kl_terms(mu, logvar).tolist()
        logits = self.model.decode(mu)
        side = (-1, IMAGE_SIDE, IMAGE_SIDE)
        quality = ssim(torch.sigmoid(logits).view(side), images.view(side))
        return {
            "recon": float(recon_loss(logits, images)),
            "ssim": float(quality.mean()),
            "kl_core": kl_core,
            "kl_detail": kl_detail,
            "kl_total": kl_core + kl_detail,
            "kl_max": max(kl_core, kl_detail),
        }

    def _box_metrics(self, counts: Mapping[str, float]) -> dict[str, float]:
        steps = max(counts["steps"], 1.0)
        return {
            "ceiling": self.ceiling,
            "discovered_ceiling": self.discovered_ceiling,
            "lower": self.lower,
            "squeeze_step": self.knobs["squeeze_step"],
            "rollback_rate": counts["rollbacks"] / steps * 100.0,
            "run_rollback_rate": self.run_rollbacks / max(self.run_steps, 1) * 100.0,
        }

    def _schedule_metrics(self, epoch: int, total_epochs: int, kl_max: float) -> dict[str, float]:
        """Where the squeeze stands: its target, the schedule steps still to take and the
        epochs left to take them in, and whether both KL terms are at the target (the seed's
        final check: the validation KL of each term at or below the target ceiling)."""
        target = self.schedule[-1]
        steps_left = len(self.schedule) - 1 - self.knobs["squeeze_step"]
        return {
            "target_ceiling": target,
            "steps_left": float(steps_left),
            "epochs_left": float(max(total_epochs - epoch, 0)),
            "at_target": float(steps_left == 0 and kl_max <= target),
        }

    def final_metrics(self) -> dict[str, float]:
        """The metrics of the last epoch: the validation evaluation ran on the final
        parameters, and the rollback rate of the run covers every step."""
        if not self.last_metrics:
            raise RuntimeError("final_metrics() needs at least one epoch; run epochs(n) first")
        return dict(self.last_metrics)
