"""Spec sampler / pruner entries -> Optuna objects."""

from __future__ import annotations

from typing import Any

import optuna

from hpsearch.errors import SpecError
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
    except TypeError as error:
        raise SpecError(
            f"sampler.options: {error}; check the option names of {spec.name}"
        ) from None


def make_pruner(spec: PrunerSpec | None, study_spec: StudySpec) -> optuna.pruners.BasePruner:
    """Optuna's pruner for single-objective specs; NopPruner when none is named."""
    if spec is None:
        return optuna.pruners.NopPruner()
    if spec.name not in _OPTUNA_PRUNERS:
        raise SpecError(
            f"{study_spec.source}: pruner.name: unknown pruner {spec.name!r}; use one of "
            f"{', '.join(sorted(_OPTUNA_PRUNERS))}"
        )
    if len(study_spec.objectives) > 1 and spec.name != "nop":
        raise SpecError(
            f"{study_spec.source}: pruner.name: Optuna's {spec.name!r} pruner works only with "
            "one objective; remove the pruner or use a single objective"
        )
    try:
        return _OPTUNA_PRUNERS[spec.name](**spec.options())
    except TypeError as error:
        raise SpecError(f"{study_spec.source}: pruner: {error}; check its options") from None
