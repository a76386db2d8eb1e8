"""Cross-checks of a spec against its trainer and the rule presets.

What a trainer declares (``param_defaults``, ``metric_names``, ``knob_names``,
``epoch_metric_names``) is checked here, when the spec is loaded; what it leaves undeclared is
checked on first use (``check_final_metrics``, ``check_rule_knobs``, ``PrunerWatch``).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from hpsearch.errors import HpsearchError, SpecError, TrainerContractError
from hpsearch.pruners import RuleConfig, get_preset
from hpsearch.search_spaces.schema import StudySpec

if TYPE_CHECKING:  # the trainers (and torch) load when a spec is checked, not on import
    from hpsearch.trainers import Trainer

logger = logging.getLogger("hpsearch")


def check_against_trainer(spec: StudySpec, where: str) -> type[Trainer]:
    """Resolve the trainer and check every name the spec uses; SpecError names the key."""
    try:
        from hpsearch.trainers import get_trainer_class

        trainer_class = get_trainer_class(spec.trainer, _spec_folder(where))
    except HpsearchError as error:
        raise SpecError(f"{where}: trainer: {error}") from None
    _check_params(spec, trainer_class, where)
    _check_metrics(spec, trainer_class, where)
    _check_rules(spec, trainer_class, where)
    _check_pruned_objectives(spec, trainer_class, where)
    return trainer_class


def _spec_folder(where: str) -> Path | None:
    path = Path(where.removesuffix(" (quick:)"))
    return path.parent if path.suffix in (".yaml", ".yml") and path.is_file() else None


def _check_params(spec: StudySpec, trainer_class: type[Trainer], where: str) -> None:
    both = sorted(set(spec.fixed) & set(spec.space))
    if both:
        raise SpecError(
            f"{where}: {both[0]!r} is both in fixed and in space; keep it in one of them"
        )
    if trainer_class.param_defaults is not None:
        known = set(trainer_class.param_defaults)
        for section, keys in (("fixed", spec.fixed), ("space", spec.space)):
            for key in keys:
                if key not in known:
                    raise SpecError(
                        f"{where}: {section}.{key}: trainer {spec.trainer!r} has no param "
                        f"{key!r}; known params: {', '.join(sorted(known))}"
                    )
    try:
        trainer_class.resolve_params({**spec.fixed, **spec.default_params()})
    except HpsearchError as error:
        raise SpecError(f"{where}: fixed/space defaults: {error}") from None


def _check_metrics(spec: StudySpec, trainer_class: type[Trainer], where: str) -> None:
    if trainer_class.metric_names is None:
        return
    metrics = set(trainer_class.metric_names)
    entries = [("objectives", o.metric) for o in spec.objectives]
    entries += [("constraints", c.metric) for c in spec.constraints]
    for index, (section, metric) in enumerate(entries):
        if metric not in metrics:
            position = index if section == "objectives" else index - len(spec.objectives)
            raise SpecError(
                f"{where}: {section}[{position}].metric: trainer {spec.trainer!r} reports no "
                f"metric {metric!r}; use one of {', '.join(sorted(metrics))}"
            )


def _check_rules(spec: StudySpec, trainer_class: type[Trainer], where: str) -> None:
    metrics, params = trainer_class.metric_names, trainer_class.param_defaults
    knob_names = trainer_class.knob_names
    for index, entry in enumerate(spec.rules):
        label = f"{where}: rules[{index}]"
        if isinstance(entry, str):
            try:
                preset = get_preset(entry)
            except HpsearchError as error:
                raise SpecError(f"{label}: {error}") from None
            reads, changes = preset.names_read(), preset.knobs_changed()
        else:
            reads, changes = _declared_names(entry)
        if metrics is not None and params is not None:
            readable = set(metrics) | set(params) | set(knob_names or ()) | {"epoch"}
            unknown = sorted(reads - readable)
            if unknown:
                raise SpecError(
                    f"{label}: {unknown[0]!r} is not a metric, param or knob of trainer "
                    f"{spec.trainer!r}; use one of {', '.join(sorted(readable))}"
                )
        if not isinstance(entry, str):
            changes = changes | set(entry.bounds)
        knobs = _knobs_of(spec, trainer_class)
        not_knobs = sorted(changes - knobs) if knobs is not None else []
        if not_knobs:
            raise SpecError(
                f"{label}: {not_knobs[0]!r} is not a knob of trainer {spec.trainer!r} "
                f"(rules can change only {', '.join(sorted(knobs or ())) or 'nothing'})"
            )


def _knobs_of(spec: StudySpec, trainer_class: type[Trainer]) -> set[str] | None:
    """The declared knobs; for an undeclared trainer, None (checked on first use)."""
    if trainer_class.knob_names is not None:
        return set(trainer_class.knob_names)
    return None


def _declared_names(config: RuleConfig) -> tuple[set[str], set[str]]:
    return set(config.condition_names()) | set(config.if_params), config.changed_knobs()


def _check_pruned_objectives(spec: StudySpec, trainer_class: type[Trainer], where: str) -> None:
    """A pruner ranks trials by the objectives of each epoch: each objective's metric must be
    among the trainer's declared per-epoch metrics, or the pruner can never stop a trial."""
    per_epoch = trainer_class.epoch_metric_names
    if spec.pruner is None or per_epoch is None:
        return
    for index, objective in enumerate(spec.objectives):
        if objective.metric not in per_epoch:
            raise SpecError(
                f"{where}: pruner {spec.pruner.name!r} can never prune: trainer {spec.trainer!r} "
                f"reports objectives[{index}].metric {objective.metric!r} only at the end, not "
                f"every epoch (per epoch: {', '.join(per_epoch) or 'none'}); yield it from "
                "epochs() and list it in epoch_metric_names, or remove the pruner"
            )


def check_final_metrics(spec: StudySpec, trainer: Trainer, final: Mapping[str, float]) -> None:
    """TrainerContractError unless the final metrics hold every objective and constraint
    metric."""
    needed = [(f"objectives[{i}]", o.metric) for i, o in enumerate(spec.objectives)]
    needed += [(f"constraints[{i}]", c.metric) for i, c in enumerate(spec.constraints)]
    for label, metric in needed:
        if metric not in final:
            raise TrainerContractError(
                f"trainer {trainer.display_name()!r} reported no metric {metric!r} "
                f"({spec.source}: {label}.metric) in its final metrics (it reported: "
                f"{', '.join(sorted(final)) or 'nothing'}); return it from final_metrics() "
                "or fix the spec"
            )


def check_rule_knobs(spec: StudySpec, trainer: Trainer) -> None:
    """TrainerContractError if a rule changes a knob the trainer does not hold in ``knobs``."""
    for index, entry in enumerate(spec.rules):
        changes = (
            get_preset(entry).knobs_changed()
            if isinstance(entry, str)
            else set(entry.changed_knobs())
        )
        missing = sorted(changes - set(trainer.knobs))
        if missing:
            raise TrainerContractError(
                f"{spec.source}: rules[{index}] changes knob {missing[0]!r}, but trainer "
                f"{trainer.display_name()!r} has no such knob (its knobs: "
                f"{', '.join(sorted(trainer.knobs)) or 'none'}); put it in self.knobs"
            )


_WARNED_PRUNERS: set[tuple[str, str]] = set()


def watch_pruned_objectives(spec: StudySpec, epoch: int, metrics: Mapping[str, float]) -> None:
    """One warning line per spec and process, at the pruner's first rung, when an objective's
    metric is missing from that epoch's metrics (an undeclared trainer that reports it only at
    the end): the pruner can then never stop a trial."""
    if spec.pruner is None or epoch < first_rung(spec):
        return
    key = (spec.name, spec.trainer)
    if key in _WARNED_PRUNERS:
        return
    _WARNED_PRUNERS.add(key)
    missing = [o.metric for o in spec.objectives if o.metric not in metrics]
    if missing:
        logger.warning(
            "pruner %s cannot prune: trainer %s does not report objective metric %r at epoch "
            "%d (only at the end?); yield it from epochs() every epoch",
            spec.pruner.name,
            spec.trainer,
            missing[0],
            epoch,
        )


def first_rung(spec: StudySpec) -> int:
    """The first epoch at which the spec's pruner may judge a trial."""
    options = spec.pruner.options() if spec.pruner is not None else {}
    rungs = options.get("rungs")
    if isinstance(rungs, list) and rungs and isinstance(rungs[0], int):
        return rungs[0]
    for key, offset in (("min_epochs", 0), ("n_warmup_steps", 1), ("min_resource", 0)):
        value = options.get(key)
        if isinstance(value, int) and not isinstance(value, bool):
            return value + offset
    return 1
