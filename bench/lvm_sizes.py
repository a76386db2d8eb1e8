"""The lvm trainer at 768-d vectors against 32-d vectors with the MSE over 768 coordinates.

The articles live in a 32-d subspace either way; ``mse_dims`` keeps the seed's MSE-vs-guard
balance (the MSE a mean over 768 coordinates). Prints, for the seed's V3 and P2 runs, the CPU
seconds of one 12-epoch trial (one thread) and the figures the phenomena hang on, side by side,
with the time ratio.

    python bench/lvm_sizes.py [--epochs 12]
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import torch

from hpsearch.trainers.lvm import LvmTrainer

SIZES: dict[str, dict[str, Any]] = {
    "768-d": {"dim": 768, "manifold_dim": 32, "mse_dims": 0},
    "32-d, mse_dims 768": {"dim": 32, "manifold_dim": 32, "mse_dims": 768},
}
RUNS: dict[str, dict[str, Any]] = {
    "V3": {
        "residual": False,
        "lambda_dir": 0.01,
        "lambda_ac": 0.01,
        "lambda_fut": 0.0,
        "guard_start_epoch": 4,
    },
    "P2": {
        "residual": True,
        "lambda_dir": 0.002,
        "lambda_fut": 0.002,
        "lambda_ac": 0.0,
        "guard_start_epoch": 6,
    },
}


def trial(params: dict[str, Any], epochs: int) -> tuple[float, str]:
    started = time.process_time()
    trainer = LvmTrainer(params, device=torch.device("cpu"), seed=0)
    history = list(trainer.epochs(epochs))
    final = trainer.final_metrics()
    seconds = time.process_time() - started
    drop = max(m["val_cosine"] for m in history[:3]) - history[3]["val_cosine"]
    return seconds, (
        f"epoch-4 drop {drop:+.3f}, val margin {final['val_margin']:+.3f}, "
        f"OOD margin {final['ood_margin']:+.3f}, gates {final['gates_passed']:.0f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=12)
    args = parser.parse_args()
    torch.set_num_threads(1)
    LvmTrainer(
        {"dim": 8, "train_articles": 2, "article_length": 10}, device=torch.device("cpu"), seed=0
    )  # warm the lazy imports out of the timings
    for run_name, run in RUNS.items():
        times = {}
        for size_name, size in SIZES.items():
            times[size_name], figures = trial({**run, **size}, args.epochs)
            print(f"{run_name} {size_name:>20}: {times[size_name]:6.1f} CPU s | {figures}")
        big, small = times.values()
        print(f"{run_name} time ratio 768-d / 32-d: {big / small:.1f}x")


if __name__ == "__main__":
    main()
