"""The ``hpsearch`` command.

Bad input (a spec, a ``--set``, a study name, a storage URL) is one line on stderr naming the
problem and the fix, exit code 2, and nothing written to the store.
"""

from __future__ import annotations

import json
import logging
import sys
from typing import Any

import click

from hpsearch.errors import HpsearchError, SpecError
from hpsearch.formatting import best_table, studies_table, table
from hpsearch.query import best_configs, study_summaries
from hpsearch.search_spaces import load_spec, packaged_spec_names
from hpsearch.storage import default_storage_url, mask_url

STORAGE_HELP = "Study store URL [default: $HPSEARCH_STORAGE, else sqlite:///hpsearch.db]."
storage_option = click.option("--storage", default=None, metavar="URL", help=STORAGE_HELP)
study_name_option = click.option(
    "--study-name", default=None, help="Study name [default: the spec's name]."
)


def _quiet_libraries() -> None:
    import mlflow  # noqa: F401  (configures its loggers on import; we quiet them after)
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    for name in ("alembic", "mlflow"):
        logging.getLogger(name).setLevel(logging.WARNING)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")


def _study_name_for(spec_argument: str, study_name: str | None) -> str:
    """--study-name, else the spec's name; a name that is no spec is taken as a study name."""
    if study_name:
        return study_name
    try:
        return load_spec(spec_argument).name
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
    rows = []
    for name in packaged_spec_names():
        spec = load_spec(name)
        objectives = ", ".join(spec.objective_names)
        rows.append([name, spec.trainer, spec.epochs, objectives, spec.description])
    click.echo(table(["spec", "trainer", "epochs", "objectives", "description"], rows))


@cli.command()
@click.argument("spec")
@click.option(
    "--trials",
    "n_trials",
    type=click.IntRange(min=1),
    default=20,
    show_default=True,
    help="Trials to run in this process.",
)
@storage_option
@study_name_option
@click.option("--timeout", type=click.FloatRange(min=0), default=None, help="Stop after seconds.")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N.")
@click.option("--no-mlflow", is_flag=True, help="Do not track trials in MLflow.")
@click.option("--no-progress", is_flag=True, help="No progress bar.")
def run(
    spec: str,
    n_trials: int,
    storage: str | None,
    study_name: str | None,
    timeout: float | None,
    device: str,
    no_mlflow: bool,
    no_progress: bool,
) -> None:
    """Run trials of SPEC in this process, then print the Pareto front."""
    from hpsearch.runner import run as run_study

    _quiet_libraries()
    url = storage or default_storage_url()
    study = run_study(
        spec,
        n_trials,
        storage=url,
        study_name=study_name,
        track=not no_mlflow,
        device=device,
        timeout=timeout,
        show_progress_bar=not no_progress,
    )
    counts = _state_counts(study)
    click.echo(f"study {study.study_name!r} in {mask_url(url)}: {counts}")
    click.echo(best_table(best_configs(study.study_name, url)))


def _state_counts(study: Any) -> str:
    from collections import Counter

    counts = Counter(trial.state.name.lower() for trial in study.get_trials(deepcopy=False))
    return ", ".join(f"{count} {state}" for state, count in sorted(counts.items()))


@cli.command()
@click.argument("spec")
@storage_option
@study_name_option
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list instead of a table.")
def best(spec: str, storage: str | None, study_name: str | None, as_json: bool) -> None:
    """Pareto-optimal feasible configs of a study, with effective params and MLflow run ids."""
    configs = best_configs(_study_name_for(spec, study_name), storage)
    if as_json:
        click.echo(json.dumps([config.to_dict() for config in configs], indent=2))
    else:
        click.echo(best_table(configs))


@cli.command()
@storage_option
def studies(storage: str | None) -> None:
    """List the studies in the store with trial counts by state."""
    click.echo(studies_table(study_summaries(storage)))


@cli.command(name="try")
@click.argument("spec")
@click.option(
    "--set",
    "assignments",
    multiple=True,
    metavar="KEY=VALUE",
    help="A space param's value (repeatable); others take their default.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the outcome as JSON.")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N.")
@click.option("--seed", type=int, default=None, help="Trainer seed [default: the spec's seed].")
def try_command(
    spec: str, assignments: tuple[str, ...], as_json: bool, device: str, seed: int | None
) -> None:
    """One trial of one config, without a store: final metrics, state and rule events.

    Exits 0 whether the trial completes, is pruned by a rule or fails."""
    from hpsearch.runner import try_config

    outcome = try_config(spec, list(assignments), device=device, seed=seed)
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
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", type=int, default=8080, show_default=True)
def dashboard(storage: str | None, host: str, port: int) -> None:
    """Serve optuna-dashboard on the study store (objective names are set by hpsearch)."""
    from optuna_dashboard import run_server

    from hpsearch.storage import open_storage

    url = storage or default_storage_url()
    click.echo(f"optuna-dashboard for {mask_url(url)} on http://{host}:{port}/")
    run_server(open_storage(url, heartbeat=False), host=host, port=port)


def main(argv: list[str] | None = None) -> None:
    """Entry point: HpsearchError -> one line on stderr, exit code 2."""
    try:
        code = cli.main(args=argv, prog_name="hpsearch", standalone_mode=False)
    except HpsearchError as error:
        click.echo(f"hpsearch: error: {error}", err=True)
        sys.exit(2)
    except click.ClickException as error:
        error.show()
        sys.exit(error.exit_code)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    sys.exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":
    main()
