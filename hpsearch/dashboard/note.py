"""The study note (markdown) optuna-dashboard shows on a study's page, from its spec.

What the study is (description, seed, trainer), objectives with directions and bands,
constraints, the search space as a table, the rules in words, the pruner, the sampler and the
command that reproduces it.
"""

from __future__ import annotations

import json
from collections.abc import Iterable

from hpsearch.pruners.declarative import BackoffConfig, RuleConfig
from hpsearch.search_spaces import SPEC_ATTR, CategoricalParam, FloatParam, StudySpec
from hpsearch.search_spaces.schema import ParamSpec


def study_note(spec: StudySpec, study_name: str | None = None) -> str:
    """The markdown note of a study run from ``spec``."""
    name = study_name or spec.name
    sections = [
        f"# {name}",
        spec.description or "(no description in the spec)",
        f"Trainer `{spec.trainer}`, {spec.epochs} epochs per trial, seed {spec.seed}; "
        f"{_where_from(spec)}.",
        "## Objectives",
        _objectives(spec),
        "## Constraints",
        _constraints(spec),
        "## Search space",
        _space(spec),
        "## Rules",
        _rules(spec),
        "## Pruner",
        _pruner(spec),
        "## Sampler",
        _sampler(spec),
        "## Reproduce",
        _reproduce(spec, name),
    ]
    return "\n\n".join(sections) + "\n"


def _where_from(spec: StudySpec) -> str:
    if spec.from_file:
        return f"spec `{spec.source}`"
    return f"spec built in Python (its JSON is the study's user attr `{SPEC_ATTR}`)"


def _reproduce(spec: StudySpec, name: str) -> str:
    if spec.from_file:
        return f"```\nhpsearch run {spec.source} --study-name {name} --storage <URL>\n```"
    return (
        "```python\n"
        "import hpsearch, optuna\n"
        "from hpsearch.search_spaces import spec_from_dict\n\n"
        f'stored = optuna.load_study(study_name="{name}", storage="<URL>")\n'
        f'spec = spec_from_dict(stored.user_attrs["{SPEC_ATTR}"])\n'
        f'hpsearch.run(spec, study_name="{name}", storage="<URL>")\n'
        "```"
    )


def _objectives(spec: StudySpec) -> str:
    rows = ["| objective | metric | goal |", "| --- | --- | --- |"]
    for objective in spec.objectives:
        if objective.band is not None:
            low, high = objective.band
            goal = f"inside the band {low:g}-{high:g} (distance to it, minimized)"
        else:
            goal = str(objective.direction)
        rows.append(f"| {objective.name} | {objective.metric} | {goal} |")
    return "\n".join(rows)


def _constraints(spec: StudySpec) -> str:
    if not spec.constraints:
        return "None: every complete trial is feasible."
    lines = [f"- `{constraint.name}`" for constraint in spec.constraints]
    lines.append(
        "\nA trial is feasible when every constraint holds at its end; infeasible trials are "
        "grey in the plots and never among the best trials."
    )
    return "\n".join(lines)


def _space(spec: StudySpec) -> str:
    rows = ["| param | type | range / choices | log | default |", "| --- | --- | --- | --- | --- |"]
    rows += [_param_row(name, param) for name, param in spec.space.items()]
    if spec.fixed:
        fixed = ", ".join(f"{key}={value}" for key, value in spec.fixed.items())
        rows.append(f"\nFixed: {fixed}")
    return "\n".join(rows)


def _param_row(name: str, param: ParamSpec) -> str:
    if isinstance(param, CategoricalParam):
        span = ", ".join(str(choice) for choice in param.choices)
        log = ""
    else:
        step = f" step {param.step:g}" if param.step not in (None, 1) else ""
        span = f"{param.low:g} - {param.high:g}{step}"
        log = "yes" if param.log else ""
    kind = "float" if isinstance(param, FloatParam) else param.type
    default = "" if param.default is None else str(param.default)
    return f"| {name} | {kind} | {span} | {log} | {default} |"


def _rules(spec: StudySpec) -> str:
    if not spec.rules:
        return "None."
    from hpsearch.pruners import get_preset

    lines = []
    for entry in spec.rules:
        if isinstance(entry, RuleConfig):
            lines.append(f"- {rule_in_words(entry)}")
            continue
        preset = get_preset(entry)
        lines.append(f"- preset **{entry}**: {preset.description}")
        lines += [f"  - {rule_in_words(config)}" for config in preset.configs]
        if preset.factories:
            lines.append(f"  - and {len(preset.factories)} custom rule(s) in code")
    return "\n".join(lines)


def rule_in_words(rule: RuleConfig) -> str:
    """``**free-bits-down**: if penalty_reduction > 70 for 3 epochs: free_bits - 0.005``."""
    streak = f" for {rule.for_epochs} epochs" if rule.for_epochs > 1 else ""
    when = f"if {rule.when}{streak}"
    if rule.if_params:
        when += " (only trials with " + ", ".join(f"{k}={v}" for k, v in rule.if_params.items())
        when += ")"
    text = f"**{rule.name}**: {when}: {_then(rule)}"
    if rule.max_firings:
        text += f" (at most {rule.max_firings} times)"
    return text


def _then(rule: RuleConfig) -> str:
    then = rule.then
    if then == "abort":
        return "stop the trial (PRUNED)" + (f": {rule.message}" if rule.message else "")
    if then == "advise":
        return f"advise: {rule.message or '(no message)'}"
    assert isinstance(then, BackoffConfig)
    parts = list(_changes(then))
    if then.advise:
        parts.append(f"advise: {then.advise}")
    for knob, (low, high) in rule.bounds.items():
        parts.append(f"{knob} kept within {low:g}-{high:g}")
    return "; ".join(parts)


def _changes(then: BackoffConfig) -> Iterable[str]:
    for knob, value in then.set.items():
        yield f"{knob} = {value:g}"
    for knob, value in then.add.items():
        yield f"{knob} {'-' if value < 0 else '+'} {abs(value):g}"
    for knob, value in then.scale.items():
        yield f"{knob} × {value:g}"


def _pruner(spec: StudySpec) -> str:
    if spec.pruner is None:
        return "None: every trial runs all its epochs unless a rule stops it."
    options = spec.pruner.options()
    text = f"`{spec.pruner.name}`" + (f" with {json.dumps(options)}" if options else "")
    if spec.pruner.name == "pareto-asha":
        from hpsearch.objectives.factories import make_pareto_asha

        pruner = make_pareto_asha(spec.pruner, spec)
        text += (
            f": at epochs {pruner.rungs} a trial goes on only if it ranks in the top "
            f"1/{pruner.eta:g} of the trials that reached that epoch (feasible first, then "
            "non-dominated front, then crowding distance)"
        )
    return text


def _sampler(spec: StudySpec) -> str:
    options = f" with {json.dumps(spec.sampler.options)}" if spec.sampler.options else ""
    return f"`{spec.sampler.name}`, seed {spec.sampler.seed}{options}"
