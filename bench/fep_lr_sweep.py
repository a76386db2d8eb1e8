"""The seed 004's tests on the fep trainer: its fixes against its bugs, the disc_mult sweep
(Test 2) and the leak check, side by side in one table.

Each row trains the spec's defaults (the seed's fixes) with one change, over a few seeds, and
prints the epoch at which the training batch was first predicted 100% right ("never" when not
within the budget), the median over seeds, the mean next-token CE (of predictions made without
the target) at a few epochs, and how far the token priors moved apart (last / first separation).
Then the leak check: epoch-1 accuracy of untrained priors at several lambda_obs (chance is
1/16), and the trained model's accuracy with lambda_obs = 0.

    python bench/fep_lr_sweep.py                  # 60 epochs, seeds 0-2
    python bench/fep_lr_sweep.py --epochs 100 --seeds 5
"""

from __future__ import annotations

import argparse
import statistics
import time
from dataclasses import dataclass
from typing import Any

import torch

from hpsearch.search_spaces import load_spec
from hpsearch.trainers.fep import FepTrainer

DISC_MULTS = (0.01, 0.1, 0.5, 1.0)
CE_EPOCHS = (1, 10, 30, 60, 100)
BUGS = {"obs_normalization": "sum_div_BN", "disc_mult": 0.01, "attraction": False}
ROWS: list[tuple[str, dict[str, Any]]] = [
    ("fixes (spec defaults)", {}),
    ("bug: sum_div_BN", {"obs_normalization": "sum_div_BN"}),
    ("bug: disc_mult 0.01", {"disc_mult": 0.01}),
    ("bug: no attraction", {"attraction": False}),
    ("all three bugs", BUGS),
    ("stale beliefs (sync 0)", {"sync_steps": 0}),
    ("no alignment", {"lambda_align": 0.0}),
    *[(f"disc_mult {d:g}", {"disc_mult": d}) for d in DISC_MULTS],
    *[
        (f"disc_mult {d:g}, no attraction", {"disc_mult": d, "attraction": False})
        for d in DISC_MULTS
    ],
]


@dataclass(frozen=True)
class Run:
    """One training run: when it memorized (None if never), its CE per epoch and separation."""

    memorized_at: int | None
    ce: list[float]
    separation_growth: float


def train(params: dict[str, Any], epochs: int, seed: int, device: torch.device) -> Run:
    """Train for the whole budget."""
    trainer = FepTrainer(params, device=device, seed=seed)
    history = list(trainer.epochs(epochs))
    growth = history[-1]["prior_separation"] / history[0]["prior_separation"]
    return Run(trainer.memorized_at, [m["ce"] for m in history], growth)


def row(name: str, runs: list[Run], ce_epochs: list[int]) -> str:
    """One table row: each seed's epoch, the median, the mean CE at ``ce_epochs``, separation."""
    never = 10**9
    epochs = [run.memorized_at for run in runs]
    median = statistics.median(never if e is None else e for e in epochs)
    cells = " ".join(f"{'never' if e is None else e:>5}" for e in epochs)
    median_cell = "never" if median >= never else f"{median:g}"
    ces = " ".join(f"{statistics.mean(r.ce[e - 1] for r in runs):>7.3f}" for e in ce_epochs)
    growth = statistics.mean(run.separation_growth for run in runs)
    return f"{name:<32}  {cells}  {median_cell:>6}  {ces}  {growth:>6.2f}"


def leak_check(base: dict[str, Any], epochs: int, device: torch.device) -> None:
    """Epoch-1 accuracy of untrained priors; accuracy after training with lambda_obs = 0."""
    for lambda_obs in (1.0, 1.5, 10.0):
        trainer = FepTrainer({**base, "lambda_obs": lambda_obs}, device=device, seed=0)
        accuracy = next(trainer.epochs(1))["accuracy"]
        print(f"  untrained priors, lambda_obs={lambda_obs:g}: epoch-1 accuracy {accuracy:.3f}")
    trainer = FepTrainer(base, device=device, seed=0)
    for _ in trainer.epochs(epochs):
        pass
    trained = trainer.final_metrics()["accuracy"]
    trainer.knobs["lambda_obs"] = 0.0
    without = trainer.final_metrics()["accuracy"]
    print(
        f"  after {epochs} epochs: accuracy {trained:.3f}; the same priors with lambda_obs=0: "
        f"{without:.3f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=60, help="epoch budget per run")
    parser.add_argument("--seeds", type=int, default=3, help="seeds 0..N-1 per setting")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    args = parser.parse_args()
    torch.set_num_threads(1)

    spec = load_spec("fep")
    base: dict[str, Any] = {**spec.fixed, **spec.default_params()}
    device = torch.device(args.device)
    seeds = list(range(args.seeds))
    ce_epochs = [e for e in CE_EPOCHS if e <= args.epochs]
    print(f"fep: {args.epochs} epochs, seeds {seeds}, spec defaults {base}")
    seed_header = " ".join(f"{'s' + str(seed):>5}" for seed in seeds)
    ce_header = " ".join(f"{'ce@' + str(e):>7}" for e in ce_epochs)
    print(f"{'setting':<32}  {seed_header}  {'median':>6}  {ce_header}  {'sep x':>6}")
    started = time.perf_counter()
    for name, changes in ROWS:
        runs = [train({**base, **changes}, args.epochs, seed, device) for seed in seeds]
        print(row(name, runs, ce_epochs), flush=True)
    print("leak check (predictions never see their target):")
    leak_check(base, args.epochs, device)
    print(f"({time.perf_counter() - started:.1f} s)")


if __name__ == "__main__":
    main()
