"""The seed 004's Test 2: epochs to memorize the minimal overfitting task per ``disc_mult``.

Trains the fep trainer with the spec's defaults (the seed's fixes) for each ``disc_mult`` in
{0.01, 0.1, 0.5, 1.0} (``disc_lr = base_blend * disc_mult``), with attraction on and off, over a
few seeds, and prints one table: the epoch at which the training batch was first predicted 100%
correctly ("never" when not within the budget), the median over seeds, and how far the token
priors moved apart by the end of the run (last / first prior separation, averaged over seeds;
a run ends at the epoch it memorizes).

    python bench/fep_lr_sweep.py                     # 100 epochs, seeds 0-2
    python bench/fep_lr_sweep.py --normalization sum_div_BN --epochs 60
"""

from __future__ import annotations

import argparse
import statistics
import time
from dataclasses import dataclass
from typing import Any

import torch

from hpsearch.search_spaces import load_spec
from hpsearch.trainers.fep import OBS_NORMALIZATIONS, FepTrainer

DISC_MULTS = (0.01, 0.1, 0.5, 1.0)


@dataclass(frozen=True)
class Run:
    """One training run: when it memorized (None if never) and its prior separation growth."""

    memorized_at: int | None
    separation_growth: float


def train(params: dict[str, Any], epochs: int, seed: int, device: torch.device) -> Run:
    """Train until the batch is memorized or the budget is spent."""
    trainer = FepTrainer(params, device=device, seed=seed)
    first = last = 0.0
    for metrics in trainer.epochs(epochs):
        first = first or metrics["prior_separation"]
        last = metrics["prior_separation"]
        if trainer.memorized_at is not None:
            break
    return Run(trainer.memorized_at, last / first if first else float("nan"))


def row(disc_mult: float, attraction: bool, runs: list[Run], base_blend: float) -> str:
    """One table row: the settings, each seed's epoch, the median and the separation growth."""
    budget = 10**9
    epochs = [run.memorized_at for run in runs]
    median = statistics.median(budget if e is None else e for e in epochs)
    growth = statistics.mean(run.separation_growth for run in runs)
    cells = " ".join(f"{'never' if e is None else e:>5}" for e in epochs)
    median_cell = "never" if median >= budget else f"{median:g}"
    return (
        f"{disc_mult:>9g}  {base_blend * disc_mult:>8.2g}  {'on' if attraction else 'off':>10}  "
        f"{cells}  {median_cell:>6}  {growth:>14.2f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=100, help="epoch budget per run")
    parser.add_argument("--seeds", type=int, default=3, help="seeds 0..N-1 per setting")
    parser.add_argument("--normalization", choices=OBS_NORMALIZATIONS, default="mean")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    args = parser.parse_args()

    spec = load_spec("fep")
    base: dict[str, Any] = {**spec.fixed, **spec.default_params()}
    base["obs_normalization"] = args.normalization
    device = torch.device(args.device)
    seeds = list(range(args.seeds))
    print(
        f"fep lr sweep: {args.epochs} epochs, seeds {seeds}, obs_normalization="
        f"{args.normalization}, lambda_obs={base['lambda_obs']}, base_blend={base['base_blend']}"
    )
    seed_header = " ".join(f"{'s' + str(seed):>5}" for seed in seeds)
    print(
        f"{'disc_mult':>9}  {'disc_lr':>8}  {'attraction':>10}  {seed_header}  {'median':>6}  "
        f"{'separation x':>14}"
    )
    started = time.perf_counter()
    for attraction in (True, False):
        for disc_mult in DISC_MULTS:
            params = {**base, "disc_mult": disc_mult, "attraction": attraction}
            runs = [train(params, args.epochs, seed, device) for seed in seeds]
            print(row(disc_mult, attraction, runs, float(base["base_blend"])), flush=True)
    print(f"({time.perf_counter() - started:.1f} s)")


if __name__ == "__main__":
    main()
