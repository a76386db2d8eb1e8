"""Spec sampler / pruner entries -> Optuna objects."""

from __future__ import annotations

import optuna

from hpsearch._util import first_line
from hpsearch.errors import SpecError
from hpsearch.pruners.pareto_asha import PRUNER_NAME, ParetoAshaPruner
from hpsearch.registry import Registry
from hpsearch.search_spaces import PrunerSpec, SamplerSpec, StudySpec

# Samplers and pruners by the names a spec uses: ``"package.module:Class"`` entries, imported
# on first use. A plug-in adds its own with ``SAMPLERS.register`` / ``PRUNERS.register``
# (a sampler class takes ``seed=`` and its options; a pruner class takes its options).
SAMPLERS: Registry[type[optuna.samplers.BaseSampler]] = Registry(
    "sampler",
    {
        "tpe": "optuna.samplers:TPESampler",
        "nsga2": "optuna.samplers:NSGAIISampler",
        "nsga3": "optuna.samplers:NSGAIIISampler",
        "gp": "optuna.samplers:GPSampler",
        "qmc": "optuna.samplers:QMCSampler",
        "random": "optuna.samplers:RandomSampler",
    },
)
PRUNERS: Registry[type[optuna.pruners.BasePruner]] = Registry(
    "pruner",
    {
        PRUNER_NAME: "hpsearch.pruners.pareto_asha:ParetoAshaPruner",
        "median": "optuna.pruners:MedianPruner",
        "percentile": "optuna.pruners:PercentilePruner",
        "successive-halving": "optuna.pruners:SuccessiveHalvingPruner",
        "hyperband": "optuna.pruners:HyperbandPruner",
        "wilcoxon": "optuna.pruners:WilcoxonPruner",
        "threshold": "optuna.pruners:ThresholdPruner",
        "patient": "optuna.pruners:PatientPruner",
        "nop": "optuna.pruners:NopPruner",
    },
)
# Pruners that decide on several objectives (Optuna's own prune one objective only).
MULTI_OBJECTIVE_PRUNERS = {PRUNER_NAME, "nop"}


def make_sampler(spec: SamplerSpec) -> optuna.samplers.BaseSampler:
    """The spec's sampler; constraints reach it through ``trial.set_constraint`` (Optuna 5)."""
    try:
        sampler_class = SAMPLERS.get(spec.name)
    except KeyError as error:
        raise SpecError(f"sampler.name: {error.args[0]}") from None
    try:
        return sampler_class(seed=spec.seed, **dict(spec.options))  # type: ignore[call-arg]
    except (TypeError, ValueError, OverflowError) as error:
        raise SpecError(
            f"sampler.options: {first_line(error)}; check the options of {spec.name}"
        ) from None


def make_pruner(spec: PrunerSpec | None, study_spec: StudySpec) -> optuna.pruners.BasePruner:
    """The spec's pruner: ``pareto-asha`` (any number of objectives; the objective drives it),
    one of Optuna's (single-objective specs only), or NopPruner when none is named."""
    if spec is None:
        return optuna.pruners.NopPruner()
    if spec.name not in PRUNERS:
        raise SpecError(
            f"{study_spec.source}: pruner.name: unknown pruner {spec.name!r}; use one of "
            f"{', '.join(PRUNERS.names())}"
        )
    if spec.name == PRUNER_NAME:
        return make_pareto_asha(spec, study_spec)
    if len(study_spec.objectives) > 1 and spec.name not in MULTI_OBJECTIVE_PRUNERS:
        raise SpecError(
            f"{study_spec.source}: pruner.name: Optuna's {spec.name!r} pruner works only with "
            f"one objective; use {PRUNER_NAME!r} for several objectives, or remove the pruner"
        )
    try:
        return PRUNERS.get(spec.name)(**spec.options())
    except (TypeError, ValueError, OverflowError) as error:
        raise SpecError(
            f"{study_spec.source}: pruner: {first_line(error)}; check its options"
        ) from None


def make_pareto_asha(spec: PrunerSpec, study_spec: StudySpec) -> ParetoAshaPruner:
    """``pareto-asha`` from the spec's ``pruner:`` options (SpecError naming a bad one)."""
    try:
        return ParetoAshaPruner.from_options(
            study_spec.directions, study_spec.epochs, spec.options()
        )
    except (TypeError, ValueError, OverflowError) as error:
        raise SpecError(
            f"{study_spec.source}: pruner ({PRUNER_NAME}): {first_line(error)}"
        ) from None
