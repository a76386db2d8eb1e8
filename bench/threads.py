"""Wall and CPU time of `hpsearch try SPEC` at 1 torch thread and at torch's default (issue 11).

`hpsearch run` / `try` used to leave torch at its default thread count (one per core); they now
default to 1 (`--threads N` or $OMP_NUM_THREADS to change it). Each round runs the two settings
back to back in fresh processes (alternating which goes first), and prints per-round figures
and the medians side by side. The default is asked for with `--threads <cores>`, which is what
torch picks on its own. On a shared machine the figures depend on the other load: say so.

    python bench/threads.py --spec cvfp --rounds 3
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import time


def timed_try(spec: str, threads: int) -> tuple[float, float]:
    """(wall s, CPU s of the child) of one `hpsearch try SPEC --threads N`."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    environment = {key: value for key, value in os.environ.items() if key != "OMP_NUM_THREADS"}
    command = [sys.executable, "-m", "hpsearch", "try", spec, "--threads", str(threads)]
    subprocess.run(command, check=True, capture_output=True, env=environment)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spec", default="cvfp")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    cores = os.cpu_count() or 1
    settings = {"1 thread": 1, f"default ({cores})": cores}
    figures: dict[str, list[tuple[float, float]]] = {name: [] for name in settings}
    print(f"hpsearch try {args.spec}: {cores} cores, load average {os.getloadavg()[0]:.1f}")
    for round_number in range(args.rounds):
        order = list(settings.items())
        if round_number % 2:
            order.reverse()
        for name, threads in order:
            wall, cpu = timed_try(args.spec, threads)
            figures[name].append((wall, cpu))
            print(f"  round {round_number + 1} {name:>12}: wall {wall:6.1f} s  CPU {cpu:6.1f} s")
    one, default = (figures[name] for name in settings)
    for label, index in (("wall", 0), ("CPU", 1)):
        a = statistics.median(value[index] for value in one)
        b = statistics.median(value[index] for value in default)
        print(f"median {label:>4}: 1 thread {a:6.1f} s   default {b:6.1f} s   ratio {b / a:.2f}")
    print(f"load average at the end {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
