"""A best config as a file a program (or ``hpsearch try --config FILE``) can re-run.

hpsearch best examples/digits.yaml --rank-by val_accuracy --export yaml > best.yaml
hpsearch try --config best.yaml          # the same trial again: same spec, params and seed
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from hpsearch.errors import HpsearchError
from hpsearch.query import BestConfig
from hpsearch.search_spaces import load_spec


class ConfigFileError(HpsearchError):
    """A ``--config`` file is missing or malformed."""


@dataclass(frozen=True)
class ExportedConfig:
    spec: str
    params: dict[str, Any]
    seed: int | None
    quick: bool = False


def spec_reference(spec: str) -> str:
    """A packaged spec name as is; a spec file as an absolute path (the export may move)."""
    path = Path(spec)
    return str(path.resolve()) if path.suffix in (".yaml", ".yml") and path.is_file() else spec


def export_yaml(config: BestConfig, spec: str, study_name: str, *, quick: bool = False) -> str:
    """The config as YAML: spec, sampled params and the trial's seed (what a re-run needs),
    then the effective params, values and metrics (for reading)."""
    seed = load_spec(spec, quick=quick).seed + config.trial_number  # the seed the trial ran with
    document = {
        "spec": spec_reference(spec),
        "quick": quick,
        "study": study_name,
        "trial": config.trial_number,
        "seed": seed,
        "params": config.params,
        "effective_params": config.effective_params,
        "values": config.values,
        "metrics": config.metrics,
    }
    header = (
        f"# trial {config.trial_number} of study {study_name!r}, exported by `hpsearch best`; "
        "re-run it with: hpsearch try --config THIS_FILE\n"
    )
    return header + yaml.safe_dump(_plain(document), sort_keys=False)


def read_config(path: str) -> ExportedConfig:
    """An exported config; ConfigFileError names the file and the fix."""
    file = Path(path)
    if not file.is_file():
        raise ConfigFileError(
            f"--config {path!r} does not exist; export one with "
            "`hpsearch best SPEC --export yaml > FILE`"
        )
    try:
        data = yaml.safe_load(file.read_text())
    except yaml.YAMLError:
        data = None
    if not isinstance(data, dict) or not isinstance(data.get("params"), dict) or "spec" not in data:
        raise ConfigFileError(
            f"--config {path!r}: not an exported config (needs spec: and params:); export one "
            "with `hpsearch best SPEC --export yaml > FILE`"
        )
    seed = data.get("seed")
    return ExportedConfig(
        spec=str(data["spec"]),
        params=dict(data["params"]),
        seed=int(seed) if isinstance(seed, int) else None,
        quick=data.get("quick") is True,
    )


def _plain(value: Any) -> Any:
    """Plain YAML types (no NumPy scalars, no tuples)."""
    if isinstance(value, dict):
        return {str(key): _plain(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(item) for item in value]
    if hasattr(value, "item") and callable(value.item):
        return value.item()
    return value
