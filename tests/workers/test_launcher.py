"""The launcher: slots, prefixed logs, bounded restarts, clean stop on Ctrl-C."""

from __future__ import annotations

import io
import signal
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
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

from hpsearch.workers.launcher import Launcher, LaunchError, Slot, plan_slots, worker_command


def test_slots_per_gpu_and_cpu() -> None:
    slots = plan_slots("0,1", per_gpu=2)
    assert [(slot.name, slot.gpu) for slot in slots] == [
        ("gpu0.0", "0"),
        ("gpu0.1", "0"),
        ("gpu1.0", "1"),
        ("gpu1.1", "1"),
    ]
    assert slots[1].environment()["CUDA_VISIBLE_DEVICES"] == "0"
    assert [slot.name for slot in plan_slots("3")] == ["gpu3"]
    cpu = plan_slots(None, cpu_workers=2)
    assert [(slot.name, slot.gpu) for slot in cpu] == [("cpu0", None), ("cpu1", None)]
    assert cpu[0].environment()["CUDA_VISIBLE_DEVICES"] == ""


@pytest.mark.parametrize(
    ("gpus", "cpu_workers", "message"),
    [
        ("0,1", 2, "either --gpus or --cpu-workers"),
        ("0,x", None, "not a comma-separated list of GPU ids"),
        ("1,1", None, "names a GPU twice; use --per-gpu"),
    ],
)
def test_bad_slot_options_name_the_fix(gpus: str, cpu_workers: int | None, message: str) -> None:
    with pytest.raises(LaunchError, match=message):
        plan_slots(gpus, cpu_workers=cpu_workers)


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_no_visible_gpu_asks_for_cpu_workers() -> None:
    with pytest.raises(LaunchError, match="no GPU is visible here; pass --cpu-workers"):
        plan_slots(None)


def test_worker_command_keeps_the_store_url_off_the_command_line() -> None:
    command = worker_command("cvfp", n_trials=8, study_name="s", device="auto", track=False)
    assert command[1:] == [
        "-m", "hpsearch", "worker", "cvfp", "--study-name", "s", "--device", "auto",
        "--trials", "8", "--no-mlflow",
    ]  # fmt: skip
    assert not any("storage" in part for part in command)


# -- supervision, with stand-in workers (plain Python one-liners) ----------------------------


def _script(code: str) -> list[str]:
    return [sys.executable, "-c", code]


def _launcher(
    code: str,
    slots: list[Slot],
    max_restarts: int = 3,
    on_dead_worker: Callable[[list[int]], None] | None = None,
) -> tuple[Launcher, io.StringIO]:
    out = io.StringIO()
    launcher = Launcher(
        slots,
        lambda _slot: _script(code),
        out=out,
        restart_delay=0.05,
        max_restarts=max_restarts,
        on_dead_worker=on_dead_worker,
    )
    return launcher, out


def test_each_worker_sees_its_gpu_and_its_lines_are_prefixed() -> None:
    code = "import os; print('visible', repr(os.environ['CUDA_VISIBLE_DEVICES']))"
    launcher, out = _launcher(code, plan_slots("0,1", per_gpu=2))
    assert launcher.run() == 0
    lines = out.getvalue().splitlines()
    assert "[gpu0.1] visible '0'" in lines and "[gpu1.0] visible '1'" in lines
    assert sum(line.startswith("[launch] started worker gpu") for line in lines) == 4


def test_a_crashing_worker_is_restarted_a_bounded_number_of_times(tmp_path: Path) -> None:
    dead: list[int] = []
    launcher, out = _launcher(
        "import sys; print('crash'); sys.exit(3)",
        [Slot("cpu0")],
        max_restarts=2,
        on_dead_worker=dead.extend,
    )
    assert launcher.run() == 1
    text = out.getvalue()
    assert text.count("[cpu0] crash") == 3
    assert "[launch] worker cpu0 exited with code 3; restart 2/2" in text
    assert "[launch] worker cpu0 exited with code 3; gave up after 2 restarts" in text
    assert len(dead) == 3  # each crash: fail the trials it left RUNNING

    marker = tmp_path / "crashed-once"
    code = f"import pathlib, sys; p = pathlib.Path({str(marker)!r}); c = p.exists(); p.touch(); sys.exit(0 if c else 3)"  # noqa: E501
    launcher, out = _launcher(code, [Slot("cpu0")], max_restarts=2)
    assert launcher.run() == 0
    assert "restart 1/2" in out.getvalue() and "exited with code 0" in out.getvalue()


def test_stop_sends_sigterm_then_kills_a_worker_that_ignores_it() -> None:
    code = (
        "import signal, sys, time\n"
        "polite = sys.argv[-1] == 'polite'\n"
        "bye = lambda *a: (print('bye'), sys.exit(143))\n"
        "signal.signal(signal.SIGTERM, bye if polite else signal.SIG_IGN)\n"
        "print('ready', flush=True)\n"
        "time.sleep(60)\n"
    )  # fmt: skip
    dead: list[int] = []
    launcher = Launcher(
        [Slot("cpu0"), Slot("cpu1")],
        lambda slot: [*_script(code), "polite" if slot.name == "cpu0" else "rude"],
        out=(out := io.StringIO()),
        stop_timeout=1.0,
        on_dead_worker=dead.extend,
    )
    stopper = threading.Thread(target=_stop_when_ready, args=(launcher, out))
    stopper.start()
    assert launcher.run() == 128 + signal.SIGINT
    stopper.join()
    text = out.getvalue()
    assert "[cpu0] bye" in text
    assert "[launch] killing the workers that did not stop" in text
    assert "[launch] worker cpu1 exited with code -9" in text
    assert len(dead) == 2  # both exited non-zero: their trials are looked for


def _stop_when_ready(launcher: Launcher, out: io.StringIO) -> None:
    wait_for(lambda: out.getvalue().count("ready") == 2, 30, "both stand-ins")
    launcher._on_signal(signal.SIGINT, None)  # what Ctrl-C does


# -- the real thing: `hpsearch launch` with worker processes -----------------------------------


def test_ctrl_c_leaves_no_trial_running(
    postgres_url: str, unique_name: str, tmp_path: Path
) -> None:
    """Both workers mid-trial when Ctrl-C comes: both trials are failed and queued again.

    An epoch sleeps 30 s, so a trial seen running is still running when the launcher forwards
    the signal, however loaded the machine (a worker between trials has nothing to fail: that
    moment is covered by tests/robustness/test_signals.py)."""
    spec = write_spec(tmp_path, sleep_s=30.0)
    launch = start_hpsearch(
        "launch", str(spec), "--cpu-workers", "2", "--trials", "50", "--storage", postgres_url,
        "--study-name", unique_name, "--no-mlflow",
        cwd=tmp_path, log=tmp_path / "launch.log",
    )  # fmt: skip
    log = tmp_path / "launch.log"
    wait_for(lambda: load_or_none(postgres_url, unique_name), 120, "the study")
    study = load(postgres_url, unique_name)

    def both_workers_mid_trial() -> bool:
        running = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
        return len([t for t in running if "worker" in t.user_attrs]) == 2

    wait_for(both_workers_mid_trial, 120, "both workers in a trial", interval=0.2)
    launch.send_signal(signal.SIGINT)
    assert launch.wait(timeout=90) == 128 + signal.SIGINT, log.read_text()

    text = log.read_text()
    assert "[launch] stopping 2 worker(s)" in text
    assert "[cpu0] worker stopped (stopped by SIGTERM)" in text
    assert "[cpu1] worker stopped (stopped by SIGTERM)" in text
    trials = load(postgres_url, unique_name).get_trials()
    assert not [t.number for t in trials if t.state == TrialState.RUNNING]
    interrupted = [t for t in trials if t.state == TrialState.FAIL]
    assert len(interrupted) == 2, text
    assert {t.user_attrs["fail_reason"] for t in interrupted} == {"worker stopped by SIGTERM"}
    assert {t.user_attrs["failure_class"] for t in interrupted} == {"infrastructure"}
    queued = [t for t in trials if t.state == TrialState.WAITING]
    assert {t.system_attrs["failed_trial"] for t in queued} == {t.number for t in interrupted}
    by_number = {t.number: t for t in trials}
    assert all(t.params == by_number[t.system_attrs["failed_trial"]].params for t in queued)


def load_or_none(storage: str, study_name: str) -> object:
    try:
        return load(storage, study_name)
    except KeyError:  # optuna: no such study yet
        return None


def test_a_worker_that_dies_is_restarted_and_its_trial_retried(tmp_path: Path) -> None:
    store = f"sqlite:///{tmp_path / 'crash.db'}"
    marker = tmp_path / "died-once"
    spec = write_spec(
        tmp_path,
        sleep_s=0.0,
        trainer="crashy_trainer:CrashyTrainer",
        fixed={"die_at_epoch": 2, "die_marker": str(marker)},
    )
    command = ["launch", str(spec), "--cpu-workers", "1", "--trials", "3", "--storage", store]
    result = subprocess.run(
        [sys.executable, "-m", "hpsearch", *command, "--no-mlflow"],
        cwd=tmp_path,
        env=environment(),
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert marker.exists()
    assert "[launch] worker cpu0 exited with code 3; restart 1/3" in result.stdout
    assert "[launch] failed and re-queued trial(s) [0] of dead worker(s)" in result.stdout
    trials = assert_exactly_finished(load(store, "toy"), 3)
    assert trials[0].state == TrialState.FAIL
    assert trials[0].user_attrs["fail_reason"] == "worker process died"
    retry = next(t for t in trials if t.system_attrs.get("failed_trial") == 0)
    assert retry.params == trials[0].params and retry.state in FINISHED
