"""The ``hpsearch`` command.

Bad input (a spec, a ``--set``, a study name, a storage URL) is one line on stderr naming the
problem and the fix, exit code 2, and nothing written to the store.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
import threading
from pathlib import Path
from typing import Any

import click

from hpsearch.errors import HpsearchError, ParamError, SpecError
from hpsearch.urls import default_storage_url, mask_secrets, mask_url

# Only click and the modules above load with the command: torch, Optuna, MLflow and pydantic
# are imported inside the commands that use them, so `hpsearch --help` starts at once.

STORAGE_HELP = "Study store URL [default: $HPSEARCH_STORAGE, else sqlite:///hpsearch.db]."
storage_option = click.option("--storage", default=None, metavar="URL", help=STORAGE_HELP)


def _checked_study_name(_ctx: click.Context, _param: click.Parameter, name: str | None) -> Any:
    from hpsearch.search_spaces.schema import study_name_problem

    if name is not None and (problem := study_name_problem(name)) is not None:
        raise ParamError(f"--study-name: {problem}")
    return name


study_name_option = click.option(
    "--study-name",
    default=None,
    callback=_checked_study_name,
    help="Study name [default: the spec's name].",
)
trials_budget_option = click.option(
    "--trials",
    "n_trials",
    type=click.IntRange(min=1),
    default=None,
    help="The study's total: stop once this many trials of the study have finished (complete "
    "+ pruned), counted across all workers and earlier runs [default: run until stopped].",
)
more_trials_option = click.option(
    "--more-trials",
    type=click.IntRange(min=1),
    default=None,
    metavar="N",
    help="N more finished trials than the study has now (instead of --trials).",
)
no_mlflow_option = click.option("--no-mlflow", is_flag=True, help="Do not track trials in MLflow.")
device_option = click.option(
    "--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N."
)
quick_option = click.option(
    "--quick",
    is_flag=True,
    help="Use the spec's quick: variant (smaller sizes, fewer epochs; minutes on 2 CPU cores); "
    "its study is named <name>-quick.",
)
timeout_option = click.option(
    "--timeout", type=click.FloatRange(min=0), default=None, help="Stop after seconds."
)
trial_timeout_option = click.option(
    "--trial-timeout",
    type=click.FloatRange(min=0, min_open=True, max=1e9),
    default=None,
    metavar="SECONDS",
    help="Fail a trial (failure_class timeout) that runs longer [default: the spec's "
    "trial_timeout, else none].",
)


def _quiet_libraries(track: bool = True) -> None:
    """Library logs at WARNING; MLflow is imported (it sets up its loggers) only if tracking."""
    if track:
        import mlflow  # noqa: F401  (configures its loggers on import; we quiet them after)
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    for name in ("alembic", "mlflow"):
        logging.getLogger(name).setLevel(logging.WARNING)
    # urllib3 logs each retry of an unreachable MLflow server; hpsearch's own warning says it
    logging.getLogger("urllib3").setLevel(logging.ERROR)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")


def _study_name_for(spec_argument: str, study_name: str | None, quick: bool = False) -> str:
    """--study-name, else the spec's name; a name that is no spec is taken as a study name.
    The spec is read against the schema only: its trainer (and torch) is not imported."""
    from hpsearch.search_spaces import quick_variant_unchecked, read_spec

    if study_name:
        return study_name
    try:
        spec = read_spec(spec_argument)
        return quick_variant_unchecked(spec).name if quick else spec.name
    except SpecError:
        if spec_argument.endswith((".yaml", ".yml")):
            raise
        return spec_argument


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="hpsearch")
def cli() -> None:
    """Multi-objective hyperparameter search for fragile training trade-offs.

    SPEC is a packaged study spec (see `hpsearch spaces`) or a path to a YAML file.
    Studies live in --storage; MLflow follows $MLFLOW_TRACKING_URI, else sqlite:///mlflow.db.
    """


@cli.command()
def spaces() -> None:
    """List the packaged study specs, one line each."""
    from hpsearch.formatting import table
    from hpsearch.search_spaces import packaged_spec_names, read_spec

    rows = []
    for name in packaged_spec_names():
        spec = read_spec(name)
        objectives = ", ".join(spec.objective_names)
        rows.append([name, spec.trainer, spec.epochs, objectives, spec.description])
    click.echo(table(["spec", "trainer", "epochs", "objectives", "description"], rows))


@cli.command()
@click.argument("spec")
@click.option(
    "--trials",
    "n_trials",
    type=click.IntRange(min=1),
    default=None,
    help="The study's total: run until it has this many finished trials (complete + pruned), "
    "counting earlier runs [default: 20].",
)
@more_trials_option
@click.option(
    "--threads",
    type=click.IntRange(min=1),
    default=None,
    help="torch CPU threads [default: $OMP_NUM_THREADS, else 1].",
)
@storage_option
@study_name_option
@timeout_option
@device_option
@trial_timeout_option
@no_mlflow_option
@click.option("--no-progress", is_flag=True, help="No line per finished trial.")
@quick_option
@click.pass_context
def run(
    ctx: click.Context,
    spec: str,
    n_trials: int | None,
    more_trials: int | None,
    threads: int | None,
    storage: str | None,
    study_name: str | None,
    timeout: float | None,
    device: str,
    trial_timeout: float | None,
    no_mlflow: bool,
    no_progress: bool,
    quick: bool,
) -> None:
    """Run trials of SPEC in this process until the study has --trials finished trials (or
    --more-trials more), then print the Pareto front.

    Ctrl-C / SIGTERM fail the running trial, queue it again with the same params and exit with
    130 / 143; no trial is left RUNNING."""
    from hpsearch.formatting import best_table
    from hpsearch.objectives import pick_device
    from hpsearch.query import best_configs
    from hpsearch.runner import create_study, run_trials
    from hpsearch.search_spaces import load_spec

    set_torch_threads(threads)
    _quiet_libraries(track=not no_mlflow)
    url = storage or default_storage_url()
    pick_device(device)  # a bad --device is bad input even when there is nothing to run
    loaded = load_spec(spec, quick=quick)
    existing = create_study(loaded, url, study_name)
    remaining = trials_to_run(existing, n_trials, more_trials, default_total=20)
    if remaining == 0:
        click.echo(budget_met_line(existing, n_trials or 20))
        return
    study, result = run_trials(
        loaded,
        remaining,
        storage=url,
        study_name=study_name,
        track=not no_mlflow,
        device=device,
        timeout=timeout,
        trial_timeout=trial_timeout,
        report=None if no_progress else click.echo,
    )
    if result.signal is not None:
        click.echo(f"hpsearch: {result.summary()}", err=True)
        ctx.exit(128 + result.signal)
    counts = _state_counts(study)
    click.echo(f"study {study.study_name!r} in {mask_url(url)}: {counts}")
    click.echo(best_table(best_configs(study.study_name, url)))
    click.echo(_where_to_look(url, study.study_name if not no_mlflow else None))


def _where_to_look(url: str, tracked_study: str | None) -> str:
    """The commands that show the study in a browser (both serve on 127.0.0.1)."""
    from hpsearch.tracking import mlflow_hint

    lines = [f"  optuna-dashboard: hpsearch dashboard --storage {mask_url(url)}"]
    if tracked_study is not None:
        lines.append(f"  {mlflow_hint(study_name=tracked_study)}")
    return "Look at it in a browser:\n" + "\n".join(lines)


def set_torch_threads(threads: int | None) -> None:
    """One torch thread unless told otherwise (--threads, $OMP_NUM_THREADS): the trainers'
    small models run faster on one thread than on many competing ones (bench/threads.py)."""
    import torch

    from_env = os.environ.get("OMP_NUM_THREADS", "").strip()
    count = threads or (int(from_env) if from_env.isdigit() and int(from_env) > 0 else 1)
    torch.set_num_threads(count)


def finished_trials(study: Any) -> int:
    from hpsearch.workers.budget import count_trials

    return count_trials(study).finished


def trials_to_run(
    study: Any, total: int | None, more: int | None, default_total: int | None = None
) -> int | None:
    """Trials still to finish: --trials is the study's total, --more-trials adds to what it has
    now; None means no budget. Both at once is bad input."""
    if total is not None and more is not None:
        raise click.UsageError("give --trials (the study's total) or --more-trials, not both")
    if more is not None:
        return more
    total = total if total is not None else default_total
    if total is None:
        return None
    return max(0, total - finished_trials(study))


def budget_met_line(study: Any, total: int) -> str:
    return (
        f"study {study.study_name!r} already has {finished_trials(study)} finished trials "
        f"(--trials {total} is the study's total): nothing to run; use --more-trials N for more"
    )


def _state_counts(study: Any) -> str:
    from collections import Counter

    counts = Counter(trial.state.name.lower() for trial in study.get_trials(deepcopy=False))
    return ", ".join(f"{count} {state}" for state, count in sorted(counts.items()))


@cli.command()
@click.argument("spec")
@storage_option
@study_name_option
@click.option(
    "--rank-by",
    metavar="EXPR",
    default=None,
    help="Rank all complete feasible trials by this expression, highest first, instead of "
    "taking the Pareto front, e.g. '0.5*val_accuracy - 1e-5*n_params' ('-val_loss': lowest).",
)
@click.option(
    "--where",
    metavar="EXPR",
    default=None,
    help="Keep only trials for which this holds, e.g. \"val_loss < 20 and schedule != 'staged'\".",
)
@click.option("--top", type=click.IntRange(min=1), default=None, help="Keep the first N.")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list instead of a table.")
@quick_option
@click.option(
    "--export",
    type=click.Choice(["yaml"]),
    default=None,
    help="Print the first config as YAML that `hpsearch try --config FILE` re-runs.",
)
def best(
    spec: str,
    storage: str | None,
    study_name: str | None,
    rank_by: str | None,
    where: str | None,
    top: int | None,
    as_json: bool,
    export: str | None,
    quick: bool,
) -> None:
    """Pareto-optimal feasible configs of a study: sampled and effective params (after rule
    backoffs), objective values, MLflow run ids.

    --where / --rank-by use the rules' expression language (README, "Rule conditions") over
    the objective names, final metrics, sampled params and effective_<param>. Reads the store
    only: a missing store or study is an error, never created."""
    from hpsearch.formatting import best_table
    from hpsearch.query import best_configs

    name = _study_name_for(spec, study_name, quick)
    configs = best_configs(name, storage, rank_by=rank_by, where=where, top=top)
    if export:
        if not configs:
            raise HpsearchError(f"study {name!r}: no trial matches; nothing to export")
        from hpsearch.export import export_yaml

        click.echo(export_yaml(configs[0], spec, name, quick=quick), nl=False)
        if len(configs) > 1:
            click.echo(
                f"exported trial {configs[0].trial_number}, the first of {len(configs)}",
                err=True,
            )
    elif as_json:
        click.echo(json.dumps([config.to_dict() for config in configs], indent=2))
    else:
        click.echo(best_table(configs))


@cli.command()
@storage_option
def studies(storage: str | None) -> None:
    """List the studies in the store with trial counts by state (a missing store is an error,
    never created)."""
    from hpsearch.formatting import studies_table
    from hpsearch.query import study_summaries

    click.echo(studies_table(study_summaries(storage)))


@cli.command(name="try")
@click.argument("spec", required=False)
@click.option(
    "--set",
    "assignments",
    multiple=True,
    metavar="KEY=VALUE",
    help="A space param's value (repeatable); others take their default.",
)
@click.option(
    "--config",
    "config_file",
    type=click.Path(dir_okay=False),
    default=None,
    help="A config exported by `hpsearch best --export yaml` (its spec, params and seed).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the outcome as JSON.")
@device_option
@click.option("--seed", type=int, default=None, help="Trainer seed [default: the spec's seed].")
@quick_option
@click.option(
    "--threads",
    type=click.IntRange(min=1),
    default=None,
    help="torch CPU threads [default: $OMP_NUM_THREADS, else 1].",
)
def try_command(
    spec: str | None,
    assignments: tuple[str, ...],
    config_file: str | None,
    as_json: bool,
    device: str,
    seed: int | None,
    threads: int | None,
    quick: bool,
) -> None:
    """One trial of one config, without a store: final metrics, state and rule events.

    A value the trainer rejects is bad input (exit 2); one outside the searched range but
    valid is tried, with a note. Exits 0 whether the trial completes, is pruned by a rule or
    fails."""
    from hpsearch.export import read_config
    from hpsearch.runner import try_config
    from hpsearch.search_spaces import load_spec

    set_torch_threads(threads)
    params = None
    if config_file is not None:
        config = read_config(config_file)
        spec = spec or config.spec
        params = config.params
        seed = config.seed if seed is None else seed
        quick = quick or config.quick
    if spec is None:
        raise click.UsageError("give a SPEC, or --config FILE from `hpsearch best --export yaml`")
    loaded = load_spec(spec, quick=quick)
    outcome = try_config(
        loaded, list(assignments), device=device, seed=seed, params=params, note=_note
    )
    if as_json:
        data = outcome.to_json()
        keys = (
            "state",
            "state_description",
            "reason",
            "params",
            "effective_params",
            "final_metrics",
            "values",
            "constraints",
            "feasible",
            "events",
            "history",
        )
        click.echo(json.dumps({key: data[key] for key in keys}, indent=2))
        return
    click.echo(f"state: {outcome.describe_state()}")
    for name, value in outcome.final_metrics.items():
        click.echo(f"  {name} = {value:.4g}")
    for event in outcome.events:
        click.echo(
            f"  rule {event['rule']} (epoch {event['epoch']}): {event['action']} "
            f"{event['knobs_before']} -> {event['knobs_after']} {event['message']}"
        )


@cli.command()
@storage_option
@click.option(
    "--host",
    default="127.0.0.1",
    show_default=True,
    help="Address to listen on; keep 127.0.0.1 and put an authenticating reverse proxy in "
    "front to share it (README: Browsing a study).",
)
@click.option("--port", type=int, default=8080, show_default=True)
def dashboard(storage: str | None, host: str, port: int) -> None:
    """Serve optuna-dashboard on the study store: each study's note, hpsearch's plots, and the
    feasible Pareto front as its best trials."""
    from hpsearch.dashboard import serve
    from hpsearch.storage import open_storage

    url = storage or default_storage_url()
    click.echo(f"optuna-dashboard for {mask_url(url)} on http://{host}:{port}/")
    serve(open_storage(url, heartbeat=False, create=False), host=host, port=port)


@cli.command()
@click.argument("spec")
@storage_option
@study_name_option
@click.option(
    "-o",
    "--output",
    default="report.html",
    show_default=True,
    type=click.Path(dir_okay=False, writable=True),
    help="The HTML file to write.",
)
@click.option(
    "--png",
    "png_dir",
    default=None,
    type=click.Path(file_okay=False),
    help="Also write each plot as a PNG into this folder (needs chromium).",
)
def report(
    spec: str, storage: str | None, study_name: str | None, output: str, png_dir: str | None
) -> None:
    """Write one self-contained HTML report of a study: note, Pareto table, plots (no server,
    no network needed to open it)."""
    from pathlib import Path

    from hpsearch.query import load_study
    from hpsearch.report import write_report
    from hpsearch.search_spaces import load_spec

    loaded = load_spec(spec)
    url = storage or default_storage_url()
    study = load_study(study_name or loaded.name, url)
    files = write_report(
        study,
        loaded,
        Path(output),
        png_dir=Path(png_dir) if png_dir else None,
        where=mask_url(url),
    )
    click.echo(f"wrote {files.html}")
    for path in files.pngs:
        click.echo(f"wrote {path}")


@cli.command()
@click.argument("spec")
@storage_option
@trials_budget_option
@more_trials_option
@study_name_option
@timeout_option
@device_option
@trial_timeout_option
@no_mlflow_option
@quick_option
@click.pass_context
def worker(
    ctx: click.Context,
    spec: str,
    storage: str | None,
    n_trials: int | None,
    more_trials: int | None,
    study_name: str | None,
    timeout: float | None,
    device: str,
    trial_timeout: float | None,
    no_mlflow: bool,
    quick: bool,
) -> None:
    """One worker of a distributed study: run trials of SPEC until the study-wide budget is met.

    Start any number of workers, on any machines, on one --storage (PostgreSQL, the Redis
    journal, grpc://HOST:PORT of `hpsearch storage-proxy`); the study is created if missing.
    SIGTERM or Ctrl-C fails the running trial, queues it again with the same params, and exits
    with 128 + the signal number."""
    from hpsearch.search_spaces import load_spec
    from hpsearch.workers import ensure_study, run_worker

    _quiet_libraries(track=not no_mlflow)
    url = storage or default_storage_url()
    if more_trials is not None:
        study = ensure_study(load_spec(spec, quick=quick), url, study_name)
        remaining = trials_to_run(study, n_trials, more_trials)
        n_trials = finished_trials(study) + (remaining or 0)
    click.echo(f"worker pid {os.getpid()} on {mask_url(url)}")
    result = run_worker(
        load_spec(spec, quick=quick),
        storage=url,
        n_trials=n_trials,
        study_name=study_name,
        device=device,
        track=not no_mlflow,
        timeout=timeout,
        trial_timeout=trial_timeout,
        report=click.echo,
    )
    click.echo(result.summary())
    if result.signal is not None:
        ctx.exit(128 + result.signal)


@cli.command()
@click.argument("spec")
@click.option(
    "--gpus",
    default=None,
    metavar="IDS",
    help="GPU ids, e.g. 0,1,2,3, or 'all' [default: every visible GPU].",
)
@click.option(
    "--per-gpu",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="Workers per GPU.",
)
@click.option(
    "--cpu-workers",
    type=click.IntRange(min=1),
    default=None,
    metavar="K",
    help="Run K workers on the CPU instead of GPU workers.",
)
@trials_budget_option
@more_trials_option
@storage_option
@study_name_option
@timeout_option
@click.option(
    "--max-restarts",
    type=click.IntRange(min=0),
    default=3,
    show_default=True,
    help="Restarts of a crashed worker, per slot (local) or per actor (ray).",
)
@click.option(
    "--stop-timeout",
    type=click.FloatRange(min=0),
    default=30.0,
    show_default=True,
    help="Seconds a worker gets to stop after Ctrl-C / SIGTERM before it is killed.",
)
@no_mlflow_option
@quick_option
@click.option(
    "--backend",
    type=click.Choice(["local", "slurm", "ray"]),
    default="local",
    show_default=True,
    help="Where the workers run: processes here, a Slurm job array, or Ray actors.",
)
@click.option(
    "--workers",
    type=click.IntRange(min=1),
    default=None,
    metavar="N",
    help="Workers to start (slurm, ray).",
)
@click.option(
    "--gpus-per-worker",
    type=click.FloatRange(min=0),
    default=0.0,
    metavar="G",
    help="GPUs each worker gets from the scheduler (slurm: whole GPUs through gres; ray: "
    "fractions allowed) [default: 0, CPU workers].",
)
@click.option("--partition", default=None, help="Slurm partition of the job array.")
@click.option(
    "--time", "time_limit", default=None, help="Slurm time limit per task, e.g. 04:00:00."
)
@click.option(
    "--sbatch-arg",
    "sbatch_args",
    multiple=True,
    metavar="ARG",
    help="Extra sbatch option, e.g. --sbatch-arg=--account=lab (repeatable).",
)
@click.option(
    "--log-dir",
    type=click.Path(file_okay=False),
    default=None,
    help="Folder of the per-task logs (slurm) [default: hpsearch-logs/STUDY-TIME].",
)
@click.option("--detach", is_flag=True, help="Submit, print the job id and return (slurm).")
@click.option(
    "--address",
    default=None,
    help="Ray cluster to join, e.g. auto or ray://head:10001 [default: start a local one].",
)
@click.pass_context
def launch(
    ctx: click.Context,
    spec: str,
    gpus: str | None,
    per_gpu: int,
    cpu_workers: int | None,
    n_trials: int | None,
    more_trials: int | None,
    storage: str | None,
    study_name: str | None,
    timeout: float | None,
    max_restarts: int,
    stop_timeout: float,
    no_mlflow: bool,
    quick: bool,
    backend: str,
    workers: int | None,
    gpus_per_worker: float,
    partition: str | None,
    time_limit: str | None,
    sbatch_args: tuple[str, ...],
    log_dir: str | None,
    detach: bool,
    address: str | None,
) -> None:
    """Run `hpsearch worker` processes on one study: here (one per GPU slot, supervised), as a
    Slurm job array or as Ray actors (see docs/distributed.md).

    local: each worker sees one GPU (CUDA_VISIBLE_DEVICES); its log lines are prefixed with its
    slot. A crashed worker is restarted (at most --max-restarts times) and its running trial
    re-queued. slurm / ray: --workers N workers, each with --gpus-per-worker GPUs from the
    scheduler; launch prints a progress line and returns when the budget is met (slurm
    --detach: at once, with the job id). The study is created before the workers start.
    Ctrl-C / SIGTERM stops every worker so that no trial is left RUNNING; the interrupted
    trials are queued again."""
    from hpsearch.search_spaces import load_spec
    from hpsearch.workers import ensure_study
    from hpsearch.workers.backends.launch import check_backend_options

    given = [
        name
        for name in ctx.params
        if ctx.get_parameter_source(name) == click.core.ParameterSource.COMMANDLINE
    ]
    check_backend_options(backend, given)
    if backend != "local":
        ctx.exit(
            _launch_on_cluster(
                ctx, spec, storage, study_name, n_trials, timeout, not no_mlflow, quick
            )
        )
    from hpsearch.workers.launcher import (
        Launcher,
        fail_trials_of_dead_workers,
        plan_slots,
        worker_command,
    )

    _quiet_libraries(track=not no_mlflow)
    url = storage or default_storage_url()
    slots = plan_slots(gpus, per_gpu, cpu_workers)
    study = ensure_study(load_spec(spec, quick=quick), url, study_name)
    name = study.study_name
    device = "cpu" if cpu_workers else "auto"
    remaining = trials_to_run(study, n_trials, more_trials)
    if remaining == 0:
        click.echo(budget_met_line(study, n_trials or 0))
        return
    if remaining is not None:
        n_trials = finished_trials(study) + remaining  # the study's total, for every worker

    def command(_slot: Any) -> list[str]:
        return worker_command(
            spec,
            n_trials=n_trials,
            study_name=name,
            device=device,
            track=not no_mlflow,
            timeout=timeout,
            quick=quick,
        )

    def on_dead_worker(pids: list[int]) -> None:
        failed = fail_trials_of_dead_workers(study, pids)
        if failed:
            launcher.log(f"failed and re-queued trial(s) {failed} of dead worker(s) {pids}")

    threads = os.environ.get("OMP_NUM_THREADS") or str(max(1, (os.cpu_count() or 1) // len(slots)))
    environment = {"HPSEARCH_STORAGE": url, "OMP_NUM_THREADS": threads}  # cores shared out
    launcher = Launcher(
        slots,
        command,
        environment=environment,
        max_restarts=max_restarts,
        stop_timeout=stop_timeout,
        on_dead_worker=on_dead_worker,
    )
    budget = f"{n_trials} trials" if n_trials else "no trial budget"
    launcher.log(f"study {name!r} in {mask_url(url)}: {len(slots)} worker(s), {budget}")
    from hpsearch.runner import make_tracker
    from hpsearch.tracking import describe_signal

    with make_tracker(not no_mlflow).tracking(study, load_spec(spec)) as session:
        code = launcher.run()  # then the study's final summary goes to its MLflow run
        if code > 128:
            session.interrupted = f"launch stopped by {describe_signal(code - 128)}"
    launcher.log(f"study {name!r}: {_state_counts(study)}")
    ctx.exit(code)


def _launch_on_cluster(
    ctx: click.Context,
    spec: str,
    storage: str | None,
    study_name: str | None,
    n_trials: int | None,
    timeout: float | None,
    track: bool,
    quick: bool,
) -> int:
    """``launch --backend slurm|ray``: the study is created here, the workers on the engine."""
    from hpsearch.search_spaces import load_spec
    from hpsearch.workers import ensure_study
    from hpsearch.workers.backends.launch import (
        ClusterLaunch,
        check_cluster_options,
        launch_on_cluster,
    )

    params = ctx.params
    check_cluster_options(params["backend"], params["workers"], params["gpus_per_worker"])
    _quiet_libraries(track=track)
    url = storage or default_storage_url()
    launch = ClusterLaunch(
        backend=params["backend"],
        spec=spec,
        study=ensure_study(load_spec(spec, quick=quick), url, study_name),
        storage=url,
        workers=params["workers"],
        gpus_per_worker=params["gpus_per_worker"],
        n_trials=n_trials,
        timeout=timeout,
        track=track,
        quick=quick,
        max_restarts=params["max_restarts"],
        log_dir=Path(params["log_dir"]) if params["log_dir"] else None,
        detach=params["detach"],
        partition=params["partition"],
        time_limit=params["time_limit"],
        sbatch_args=params["sbatch_args"],
        address=params["address"],
    )
    return launch_on_cluster(launch, lambda line: click.echo(f"[launch] {line}"))


@cli.command(name="storage-proxy")
@storage_option
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", type=int, default=13000, show_default=True)
def storage_proxy(storage: str | None, host: str, port: int) -> None:
    """Serve Optuna's gRPC storage proxy in front of --storage (an SQL store).

    Workers then pass --storage grpc://HOST:PORT; only the proxy connects to the database, so
    very many workers do not exhaust its connections. Trials run through the proxy have no
    heartbeat: a killed worker's trial is not failed automatically."""
    from hpsearch.storage import serve_grpc_proxy

    _quiet_libraries(track=False)
    url = storage or default_storage_url()
    click.echo(f"gRPC storage proxy for {mask_url(url)} on {host}:{port}")
    serve_grpc_proxy(url, host=host, port=port)


def _note(line: str) -> None:
    click.echo(f"note: {line}", err=True)


MAX_ERROR_CHARS = 1000


class Terminated(BaseException):
    """SIGTERM outside a trial loop (which handles it itself): stop, one line, exit 143."""


_STOP_SIGNALS = {KeyboardInterrupt: signal.SIGINT, Terminated: signal.SIGTERM}


def _on_sigterm(_signum: int, _frame: Any) -> None:
    raise Terminated()


def deliver_swallowed_stops() -> None:
    """A Ctrl-C (KeyboardInterrupt) or SIGTERM (``Terminated``) that lands while Python runs a
    callback (a weakref callback, a ``__del__``) is printed as "Exception ignored" and dropped
    there: the command would go on as if never stopped (seen once: a worker signalled during
    its start-up ran trials until killed). Such a stop is sent again, once the callback has
    returned, so that it lands in the command's own code. Main thread, whole process."""
    previous = sys.unraisablehook
    if getattr(previous, "delivers_stops", False):
        return  # installed by an earlier ``main`` of this process

    def hook(unraisable: Any) -> None:
        signum = _STOP_SIGNALS.get(type(unraisable.exc_value))
        if signum is None:
            previous(unraisable)
            return
        again = threading.Timer(0.05, os.kill, (os.getpid(), signum))
        again.daemon = True
        again.start()

    hook.delivers_stops = True  # type: ignore[attr-defined]
    sys.unraisablehook = hook


def error_line(text: str) -> str:
    """One line of at most ``MAX_ERROR_CHARS`` characters, passwords of URLs masked."""
    line = " ".join(mask_secrets(text).split())
    if len(line) > MAX_ERROR_CHARS:
        line = line[: MAX_ERROR_CHARS - 30] + f"... ({len(line)} characters)"
    return f"hpsearch: error: {line}"


def main(argv: list[str] | None = None) -> None:
    """Entry point: HpsearchError or a usage error -> one line on stderr, exit code 2;
    Ctrl-C / SIGTERM -> one line, exit 130 / 143 (a running trial is failed and queued again,
    never left RUNNING)."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _on_sigterm)
        deliver_swallowed_stops()
    try:
        code = cli.main(args=argv, prog_name="hpsearch", standalone_mode=False)
    except HpsearchError as error:
        click.echo(error_line(str(error)), err=True)
        sys.exit(2)
    except click.UsageError as error:  # click's 4-line usage text, as one line
        command = error.ctx.command_path if error.ctx is not None else "hpsearch"
        click.echo(error_line(f"{error.format_message()} (see {command} --help)"), err=True)
        sys.exit(2)
    except click.ClickException as error:
        click.echo(error_line(error.format_message()), err=True)
        sys.exit(error.exit_code)
    except (click.exceptions.Abort, KeyboardInterrupt):
        click.echo("hpsearch: stopped by SIGINT", err=True)
        sys.exit(128 + signal.SIGINT)
    except Terminated:
        click.echo("hpsearch: stopped by SIGTERM", err=True)
        sys.exit(128 + signal.SIGTERM)
    sys.exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":
    main()
