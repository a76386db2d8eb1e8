"""A trial run's MLflow writes as plain data: an ``Operation`` names the write and holds its
arguments (strings, numbers, JSON-able values), so it can be applied in this process or sent
to the writer process (``writer_process.py``) and applied there, the same way.

Metrics travel as ``(key, value, timestamp_ms, step)``, params and tags as ``(key, value)``:
building them costs the hot path (``log_epoch``) no MLflow import.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit
from urllib.request import url2pathname

MetricTuple = tuple[str, float, int, int]
Pair = tuple[str, str]
BATCH_LIMITS = {"metrics": 1000, "params": 100, "tags": 100}  # MLflow's per-call limits


@dataclass
class Operation:
    """One write to the run ``run_id``: ``log_batch``, ``write_artifacts`` or ``set_terminated``.

    ``log_batch`` holds ``metrics``, ``params`` and ``tags``; ``write_artifacts`` holds
    ``artifact_uri`` and ``contents`` (name -> JSON-able value, written as ``<name>.json``);
    ``set_terminated`` holds ``status`` and ``end_time`` (ms).
    """

    name: str
    run_id: str
    metrics: list[MetricTuple] | None = None
    params: list[Pair] | None = None
    tags: list[Pair] | None = None
    artifact_uri: str | None = None
    contents: Mapping[str, Any] | None = None
    status: str | None = None
    end_time: int | None = None

    def absorb(self, later: object) -> bool:
        """Take the same run's next ``log_batch`` into this one (True), else leave it."""
        if not (
            isinstance(later, Operation)
            and self.name == later.name == "log_batch"
            and later.run_id == self.run_id
        ):
            return False
        self.metrics = [*(self.metrics or ()), *(later.metrics or ())]
        self.params = [*(self.params or ()), *(later.params or ())]
        self.tags = [*(self.tags or ()), *(later.tags or ())]
        return True

    def apply(self, client: Any, tracking_uri: str) -> None:
        """Perform the write with ``client`` (an ``MlflowClient`` of ``tracking_uri``)."""
        if self.name == "log_batch":
            log_batch(
                client,
                self.run_id,
                metrics=self.metrics or (),
                params=_last_of_each_key(self.params or ()),
                tags=_last_of_each_key(self.tags or ()),
            )
        elif self.name == "write_artifacts":
            write_artifacts(
                client, tracking_uri, self.run_id, self.artifact_uri, self.contents or {}
            )
        elif self.name == "set_terminated":
            client.set_terminated(self.run_id, self.status, self.end_time)
        else:
            raise ValueError(f"unknown tracking operation {self.name!r}")

    @property
    def what(self) -> str:
        """The write in words, for a warning."""
        return self.name.replace("_", " ")


def log_batch(
    client: Any,
    run_id: str,
    *,
    metrics: Sequence[MetricTuple] = (),
    params: Sequence[Pair] = (),
    tags: Sequence[Pair] = (),
) -> None:
    """``client.log_batch`` in chunks within MLflow's per-call limits."""
    from mlflow.entities import Metric, Param, RunTag

    kinds: dict[str, list[Any]] = {
        "metrics": [Metric(*metric) for metric in metrics],
        "params": [Param(*param) for param in params],
        "tags": [RunTag(*tag) for tag in tags],
    }
    while any(kinds.values()):
        chunk = {kind: items[: BATCH_LIMITS[kind]] for kind, items in kinds.items()}
        kinds = {kind: items[BATCH_LIMITS[kind] :] for kind, items in kinds.items()}
        client.log_batch(run_id, **chunk)


def write_artifacts(
    client: Any,
    tracking_uri: str,
    run_id: str,
    artifact_uri: str | None,
    contents: Mapping[str, Any],
) -> None:
    """Every JSON artifact of a run: written straight into a local artifact folder (MLflow's
    own layout: files under the run's ``artifact_uri``), otherwise in one upload of a folder
    (no run lookup)."""
    local = local_folder(artifact_uri)
    if local is not None:
        write_json_files(local, contents)
        return
    from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

    with tempfile.TemporaryDirectory() as folder:
        write_json_files(Path(folder), contents)
        if artifact_uri:
            get_artifact_repository(artifact_uri, tracking_uri=tracking_uri).log_artifacts(folder)
        else:
            client.log_artifacts(run_id, folder)


def local_folder(artifact_uri: Any) -> Path | None:
    """The folder of a local artifact URI (a path or ``file://``); None for any other."""
    if not artifact_uri:
        return None
    parts = urlsplit(str(artifact_uri))
    if parts.scheme == "file" and parts.netloc in ("", "localhost"):
        return Path(url2pathname(parts.path))
    if parts.scheme == "" and str(artifact_uri).startswith("/"):
        return Path(str(artifact_uri))
    return None


def write_json_files(folder: Path, contents: Mapping[str, Any]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name, content in contents.items():
        (folder / f"{name}.json").write_text(json.dumps(content, indent=1))


def _last_of_each_key(pairs: Sequence[Pair]) -> list[Pair]:
    return list(dict(pairs).items())
