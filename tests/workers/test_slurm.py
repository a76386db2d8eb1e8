"""``hpsearch launch --backend slurm`` on a real one-node Slurm cluster (.ci/slurm.sh).

The node has 4 fake GPUs in its gres.conf (Slurm then sets CUDA_VISIBLE_DEVICES per task as
on a GPU node). The study lives on PostgreSQL; the heartbeat is short (1 s, grace 3 s), so a
killed task's trial is failed and retried within seconds.
"""

from __future__ import annotations

import os
import re
import signal
import stat
import subprocess
from collections.abc import Collection, Iterator
from pathlib import Path

import optuna
import pytest
from conftest import IN_CI
from optuna.trial import FrozenTrial, TrialState
from worker_helpers import (
    FINISHED,
    assert_exactly_finished,
    environment,
    load,
    start_hpsearch,
    wait_for,
    write_spec,
)

from hpsearch.cli import main
from hpsearch.workers.backends.slurm import SlurmOptions, sbatch_script, write_env_file

REPO = Path(__file__).resolve().parents[2]
SLURM_SCRIPT = REPO / ".ci" / "slurm.sh"
PASSWORD = "s3cret-pw"  # PostgreSQL trusts 127.0.0.1: any password works, and must not leak
WAIT_S = 180.0  # workers start in seconds, slower on a loaded 2-core machine
REQUEUES = 2  # scontrol requeue of one task, again and again: a race that passes once is not fixed
REQUEUE_BUDGET = 36  # trials; 12-15 had finished at the second requeue here: 2x margin

# The session's cluster listens on fixed ports: all of this module's tests must run in one
# xdist worker, which starts it once: the suite runs with `--dist loadfile` (Makefile).
# (`--dist loadgroup` with xdist_group marks groups nothing on pytest 9.2: pytest-xdist#1386.)


@pytest.fixture(scope="session")
def slurm_conf(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A one-node Slurm cluster for the session; its SLURM_CONF. Missing Slurm (not root, or
    no apt): a failure in CI, a skip elsewhere."""
    folder = tmp_path_factory.mktemp("slurm")
    try:
        started = subprocess.run(
            ["bash", str(SLURM_SCRIPT), "start", str(folder)],
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as error:
        started = subprocess.CompletedProcess([], 1, "", str(error))
    if started.returncode != 0:
        message = f"no Slurm cluster: {started.stderr.strip()[-500:]}"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    conf = str(folder / "slurm.conf")
    yield conf
    subprocess.run(["scancel", "--full", "-u", "root"], env={**os.environ, "SLURM_CONF": conf})
    subprocess.run(["bash", str(SLURM_SCRIPT), "stop", str(folder)], check=False, timeout=60)


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


def _env(conf: str) -> dict[str, str]:
    return environment(SLURM_CONF=conf, HPSEARCH_HEARTBEAT_S="1", HPSEARCH_GRACE_S="3")


def _slurm(conf: str, *argv: str) -> str:
    env = {**os.environ, "SLURM_CONF": conf}
    return subprocess.run(argv, env=env, capture_output=True, text=True, check=True).stdout


def _job_gone(conf: str, job: str) -> bool:
    """No task of ``job`` is queued or running (squeue fails with "Invalid job id" once
    slurmctld has forgotten a finished job: MinJobAge)."""
    env = {**os.environ, "SLURM_CONF": conf}
    listed = subprocess.run(
        ["squeue", "-h", "-j", job], env=env, capture_output=True, text=True, check=False
    )
    if listed.returncode != 0:
        assert "invalid job id" in listed.stderr.lower(), listed.stderr
        return True
    return listed.stdout.strip() == ""


def _url(postgres_url: str) -> str:
    return postgres_url.replace("postgres@", f"postgres:{PASSWORD}@", 1)


def _launch_args(spec: Path, url: str, name: str, trials: int, workers: int, *more: str) -> list:
    return [
        "launch", str(spec), "--backend", "slurm", "--workers", str(workers),
        "--gpus-per-worker", "1", "--trials", str(trials), "--storage", url,
        "--study-name", name, "--no-mlflow", "--log-dir", str(spec.parent / "logs"), *more,
    ]  # fmt: skip


def _running_on(study: optuna.Study, slot: str, but: Collection[int] = ()) -> list[FrozenTrial]:
    """The RUNNING trials of worker ``slot`` (``slurm:JOBID_TASK``; ``slurm:JOBID_``: any task
    of the job) but those numbered ``but``."""
    running = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
    mine = [t for t in running if _on_slot(t, slot)]
    return [t for t in mine if t.number not in but]


def _on_slot(trial: FrozenTrial, slot: str) -> bool:
    seen = str(trial.user_attrs.get("worker", {}).get("slot", ""))
    return seen.startswith(slot) if slot.endswith("_") else seen == slot


def _assert_failed_and_retried(trials: list[FrozenTrial], killed: FrozenTrial) -> FrozenTrial:
    """``killed`` ended FAIL as an infrastructure failure and a later trial with the same params
    (a retry of it, or of the trial it retried) finished, without the failure's reason; the
    failed trial."""
    failed = trials[killed.number]
    assert failed.number == killed.number and failed.state == TrialState.FAIL, failed
    assert failed.user_attrs["failure_class"] == "infrastructure", failed.user_attrs
    first = killed.system_attrs.get("failed_trial", killed.number)
    later = trials[killed.number + 1 :]
    retries = [t for t in later if t.system_attrs.get("failed_trial") == first]
    assert retries and all(t.params == killed.params for t in retries), (killed, retries)
    done = [t for t in retries if t.state in FINISHED]
    assert done and all("fail_reason" not in t.user_attrs for t in done), retries
    return failed


def _job_id(log: Path) -> str:
    found = wait_for(
        lambda: re.search(r"submitted slurm job array (\d+)", log.read_text()), 180, "the job id"
    )
    return str(found.group(1))


# -- the script and the env file ------------------------------------------------------------


def test_script_asks_for_gpus_and_keeps_the_url_in_an_owner_only_file(tmp_path: Path) -> None:
    options = SlurmOptions(
        workers=3, log_dir=tmp_path, gpus_per_worker=2, partition="gpu", time_limit="04:00:00"
    )
    env_file = tmp_path / "worker.env"
    write_env_file(env_file, {"HPSEARCH_STORAGE": f"postgresql://u:{PASSWORD}@db/x"})
    script = sbatch_script(options, ["python", "-m", "hpsearch", "worker", "s"], env_file)
    for directive in ("--array=0-2", "--gres=gpu:2", "--partition=gpu", "--time=04:00:00"):
        assert f"#SBATCH {directive}\n" in script
    assert f"#SBATCH --output={tmp_path}/%A_%a.log\n" in script
    assert PASSWORD not in script and f". {env_file};" in script
    assert stat.S_IMODE(env_file.stat().st_mode) == 0o600
    assert PASSWORD in env_file.read_text()
    assert script.rstrip().endswith("exec python -m hpsearch worker s")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--backend", "slurm"], "--backend slurm needs --workers N"),
        (["--backend", "slurm", "--workers", "2", "--gpus-per-worker", "0.5"], "whole GPUs"),
        (["--partition", "gpu"], "--partition is for --backend slurm, not --backend local"),
        (["--backend", "slurm", "--workers", "2", "--per-gpu", "2"], "--per-gpu is for --backend"),
        (["--backend", "ray", "--workers", "2", "--detach"], "--detach is for --backend slurm"),
    ],
)
def test_bad_backend_options_are_one_line_and_write_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    store = tmp_path / "studies.db"
    spec = write_spec(tmp_path)
    with pytest.raises(SystemExit) as exited:
        main(["launch", str(spec), "--storage", f"sqlite:///{store}", *args])
    assert exited.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], lines
    assert not store.exists()


# -- on the real engine ---------------------------------------------------------------------


@pytest.mark.slow
def test_array_finishes_exactly_n_and_each_trial_names_its_task_and_gpu(
    slurm_conf: str,
    postgres_url: str,
    unique_name: str,
    tmp_path: Path,
    launches: list[subprocess.Popen[str]],
) -> None:
    spec = write_spec(tmp_path, sleep_s=0.1, epochs=2)
    url = _url(postgres_url)
    log = tmp_path / "launch.log"
    launch = start_hpsearch(
        *_launch_args(spec, url, unique_name, 8, 3), cwd=tmp_path, env=_env(slurm_conf), log=log
    )
    launches.append(launch)
    job = _job_id(log)
    shown = _slurm(slurm_conf, "scontrol", "show", "job", job) + _slurm(
        slurm_conf, "squeue", "-r", "-j", job, "-o", "%all"
    )
    assert launch.wait(timeout=WAIT_S) == 0, log.read_text()
    trials = assert_exactly_finished(load(postgres_url, unique_name), 8)
    workers = [trial.user_attrs["worker"] for trial in trials if trial.state in FINISHED]
    slots = {worker["slot"] for worker in workers}
    assert slots <= {f"slurm:{job}_{task}" for task in range(3)} and slots, slots
    assert {worker["visible_gpus"] for worker in workers} <= {"0", "1", "2", "3"}
    logs = sorted(path.name for path in (tmp_path / "logs").glob("*.log"))
    assert logs == [f"{job}_{task}.log" for task in range(3)]
    assert PASSWORD not in shown and "--storage" not in shown and job in shown
    text = log.read_text()
    assert "finished 8/8" in text and "budget met; every task has exited" in text
    assert _job_gone(slurm_conf, job)


@pytest.mark.slow
def test_killed_task_has_its_trial_failed_and_retried_with_the_same_params(
    slurm_conf: str,
    postgres_url: str,
    unique_name: str,
    tmp_path: Path,
    launches: list[subprocess.Popen[str]],
) -> None:
    spec = write_spec(tmp_path, sleep_s=0.4, epochs=3)
    log = tmp_path / "launch.log"
    args = _launch_args(spec, postgres_url, unique_name, 6, 2, "--detach")
    submitted = start_hpsearch(*args, cwd=tmp_path, env=_env(slurm_conf), log=log)
    launches.append(submitted)
    assert submitted.wait(timeout=120) == 0, log.read_text()
    job = log.read_text().strip().splitlines()[-1]  # --detach prints the job id last
    assert job.isdigit(), log.read_text()
    study = load(postgres_url, unique_name)
    # The first task seen mid-trial is the victim (on a loaded machine one task may run the
    # whole budget before the other starts).
    killed = wait_for(lambda: _running_on(study, f"slurm:{job}_"), WAIT_S, "a trial mid-run")[0]
    task = killed.user_attrs["worker"]["slot"].removeprefix("slurm:")
    _slurm(slurm_conf, "scancel", "--signal=KILL", task)

    def study_done() -> bool:
        study = load(postgres_url, unique_name)
        finished = study.get_trials(states=FINISHED)
        gone = _job_gone(slurm_conf, job)
        return len(finished) >= 6 and gone

    wait_for(study_done, WAIT_S, "the study's budget and the array's end", interval=1.0)
    study = load(postgres_url, unique_name)
    trials = assert_exactly_finished(study, 6)
    _assert_failed_and_retried(trials, killed)


@pytest.mark.slow
def test_requeued_task_fails_its_trial_on_sigterm_and_runs_again(
    slurm_conf: str,
    postgres_url: str,
    unique_name: str,
    tmp_path: Path,
    launches: list[subprocess.Popen[str]],
) -> None:
    """``scontrol requeue`` of one array element mid-trial, REQUEUES times: Slurm sends the
    worker SIGTERM, which fails its trial and queues it again, holds the task PENDING (11 s with
    the test cluster's cred_expire) and runs the script again; the budget still ends exact."""
    spec = write_spec(tmp_path, sleep_s=0.5, epochs=3)
    log = tmp_path / "launch.log"
    args = _launch_args(spec, postgres_url, unique_name, REQUEUE_BUDGET, 2)
    launch = start_hpsearch(*args, cwd=tmp_path, env=_env(slurm_conf), log=log)
    launches.append(launch)
    task = f"{_job_id(log)}_1"
    study = load(postgres_url, unique_name)
    requeued: list[FrozenTrial] = []
    for _ in range(REQUEUES):

        def victim_mid_trial() -> list[FrozenTrial]:
            assert launch.poll() is None, f"the study ended first:\n{log.read_text()}"
            return _running_on(study, f"slurm:{task}", but=[t.number for t in requeued])

        trial = wait_for(victim_mid_trial, WAIT_S, f"a new trial running on task {task}")[0]
        _slurm(slurm_conf, "scontrol", "requeue", task)
        requeued.append(trial)
        wait_for(lambda: not _running_on(study, f"slurm:{task}"), WAIT_S, f"{task} to stop")
    assert launch.wait(timeout=WAIT_S) == 0, log.read_text()
    trials = assert_exactly_finished(load(postgres_url, unique_name), REQUEUE_BUDGET)
    for killed in requeued:
        failed = _assert_failed_and_retried(trials, killed)
        assert failed.user_attrs["fail_reason"] == "worker stopped by SIGTERM", failed.user_attrs
    task_log = (tmp_path / "logs" / f"{task}.log").read_text()
    assert task_log.count("DUE TO JOB REQUEUE") == REQUEUES, task_log
    for restart in range(REQUEUES):  # the script ran again after each requeue but maybe the last
        assert f"restart {restart}\n" in task_log, task_log


@pytest.mark.slow
def test_ctrl_c_cancels_the_array_and_leaves_no_trial_running(
    slurm_conf: str,
    postgres_url: str,
    unique_name: str,
    tmp_path: Path,
    launches: list[subprocess.Popen[str]],
) -> None:
    spec = write_spec(tmp_path, sleep_s=1.0, epochs=5)
    log = tmp_path / "launch.log"
    args = _launch_args(spec, postgres_url, unique_name, 50, 2)
    launch = start_hpsearch(*args, cwd=tmp_path, env=_env(slurm_conf), log=log)
    launches.append(launch)
    job = _job_id(log)
    study = load(postgres_url, unique_name)
    wait_for(lambda: study.get_trials(states=(TrialState.RUNNING,)), WAIT_S, "a running trial")
    launch.send_signal(signal.SIGINT)
    assert launch.wait(timeout=WAIT_S) == 130, log.read_text()
    assert _job_gone(slurm_conf, job)
    trials = load(postgres_url, unique_name).get_trials()
    assert not [t for t in trials if t.state == TrialState.RUNNING]
    interrupted = [t for t in trials if t.state == TrialState.FAIL]
    assert interrupted and all(
        t.user_attrs["failure_class"] == "infrastructure" for t in interrupted
    )
    queued = [t for t in trials if t.state == TrialState.WAITING]
    assert {tuple(t.params.items()) for t in interrupted} <= {
        tuple(t.params.items()) for t in queued
    }
    assert "stopped by SIGINT" in log.read_text()
