"""``hpsearch studies`` counts a study's failed trials by failure class, on SQL stores (one
grouped query) and on stores without SQL (the failed trials are read)."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner
from optuna.trial import TrialState
from toy_spec import toy_spec

from hpsearch.cli import cli
from hpsearch.query import study_summaries
from hpsearch.runner import create_study
from hpsearch.search_spaces import spec_from_dict


@pytest.mark.parametrize("kind", ["sqlite", "journal"])
def test_failed_trials_are_counted_by_class(kind: str, tmp_path: Path) -> None:
    url = (
        f"sqlite:///{tmp_path / 's.db'}" if kind == "sqlite" else f"journal://{tmp_path / 'j.log'}"
    )
    study = create_study(spec_from_dict(toy_spec(name="fails")), url, "fails")
    for failure_class in ("trainer_error", "trainer_error", "infrastructure", None):
        trial = study.ask()
        if failure_class is not None:
            trial.set_user_attr("failure_class", failure_class)
        study.tell(trial, state=TrialState.FAIL)
    study.tell(study.ask(), [0.1, 0.0])
    [summary] = study_summaries(url)
    assert summary.failures == {"infrastructure": 1, "trainer_error": 2, "unknown": 1}
    output = CliRunner().invoke(cli, ["studies", "--storage", url]).output
    assert "infrastructure 1, trainer_error 2, unknown 1" in output
