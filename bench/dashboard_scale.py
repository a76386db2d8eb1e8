"""A 10,000-trial study on PostgreSQL, browsed before and after issue 14.

Builds two databases on the local PostgreSQL, each with one study of the packaged ``vae`` spec
whose 10,000 trials carry hpsearch's attributes (written through Optuna's storage API, not by
training): ``before`` as hpsearch wrote them until now (metric history, trainer report and
rule-event JSON on every trial), ``after`` as it writes them now (short lines; histories left
to MLflow; the note and the figures saved on the study). Then it measures, for each side with
that side's code (``before``: ``--before-ref``, default where this branch left main):

- ``hpsearch studies`` and ``hpsearch best`` wall time (one cold and one warm run);
- in headless Chromium (Playwright, /usr/bin/chromium): the time until the study list, the
  study's overview and a trial's page show their content, cold (first), warm (second) and
  on a revisit once optuna-dashboard's own 10 s trial cache has expired (third);
- the size of the study page's JSON (``/api/studies/<id>``) and its server time.

Run: ``python bench/dashboard_scale.py --trials 10000`` (about 10-20 min on 2 cores).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import socket
import subprocess
import sys
import tarfile
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import optuna
import psycopg

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
SERVER = "postgresql+psycopg://postgres@127.0.0.1:5432"
STUDY = "vae-10k"
DASHBOARD_CACHE_S = 10  # optuna-dashboard 0.21 re-reads a study of 500+ trials after 10 s
PAGE_TIMEOUT_S = 120  # a page not visible by then is printed as nan (slower than this)
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
METRICS = [
    "train_loss",
    "val_loss",
    "recon_loss",
    "kl",
    "penalty_reduction",
    "active_units",
    "free_bits",
    "kl_weight",
    "teacher_contribution",
    "lr",
]


def database_url(side: str) -> str:
    return f"{SERVER}/hpsearch_bench_{side}"


def recreate_database(side: str) -> None:
    with psycopg.connect("host=127.0.0.1 user=postgres dbname=postgres", autocommit=True) as c:
        c.execute(f"DROP DATABASE IF EXISTS hpsearch_bench_{side} WITH (FORCE)")
        c.execute(f"CREATE DATABASE hpsearch_bench_{side}")


# -- building -----------------------------------------------------------------------------------


def fake_outcome(number: int, spec: Any, rng: random.Random) -> Any:
    """A TrialOutcome as a vae trial could end: 70 % pruned, 25 % complete, 5 % failed."""
    from hpsearch.objectives.outcome import TrialOutcome
    from hpsearch.objectives.stop import StopReason

    params = {**spec.fixed, **{k: rng.uniform(p.low, p.high) for k, p in spec.space.items()}}
    draw = rng.random()
    epochs = spec.epochs if draw < 0.25 else rng.choice([1, 3, 9]) if draw < 0.95 else 2
    outcome = TrialOutcome(
        state="COMPLETE", params=params, effective_params=dict(params), start_params=dict(params)
    )
    level = rng.uniform(15, 30)
    for epoch in range(1, epochs + 1):
        outcome.history.append({m: level / epoch**0.3 + rng.random() for m in METRICS})
    fired = 0
    for epoch in range(3, epochs + 1, 4):
        before = 0.02 - 0.005 * fired
        outcome.events.append(
            {
                "rule": "free-bits-too-generous",
                "epoch": epoch,
                "action": "backoff",
                "message": "penalty reduction above 70 % for 3 epochs",
                "metrics": {"penalty_reduction": 72.5},
                "knobs_before": {"free_bits": before},
                "knobs_after": {"free_bits": before - 0.005},
            }
        )
        fired += 1
    if fired:
        outcome.effective_params["free_bits"] = 0.02 - 0.005 * fired
    last = outcome.history[-1]
    if draw < 0.25:
        outcome.final_metrics = dict(last)
        outcome.values = {  # the spec's objectives, whatever they are named
            name: last.get(name, rng.uniform(0.0, 30.0)) for name in spec.objective_names
        }
        outcome.report = {
            "per_token": {f"token_{i}": {"kl": rng.random(), "active": i} for i in range(16)}
        }
    elif draw < 0.95:
        outcome.stop_with(
            StopReason(
                "pareto-asha",
                "pareto-asha",
                epochs,
                f"rank 5 of 9 at rung {epochs} (front 2), only the top 3 continue",
            )
        )
    else:
        outcome.stop_with(StopReason("failure", "RuntimeError", 2, "RuntimeError: CUDA error"))
    return outcome


def vectors(outcome: Any) -> dict[str, Any]:
    return {
        str(e): {"values": [h["val_loss"], max(0.0, 20 - h["kl"])], "constraints": []}
        for e, h in enumerate(outcome.history, start=1)
    }


def attrs_before(outcome: Any, number: int) -> tuple[dict[str, Any], dict[str, Any]]:
    """What hpsearch stored on a trial before issue 14 (``record_outcome`` on main)."""
    user: dict[str, Any] = {
        "worker": {"host": "gpu-node-3", "pid": "41721", "device": "cuda", "gpu": "2"},
        "mlflow_run_id": f"{number:032x}",
        "effective_params": outcome.effective_params,
        "rule_events": outcome.events,
        "metrics_history": outcome.history,
        "final_metrics": outcome.final_metrics,
        "epochs_run": outcome.epochs_run,
        "state_description": outcome.describe_state(),
        "intermediate_objectives": vectors(outcome),
        "study_hypervolume": 123.4,
        "hypervolume_reference": [31.2, 12.5],
    }
    if outcome.report:
        user["trainer_report"] = outcome.report
    if outcome.reason:
        user["fail_reason" if outcome.state == "FAIL" else "prune_reason"] = outcome.reason
    return user, {}


def attrs_after(outcome: Any, number: int) -> tuple[dict[str, Any], dict[str, Any]]:
    """What hpsearch stores now (``trial_attrs`` and ``record_outcome``'s system attrs)."""
    from hpsearch.objectives.objective import trial_attrs
    from hpsearch.objectives.summary import RULE_EVENTS_SYSTEM_ATTR

    user = {
        "worker": {"host": "gpu-node-3", "pid": "41721", "device": "cuda", "gpu": "2"},
        "mlflow_run_id": f"{number:032x}",
        **trial_attrs(outcome),
        "intermediate_objectives": vectors(outcome),
        "study_hypervolume": 123.4,
    }
    system = {RULE_EVENTS_SYSTEM_ATTR: outcome.events} if outcome.events else {}
    return user, system


def build(side: str, n_trials: int) -> float:
    from hpsearch.objectives.outcome import json_safe
    from hpsearch.search_spaces import load_spec
    from hpsearch.storage import open_storage

    spec = load_spec("vae")
    recreate_database(side)
    storage = open_storage(database_url(side), heartbeat=False)
    study = optuna.create_study(study_name=STUDY, storage=storage, directions=spec.directions)
    study.set_metric_names(spec.objective_names)
    distributions = {
        k: optuna.distributions.FloatDistribution(p.low, p.high, log=p.log)
        for k, p in spec.space.items()
    }
    rng = random.Random(0)
    started = time.perf_counter()
    batch: list[optuna.trial.FrozenTrial] = []
    for number in range(n_trials):
        outcome = fake_outcome(number, spec, rng)
        user, system = (attrs_before if side == "before" else attrs_after)(outcome, number)
        if outcome.state == "COMPLETE":
            violation = rng.uniform(-1, 0.2)
            if side == "after":
                system["constraints"] = [violation]
            else:
                system["constraints:kl >= 1"] = violation
        batch.append(
            optuna.trial.create_trial(
                state=optuna.trial.TrialState[outcome.state],
                values=[outcome.values[n] for n in spec.objective_names]
                if outcome.values
                else None,
                params={k: outcome.params[k] for k in spec.space},
                distributions=distributions,
                user_attrs=json_safe(user),
                system_attrs=json_safe(system),
            )
        )
        if len(batch) == 1000:
            bulk_insert(storage, study._study_id, batch, number + 1 - len(batch))
            batch = []
            print(
                f"  {side}: {number + 1} trials ({time.perf_counter() - started:.0f} s)", flush=True
            )
    bulk_insert(storage, study._study_id, batch, n_trials - len(batch))
    if side == "before":
        study.set_user_attr("hpsearch_spec", spec.model_dump(mode="json"))
    else:
        from hpsearch.dashboard import describe_study, save_figures

        describe_study(study, spec)
        saved = time.perf_counter()
        save_figures(study, spec)
        print(f"  after: figures saved in {time.perf_counter() - saved:.1f} s")
    return time.perf_counter() - started


def bulk_insert(
    storage: Any, study_id: int, trials: list[optuna.trial.FrozenTrial], first_number: int
) -> None:
    """Insert finished trials in one transaction, straight into Optuna's tables (what
    ``study.add_trials`` writes, row by row at ~0.3 s a trial on a loaded 2-core machine)."""
    import sqlalchemy as sa
    from optuna.distributions import distribution_to_json
    from optuna.storages._rdb import models

    if not trials:
        return
    now = trials[0].datetime_start
    with storage.engine.begin() as connection:
        table = models.TrialModel.__table__
        ids = (
            connection.execute(
                sa.insert(table).returning(table.c.trial_id, sort_by_parameter_order=True),
                [
                    {
                        "number": first_number + k,
                        "study_id": study_id,
                        "state": t.state,
                        "datetime_start": now,
                        "datetime_complete": now,
                    }
                    for k, t in enumerate(trials)
                ],
            )
            .scalars()
            .all()
        )
        params, values, users, systems = [], [], [], []
        for trial_id, trial in zip(ids, trials, strict=True):
            for name, value in trial.params.items():
                dist = trial.distributions[name]
                params.append(
                    {
                        "trial_id": trial_id,
                        "param_name": name,
                        "param_value": dist.to_internal_repr(value),
                        "distribution_json": distribution_to_json(dist),
                    }
                )
            for objective, value in enumerate(trial.values or []):
                values.append(
                    {
                        "trial_id": trial_id,
                        "objective": objective,
                        "value": value,
                        "value_type": models.TrialValueModel.TrialValueType.FINITE,
                    }
                )
            users += [
                {"trial_id": trial_id, "key": k, "value_json": json.dumps(v)}
                for k, v in trial.user_attrs.items()
            ]
            systems += [
                {"trial_id": trial_id, "key": k, "value_json": json.dumps(v)}
                for k, v in trial.system_attrs.items()
            ]
        for model, rows in (
            (models.TrialParamModel, params),
            (models.TrialValueModel, values),
            (models.TrialUserAttributeModel, users),
            (models.TrialSystemAttributeModel, systems),
        ):
            if rows:
                connection.execute(sa.insert(model.__table__), rows)


# -- measuring ----------------------------------------------------------------------------------


def code_of(ref: str, folder: Path) -> Path:
    """The hpsearch package of git ref ``ref``, unpacked into ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    archive = folder / "code.tar"
    subprocess.run(
        ["git", "-C", str(ROOT), "archive", "-o", str(archive), ref, "hpsearch"], check=True
    )
    with tarfile.open(archive) as tar:
        tar.extractall(folder, filter="data")
    return folder


def command_time(code: Path, side: str, *args: str) -> float:
    env = {**os.environ, "PYTHONPATH": str(code), "HPSEARCH_STORAGE": database_url(side)}
    started = time.perf_counter()
    result = subprocess.run(
        [sys.executable, "-m", "hpsearch", *args],
        cwd=code,  # `python -m` puts the working directory first on the path
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    elapsed = time.perf_counter() - started
    print(f"  hpsearch {' '.join(args)} ({side}): {elapsed:.2f} s", flush=True)
    if result.returncode != 0:
        raise RuntimeError(f"hpsearch {' '.join(args)} ({side}): {result.stderr[-500:]}")
    return elapsed


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def page_times(code: Path, side: str) -> dict[str, float]:
    from playwright.sync_api import sync_playwright

    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(code)}
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "hpsearch",
            "dashboard",
            "--storage",
            database_url(side),
            "--port",
            str(port),
        ],
        cwd=code,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    times: dict[str, float] = {}
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                urllib.request.urlopen(f"{base}/api/meta", timeout=5)
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.3)
        started = time.perf_counter()
        with urllib.request.urlopen(f"{base}/api/studies/1", timeout=600) as response:
            body = response.read()
        times["api study JSON (MB)"] = len(body) / 1e6
        times["api study JSON (s, cold)"] = time.perf_counter() - started
        started = time.perf_counter()
        with urllib.request.urlopen(f"{base}/api/studies/1", timeout=600) as response:
            response.read()
        times["api study JSON (s, warm)"] = time.perf_counter() - started
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(
                executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS
            )
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.set_default_timeout(PAGE_TIMEOUT_S * 1000)
            for round_name in ("cold", "warm", "revisit"):
                if round_name == "revisit":  # optuna-dashboard's own trial cache has expired
                    time.sleep(DASHBOARD_CACHE_S + 1)
                times[f"study list ({round_name})"] = timed(
                    page, f"{base}/dashboard", lambda p: p.get_by_text(STUDY).first.wait_for()
                )
                times[f"study overview ({round_name})"] = timed(
                    page,
                    f"{base}/dashboard/studies/1",
                    lambda p: p.locator(".js-plotly-plot").first.wait_for(),
                )
                times[f"trial page ({round_name})"] = timed(
                    page,
                    f"{base}/dashboard/studies/1/trials?numbers=9999",
                    lambda p: p.get_by_text("User Attributes").first.wait_for(),
                )
            browser.close()
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:  # still busy with a huge request
            server.kill()
            server.wait()
    return times


def timed(page: Any, url: str, visible: Any) -> float:
    """Seconds until ``visible`` holds, or NaN when the page did not show it within the
    page timeout (printed as nan: slower than the timeout)."""
    started = time.perf_counter()
    try:
        page.goto(url)
        visible(page)
    except Exception as error:
        print(f"  {url}: not visible ({str(error).splitlines()[0]})", flush=True)
        return float("nan")
    seconds = time.perf_counter() - started
    print(f"  {url}: {seconds:.2f} s", flush=True)
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=10_000)
    base = subprocess.run(
        ["git", "-C", str(ROOT), "merge-base", "HEAD", "main"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    parser.add_argument(
        "--before-ref",
        default=base,
        help="git ref of the code before [default: where this branch left main]",
    )
    parser.add_argument("--skip-build", action="store_true")
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    if not args.skip_build:
        for side in ("before", "after"):
            print(f"building {side}: {args.trials} trials ...", flush=True)
            print(f"  {side}: built in {build(side, args.trials):.0f} s", flush=True)
    results: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory() as folder:
        codes = {"before": code_of(args.before_ref, Path(folder) / "before"), "after": ROOT}
        for side in ("before", "after"):
            row: dict[str, float] = {}
            for label, command in (
                ("studies", ["studies"]),
                ("best", ["best", "vae", "--study-name", STUDY]),
            ):
                row[f"hpsearch {label} (cold)"] = command_time(codes[side], side, *command)
                row[f"hpsearch {label} (warm)"] = command_time(codes[side], side, *command)
            row.update(page_times(codes[side], side))
            results[side] = row
            print(f"{side}: {json.dumps({k: round(v, 2) for k, v in row.items()})}", flush=True)
    print(f"\n{args.trials} trials on PostgreSQL; seconds unless stated")
    print(f"{'measure':32s} {'before':>9s} {'after':>9s} {'after/before':>13s}")
    for key in results["before"]:
        before, after = results["before"][key], results["after"][key]
        print(f"{key:32s} {before:9.2f} {after:9.2f} {after / before:13.2f}")


if __name__ == "__main__":
    main()
