"""deploy/k8s/indexed-job.yaml: an Indexed Job of workers that the real CLI accepts."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from hpsearch.cli import cli

MANIFEST = Path(__file__).resolve().parents[2] / "deploy" / "k8s" / "indexed-job.yaml"


def _job() -> dict[str, Any]:
    documents = [doc for doc in yaml.safe_load_all(MANIFEST.read_text()) if doc]
    assert [doc["kind"] for doc in documents] == ["Job"]
    return documents[0]


def test_indexed_job_runs_one_worker_per_index_with_the_store_from_a_secret() -> None:
    job = _job()
    spec = job["spec"]
    assert job["apiVersion"] == "batch/v1"
    assert spec["completionMode"] == "Indexed"
    assert spec["completions"] == spec["parallelism"] >= 1
    pod = spec["template"]["spec"]
    assert pod["restartPolicy"] == "Never"  # needed by backoffLimitPerIndex and the policy
    [container] = pod["containers"]
    command = container["command"] + container["args"]
    assert command[:2] == ["hpsearch", "worker"] and "--trials" in command
    assert not any("postgres" in part or "storage" in part for part in command)
    env = {entry["name"]: entry for entry in container["env"]}
    assert env["HPSEARCH_STORAGE"]["valueFrom"]["secretKeyRef"]["key"] == "url"
    assert list(env).index("POD_NAME") < list(env).index("HPSEARCH_WORKER_SLOT")  # $(POD_NAME)
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 1


def test_exit_code_2_fails_the_job_and_evictions_do_not_count() -> None:
    rules = _job()["spec"]["podFailurePolicy"]["rules"]
    fail = [rule for rule in rules if rule["action"] == "FailJob"]
    assert fail and fail[0]["onExitCodes"]["values"] == [2]
    assert fail[0]["onExitCodes"]["containerName"] == "worker"
    ignored = [rule for rule in rules if rule["action"] == "Ignore"]
    assert ignored[0]["onPodConditions"][0]["type"] == "DisruptionTarget"


def test_the_worker_command_parses_with_the_real_cli() -> None:
    [container] = _job()["spec"]["template"]["spec"]["containers"]
    command = container["command"] + container["args"]
    worker = cli.commands[command[1]]
    context = worker.make_context("worker", list(command[2:]))
    assert context.params["spec"] == "cvfp"
    assert context.params["n_trials"] == 400
    assert context.params["study_name"] == "cvfp"
