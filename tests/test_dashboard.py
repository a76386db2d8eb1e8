"""`hpsearch dashboard` serves the real optuna-dashboard on the store, objective names set;
the page is rendered in a real headless Chromium."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import IN_CI
from toy_spec import toy_spec

import hpsearch
from hpsearch.search_spaces import spec_from_dict

TESTS_DIR = Path(__file__).parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for(url: str, seconds: float = 60.0) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError:
            time.sleep(0.3)
    raise AssertionError(f"{url} did not answer within {seconds} s")


@pytest.fixture
def dashboard(tmp_path: Path) -> Iterator[str]:
    url = f"sqlite:///{tmp_path / 'dash.db'}"
    hpsearch.run(spec_from_dict(toy_spec(name="dash")), 3, storage=url, track=False)
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "hpsearch", "dashboard", "--storage", url, "--port", str(port)],
        env={**os.environ, "PYTHONPATH": str(TESTS_DIR)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_for(f"{base}/api/meta")
        yield base
    finally:
        process.terminate()
        process.wait(timeout=30)


def test_dashboard_api_shows_the_study_with_objective_names(dashboard: str) -> None:
    with urllib.request.urlopen(f"{dashboard}/api/studies", timeout=10) as response:
        studies = json.load(response)["study_summaries"]
    (study,) = [s for s in studies if s["study_name"] == "dash"]
    with urllib.request.urlopen(f"{dashboard}/api/studies/{study['study_id']}", timeout=10) as r:
        detail = json.load(r)
    assert detail["objective_names"] == ["loss", "quality_band_distance"]
    assert len(detail["trials"]) == 3


def test_dashboard_page_renders_in_headless_chromium(dashboard: str, tmp_path: Path) -> None:
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        if IN_CI:
            pytest.fail("chromium is not installed (.ci/run installs Debian's chromium)")
        pytest.skip("chromium is not installed (apt-get install chromium)")
    result = subprocess.run(
        [
            browser,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--no-first-run",
            f"--user-data-dir={tmp_path / 'profile'}",
            "--virtual-time-budget=15000",
            "--dump-dom",
            f"{dashboard}/dashboard",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "dash" in result.stdout  # the study list, rendered by the page's JavaScript
