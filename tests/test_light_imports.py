"""``import hpsearch`` and ``hpsearch --help`` load neither torch, Optuna, MLflow nor pydantic,
and importing the package sets nothing (no environment variable, no logging filter)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

HEAVY = ("torch", "optuna", "mlflow", "pydantic", "sqlalchemy", "plotly")


def _modules_after(code: str) -> dict[str, object]:
    probe = (
        "import json, logging, os, sys\n"
        "before = dict(os.environ)\n"
        f"{code}\n"
        "print(json.dumps({'heavy': [m for m in %r if m in sys.modules],\n"
        "  'env': sorted(k for k in os.environ if os.environ.get(k) != before.get(k)),\n"
        "  'filters': len(logging.getLogger('optuna.study._optimize').filters)}))\n" % (HEAVY,)
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, env=os.environ
    )
    return dict(json.loads(result.stdout.strip().splitlines()[-1]))


def test_importing_the_package_loads_nothing_heavy_and_sets_nothing() -> None:
    found = _modules_after("import hpsearch, hpsearch.errors, hpsearch.objectives")
    assert found["env"] == []
    assert found["filters"] == 0
    found = _modules_after("import hpsearch")
    assert found["heavy"] == []


def test_the_command_line_help_loads_nothing_heavy() -> None:
    code = (
        "from click.testing import CliRunner\n"
        "from hpsearch.cli import cli\n"
        "assert CliRunner().invoke(cli, ['--help']).exit_code == 0"
    )
    assert _modules_after(code)["heavy"] == []


def test_listing_the_specs_reads_them_without_loading_the_trainers() -> None:
    code = (
        "from click.testing import CliRunner\n"
        "from hpsearch.cli import cli\n"
        "result = CliRunner().invoke(cli, ['spaces'])\n"
        "assert result.exit_code == 0 and 'cvfp' in result.output, result.output"
    )
    assert _modules_after(code)["heavy"] == ["pydantic"]  # the spec schema, nothing else


def test_a_public_name_loads_its_module_on_first_use() -> None:
    found = _modules_after("import hpsearch\nhpsearch.load_spec")
    assert "pydantic" in found["heavy"]


def test_reading_studies_loads_no_torch() -> None:
    """``hpsearch studies`` / ``best`` read the store: Optuna and SQLAlchemy, never torch
    (1.3 s of the 3.9 s a `studies` of a 10,000-trial study took)."""
    found = _modules_after("import hpsearch.query, hpsearch.objectives.summary")
    assert "optuna" in found["heavy"]
    assert "torch" not in found["heavy"]


def test_a_lazy_package_name_still_resolves_and_a_wrong_one_is_an_attribute_error() -> None:
    import hpsearch.metrics
    import hpsearch.objectives

    assert callable(hpsearch.objectives.build_objective)
    assert callable(hpsearch.metrics.effective_rank)
    with pytest.raises(AttributeError, match="no_such_name"):
        _ = hpsearch.objectives.no_such_name  # type: ignore[attr-defined]


def test_best_of_a_spec_reads_the_spec_without_loading_its_trainer() -> None:
    """``hpsearch best vae`` takes the study name from the spec: the schema is enough, the
    trainer (and torch, 1.7 s) is not imported."""
    code = (
        "import optuna, tempfile\n"
        "url = f'sqlite:///{tempfile.mkdtemp()}/store.db'\n"
        "optuna.logging.set_verbosity(optuna.logging.WARNING)\n"
        "optuna.create_study(study_name='vae', storage=url, directions=['minimize'] * 2)\n"
        "from click.testing import CliRunner\n"
        "from hpsearch.cli import cli\n"
        "result = CliRunner().invoke(cli, ['best', 'vae', '--storage', url])\n"
        "assert result.exit_code == 0, result.output\n"
        "assert 'no feasible Pareto-optimal trial yet' in result.output, result.output"
    )
    assert "torch" not in _modules_after(code)["heavy"]
