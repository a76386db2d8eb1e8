"""Is each packaged study telling? (issue 10)

For each spec named (default: every packaged spec), one study of ``--trials`` trials (30 by
default; the spec's ``quick:`` variant with ``--quick`` where it has one), then, side by side:

- trials by state and the epochs trained;
- the feasible Pareto front: how many distinct points (goal: >= 3);
- each searched param's PED-ANOVA importance per objective (Optuna's
  ``PedAnovaImportanceEvaluator``, unnormalised: 0 means no measurable effect on that
  objective); a param is "inert" when it has none on every objective;
- each rule's firing count: in how many trials it fired (goal: some, not all).

    python bench/telling.py --trials 30 --quick            # every packaged spec
    python bench/telling.py lvm fep --trials 30 --quick
"""

from __future__ import annotations

import argparse
import math
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import optuna
import torch

import hpsearch
from hpsearch.objectives.summary import RULE_EVENTS_SYSTEM_ATTR
from hpsearch.search_spaces import StudySpec, load_spec

INERT_BELOW = 1e-3  # an unnormalised PED-ANOVA importance below this counts as no effect


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("specs", nargs="*", help="packaged spec names or YAML paths")
    parser.add_argument("--trials", type=int, default=30)
    parser.add_argument("--quick", action="store_true", help="use each spec's quick: variant")
    parser.add_argument("--storage", default=None, help="default: a temporary SQLite file")
    args = parser.parse_args()
    torch.set_num_threads(1)
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    names = args.specs or hpsearch.packaged_spec_names()
    with tempfile.TemporaryDirectory() as folder:
        storage = args.storage or f"sqlite:///{Path(folder) / 'telling.db'}"
        for name in names:
            spec = _spec(name, args.quick)
            started = time.perf_counter()
            study = hpsearch.run(spec, args.trials, storage=storage, track=False)
            print(_report(spec, study, time.perf_counter() - started))


def _spec(name: str, quick: bool) -> StudySpec:
    spec = load_spec(name)
    return load_spec(spec, quick=True) if quick and spec.quick is not None else spec


def _report(spec: StudySpec, study: optuna.Study, seconds: float) -> str:
    trials = study.get_trials(deepcopy=False)
    states = Counter(trial.state.name.lower() for trial in trials)
    epochs = sum(int(trial.user_attrs.get("epochs_run", 0)) for trial in trials)
    front = distinct_front(study)
    lines = [
        f"== {spec.name}: {len(trials)} trials ({_counts(states)}), {epochs} epochs, "
        f"{seconds:.0f} s",
        f"  feasible Pareto front: {len(front)} distinct point(s) "
        f"[{'ok' if len(front) >= 3 else 'FEW'}]",
    ]
    lines += [f"    {_point(spec, values)}" for values in front]
    lines += _importance_lines(spec, study)
    lines += _rule_lines(spec, trials)
    return "\n".join(lines)


def distinct_front(study: optuna.Study) -> list[tuple[float, ...]]:
    """Distinct objective vectors (4 significant digits) of the feasible non-dominated trials."""
    complete = [
        trial
        for trial in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
        if _feasible(trial)
    ]
    signs = [1.0 if d == optuna.study.StudyDirection.MINIMIZE else -1.0 for d in study.directions]
    losses = [tuple(s * v for s, v in zip(signs, trial.values, strict=True)) for trial in complete]
    front = {
        tuple(float(f"{s * v:.4g}") for s, v in zip(signs, loss, strict=True))
        for loss in losses
        if not any(_dominates(other, loss) for other in losses)
    }
    return sorted(front)


def _dominates(a: Sequence[float], b: Sequence[float]) -> bool:
    return all(x <= y for x, y in zip(a, b, strict=True)) and any(
        x < y for x, y in zip(a, b, strict=True)
    )


def _feasible(trial: optuna.trial.FrozenTrial) -> bool:
    values = [v for k, v in trial.system_attrs.items() if k.startswith("constraints")]
    flat: list[float] = []
    for value in values:
        flat.extend(value if isinstance(value, list) else [value])
    return all(float(v) <= 0.0 for v in flat)


def _importance_lines(spec: StudySpec, study: optuna.Study) -> list[str]:
    complete = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    searched = list(spec.space)
    if len(complete) < 5:
        return [f"  importance: only {len(complete)} complete trials, not computed"]
    table: dict[str, list[float]] = {param: [] for param in searched}
    for index in range(len(spec.objective_names)):
        scores = _importances(study, index, searched)
        for param in searched:
            table[param].append(scores.get(param, math.nan))
    header = "  PED-ANOVA importance  " + "  ".join(f"{n[:22]:>22}" for n in spec.objective_names)
    lines = [header]
    for param, scores in table.items():
        inert = all(not score > INERT_BELOW for score in scores)
        cells = "  ".join(f"{score:>22.4f}" for score in scores)
        lines.append(f"    {param:<20}{cells}{'   INERT' if inert else ''}")
    return lines


def _importances(study: optuna.Study, index: int, params: list[str]) -> dict[str, float]:
    """PED-ANOVA importances for objective ``index``. PED-ANOVA takes low target values as
    the good ones, so a maximized objective is negated."""
    evaluator = optuna.importance.PedAnovaImportanceEvaluator()
    sign = -1.0 if study.directions[index] == optuna.study.StudyDirection.MAXIMIZE else 1.0
    try:
        return optuna.importance.get_param_importances(
            study,
            evaluator=evaluator,
            params=params,
            target=lambda trial: sign * trial.values[index],
            normalize=False,
        )
    except (RuntimeError, ValueError) as error:
        print(f"  (importance of objective {index} not computed: {error})")
        return {}


def _rule_lines(spec: StudySpec, trials: Sequence[optuna.trial.FrozenTrial]) -> list[str]:
    fired: Counter[str] = Counter()
    for trial in trials:
        fired.update({str(event.get("rule")) for event in _events(trial)})
    finished = [t for t in trials if t.state.is_finished()]
    if not fired:
        return [f"  rules: none fired in {len(finished)} trials [SILENT]"]
    verdict = "ok" if all(count < len(finished) for count in fired.values()) else "ALWAYS"
    counts = ", ".join(f"{rule} {count}/{len(finished)}" for rule, count in fired.most_common())
    return [f"  rules fired (trials): {counts} [{verdict}]"]


def _events(trial: optuna.trial.FrozenTrial) -> list[dict[str, Any]]:
    """The trial's rule events as records (the trial keeps them in a system attribute; its
    user attribute ``rule_events`` holds the same as lines for people)."""
    events = trial.system_attrs.get(RULE_EVENTS_SYSTEM_ATTR) or []
    return [event for event in events if isinstance(event, dict)]


def _point(spec: StudySpec, values: Sequence[float]) -> str:
    return ", ".join(
        f"{name}={value:.4g}" for name, value in zip(spec.objective_names, values, strict=True)
    )


def _counts(states: Counter[str]) -> str:
    return ", ".join(f"{count} {state}" for state, count in sorted(states.items()))


if __name__ == "__main__":
    main()
