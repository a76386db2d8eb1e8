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

from hpsearch._util import first_line
from hpsearch.errors import HpsearchError, SpecError
from hpsearch.search_spaces.schema import (
    IN_PYTHON,
    SPEC_ATTR,
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
MAX_SPEC_BYTES = 1_000_000
MAX_DEPTH = 32  # levels of nesting in a spec (the packaged ones use 6)
MAX_NODES = 100_000  # values in a spec with its aliases expanded


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
        return _read_file(path), str(path)
    raise SpecError(
        f"unknown spec {spec!r}; use a packaged spec ({', '.join(packaged_spec_names())}) "
        "or a path to a .yaml file"
    )


def _read_file(path: Path) -> str:
    """A spec file's text: at most ``MAX_SPEC_BYTES``, UTF-8, readable."""
    try:
        size = path.stat().st_size
        if size > MAX_SPEC_BYTES:
            raise SpecError(
                f"spec file {str(path)!r} has {size} bytes; a spec has at most {MAX_SPEC_BYTES}"
            )
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise SpecError(f"spec file {str(path)!r} is not UTF-8 text; save it as UTF-8") from None
    except OSError as error:
        raise SpecError(
            f"cannot read spec file {str(path)!r} ({error.strerror or error}); check the path "
            "and its permissions"
        ) from None


def load_spec(spec: str | StudySpec, *, quick: bool = False) -> StudySpec:
    """Load, parse and fully validate a spec (a packaged name, a YAML path, or a StudySpec).

    ``quick=True`` gives the spec's ``quick:`` variant (smaller sizes, fewer epochs, study
    ``<name>-quick``); a spec without that section is a SpecError.

    Args:
        spec: a packaged spec name (``hpsearch spaces``), a path to a YAML file, or a
            ``StudySpec`` (checked again against its trainer).
        quick: return the spec's ``quick:`` variant.

    Returns:
        The validated ``StudySpec``: every name checked against the trainer's params,
        metrics and knobs.

    Raises:
        SpecError: one line naming the file, the key and the fix.

    Example:
        >>> spec = load_spec("cvfp")
        >>> spec.objective_names
        ['val_convergence_rate', 'val_effective_rank_ratio']
        >>> load_spec("no-such-spec")
        Traceback (most recent call last):
        ...
        hpsearch.errors.SpecError: unknown spec 'no-such-spec'; use a packaged spec ...
    """
    if isinstance(spec, StudySpec):
        check_against_trainer(spec, spec.source)
        return quick_variant(spec) if quick else spec
    if not isinstance(spec, str):
        raise SpecError(f"a spec is a name or a path, not {type(spec).__name__}")
    text, where = _read_text(spec)
    loaded = spec_from_dict(parse_yaml(text, where), where)
    return quick_variant(loaded) if quick else loaded


def read_spec(spec: str) -> StudySpec:
    """A spec parsed and checked against the schema only, not against its trainer (nothing
    imports the trainer, so no torch): for listing specs. Use ``load_spec`` to run one."""
    text, where = _read_text(spec)
    try:
        parsed = StudySpec.model_validate(parse_yaml(text, where))
    except ValidationError as error:
        raise SpecError(f"{where}: {describe_validation_error(error)}") from None
    parsed._source = where
    return parsed


def quick_variant(spec: StudySpec) -> StudySpec:
    """The spec's ``quick:`` variant, validated against the trainer like the spec itself."""
    variant = quick_variant_unchecked(spec)
    check_against_trainer(variant, f"{spec.source} (quick:)")
    return variant


def quick_variant_unchecked(spec: StudySpec) -> StudySpec:
    """The spec's ``quick:`` variant, not checked against the trainer (no torch import); a
    SpecError when the spec has no such section."""
    if spec.quick is None:
        raise SpecError(
            f"{spec.source}: spec {spec.name!r} has no quick: section; run it without --quick "
            "or add `quick: {epochs: N, fixed: {...}}` to the spec"
        )
    return spec.quick_variant()


def parse_yaml(text: str, where: str = IN_PYTHON) -> Any:
    """The YAML document in ``text`` (safe types only), or SpecError: bad syntax, duplicate
    keys, more than one document, nesting deeper than ``MAX_DEPTH``, more than ``MAX_NODES``
    values once anchors are expanded (an alias bomb)."""
    if len(text) > MAX_SPEC_BYTES:
        raise SpecError(f"{where}: {len(text)} characters; a spec has at most {MAX_SPEC_BYTES}")
    try:
        return _SpecLoader.load_checked(text, where)
    except yaml.YAMLError as error:
        raise SpecError(f"{where}: not valid YAML ({first_line(error)}); fix the syntax") from None
    except (RecursionError, MemoryError):
        raise SpecError(
            f"{where}: the YAML is nested too deeply; a spec is nested at most {MAX_DEPTH} levels"
        ) from None


def spec_from_dict(data: Any, where: str = IN_PYTHON) -> StudySpec:
    """Validate a spec given as a mapping (what a YAML file holds)."""
    if not isinstance(data, dict):
        raise SpecError(f"{where}: the spec must be a mapping of keys (name, trainer, space, ...)")
    try:
        spec = StudySpec.model_validate(data)
    except ValidationError as error:
        raise SpecError(f"{where}: {describe_validation_error(error)}") from None
    except HpsearchError as error:  # a rule condition that does not parse
        raise SpecError(f"{where}: {error}") from None
    except (RecursionError, MemoryError):
        raise SpecError(f"{where}: the spec is nested too deeply; simplify it") from None
    spec._source = where
    check_against_trainer(spec, where)
    if spec.quick is not None:
        quick_variant(spec)  # a broken quick: section is found at load, not at --quick time
    return spec


class _SpecLoader(yaml.SafeLoader):
    """PyYAML's safe loader that refuses duplicate keys and checks the document's size."""

    @classmethod
    def load_checked(cls, text: str, where: str) -> Any:
        loader = cls(text)
        try:
            node = loader.get_single_node()
            if node is None:
                return None
            _check_size(node, where)
            return loader.construct_document(node)
        finally:
            loader.dispose()

    def construct_mapping(self, node: Any, deep: bool = False) -> Any:
        if isinstance(node, yaml.MappingNode):
            seen: set[Any] = set()
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue
                key = self.construct_object(key_node, deep=True)
                try:
                    duplicate = key in seen
                    seen.add(key)
                except TypeError:  # an unhashable key; PyYAML reports it
                    continue
                if duplicate:
                    raise yaml.constructor.ConstructorError(
                        None,
                        None,
                        f"duplicate key {str(key)[:80]!r}; keep one of them",
                        key_node.start_mark,
                    )
        return super().construct_mapping(node, deep=deep)


def _check_size(root: Any, where: str) -> None:
    """SpecError when the node graph, with aliases expanded, is deeper than ``MAX_DEPTH`` or
    has more than ``MAX_NODES`` nodes; walks without recursion and stops at the limit."""
    stack: list[tuple[Any, int]] = [(root, 1)]
    count = 0
    while stack:
        node, depth = stack.pop()
        count += 1
        if count > MAX_NODES:
            raise SpecError(
                f"{where}: the YAML expands to more than {MAX_NODES} values (anchors and "
                "aliases included); a spec is far smaller: remove the repeated aliases"
            )
        if depth > MAX_DEPTH:
            raise SpecError(
                f"{where}: the YAML is nested more than {MAX_DEPTH} levels deep; flatten it"
            )
        if isinstance(node, yaml.SequenceNode):
            stack.extend((child, depth + 1) for child in node.value)
        elif isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                stack.append((key, depth + 1))
                stack.append((value, depth + 1))


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


__all__ = [
    "IN_PYTHON",
    "SPEC_ATTR",
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
    "quick_variant_unchecked",
    "read_spec",
    "spec_from_dict",
]
