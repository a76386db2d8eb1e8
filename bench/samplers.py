"""Hypervolume against trial count for the tpe, nsga2, gp and random samplers (issue 6).

Each sampler runs the spec (default cvfp, no pruner) with each seed; after every trial the
hypervolume of the feasible complete trials so far is taken against one reference point shared
by all runs (``--reference``, else derived from the worst values any run reached). Printed: the
mean (min-max over seeds) hypervolume at a few trial counts, feasible and failed trials, seconds
per trial, and a recommendation; written: ``bench/out/samplers_<spec>.png`` (mean and min-max
band).
NSGA-II samples its first generation at random, so it runs with ``--nsga2-population``
(default 10) instead of Optuna's 50, which would make it random for the first 50 trials.

Every sampler starts with 10 random trials (TPE's and GP's ``n_startup_trials``, NSGA-II's
first generation), identical for one seed, so the curves part only after trial 10.

    python bench/samplers.py --trials 30 --seeds 0 1 2
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import torch

import hpsearch
from hpsearch.metrics.pareto import as_losses, derived_reference, hypervolume
from hpsearch.search_spaces import SamplerSpec, StudySpec

OUT = Path(__file__).parent / "out"
COMPLETE = optuna.trial.TrialState.COMPLETE
Trials = list[optuna.trial.FrozenTrial]


def with_sampler(spec: StudySpec, name: str, seed: int, nsga2_population: int) -> StudySpec:
    options: dict[str, Any] = {"population_size": nsga2_population} if name == "nsga2" else {}
    sampler = SamplerSpec(name=name, seed=seed, options=options)  # type: ignore[arg-type]
    return spec.model_copy(update={"sampler": sampler})


def run_once(spec: StudySpec, trials: int, url: str) -> tuple[Trials, float]:
    start = time.perf_counter()
    study = hpsearch.run(spec, trials, storage=url, track=False)
    return study.trials, (time.perf_counter() - start) / trials


def feasible(trial: optuna.trial.FrozenTrial) -> bool:
    return trial.state == COMPLETE and all(c <= 0 for c in (trial.constraints or {}).values())


def curve(trials: Trials, directions: list[str], reference: np.ndarray) -> np.ndarray:
    """Hypervolume of the feasible complete trials after each trial."""
    volumes, front = [], []
    for trial in trials:
        if feasible(trial):
            front.append(list(trial.values))
        volumes.append(hypervolume(as_losses(front, directions), reference) if front else 0.0)
    return np.array(volumes)


def shared_reference(
    runs: Sequence[Trials], directions: list[str], given: list[float] | None
) -> np.ndarray:
    if given is not None:
        return as_losses([given], directions)[0]
    values = [list(t.values) for trials in runs for t in trials if t.state == COMPLETE]
    return derived_reference(as_losses(values, directions))


def table(
    curves: dict[str, np.ndarray],
    feasibles: dict[str, list[int]],
    failed: dict[str, list[int]],
    speed: dict[str, float],
) -> None:
    trials = next(iter(curves.values())).shape[1]
    marks = sorted({max(1, trials // 4), trials // 2, 3 * trials // 4, trials})
    header = "".join(f"{f'HV @{m}':>22}" for m in marks)
    print(f"{'sampler':<8}{header}{'feasible':>10}{'failed':>8}{'s/trial':>9}")
    for name, runs in curves.items():
        cells = "".join(
            f"{runs[:, m - 1].mean():>9.4f} ({runs[:, m - 1].min():.3f}-{runs[:, m - 1].max():.3f})"
            for m in marks
        )
        print(
            f"{name:<8}{cells}{np.mean(feasibles[name]):>10.1f}{np.mean(failed[name]):>8.1f}"
            f"{speed[name]:>9.2f}"
        )


def plot(curves: dict[str, np.ndarray], spec_name: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot

    figure, axes = pyplot.subplots(figsize=(7, 4.5))
    for name, runs in curves.items():
        x = np.arange(1, runs.shape[1] + 1)
        axes.plot(x, runs.mean(axis=0), label=name)
        axes.fill_between(x, runs.min(axis=0), runs.max(axis=0), alpha=0.15)
    axes.axvline(10.5, color="grey", linestyle=":", linewidth=1)
    axes.text(10.7, axes.get_ylim()[0], "after the random startup", color="grey", fontsize=8)
    axes.set_xlabel("trials")
    axes.set_ylabel("hypervolume (feasible trials)")
    axes.set_title(
        f"{spec_name}: hypervolume by sampler ({len(next(iter(curves.values())))} seeds)"
    )
    axes.legend()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110, bbox_inches="tight")
    pyplot.close(figure)


def recommend(curves: dict[str, np.ndarray]) -> str:
    """The sampler with the highest mean final hypervolume, and whether the seeds agree."""
    final = {name: runs[:, -1].mean() for name, runs in curves.items()}
    anytime = {name: runs.mean() for name, runs in curves.items()}  # mean over trials and seeds
    best = max(final, key=final.__getitem__)
    worst_of_best = curves[best][:, -1].min()
    beaten = [n for n, runs in curves.items() if n != best and runs[:, -1].max() < worst_of_best]
    spread = (
        f"its worst seed beats every seed of {', '.join(beaten)}"
        if beaten
        else "the seeds' ranges overlap, so the ranking is not conclusive"
    )
    best_anytime = max(anytime, key=anytime.__getitem__)
    return (
        f"highest mean final hypervolume: {best} ({final[best]:.4f}; {spread}); highest mean "
        f"over the whole run (anytime): {best_anytime} ({anytime[best_anytime]:.4f})"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spec", default="cvfp")
    parser.add_argument("--trials", type=int, default=30)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--samplers", nargs="+", default=["tpe", "nsga2", "gp", "random"])
    parser.add_argument("--nsga2-population", type=int, default=10)
    parser.add_argument("--reference", type=float, nargs="+")
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    torch.set_num_threads(1)
    spec = hpsearch.load_spec(args.spec)
    runs: dict[str, list[Trials]] = {}
    speed: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as folder:
        for name in args.samplers:
            runs[name], seconds = [], []
            for seed in args.seeds:
                sampled = with_sampler(spec, name, seed, args.nsga2_population)
                url = f"sqlite:///{Path(folder) / f'{name}-{seed}.db'}"
                trials, per_trial = run_once(sampled, args.trials, url)
                runs[name].append(trials)
                seconds.append(per_trial)
            speed[name] = float(np.mean(seconds))
    everything = [trials for sampler_runs in runs.values() for trials in sampler_runs]
    reference = shared_reference(everything, spec.directions, args.reference)
    curves = {
        name: np.array([curve(t, spec.directions, reference) for t in sampler_runs])
        for name, sampler_runs in runs.items()
    }
    feasibles = {name: [sum(map(feasible, t)) for t in r] for name, r in runs.items()}
    failed = {
        name: [sum(x.state == optuna.trial.TrialState.FAIL for x in t) for t in r]
        for name, r in runs.items()
    }
    print(
        f"{args.spec}: hypervolume of feasible trials, mean (min-max) over seeds {args.seeds}, "
        f"{args.trials} trials, reference {as_losses([reference], spec.directions)[0].round(4)}"
    )
    table(curves, feasibles, failed, speed)
    path = OUT / f"samplers_{args.spec}.png"
    plot(curves, args.spec, path)
    print(f"plot: {path}")
    print(f"recommendation: {recommend(curves)}")


if __name__ == "__main__":
    main()
