"""Training throughput of the batched cvfp trainer against the seed's one-token-at-a-time loop.

Both sides run the same per-token computation (``CvfpTrainer``: forward one position, raw MSE
to the previous iteration, diversity, one Adam step): the seed's loop is the trainer with one
stream, so every token is its own optimizer step; the batched trainer advances ``--streams``
streams together, one step per position. Both see the same number of training tokens and use
the seed's ``centroid`` diversity, the only form defined for a single stream. A third figure is
the batched trainer with its default ``nuclear`` diversity (one SVD of the step's contexts per
step), for reference; the speed-up compares the two ``centroid`` runs.

Each side runs one untimed iteration (forward only: it records the fixed-point targets), then
``--iterations`` timed training iterations (training pass, validation pass and metrics).

    python bench/cvfp_throughput.py                # about 10 s on one CPU thread
    python bench/cvfp_throughput.py --device cuda --train-tokens 8192
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import torch

from hpsearch.trainers.cvfp import CvfpTrainer


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train-tokens", type=int, default=2048)
    parser.add_argument("--val-tokens", type=int, default=256)
    parser.add_argument("--context-dim", type=int, default=64)
    parser.add_argument("--streams", type=int, default=64, help="streams of the batched side")
    parser.add_argument("--iterations", type=int, default=2, help="timed iterations per side")
    parser.add_argument("--device", default="cpu")
    parser.add_argument(
        "--threads", type=int, default=1, help="torch CPU threads (1 is steadiest when shared)"
    )
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args()


def tokens_per_second(params: dict[str, Any], args: argparse.Namespace) -> float:
    """Training tokens per second over ``args.iterations`` timed iterations."""
    device = torch.device(args.device)
    trainer = CvfpTrainer(params, device=device, seed=args.seed)
    list(trainer.epochs(1))  # forward-only first iteration, untimed
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    started = time.perf_counter()
    list(trainer.epochs(args.iterations))
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elapsed = time.perf_counter() - started
    return params["train_tokens"] * args.iterations / elapsed


def main() -> None:
    args = parse_args()
    torch.set_num_threads(args.threads)
    common: dict[str, Any] = {
        "context_dim": args.context_dim,
        "train_tokens": args.train_tokens,
        "val_tokens": args.val_tokens,
        "dist_reg_weight": 0.5,
    }
    seed_loop = {**common, "streams": 1, "diversity": "centroid"}
    batched = {**common, "streams": args.streams, "diversity": "centroid"}
    sequential_rate = tokens_per_second(seed_loop, args)
    batched_rate = tokens_per_second(batched, args)
    default_rate = tokens_per_second({**batched, "diversity": "nuclear"}, args)
    print(
        f"cvfp training throughput: {args.train_tokens} tokens x {args.iterations} iterations, "
        f"context_dim {args.context_dim}, {args.device}"
        + (f" ({args.threads} threads)" if args.device == "cpu" else "")
    )
    rows = [
        ("one token at a time (streams=1)", sequential_rate),
        (f"batched (streams={args.streams})", batched_rate),
    ]
    for label, rate in rows:
        print(f"  {label:<42} {rate:>10,.0f} tokens/s   (centroid diversity)")
    print(f"  {'speed-up, batched / one at a time':<42} {batched_rate / sequential_rate:>10.1f} x")
    label = f"batched (streams={args.streams}), default diversity"
    print(f"  {label:<42} {default_rate:>10,.0f} tokens/s   (nuclear diversity)")


if __name__ == "__main__":
    main()
