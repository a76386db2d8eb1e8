"""The seed 003 story on the lvm trainer: V3 (direct head, guards 0.01 from epoch 4) against
P2 (residual head, guards 0.002 from epoch 6, lambda_fut 0.003 from epoch 11), side by side.

Prints, per epoch, each run's mini-5CAT val cosine, margin(+1) and peak offset, then the full
5CAT of each (val and OOD cosine, margin, peak, gates passed) and the seed's final criterion
(>= 4 gates on val, margin >= 0.10 on val and OOD).

    python bench/lvm_v3_p2.py [--epochs 12] [--set key=value ...]
"""

from __future__ import annotations

import argparse
from typing import Any

import torch

from hpsearch.trainers.lvm import LvmTrainer

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
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE")
    args = parser.parse_args()
    torch.set_num_threads(1)
    extra = {key: parse_value(value) for key, value in (item.split("=", 1) for item in args.set)}
    trainers = {
        name: LvmTrainer({**extra, **run}, device=torch.device("cpu"), seed=0)
        for name, run in RUNS.items()
    }
    histories = {name: list(trainer.epochs(args.epochs)) for name, trainer in trainers.items()}
    print(f"{'epoch':>5} | {'V3 cos / margin / peak':>24} | {'P2 cos / margin / peak':>24}")
    for epoch in range(args.epochs):
        cells = [
            f"{m['val_cosine']:.3f} / {m['val_margin']:+.3f} / {int(m['val_peak_offset']):+d}"
            for m in (histories[name][epoch] for name in RUNS)
        ]
        print(f"{epoch + 1:>5} | {cells[0]:>24} | {cells[1]:>24}")
    print()
    for name, trainer in trainers.items():
        report = trainer.run_five_cat()
        val, ood = report.splits["val"], report.splits["ood"]
        criterion = val.gates_passed >= 4 and val.margin >= 0.10 and ood.margin >= 0.10
        print(
            f"{name} full 5CAT: val cos {val.cosine:.3f} margin {val.margin:+.3f} peak "
            f"{val.peak_offset:+d} gates {val.gates_passed}/5 | OOD cos {ood.cosine:.3f} margin "
            f"{ood.margin:+.3f} peak {ood.peak_offset:+d} | final criterion "
            f"{'met' if criterion else 'not met'}"
        )


if __name__ == "__main__":
    main()
