"""Spec sampler / pruner entries -> Optuna objects."""

from __future__ import annotations

from typing import Any

import optuna

from hpsearch.errors import SpecError
from hpsearch.pruners.pareto_asha import PRUNER_NAME, ParetoAshaPruner
from hpsearch.search_spaces import PrunerSpec, SamplerSpec, StudySpec

_OPTUNA_PRUNERS: dict[str, Any] = {
    "median": optuna.pruners.MedianPruner,
    "percentile": optuna.pruners.PercentilePruner,
    "successive-halving": optuna.pruners.SuccessiveHalvingPruner,
    "hyperband": optuna.pruners.HyperbandPruner,
    "wilcoxon": optuna.pruners.WilcoxonPruner,
    "threshold": optuna.pruners.ThresholdPruner,
    "patient": optuna.pruners.PatientPruner,
    "nop": optuna.pruners.NopPruner,
}


def make_sampler(spec: SamplerSpec) -> optuna.samplers.BaseSampler:
    """The spec's sampler; constraints reach it through ``trial.set_constraint`` (Optuna 5)."""
    options = dict(spec.options)
    try:
        if spec.name == "tpe":
            return optuna.samplers.TPESampler(seed=spec.seed, **options)
        if spec.name == "nsga2":
            return optuna.samplers.NSGAIISampler(seed=spec.seed, **options)
        if spec.name == "nsga3":
            return optuna.samplers.NSGAIIISampler(seed=spec.seed, **options)
        if spec.name == "gp":
            return optuna.samplers.GPSampler(seed=spec.seed, **options)
        if spec.name == "qmc":
            return optuna.samplers.QMCSampler(seed=spec.seed, **options)
        return optuna.samplers.RandomSampler(seed=spec.seed, **options)
    except (TypeError, ValueError, OverflowError) as error:
        raise SpecError(
            f"sampler.options: {_first_line(error)}; check the options of {spec.name}"
        ) from None


def make_pruner(spec: PrunerSpec | None, study_spec: StudySpec) -> optuna.pruners.BasePruner:
    """The spec's pruner: ``pareto-asha`` (any number of objectives; the objective drives it),
    one of Optuna's (single-objective specs only), or NopPruner when none is named."""
    if spec is None:
        return optuna.pruners.NopPruner()
    if spec.name == PRUNER_NAME:
        return make_pareto_asha(spec, study_spec)
    if spec.name not in _OPTUNA_PRUNERS:
        raise SpecError(
            f"{study_spec.source}: pruner.name: unknown pruner {spec.name!r}; use one of "
            f"{', '.join(sorted([*_OPTUNA_PRUNERS, PRUNER_NAME]))}"
        )
    if len(study_spec.objectives) > 1 and spec.name != "nop":
        raise SpecError(
            f"{study_spec.source}: pruner.name: Optuna's {spec.name!r} pruner works only with "
            f"one objective; use {PRUNER_NAME!r} for several objectives, or remove the pruner"
        )
    try:
        return _OPTUNA_PRUNERS[spec.name](**spec.options())
    except (TypeError, ValueError, OverflowError) as error:
        raise SpecError(
            f"{study_spec.source}: pruner: {_first_line(error)}; check its options"
        ) from None


def make_pareto_asha(spec: PrunerSpec, study_spec: StudySpec) -> ParetoAshaPruner:
    """``pareto-asha`` from the spec's ``pruner:`` options (SpecError naming a bad one)."""
    try:
        return ParetoAshaPruner.from_options(
            study_spec.directions, study_spec.epochs, spec.options()
        )
    except (TypeError, ValueError, OverflowError) as error:
        raise SpecError(
            f"{study_spec.source}: pruner ({PRUNER_NAME}): {_first_line(error)}"
        ) from None


def _first_line(error: BaseException) -> str:
    lines = str(error).strip().splitlines()
    return lines[0][:300] if lines else type(error).__name__
