"""docker-compose.yml and the Dockerfile, checked without a Docker engine: the compose file
parses, every hpsearch command in it parses with the real CLI, and no secret is written in it."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import click
import pytest
import yaml

from hpsearch.cli import cli

ROOT = Path(__file__).parent.parent
COMPOSE = ROOT / "docker-compose.yml"
INTERPOLATION = re.compile(r"\$\{(\w+)(?::?[-?]([^}]*))?\}")


def _compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text())


def _services() -> dict[str, dict[str, Any]]:
    return _compose()["services"]


def _resolve(text: str) -> str:
    """What compose does with ${VAR:-default} / ${VAR:?error} when .env sets nothing else."""
    return INTERPOLATION.sub(
        lambda match: "placeholder" if "?" in match.group(0) else (match.group(2) or ""), text
    )


def test_the_compose_file_has_the_services_of_a_distributed_study() -> None:
    services = _services()
    assert {"postgres", "mlflow", "dashboard", "worker"} <= set(services)
    postgres = services["postgres"]
    assert "pg_isready" in " ".join(postgres["healthcheck"]["test"])
    assert any(volume.endswith(":/var/lib/postgresql/data") for volume in postgres["volumes"])
    assert set(_compose()["volumes"]) >= {"postgres-data", "mlflow-artifacts"}
    mlflow = services["mlflow"]
    assert mlflow["environment"]["MLFLOW_BACKEND_STORE_URI"].startswith("postgresql+psycopg://")
    assert "mlflow-artifacts:/mlartifacts" in mlflow["volumes"]
    for name in ("mlflow", "dashboard", "worker"):
        assert services[name]["depends_on"]["postgres"]["condition"] == "service_healthy"


def test_the_worker_reserves_a_gpu_and_can_be_scaled() -> None:
    worker = _services()["worker"]
    devices = worker["deploy"]["resources"]["reservations"]["devices"]
    assert devices == [{"driver": "nvidia", "count": 1, "capabilities": ["gpu"]}]
    assert "container_name" not in worker and "ports" not in worker  # --scale worker=N works
    assert worker["environment"]["HPSEARCH_STORAGE"].startswith("postgresql+psycopg://")


def _hpsearch_commands() -> dict[str, list[str]]:
    """The argv given to `hpsearch` by each service that runs the hpsearch image's entrypoint."""
    commands = {}
    for name, service in _services().items():
        if service.get("image", "").startswith("hpsearch") and "entrypoint" not in service:
            commands[name] = [_resolve(str(part)) for part in service["command"]]
    return commands


def test_every_hpsearch_command_in_the_compose_file_parses_with_the_cli() -> None:
    commands = _hpsearch_commands()
    assert set(commands) >= {"dashboard", "worker", "launcher", "storage-proxy"}
    for service, argv in commands.items():
        name, *args = argv
        command = cli.commands.get(name)
        assert command is not None, f"service {service}: `hpsearch {name}` does not exist"
        try:
            command.make_context(name, list(args))
        except click.UsageError as error:
            pytest.fail(f"service {service}: `hpsearch {' '.join(argv)}`: {error}")


def test_no_secret_is_written_in_the_compose_file() -> None:
    text = COMPOSE.read_text()
    for match in re.finditer(r"://([^:/@\s\"]+):([^@\s\"]+)@", text):  # user:password@host
        assert match.group(2).startswith("${POSTGRES_PASSWORD:?"), match.group(0)
    for key, value in _environment_items():
        if re.search(r"PASSWORD|SECRET|TOKEN|KEY", key):
            assert str(value).startswith("${"), f"{key} is written in the compose file"
    example = (ROOT / ".env.example").read_text()
    assert re.search(r"^POSTGRES_PASSWORD=$", example, re.MULTILINE)


def _environment_items() -> list[tuple[str, Any]]:
    items = []
    for service in _services().values():
        environment = service.get("environment") or {}
        if isinstance(environment, list):
            environment = dict(entry.split("=", 1) for entry in environment)
        items += list(environment.items())
    return items


def test_the_image_runs_the_hpsearch_command() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert 'ENTRYPOINT ["hpsearch"]' in dockerfile
    assert re.search(r"^RUN pip install \. ", dockerfile, re.MULTILINE)
    assert "USER hpsearch" in dockerfile
