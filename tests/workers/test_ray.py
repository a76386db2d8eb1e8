"""``hpsearch launch --backend ray`` on a real local Ray cluster with 4 logical GPUs.

The study lives on PostgreSQL; the heartbeat is short (1 s, grace 3 s), so a killed actor's
trial is failed and retried within seconds.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import IN_CI
from optuna.trial import TrialState
from worker_helpers import (
    FINISHED,
    assert_exactly_finished,
    environment,
    load,
    start_hpsearch,
    wait_for,
    write_spec,
)

WAIT_S = 240.0  # Ray and the workers start in tens of seconds on a loaded 2-core machine
RAY_PORT = 26380  # outside Ray's default worker port range (10002-19999)

# The session's cluster listens on fixed ports: all of this module's tests must run in one
# xdist worker, which starts it once: the suite runs with `--dist loadfile` (Makefile).
# (`--dist loadgroup` with xdist_group marks groups nothing on pytest 9.2: pytest-xdist#1386.)


@pytest.fixture(scope="session")
def ray_address(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A local Ray head (4 CPUs, 4 logical GPUs) for the session, its processes in one process
    group that is killed at the end; the trainers of the tests are on its PYTHONPATH."""
    try:
        import ray  # noqa: F401
    except ImportError:
        if IN_CI:
            pytest.fail("Ray is not installed (pip install 'hpsearch[dev]')")
        pytest.skip("Ray is not installed")
    log = tmp_path_factory.mktemp("ray") / "head.log"
    command = [
        sys.executable, "-c", "from ray.scripts.scripts import main; main()", "start", "--head",
        "--block", f"--port={RAY_PORT}", "--num-cpus=4", "--num-gpus=4",
        "--include-dashboard=false", "--disable-usage-stats",
    ]  # fmt: skip
    with open(log, "w") as out:
        head = subprocess.Popen(
            command, stdout=out, stderr=subprocess.STDOUT, env=environment(), start_new_session=True
        )
    try:
        wait_for(lambda: _listening(RAY_PORT) or head.poll() is not None, 120, "the Ray head")
        if head.poll() is not None:
            message = f"Ray head did not start: {log.read_text()[-500:]}"
            pytest.fail(message) if IN_CI else pytest.skip(message)
        yield f"127.0.0.1:{RAY_PORT}"
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(head.pid, signal.SIGKILL)  # Ray's own SIGTERM shutdown hangs here
        head.wait(timeout=30)


@pytest.fixture
def launches() -> Iterator[list[subprocess.Popen[str]]]:
    """Launch processes a test starts; any still running at its end (a failed test) gets
    Ctrl-C, so that it cancels its workers, and is killed if it has not exited in a minute."""
    started: list[subprocess.Popen[str]] = []
    yield started
    for process in started:
        if process.poll() is None:
            process.send_signal(signal.SIGINT)
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def _listening(port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 1.0):
        return True
    return False


def _launch_args(spec: Path, url: str, name: str, trials: int, workers: int, address: str) -> list:
    return [
        "launch", str(spec), "--backend", "ray", "--address", address, "--workers",
        str(workers), "--gpus-per-worker", "0.5", "--trials", str(trials), "--storage", url,
        "--study-name", name, "--no-mlflow", "--max-restarts", "2",
    ]  # fmt: skip


def _env() -> dict[str, str]:
    return environment(HPSEARCH_HEARTBEAT_S="1", HPSEARCH_GRACE_S="3")


def _tag(log: Path) -> str:
    found = wait_for(lambda: re.search(r"launch ([0-9a-f]{8}):", log.read_text()), 120, "a tag")
    return str(found.group(1))


@pytest.mark.slow
def test_actors_finish_exactly_n_and_each_trial_names_its_node_and_gpu(
    ray_address: str,
    postgres_url: str,
    unique_name: str,
    tmp_path: Path,
    launches: list[subprocess.Popen[str]],
) -> None:
    spec = write_spec(tmp_path, sleep_s=0.1, epochs=2)
    log = tmp_path / "launch.log"
    args = _launch_args(spec, postgres_url, unique_name, 8, 3, ray_address)
    launch = start_hpsearch(*args, cwd=tmp_path, env=_env(), log=log)
    launches.append(launch)
    assert launch.wait(timeout=WAIT_S) == 0, log.read_text()
    tag = _tag(log)
    trials = assert_exactly_finished(load(postgres_url, unique_name), 8)
    workers = [trial.user_attrs["worker"] for trial in trials if trial.state in FINISHED]
    for worker in workers:
        assert re.fullmatch(rf"ray:{tag}/[0-2]@[0-9a-f]{{20,}}", worker["slot"]), worker
        assert worker["visible_gpus"] in {"0", "1", "2", "3"}, worker
    assert "budget met; every task has exited" in log.read_text()


@pytest.mark.slow
def test_killed_actor_is_restarted_and_its_trial_retried_with_the_same_params(
    ray_address: str,
    postgres_url: str,
    unique_name: str,
    tmp_path: Path,
    launches: list[subprocess.Popen[str]],
) -> None:
    spec = write_spec(tmp_path, sleep_s=0.4, epochs=3)
    log = tmp_path / "launch.log"
    args = _launch_args(spec, postgres_url, unique_name, 6, 2, ray_address)
    launch = start_hpsearch(*args, cwd=tmp_path, env=_env(), log=log)
    launches.append(launch)

    victim = wait_for(lambda: _running(postgres_url, unique_name), WAIT_S, "a running trial")[0]
    worker_pid = int(victim.user_attrs["worker"]["pid"])
    actor_pid = _parent_of(worker_pid)
    os.kill(actor_pid, signal.SIGKILL)  # the actor's process; its worker child dies with it
    wait_for(lambda: not _alive(worker_pid), 30, "the worker to die with its actor")
    assert launch.wait(timeout=WAIT_S) == 0, log.read_text()
    study = load(postgres_url, unique_name)
    trials = assert_exactly_finished(study, 6)
    failed = study.trials[victim.number]
    assert failed.state == TrialState.FAIL
    assert failed.user_attrs["failure_class"] == "infrastructure"
    retries = [t for t in trials if t.system_attrs.get("failed_trial") == victim.number]
    assert retries and all(t.params == victim.params for t in retries)
    assert any(t.state in FINISHED for t in retries)
    actors = set(re.findall(r"\(WorkerActor pid=(\d+)\)", log.read_text()))
    assert str(actor_pid) in actors and len(actors) >= 3, actors  # Ray restarted the actor


@pytest.mark.slow
def test_ctrl_c_stops_the_actors_and_leaves_no_trial_running(
    ray_address: str,
    postgres_url: str,
    unique_name: str,
    tmp_path: Path,
    launches: list[subprocess.Popen[str]],
) -> None:
    spec = write_spec(tmp_path, sleep_s=1.0, epochs=5)
    log = tmp_path / "launch.log"
    args = _launch_args(spec, postgres_url, unique_name, 50, 2, ray_address)
    launch = start_hpsearch(*args, cwd=tmp_path, env=_env(), log=log)
    launches.append(launch)
    running = wait_for(lambda: _running(postgres_url, unique_name), WAIT_S, "a running trial")
    launch.send_signal(signal.SIGINT)
    assert launch.wait(timeout=WAIT_S) == 130, log.read_text()
    trials = load(postgres_url, unique_name).get_trials()
    assert not [t for t in trials if t.state == TrialState.RUNNING]
    interrupted = [t for t in trials if t.state == TrialState.FAIL]
    assert {t.number for t in running} <= {t.number for t in interrupted}
    assert all(t.user_attrs["failure_class"] == "infrastructure" for t in interrupted)
    pids = {int(t.user_attrs["worker"]["pid"]) for t in trials if "worker" in t.user_attrs}
    wait_for(lambda: not any(_alive(pid) for pid in pids), 30, "the workers to exit")


def _running(url: str, name: str) -> list:
    """The study's RUNNING trials that say where they run; none before the study exists."""
    try:
        trials = load(url, name).get_trials(states=(TrialState.RUNNING,))
    except KeyError:
        return []
    return [trial for trial in trials if "worker" in trial.user_attrs]


def _parent_of(pid: int) -> int:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[1])


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"
