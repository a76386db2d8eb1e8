"""``hpsearch launch --backend slurm|ray``: start the workers on the engine, then follow them."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import optuna

from hpsearch.storage import mask_url
from hpsearch.workers.backends.follow import follow
from hpsearch.workers.launcher import LaunchError, worker_command

# Passed on to the workers in their env file when set here (the store URL always is).
FORWARDED_VARIABLES = ("MLFLOW_TRACKING_URI", "HPSEARCH_HEARTBEAT_S", "HPSEARCH_GRACE_S")
LOCAL_ONLY = ("gpus", "per_gpu", "cpu_workers", "stop_timeout")
CLUSTER_ONLY = {
    "workers": ("slurm", "ray"),
    "gpus_per_worker": ("slurm", "ray"),
    "log_dir": ("slurm",),
    "detach": ("slurm",),
    "partition": ("slurm",),
    "time_limit": ("slurm",),
    "sbatch_args": ("slurm",),
    "address": ("ray",),
    "max_restarts": ("local", "ray"),
}


def option_name(parameter: str) -> str:
    return "--" + {"time_limit": "time", "sbatch_args": "sbatch-arg"}.get(
        parameter, parameter
    ).replace("_", "-")


def check_backend_options(backend: str, given: Sequence[str]) -> None:
    """Options given on the command line that the backend does not take: one clear error."""
    for parameter in given:
        if backend != "local" and parameter in LOCAL_ONLY:
            raise LaunchError(
                f"{option_name(parameter)} is for --backend local; with --backend {backend} "
                "pass --workers N and --gpus-per-worker G"
            )
        backends = CLUSTER_ONLY.get(parameter)
        if backends is not None and backend not in backends:
            raise LaunchError(
                f"{option_name(parameter)} is for --backend {' or '.join(backends)}, "
                f"not --backend {backend}"
            )


def check_cluster_options(backend: str, workers: int | None, gpus_per_worker: float) -> None:
    """Errors the engine would only find later (or never), before anything is written."""
    if workers is None:
        raise LaunchError(f"--backend {backend} needs --workers N (how many workers to start)")
    if backend == "slurm" and gpus_per_worker != int(gpus_per_worker):
        raise LaunchError(
            f"--gpus-per-worker {gpus_per_worker:g}: Slurm gives whole GPUs; pass an integer "
            "(fractions work with --backend ray)"
        )


@dataclass(frozen=True)
class ClusterLaunch:
    """One launch onto a cluster engine, as the command line gave it."""

    backend: str
    spec: str
    study: optuna.Study
    storage: str
    workers: int
    gpus_per_worker: float = 0.0
    n_trials: int | None = None
    timeout: float | None = None
    track: bool = True
    quick: bool = False
    max_restarts: int = 3
    log_dir: Path | None = None
    detach: bool = False
    partition: str | None = None
    time_limit: str | None = None
    sbatch_args: Sequence[str] = field(default_factory=tuple)
    address: str | None = None

    def worker_argv(self) -> list[str]:
        spec = str(Path(self.spec).resolve()) if Path(self.spec).is_file() else self.spec
        return worker_command(
            spec,
            n_trials=self.n_trials,
            study_name=self.study.study_name,
            device="auto" if self.gpus_per_worker else "cpu",
            track=self.track,
            timeout=self.timeout,
            quick=self.quick,
        )

    def worker_environment(self) -> dict[str, str]:
        forwarded = {name: os.environ[name] for name in FORWARDED_VARIABLES if name in os.environ}
        return {**forwarded, "HPSEARCH_STORAGE": self.storage}

    def default_log_dir(self) -> Path:
        stamp = time.strftime("%Y%m%d-%H%M%S")
        return Path("hpsearch-logs", f"{self.study.study_name}-{stamp}").resolve()


def launch_on_cluster(launch: ClusterLaunch, report: Callable[[str], None]) -> int:
    """Start the workers on the launch's engine and follow them; the exit code."""
    check_cluster_options(launch.backend, launch.workers, launch.gpus_per_worker)
    if launch.backend == "slurm":
        return _launch_on_slurm(launch, report)
    if launch.backend == "ray":
        from hpsearch.workers.backends.ray import launch_on_ray

        return launch_on_ray(launch, report)
    raise LaunchError(f"--backend {launch.backend!r}: choose local, slurm or ray")


def _launch_on_slurm(launch: ClusterLaunch, report: Callable[[str], None]) -> int:
    from hpsearch.workers.backends.slurm import SlurmArray, SlurmOptions, submit

    log_dir = (launch.log_dir or launch.default_log_dir()).resolve()
    options = SlurmOptions(
        workers=launch.workers,
        log_dir=log_dir,
        job_name=f"hpsearch-{launch.study.study_name}",
        gpus_per_worker=int(launch.gpus_per_worker),
        partition=launch.partition,
        time_limit=launch.time_limit,
        sbatch_args=tuple(launch.sbatch_args),
    )
    job_id = submit(options, launch.worker_argv(), launch.worker_environment())
    budget = f"{launch.n_trials} trials" if launch.n_trials else "no trial budget"
    report(
        f"submitted slurm job array {job_id}: {launch.workers} worker(s) on study "
        f"{launch.study.study_name!r} in {mask_url(launch.storage)}, {budget}; "
        f"logs in {log_dir}"
    )
    if launch.detach:
        report(f"follow it: squeue -r -j {job_id}; cancel it: scancel {job_id}")
        print(job_id, flush=True)
        return 0
    return follow(launch.study, SlurmArray(job_id), launch.n_trials, report)
