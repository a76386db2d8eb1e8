"""Cross-checks of a spec against its trainer and the rule presets."""

from __future__ import annotations

from hpsearch.errors import HpsearchError, SpecError
from hpsearch.pruners import RuleConfig, get_preset
from hpsearch.search_spaces.schema import StudySpec
from hpsearch.trainers import Trainer, get_trainer_class


def check_against_trainer(spec: StudySpec, where: str) -> type[Trainer]:
    """Resolve the trainer and check every name the spec uses; SpecError names the key."""
    try:
        trainer_class = get_trainer_class(spec.trainer)
    except HpsearchError as error:
        raise SpecError(f"{where}: trainer: {error}") from None
    _check_params(spec, trainer_class, where)
    _check_metrics(spec, trainer_class, where)
    _check_rules(spec, trainer_class, where)
    return trainer_class


def _check_params(spec: StudySpec, trainer_class: type[Trainer], where: str) -> None:
    known = set(trainer_class.param_defaults)
    for section, keys in (("fixed", spec.fixed), ("space", spec.space)):
        for key in keys:
            if key not in known:
                raise SpecError(
                    f"{where}: {section}.{key}: trainer {spec.trainer!r} has no param {key!r}; "
                    f"known params: {', '.join(sorted(known))}"
                )
    both = sorted(set(spec.fixed) & set(spec.space))
    if both:
        raise SpecError(
            f"{where}: {both[0]!r} is both in fixed and in space; keep it in one of them"
        )
    try:
        trainer_class.resolve_params({**spec.fixed, **spec.default_params()})
    except HpsearchError as error:
        raise SpecError(f"{where}: fixed/space defaults: {error}") from None


def _check_metrics(spec: StudySpec, trainer_class: type[Trainer], where: str) -> None:
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
    readable = set(trainer_class.metric_names) | set(trainer_class.param_defaults) | {"epoch"}
    knobs = set(trainer_class.knob_names)
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
        unknown = sorted(reads - readable)
        if unknown:
            raise SpecError(
                f"{label}: {unknown[0]!r} is not a metric, param or knob of trainer "
                f"{spec.trainer!r}; use one of {', '.join(sorted(readable))}"
            )
        if not isinstance(entry, str):
            changes = changes | set(entry.bounds)
        not_knobs = sorted(changes - knobs)
        if not_knobs:
            raise SpecError(
                f"{label}: {not_knobs[0]!r} is not a knob of trainer {spec.trainer!r} "
                f"(rules can change only {', '.join(sorted(knobs)) or 'nothing'})"
            )


def _declared_names(config: RuleConfig) -> tuple[set[str], set[str]]:
    return set(config.condition_names()) | set(config.if_params), config.changed_knobs()
