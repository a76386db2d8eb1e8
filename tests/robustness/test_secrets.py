"""Secrets: a password in the storage URL or the MLflow URI appears nowhere (outputs, log lines,
trial and study attributes, MLflow tags / params / artifacts, process command lines); masking
never raises; servers listen on 127.0.0.1 by default; nothing loads a pickle."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st
from toy_spec import toy_spec

import hpsearch
from hpsearch.cli import cli
from hpsearch.storage import mask_secrets, mask_url, open_storage

TESTS_DIR = Path(__file__).parent.parent
PASSWORD = "Sup3rSecretPw"


@pytest.mark.parametrize(
    ("url", "masked"),
    [
        ("postgresql+psycopg://u:pw123@h:5432/db", "postgresql+psycopg://u:***@h:5432/db"),
        ("postgresql+psycopg://u:pw123@h:99999/db", "postgresql+psycopg://u:***@h:99999/db"),
        ("postgresql+psycopg://u:pw123@h:notaport/db", "postgresql+psycopg://u:***@h:notaport/db"),
        ("postgresql://u:pw123@[::1/db", "postgresql://u:***@[::1/db"),
        ("postgresql://u:pw123@[::1]:5432/db", "postgresql://u:***@[::1]:5432/db"),
        ("postgresql://u:p@ss:w@rd@host/db", "postgresql://u:***@host/db"),
        ("redis://:pw123@host:6379/0", "redis://:***@host:6379/0"),
        ("postgresql://u@h/db?password=pw123&x=1", "postgresql://u@h/db?password=***&x=1"),
        ("http://user:pw123@mlflow:5000", "http://user:***@mlflow:5000"),
        ("sqlite:///x.db", "sqlite:///x.db"),
        ("not a url at all", "not a url at all"),
    ],
)
def test_mask_url(url: str, masked: str) -> None:
    assert mask_url(url) == masked


@settings(max_examples=300, database=None)
@given(st.text(), st.text(alphabet=st.characters(blacklist_characters="/?#@ \t\n\r"), min_size=3))
def test_masking_never_raises_and_hides_the_password(prefix: str, password: str) -> None:
    url = f"postgresql://user:{password}@{prefix}"
    masked = mask_url(url)
    assert isinstance(mask_url(prefix), str)
    assert f":{password}@" not in masked
    assert password not in mask_secrets(f"error near {password} in {url}", url)


def test_servers_listen_on_loopback_by_default() -> None:
    for command in ("dashboard", "storage-proxy"):
        host = next(p for p in cli.commands[command].params if p.name == "host")
        assert host.default == "127.0.0.1", command


def test_nothing_loads_a_pickle() -> None:
    """No pickle, joblib or numpy-pickle load anywhere in the package; a torch.load would have
    to pass weights_only=True."""
    package = Path(hpsearch.__file__).parent
    for path in package.rglob("*.py"):
        text = path.read_text()
        assert not re.search(r"\bpickle\.loads?\(|\bjoblib\.load\(|allow_pickle\s*=\s*True", text)
        for call in re.findall(r"torch\.load\([^)]*\)", text):
            assert "weights_only=True" in call, (path, call)


def _grep_files(folder: Path, secret: bytes) -> list[str]:
    return [
        str(path) for path in folder.rglob("*") if path.is_file() and secret in path.read_bytes()
    ]


def test_an_unreachable_mlflow_with_a_password_is_one_masked_warning(tmp_path: Path) -> None:
    spec = tmp_path / "toy.yaml"
    spec.write_text(yaml.safe_dump(toy_spec(epochs=2)))
    store = f"sqlite:///{tmp_path / 's.db'}"
    result = subprocess.run(
        [sys.executable, "-m", "hpsearch", "run", str(spec), "--trials", "2", "--storage", store,
         "--no-progress"],
        cwd=tmp_path, capture_output=True, text=True, timeout=600,
        env={**os.environ, "PYTHONPATH": str(TESTS_DIR),
             "MLFLOW_TRACKING_URI": f"http://user:{PASSWORD}@127.0.0.1:1"},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert PASSWORD not in result.stdout + result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "MLflow tracking at http://user:***@127.0.0.1:1 is off" in lines[0]
    assert not _grep_files(tmp_path, PASSWORD.encode())


def test_a_postgresql_password_appears_nowhere(postgres_url: str, tmp_path: Path) -> None:
    """The test server trusts local connections, so a password in the URL is accepted (and
    unused): launch a study with it and look for it everywhere."""
    url = postgres_url.replace("postgres@", f"postgres:{PASSWORD}@", 1)
    assert PASSWORD in url
    name = f"secret-{os.getpid()}-{time.monotonic_ns()}"
    spec = tmp_path / "toy.yaml"
    spec.write_text(yaml.safe_dump(toy_spec(epochs=2, fixed={"sleep_s": 0.3})))
    mlflow_uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    launch = subprocess.Popen(
        [sys.executable, "-m", "hpsearch", "launch", str(spec), "--cpu-workers", "1",
         "--trials", "3", "--storage", url, "--study-name", name],
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env={**os.environ, "PYTHONPATH": str(TESTS_DIR), "MLFLOW_TRACKING_URI": mlflow_uri},
    )  # fmt: skip
    leaks_in_process_list = set()
    while launch.poll() is None:
        for pid in os.listdir("/proc"):
            if pid.isdigit() and pid != str(launch.pid):  # the test itself passed it as argv
                try:
                    cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
                except OSError:
                    continue
                if PASSWORD.encode() in cmdline:
                    leaks_in_process_list.add(cmdline.replace(b"\0", b" ").decode()[:200])
        time.sleep(0.2)
    output = launch.stdout.read() if launch.stdout else ""
    assert launch.returncode == 0, output
    assert PASSWORD not in output
    assert not leaks_in_process_list
    assert not _grep_files(tmp_path, PASSWORD.encode())  # MLflow's db, artifacts, logs

    study = optuna.load_study(study_name=name, storage=open_storage(url, heartbeat=False))
    stored = [study.user_attrs]
    for trial in study.get_trials():
        stored += [trial.user_attrs, trial.system_attrs, trial.params]
    assert PASSWORD not in repr(stored)
