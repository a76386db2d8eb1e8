"""pareto-asha inside real studies: toy trainer, SQLite, PostgreSQL and a journal file."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import optuna
import pytest
import sqlalchemy as sa
from toy_spec import toy_spec

import hpsearch
from hpsearch.objectives import build_objective
from hpsearch.pruners.pareto_asha import ParetoAshaPruner
from hpsearch.pruners.rung_store import RUNG_TABLE, SqlRungStore
from hpsearch.search_spaces import StudySpec, spec_from_dict
from hpsearch.storage import open_storage
from hpsearch.tracking import Tracker, TrialRun

COMPLETE, PRUNED = optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED
PARETO_ASHA = {"name": "pareto-asha", "rungs": [1, 2], "eta": 2, "reference_point": [0.5, 0.5]}


def mo_spec(sampler: str = "tpe", **changes: Any) -> StudySpec:
    changes.setdefault("pruner", PARETO_ASHA)
    return spec_from_dict(toy_spec(epochs=4, sampler={"name": sampler, "seed": 2}, **changes))


def run_study(spec: StudySpec, url: str, n_trials: int, name: str | None = None) -> optuna.Study:
    return hpsearch.run(spec, n_trials, storage=url, study_name=name, track=False)


def verdicts(study: optuna.Study) -> list[tuple[str, int | None, int | None]]:
    return [
        (t.state.name, t.user_attrs.get("pruned_rung"), t.user_attrs.get("pruned_rank"))
        for t in study.trials
    ]


@pytest.mark.parametrize("sampler", ["tpe", "nsga2", "gp"])
def test_pruned_trials_end_pruned_with_rung_and_rank_and_the_sampler_goes_on(
    sqlite_url: str, sampler: str
) -> None:
    study = run_study(mo_spec(sampler), sqlite_url, 12)
    assert len(study.trials) == 12
    pruned = [t for t in study.trials if t.state == PRUNED]
    assert pruned and any(t.state == COMPLETE for t in study.trials)
    for trial in pruned:
        attrs = trial.user_attrs
        last = trial.system_attrs["hpsearch:rung_decisions"][-1]
        assert not last["proceed"] and last["rank"] > last["keep"]
        assert (attrs["pruned_rung"], attrs["pruned_rank"]) == (last["rung"], last["rank"])
        assert attrs["epochs_run"] == attrs["pruned_rung"]
        assert attrs["prune_reason"].startswith(f"pruner pareto-asha at epoch {last['rung']}:")
        assert attrs["state_description"] == "pruned by pruner pareto-asha"
        assert attrs["stop"] == {
            "by": "pareto-asha",
            "name": "pareto-asha",
            "epoch": last["rung"],
            "message": attrs["prune_reason"].split(": ", 1)[1],
        }
        assert set(attrs["intermediate_objectives"]) == {str(e) for e in range(1, last["rung"] + 1)}
    assert len({(t.params["x"], t.params["y"]) for t in study.trials}) == 12


def test_epoch_vectors_are_stored_for_every_epoch(sqlite_url: str) -> None:
    trial = run_study(mo_spec(), sqlite_url, 1).trials[0]
    vectors = trial.user_attrs["intermediate_objectives"]
    assert list(vectors) == ["1", "2", "3", "4"]
    loss = vectors["2"]["values"][0]
    assert loss > trial.values[0]  # the toy loss falls every epoch
    assert vectors["2"]["constraints"] == [pytest.approx(loss - 0.2)]
    assert vectors["4"]["values"] == pytest.approx(trial.values)


def test_the_rung_table_holds_one_row_per_trial_and_rung(sqlite_url: str) -> None:
    study = run_study(mo_spec(), sqlite_url, 6)
    reached = sum(len(t.system_attrs["hpsearch:rung_decisions"]) for t in study.trials)
    store = SqlRungStore(sa.create_engine(sqlite_url))
    with store.engine.connect() as connection:
        rows = connection.execute(sa.select(RUNG_TABLE.c.rung, RUNG_TABLE.c.trial_number)).all()
    assert len(rows) == reached
    assert {rung for rung, _ in rows} <= {1, 2}


def test_postgresql_and_a_journal_file_decide_as_sqlite_does(
    sqlite_url: str, postgres_url: str, unique_name: str, tmp_path: Path
) -> None:
    spec = mo_spec()
    expected = verdicts(run_study(spec, sqlite_url, 8))
    assert any(state == "PRUNED" for state, _, _ in expected)
    assert verdicts(run_study(spec, postgres_url, 8, unique_name)) == expected
    journal = f"journal:///{tmp_path / 'studies.log'}"
    assert verdicts(run_study(spec, journal, 8)) == expected  # the user-attr fallback
    optuna.delete_study(study_name=unique_name, storage=open_storage(postgres_url))


def test_a_single_objective_spec_can_use_pareto_asha_and_still_reports(sqlite_url: str) -> None:
    spec = mo_spec(
        objectives=[{"metric": "loss", "direction": "minimize"}],
        pruner={"name": "pareto-asha", "rungs": [1, 2], "eta": 2},
    )
    study = run_study(spec, sqlite_url, 8)
    assert any(t.state == PRUNED for t in study.trials)
    first = study.trials[0]
    assert first.intermediate_values == pytest.approx(
        {int(e): v["values"][0] for e, v in first.user_attrs["intermediate_objectives"].items()}
    )
    assert "study_hypervolume" not in first.user_attrs


class RecordingRun(TrialRun):
    def __init__(self, log: list[tuple[int, dict[str, float]]]) -> None:
        self.log = log

    def log_epoch(self, epoch: int, metrics: Mapping[str, float]) -> None:
        self.log.append((epoch, dict(metrics)))

    def log_events(self, events: Sequence[Mapping[str, Any]]) -> None:
        pass

    def finish(self, *args: Any, **kwargs: Any) -> None:
        pass


class RecordingTracker(Tracker):
    def __init__(self) -> None:
        self.log: list[tuple[int, dict[str, float]]] = []

    def start_trial(self, *args: Any) -> TrialRun:
        return RecordingRun(self.log)


def test_the_study_hypervolume_is_stored_on_each_trial_and_logged(sqlite_url: str) -> None:
    spec = mo_spec(constraints=[])
    tracker = RecordingTracker()
    study = hpsearch.create_study(spec, sqlite_url)
    study.optimize(build_objective(spec, tracker), n_trials=6)
    volumes = [t.user_attrs["study_hypervolume"] for t in study.trials]
    assert volumes == sorted(volumes) and volumes[-1] > 0  # fixed reference: never shrinks
    assert study.user_attrs["hypervolume_reference"] == [0.5, 0.5]
    logged = {step: m["study_hypervolume"] for step, m in tracker.log if "study_hypervolume" in m}
    assert logged == {
        t.number: pytest.approx(v) for t, v in zip(study.trials, volumes, strict=True)
    }


def test_a_failing_rung_store_lets_the_trial_go_on(
    sqlite_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*args: Any) -> None:
        raise RuntimeError("store down")

    monkeypatch.setattr(ParetoAshaPruner, "judge", broken)
    study = run_study(mo_spec(), sqlite_url, 2)
    assert [t.state for t in study.trials] == [COMPLETE, COMPLETE]
