"""What a person sees in MLflow's UI: a real `mlflow server` on 127.0.0.1, a small real study
logged to it over HTTP, pages rendered in headless Debian Chromium (Playwright, no browser
download). Screenshots are kept in ``$HPSEARCH_TEST_ARTIFACTS/mlflow`` (default:
``test-artifacts/mlflow`` in the repository, ignored by git)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlflow
import pytest
from toy_spec import toy_spec

import hpsearch
from hpsearch.runner import create_study
from hpsearch.search_spaces import spec_from_dict
from hpsearch.tracking import mlflow_hint

pytestmark = [pytest.mark.browser, pytest.mark.slow]

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
REPOSITORY = Path(__file__).resolve().parents[2]
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
START_DEADLINE_S = 300.0  # a loaded 2-core machine starts MLflow's server slowly
PAGE_TIMEOUT_MS = 90_000
# (x, y, crash_at_epoch): complete, failed at epoch 3, pruned by the rule at epoch 2, complete
TRIALS = [(0.3, 0.7, 0), (0.3, 0.7, 3), (1.0, 0.0, 0), (0.4, 0.6, 0)]


@dataclass
class Logged:
    server: str
    experiment_id: str
    run_ids: dict[str, str]  # run name -> id
    shots: Path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for(url: str, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + START_DEADLINE_S
    while time.monotonic() < deadline:
        assert process.poll() is None, f"mlflow server exited with {process.returncode}"
        try:
            with urllib.request.urlopen(url, timeout=5):
                return
        except OSError:
            time.sleep(0.5)
    raise AssertionError(f"{url} did not answer within {START_DEADLINE_S} s")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, mlflow_template: Path) -> Iterator[str]:
    folder = tmp_path_factory.mktemp("mlflow-server")
    shutil.copyfile(mlflow_template, folder / "mlflow.db")
    port = free_port()
    command = [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1"]
    command += ["--port", str(port), "--workers", "1"]
    command += ["--backend-store-uri", f"sqlite:///{folder / 'mlflow.db'}"]
    command += ["--artifacts-destination", str(folder / "artifacts")]
    with open(folder / "server.log", "wb") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, cwd=folder)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_for(f"{base}/health", process)
        yield base
    finally:
        process.terminate()
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture(scope="module")
def logged(server: str, tmp_path_factory: pytest.TempPathFactory) -> Logged:
    """A toy study of four trials (complete, failed, pruned, complete) tracked on the server."""
    folder = tmp_path_factory.mktemp("study")
    rule = {"name": "far-off", "when": "epoch >= 2 and loss > 0.3", "then": "abort"}
    rule["message"] = "loss far off"
    space = {
        "x": {"type": "float", "low": 0.0, "high": 1.0, "default": 0.3},
        "y": {"type": "float", "low": 0.0, "high": 1.0, "default": 0.7},
        "crash_at_epoch": {"type": "categorical", "choices": [0, 3], "default": 0},
    }
    spec = spec_from_dict(
        toy_spec(name="browse", description="a toy study", space=space, rules=[rule])
    )
    storage = f"sqlite:///{folder / 'studies.db'}"
    study = create_study(spec, storage)
    for x, y, crash in TRIALS:
        study.enqueue_trial({"x": x, "y": y, "crash_at_epoch": crash})
    hpsearch.run(spec, len(TRIALS), storage=storage, tracking_uri=server)
    client = mlflow.MlflowClient(server)
    experiment = client.get_experiment_by_name("browse")
    runs = client.search_runs([experiment.experiment_id])
    shots = Path(os.environ.get("HPSEARCH_TEST_ARTIFACTS") or REPOSITORY / "test-artifacts")
    shots = shots / "mlflow"
    shots.mkdir(parents=True, exist_ok=True)
    names = {run.info.run_name: run.info.run_id for run in runs}
    return Logged(server, experiment.experiment_id, names, shots)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not Path(CHROMIUM).exists():
        if IN_CI:
            pytest.fail(f"{CHROMIUM} is not installed (.ci/run installs Debian's chromium)")
        pytest.skip(f"{CHROMIUM} is not installed (apt-get install chromium)")
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1600, "height": 1000})
    page = context.new_page()
    page.set_default_timeout(PAGE_TIMEOUT_MS)
    yield page
    context.close()


# A page's parts arrive by separate requests: "X shows" is asserted by ``locator.wait_for()``
# (visible within PAGE_TIMEOUT_MS, polled), never by an instantaneous ``is_visible()``/``count()``
# that a loaded machine's slower rendering can fail.


def run_page(logged: Logged, name: str, tab: str = "") -> str:
    run_id = logged.run_ids[name]
    suffix = f"/{tab}" if tab else ""
    return (
        f"{logged.server}/#/experiments/{logged.experiment_id}/runs/{run_id}{suffix}"
        "?workflowType=machine_learning"
    )


def test_the_printed_link_opens_the_study_run_and_its_trials(logged: Logged, page: Any) -> None:
    hint = mlflow_hint(logged.server, "browse")
    link = hint.removeprefix("MLflow: ")
    assert link.startswith(f"{logged.server}/#/experiments/{logged.experiment_id}/runs")
    page.goto(link)
    study_link = page.get_by_role("link", name="study", exact=True)
    study_link.wait_for()
    page.get_by_text("a toy study").first.wait_for()  # the experiment's description
    assert page.get_by_text("Traces", exact=True).count() <= 1  # not the GenAI overview
    page.screenshot(path=logged.shots / "experiment_runs.png")
    name_cell = page.locator('[role=gridcell][col-id="attributes.`Run Name`"]', has_text="study")
    name_cell.first.locator("button").first.click()  # expand the parent run
    for number in range(len(TRIALS)):
        page.get_by_role("link", name=f"trial-{number}", exact=True).wait_for()
    page.screenshot(path=logged.shots / "study_with_trials.png")


def test_a_failed_trial_shows_failed_with_its_reason(logged: Logged, page: Any) -> None:
    page.goto(run_page(logged, "trial-1"))
    page.get_by_text("toy crash at epoch 3").first.wait_for()
    page.get_by_text("Failed", exact=True).first.wait_for()  # the status
    page.get_by_text("RuntimeError: toy crash at epoch 3").first.wait_for()
    page.get_by_text("Parent run").first.wait_for()
    page.get_by_role("link", name="study", exact=True).first.wait_for(state="attached")
    page.screenshot(path=logged.shots / "failed_trial.png", full_page=True)


def test_a_pruned_trial_says_so_and_is_not_failed(logged: Logged, page: Any) -> None:
    page.goto(run_page(logged, "trial-2"))
    page.get_by_text("rule far-off at epoch 2: loss far off").first.wait_for()
    page.get_by_text("Finished", exact=True).first.wait_for()
    assert page.get_by_text("Failed", exact=True).count() == 0
    page.get_by_text("PRUNED").first.wait_for()  # the state tag
    page.screenshot(path=logged.shots / "pruned_trial.png", full_page=True)


def test_a_trial_shows_its_loss_curve_per_epoch(logged: Logged, page: Any) -> None:
    page.goto(run_page(logged, "trial-0", "model-metrics"))
    page.get_by_text("trial-0 (loss)").first.wait_for()  # the legend of a per-step line chart
    card = page.locator("div", has=page.get_by_text("trial-0 (loss)")).filter(has_text="Step")
    # The legend can show before plotly has drawn the chart (seen on a loaded machine).
    card.last.locator(".js-plotly-plot").first.wait_for()
    page.screenshot(path=logged.shots / "trial_loss_curve.png")


def test_the_study_run_shows_its_summary_and_plots(logged: Logged, page: Any) -> None:
    page.goto(run_page(logged, "study"))
    page.get_by_text("Pareto front").first.wait_for()  # the run's description
    page.get_by_text("trial-0").first.wait_for()  # on the front
    page.screenshot(path=logged.shots / "study_run.png", full_page=True)
    page.goto(run_page(logged, "study", "artifacts"))
    page.get_by_text("plots.html").first.click()
    frame = page.frame_locator("iframe.mlflow-html-iframe")
    frame.locator(".js-plotly-plot").first.wait_for()  # plotly.js is inlined: no network
    frame.get_by_text("pareto front").first.wait_for()
    page.screenshot(path=logged.shots / "study_plots.png")
