"""What a person sees: `hpsearch dashboard` and `hpsearch report` on a small real study, rendered
in headless Debian Chromium driven by Playwright (no browser download). Screenshots are kept in
``$HPSEARCH_TEST_ARTIFACTS/dashboard`` (default: ``test-artifacts/dashboard`` in the repository,
ignored by git), beside the MLflow ones."""

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
from typing import Any

import pytest
from conftest import IN_CI
from toy_spec import toy_spec

import hpsearch
from hpsearch.search_spaces import spec_from_dict

pytestmark = pytest.mark.browser
TESTS_DIR = Path(__file__).parent
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
RULE = {
    "name": "slow-decay",
    "when": "loss > 0.08",
    "then": {"add": {"decay": -0.1}},
    "bounds": {"decay": [0.3, 1.0]},
}
PAGE_TIMEOUT_MS = 90_000  # a loaded 2-core machine


def browse_spec() -> Any:
    return spec_from_dict(
        toy_spec(
            name="browse",
            description="Toy study for the browser tests",
            rules=[RULE],
            pruner={"name": "pareto-asha", "rungs": [1, 2], "eta": 2},
        )
    )


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for(url: str, seconds: float = 90.0) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=5):
                return
        except OSError:
            time.sleep(0.3)
    raise AssertionError(f"{url} did not answer within {seconds} s")


def chromium_path() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        if IN_CI:
            pytest.fail("chromium is not installed (.ci/run installs Debian's chromium)")
        pytest.skip("chromium is not installed (apt-get install chromium)")
    return path


@pytest.fixture(scope="module")
def artifacts() -> Path:
    folder = os.environ.get("HPSEARCH_TEST_ARTIFACTS")
    path = Path(folder) if folder else Path(__file__).resolve().parents[1] / "test-artifacts"
    path = path / "dashboard"
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture(scope="module")
def study_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    url = f"sqlite:///{tmp_path_factory.mktemp('browse') / 'browse.db'}"
    hpsearch.run(browse_spec(), 10, storage=url, track=False)
    return url


@pytest.fixture(scope="module")
def dashboard(study_url: str) -> Iterator[str]:
    port = free_port()
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "hpsearch",
            "dashboard",
            "--storage",
            study_url,
            "--port",
            str(port),
        ],
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


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    playwright_api = pytest.importorskip("playwright.sync_api")
    executable = chromium_path()
    with playwright_api.sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        yield launched
        launched.close()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    opened = browser.new_page(viewport={"width": 1400, "height": 1000})
    opened.set_default_timeout(PAGE_TIMEOUT_MS)
    yield opened
    opened.close()


def api(base: str, path: str) -> Any:
    with urllib.request.urlopen(f"{base}{path}", timeout=60) as response:
        return json.load(response)


def study_id(base: str) -> int:
    (study,) = [
        s for s in api(base, "/api/studies")["study_summaries"] if s["study_name"] == "browse"
    ]
    return int(study["study_id"])


def test_the_study_list_shows_the_study(dashboard: str, page: Any, artifacts: Path) -> None:
    page.goto(f"{dashboard}/dashboard")
    page.get_by_text("browse").first.wait_for()
    page.screenshot(path=artifacts / "dashboard-study-list.png", full_page=True)
    assert "MINIMIZE, MINIMIZE" in page.inner_text("body")


def test_the_note_says_the_rules_objectives_and_constraints_in_words(
    dashboard: str, page: Any, artifacts: Path
) -> None:
    page.goto(f"{dashboard}/dashboard/studies/{study_id(dashboard)}/note")
    page.get_by_text("slow-decay: if loss > 0.08: decay - 0.1").wait_for()
    page.screenshot(path=artifacts / "dashboard-note.png", full_page=True)
    text = page.inner_text("body")
    assert "quality_band_distance" in text and "inside the band 0.9-0.95" in text
    assert "loss <= 0.2" in text
    assert 'hpsearch.run(spec, study_name="browse", storage="<URL>")' in text  # built in Python


def test_the_study_page_shows_objective_names_and_the_saved_pareto_plot(
    dashboard: str, page: Any, artifacts: Path
) -> None:
    page.goto(f"{dashboard}/dashboard/studies/{study_id(dashboard)}")
    page.get_by_text("Pareto front of browse").wait_for()
    page.get_by_text("Epochs spent per trial").wait_for()
    page.screenshot(path=artifacts / "dashboard-study-overview.png", full_page=True)
    text = page.inner_text("body")
    assert "quality_band_distance" in text
    assert "pruned (last epoch reported)" in text  # pruned trials are in the plot
    assert "quality (band 0.9-0.95 shaded)" in text


def test_a_pruned_trial_page_shows_its_stop_reason_and_rule_events(
    dashboard: str, page: Any, artifacts: Path
) -> None:
    detail = api(dashboard, f"/api/studies/{study_id(dashboard)}")
    pruned = [t for t in detail["trials"] if t["state"] == "Pruned"]
    assert pruned, "pareto-asha should stop some of 10 random trials"
    with_events = [t for t in pruned if any(a["key"] == "rule_events" for a in t["user_attrs"])]
    trial = (with_events or pruned)[0]
    page.goto(f"{dashboard}/dashboard/studies/{trial['study_id']}/trials?numbers={trial['number']}")
    page.get_by_text("prune_reason").wait_for()
    page.screenshot(path=artifacts / "dashboard-pruned-trial.png", full_page=True)
    text = page.inner_text("body")
    assert "pruner pareto-asha at epoch" in text and "only the top" in text
    if with_events:
        assert "slow-decay: decay 0.9 -> 0.8" in text


def test_best_trials_are_feasible_and_constraints_are_seen(dashboard: str) -> None:
    detail = api(dashboard, f"/api/studies/{study_id(dashboard)}")
    complete = [t for t in detail["trials"] if t["state"] == "Complete"]
    assert complete and all(len(t["constraints"]) == 1 for t in complete)
    assert detail["best_trials"]
    assert all(all(c <= 0 for c in t["constraints"]) for t in detail["best_trials"])


def test_the_report_file_shows_the_same_without_a_server(
    study_url: str, page: Any, artifacts: Path, tmp_path: Path
) -> None:
    output = tmp_path / "report.html"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "hpsearch",
            "report",
            "browse",
            "--storage",
            study_url,
            "-o",
            str(output),
        ],
        env={**os.environ, "PYTHONPATH": str(TESTS_DIR)},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode != 0  # "browse" is no packaged spec and no file
    assert "unknown spec 'browse'" in result.stderr
    spec_file = tmp_path / "browse.yaml"
    spec_file.write_text(json.dumps(browse_spec().model_dump(mode="json")))
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "hpsearch",
            "report",
            str(spec_file),
            "--storage",
            study_url,
            "-o",
            str(output),
        ],
        env={**os.environ, "PYTHONPATH": str(TESTS_DIR)},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    html = output.read_text()
    assert "<script src=" not in html  # plotly inlined: nothing to fetch
    page.route(
        "**/*",
        lambda route: (
            route.abort() if not route.request.url.startswith("file:") else route.continue_()
        ),
    )
    page.goto(output.as_uri())
    page.locator("#figure-pareto_front .main-svg").first.wait_for()
    page.screenshot(path=artifacts / "report.png", full_page=True)
    text = page.inner_text("body")
    assert "slow-decay: if loss > 0.08: decay - 0.1" in text
    assert "quality_band_distance" in text
    assert "pruner pareto-asha at epoch" in text
    assert "Pareto front of browse" in text
