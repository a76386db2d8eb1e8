"""``hpsearch launch --backend ray``: one Ray actor per worker, each running ``hpsearch worker``.

Each actor asks Ray for ``num_gpus`` (fractions allowed: 0.5 puts two workers on one GPU; Ray
sets ``CUDA_VISIBLE_DEVICES`` for it) and one CPU, and runs ``hpsearch worker`` as its child
process, which dies with it (``PR_SET_PDEATHSIG``). The store URL reaches the child in its
environment, never on a command line. Ray restarts an actor whose process died (a node lost, a
kill) at most ``--max-restarts`` times and runs its ``run`` again (``max_task_retries``); the
trial the dead worker left RUNNING is failed by the other workers after the heartbeat's grace
period and queued again with the same params.

Each trial's ``worker`` attr has ``slot`` = ``ray:LAUNCH/INDEX@NODE`` (the Ray node id) and
``visible_gpus``. Without ``--address`` a local Ray cluster is started for the launch and stopped
with it. Ray is imported only here: ``pip install 'hpsearch[ray]'``.
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from hpsearch.workers.backends.follow import TaskCount, follow
from hpsearch.workers.launcher import LaunchError

if TYPE_CHECKING:
    from hpsearch.workers.backends.launch import ClusterLaunch

SLOT_PREFIX = "ray:"
PR_SET_PDEATHSIG = 1
STOP_TIMEOUT_S = 30.0


def _die_with_parent() -> None:  # pragma: no cover (runs in the child, before exec)
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


class WorkerActor:
    """Runs one ``hpsearch worker`` child process at a time (made a Ray actor by ``_actor``)."""

    def __init__(self, argv: Sequence[str], environment: dict[str, str], slot: str) -> None:
        self.argv = list(argv)
        self.environment = environment
        self.slot = slot
        self.child: subprocess.Popen[bytes] | None = None

    def started(self) -> bool:
        return True

    def run(self) -> int:
        """Run the worker to its end; its exit code."""
        import ray

        node = ray.get_runtime_context().get_node_id()
        environment = {
            **os.environ,
            **self.environment,
            "HPSEARCH_WORKER_SLOT": f"{self.slot}@{node}",
            "PYTHONUNBUFFERED": "1",
        }
        self.child = subprocess.Popen(self.argv, env=environment, preexec_fn=_die_with_parent)
        return self.child.wait()

    def stop(self, timeout: float = STOP_TIMEOUT_S) -> int | None:
        """SIGTERM the worker (it fails and re-queues its trial), SIGKILL after ``timeout``."""
        child = self.child
        if child is None or child.poll() is not None:
            return None
        child.send_signal(signal.SIGTERM)
        try:
            return child.wait(timeout)
        except subprocess.TimeoutExpired:
            child.kill()
            return child.wait()


def _actor(ray: Any) -> Any:
    return ray.remote(WorkerActor)


@dataclass
class RayActors:
    """The actors of one launch, as ``follow`` needs them."""

    ray: Any
    tag: str
    actors: list[Any] = field(default_factory=list)
    runs: list[Any] = field(default_factory=list)
    starts: list[Any] = field(default_factory=list)
    ended: set[int] = field(default_factory=set)

    def count(self) -> TaskCount | None:
        ray = self.ray
        alive = [index for index in range(len(self.actors)) if index not in self.ended]
        if alive:
            done, _ = ray.wait([self.runs[i] for i in alive], num_returns=len(alive), timeout=0)
            done_ids = {ref.hex() for ref in done}
            self.ended |= {i for i in alive if self.runs[i].hex() in done_ids}
        alive = [index for index in range(len(self.actors)) if index not in self.ended]
        if not alive:
            return TaskCount(0, 0)
        started, _ = ray.wait([self.starts[i] for i in alive], num_returns=len(alive), timeout=0)
        return TaskCount(running=len(started), pending=len(alive) - len(started))

    def cancel(self, pending_only: bool = False) -> None:
        ray = self.ray
        alive = [index for index in range(len(self.actors)) if index not in self.ended]
        started_refs, _ = ray.wait(
            [self.starts[i] for i in alive], num_returns=len(alive), timeout=0
        )
        started_ids = {ref.hex() for ref in started_refs}
        started = [i for i in alive if self.starts[i].hex() in started_ids]
        for index in alive:
            if index not in started:
                ray.kill(self.actors[index], no_restart=True)
                self.ended.add(index)
        if pending_only:
            return
        stops = [self.actors[index].stop.remote() for index in started]
        ray.wait(stops, num_returns=len(stops), timeout=STOP_TIMEOUT_S + 5)
        for index in started:
            ray.kill(self.actors[index], no_restart=True)
            self.ended.add(index)

    def owns(self, worker: dict[str, Any]) -> bool:
        return str(worker.get("slot", "")).startswith(f"{SLOT_PREFIX}{self.tag}/")


def start_actors(
    ray: Any,
    workers: int,
    gpus_per_worker: float,
    max_restarts: int,
    argv: Sequence[str],
    environment: dict[str, str],
) -> RayActors:
    """One actor per worker, each running ``argv`` once it has its resources."""
    actor_class = _actor(ray)
    group = RayActors(ray, uuid.uuid4().hex[:8])
    for index in range(workers):
        actor = actor_class.options(
            num_cpus=1,
            num_gpus=gpus_per_worker,
            max_restarts=max_restarts,
            max_task_retries=max_restarts,
            max_concurrency=2,  # stop() while run() is in progress
            name=f"hpsearch-{group.tag}-{index}",
        ).remote(argv, environment, f"{SLOT_PREFIX}{group.tag}/{index}")
        group.actors.append(actor)
        group.starts.append(actor.started.remote())
        group.runs.append(actor.run.remote())
    return group


def _ray() -> Any:
    try:
        import ray
    except ImportError as error:
        raise LaunchError(
            "--backend ray needs Ray: pip install 'hpsearch[ray]' (or pip install ray)"
        ) from error
    return ray


def _check_gpus(ray: Any, gpus_per_worker: float) -> None:
    """An actor asking for more GPUs than the cluster has would wait for ever: say so now."""
    total = float(ray.cluster_resources().get("GPU", 0))
    if gpus_per_worker > total:
        raise LaunchError(
            f"--gpus-per-worker {gpus_per_worker:g}: the Ray cluster has {total:g} GPU(s); "
            "pass a smaller value (0 for CPU workers) or --address of a cluster with GPUs"
        )


def launch_on_ray(launch: ClusterLaunch, report: Callable[[str], None]) -> int:
    """Connect to (or start) a Ray cluster, start the actors, follow them; the exit code."""
    ray = _ray()
    ray.init(
        address=launch.address,
        include_dashboard=False,
        logging_level="WARNING",
        log_to_driver=True,
    )
    try:
        _check_gpus(ray, launch.gpus_per_worker)
        group = start_actors(
            ray,
            launch.workers,
            launch.gpus_per_worker,
            launch.max_restarts,
            launch.worker_argv(),
            launch.worker_environment(),
        )
        where = launch.address or "a local Ray cluster"
        report(
            f"started {launch.workers} Ray actor(s) ({launch.gpus_per_worker:g} GPU each) on "
            f"{where}, launch {group.tag}: study {launch.study.study_name!r}"
        )
        return follow(launch.study, group, launch.n_trials, report)
    finally:
        ray.shutdown()
