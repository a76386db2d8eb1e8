"""Study specs: the packaged YAML files and their loader / validator.

``load_spec("cvfp")`` loads a packaged spec by name; ``load_spec("my/spec.yaml")`` a file.
Every problem is one ``SpecError`` naming the file, the key and the fix.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from hpsearch.errors import HpsearchError, SpecError
from hpsearch.search_spaces.schema import (
    CategoricalParam,
    ConstraintSpec,
    FloatParam,
    IntParam,
    ObjectiveSpec,
    PrunerSpec,
    QuickSpec,
    SamplerSpec,
    StudySpec,
)
from hpsearch.search_spaces.validate import check_against_trainer

_PACKAGE = "hpsearch.search_spaces"


def packaged_spec_names() -> list[str]:
    """Names of the specs shipped with hpsearch."""
    folder = resources.files(_PACKAGE)
    return sorted(
        entry.name.removesuffix(".yaml")
        for entry in folder.iterdir()
        if entry.name.endswith(".yaml")
    )


def _read_text(spec: str) -> tuple[str, str]:
    """(text, where) of a packaged name or a YAML path."""
    if spec in packaged_spec_names():
        return resources.files(_PACKAGE).joinpath(f"{spec}.yaml").read_text(), f"{spec}.yaml"
    path = Path(spec)
    if path.suffix in (".yaml", ".yml") or path.exists():
        if not path.is_file():
            raise SpecError(f"spec file {spec!r} does not exist; give a path to a YAML file")
        return path.read_text(), str(path)
    raise SpecError(
        f"unknown spec {spec!r}; use a packaged spec ({', '.join(packaged_spec_names())}) "
        "or a path to a .yaml file"
    )


def load_spec(spec: str | StudySpec, *, quick: bool = False) -> StudySpec:
    """Load, parse and fully validate a spec (a packaged name, a YAML path, or a StudySpec).

    ``quick=True`` gives the spec's ``quick:`` variant (smaller sizes, fewer epochs, study
    ``<name>-quick``); a spec without that section is a SpecError."""
    if isinstance(spec, StudySpec):
        check_against_trainer(spec, spec.source)
        return quick_variant(spec) if quick else spec
    text, where = _read_text(spec)
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise SpecError(f"{where}: not valid YAML ({_first_line(error)}); fix the syntax") from None
    loaded = spec_from_dict(data, where)
    return quick_variant(loaded) if quick else loaded


def quick_variant(spec: StudySpec) -> StudySpec:
    """The spec's ``quick:`` variant, validated against the trainer like the spec itself."""
    if spec.quick is None:
        raise SpecError(
            f"{spec.source}: spec {spec.name!r} has no quick: section; run it without --quick "
            "or add `quick: {epochs: N, fixed: {...}}` to the spec"
        )
    variant = spec.quick_variant()
    check_against_trainer(variant, f"{spec.source} (quick:)")
    return variant


def spec_from_dict(data: Any, where: str = "<spec>") -> StudySpec:
    """Validate a spec given as a mapping (what a YAML file holds)."""
    if not isinstance(data, dict):
        raise SpecError(f"{where}: the spec must be a mapping of keys (name, trainer, space, ...)")
    try:
        spec = StudySpec.model_validate(data)
    except ValidationError as error:
        raise SpecError(f"{where}: {describe_validation_error(error)}") from None
    except HpsearchError as error:  # a rule condition that does not parse
        raise SpecError(f"{where}: {error}") from None
    spec._source = where
    check_against_trainer(spec, where)
    if spec.quick is not None:
        quick_variant(spec)  # a broken quick: section is found at load, not at --quick time
    return spec


def describe_validation_error(error: ValidationError) -> str:
    """The most specific pydantic error as ``key.path: problem; fix``.

    Where a key may take several forms (a rule is a preset name or a mapping), the error with
    the deepest location comes from the form the user meant."""
    first = max(error.errors(), key=lambda item: len(item["loc"]))
    location = ".".join(str(part) for part in first["loc"] if not _is_union_tag(part))
    kind, message = first["type"], first["msg"]
    if kind == "extra_forbidden":
        return f"{location}: unknown key; remove it or check its spelling"
    if kind == "missing":
        return f"{location}: required key is missing; add it"
    message = message.removeprefix("Value error, ")
    return f"{location}: {message}" if location else message


def _is_union_tag(part: object) -> bool:
    return part in {"float", "int", "categorical", "str", "RuleConfig", "BackoffConfig"} or (
        isinstance(part, str) and part.startswith(("function-", "literal["))
    )


def _first_line(error: Exception) -> str:
    return str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__


__all__ = [
    "CategoricalParam",
    "ConstraintSpec",
    "FloatParam",
    "IntParam",
    "ObjectiveSpec",
    "PrunerSpec",
    "QuickSpec",
    "SamplerSpec",
    "StudySpec",
    "load_spec",
    "packaged_spec_names",
    "quick_variant",
    "spec_from_dict",
]
