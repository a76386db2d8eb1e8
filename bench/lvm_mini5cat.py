"""Cost of the lvm trainer's per-epoch mini-5CAT against the epoch's training, at default sizes.

Trains the default ``lvm`` trainer for a few epochs, timing the training pass and the mini-5CAT
(500 val samples: offset sweep, margin, cosine, R@5) of each epoch separately, and prints both
side by side with their ratio (target: mini-5CAT <= 10% of an epoch). The full 5CAT at the end
is timed too, for reference.

    python bench/lvm_mini5cat.py [--epochs 6] [--threads N] [--set key=value ...]
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Any

import torch

from hpsearch.trainers.lvm import LvmTrainer

TARGET_RATIO = 0.10


def parse_value(text: str) -> Any:
    """``key=value`` values: int, then float, then true/false, else the string."""
    for convert in (int, float):
        try:
            return convert(text)
        except ValueError:
            pass
    return {"true": True, "false": False}.get(text.lower(), text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads")
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    params = {key: parse_value(value) for key, value in (item.split("=", 1) for item in args.set)}
    trainer = LvmTrainer(params, device=torch.device("cpu"), seed=0)
    p = trainer.params
    print(
        f"lvm defaults: dim={p['dim']} model={p['model']} hidden={p['hidden']} "
        f"train windows={len(trainer.data.train)} batch={p['batch_size']} "
        f"mini samples={len(trainer.mini_set)} torch threads={torch.get_num_threads()}"
    )
    print(f"{'epoch':>5} {'train s':>9} {'mini-5CAT s':>12} {'ratio':>7}")
    ratios = []
    for epoch in range(1, args.epochs + 1):
        train_s, _ = timed(lambda e=epoch: trainer.train_epoch(e))
        mini_s, _ = timed(trainer.mini_eval)
        ratios.append(mini_s / train_s)
        print(f"{epoch:>5} {train_s:>9.4f} {mini_s:>12.4f} {mini_s / train_s:>7.1%}")
    full_s, report = timed(trainer.run_five_cat)
    median = statistics.median(ratios[1:] if len(ratios) > 1 else ratios)
    verdict = "within" if median <= TARGET_RATIO else "ABOVE"
    print(
        f"median mini-5CAT / epoch (epochs 2+): {median:.1%} "
        f"({verdict} the {TARGET_RATIO:.0%} target)"
    )
    print(
        f"full 5CAT (val + ood, {report.splits['val'].samples} samples each): {full_s:.3f}s, "
        f"val gates passed {report.splits['val'].gates_passed}/5"
    )


def timed(function: Any) -> tuple[float, Any]:
    start = time.perf_counter()
    result = function()
    return time.perf_counter() - start, result


if __name__ == "__main__":
    main()
