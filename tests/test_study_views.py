"""The study note, the stored figures and the typed stop record, without a browser."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest
from toy_spec import toy_spec

import hpsearch
from hpsearch.dashboard import FigureRefresher, describe_study, stored_spec
from hpsearch.dashboard.note import rule_in_words, study_note
from hpsearch.objectives.stop import StopReason, stop_of
from hpsearch.pruners.declarative import RuleConfig
from hpsearch.query import best_configs, study_summaries
from hpsearch.search_spaces import SPEC_ATTR, spec_from_dict
from hpsearch.visualization import study_figures

RULE = {
    "name": "slow-decay",
    "when": "loss > 0.08",
    "then": {"add": {"decay": -0.1}},
    "bounds": {"decay": [0.3, 1.0]},
}


@pytest.fixture(scope="module")
def url(tmp_path_factory: pytest.TempPathFactory) -> str:
    return f"sqlite:///{tmp_path_factory.mktemp('views') / 'views.db'}"


@pytest.fixture(scope="module")
def study(url: str) -> optuna.Study:
    spec = spec_from_dict(
        toy_spec(rules=[RULE], pruner={"name": "pareto-asha", "rungs": [1, 2], "eta": 2})
    )
    return hpsearch.run(spec, 10, storage=url, track=False)


def test_rules_read_as_words() -> None:
    rule = RuleConfig.model_validate(
        {
            "name": "free-bits-down",
            "when": "penalty_reduction > 70",
            "for_epochs": 3,
            "then": {"add": {"free_bits": -0.005}},
        }
    )
    assert rule_in_words(rule) == (
        "**free-bits-down**: if penalty_reduction > 70 for 3 epochs: free_bits - 0.005"
    )
    abort = RuleConfig.model_validate({"name": "nan", "when": "loss > 1e9", "then": "abort"})
    assert rule_in_words(abort) == "**nan**: if loss > 1e9: stop the trial (PRUNED)"


def test_the_note_of_a_packaged_spec_names_objectives_constraints_space_and_presets() -> None:
    note = study_note(hpsearch.load_spec("vae"))
    assert "| val_recon | val_recon | minimize |" in note
    assert "- `penalty_reduction >= 20`" in note
    assert "| free_bits | float | 0.005 - 0.1 | yes | 0.02 |" in note
    assert "preset **free-bits-health**" in note
    assert "hpsearch run vae.yaml --study-name vae" in note


def test_the_note_is_rewritten_only_when_the_spec_changes(study: optuna.Study) -> None:
    from optuna_dashboard._note import get_note_from_system_attrs

    spec = spec_from_dict(
        toy_spec(rules=[RULE], pruner={"name": "pareto-asha", "rungs": [1, 2], "eta": 2})
    )
    spec._source = "<spec>"
    assert not describe_study(study, spec)  # written by the run already
    changed = spec_from_dict(toy_spec(description="now with a description"))
    assert describe_study(study, changed)
    attrs = study._storage.get_study_system_attrs(study._study_id)
    assert "now with a description" in get_note_from_system_attrs(attrs, None)["body"]
    assert stored_spec(study)["name"] == "toy"  # the spec the study was created from
    assert describe_study(study, spec)  # back, for the other tests


def test_the_run_saved_every_figure_and_pruned_trials_are_plotted(study: optuna.Study) -> None:
    from optuna_dashboard._custom_plot_data import get_plotly_graph_objects

    attrs = study._storage.get_study_system_attrs(study._study_id)
    assert set(get_plotly_graph_objects(attrs)) >= {"pareto_front", "pruning", "best_configs"}
    spec = spec_from_dict(
        toy_spec(rules=[RULE], pruner={"name": "pareto-asha", "rungs": [1, 2], "eta": 2})
    )
    figures = study_figures(study, spec)
    pruned = [t.number for t in study.trials if t.state.name == "PRUNED"]
    assert pruned
    (trace,) = [t for t in figures["pareto_front"].data if t.name.startswith("pruned")]
    assert sorted(int(text.split()[1].rstrip(":")) for text in trace.text) == pruned
    epochs = {t.name.split(" (")[0]: list(t.y) for t in figures["pruning"].data}
    assert epochs["pruner pareto-asha"] == [
        t.user_attrs["epochs_run"] for t in study.trials if t.state.name == "PRUNED"
    ]


def test_best_configs_name_constraints_and_keep_machine_rule_events(
    study: optuna.Study, url: str
) -> None:
    configs = best_configs(study.study_name, url)
    assert configs
    for config in configs:
        assert list(config.constraints) == ["loss <= 0.2"]
        assert config.constraints["loss <= 0.2"] <= 0
        assert all(isinstance(event, dict) for event in config.rule_events)
    (summary,) = study_summaries(url)
    assert summary.counts == {
        state: sum(t.state.name == state for t in study.trials)
        for state in ("COMPLETE", "PRUNED")
        if any(t.state.name == state for t in study.trials)
    }


def test_the_refresher_saves_at_most_once_per_interval(monkeypatch: pytest.MonkeyPatch) -> None:
    saved: list[float] = []
    now = [0.0]
    monkeypatch.setattr("hpsearch.dashboard.save_figures", lambda *a: saved.append(now[0]))
    monkeypatch.setattr("hpsearch.dashboard.time.monotonic", lambda: now[0])
    refresher = FigureRefresher(spec_from_dict(toy_spec()), interval=10.0)
    study = optuna.create_study(directions=["minimize", "minimize"])
    for second in (100.0, 101.0, 102.0, 111.0, 112.0):
        now[0] = second
        refresher(study, None)
    assert saved == [100.0, 111.0]  # at most once per 10 s
    refresher.flush(study)
    assert len(saved) == 3  # the end of the run saves what is pending
    refresher.flush(study)
    assert len(saved) == 3  # nothing pending


def test_a_stop_record_round_trips_and_reads_as_one_line() -> None:
    reason = StopReason("pareto-asha", "pareto-asha", 3, "rank 4 of 5 at rung 3")
    assert reason.text() == "pruner pareto-asha at epoch 3: rank 4 of 5 at rung 3"
    assert stop_of({"stop": reason.to_dict()}) == reason
    assert stop_of({"stop": {"by": "nobody"}}) is None
    assert StopReason("rule", "kl", 7, "collapse").state == "PRUNED"
    assert StopReason("failure", "RuntimeError", 2, "RuntimeError: x").text() == "RuntimeError: x"


def test_the_dashboard_reads_a_finished_trial_from_sql_once(
    tmp_path: object, monkeypatch: pytest.MonkeyPatch
) -> None:
    """optuna-dashboard re-reads a study's trials whenever its own 10 s cache expires; served
    behind Optuna's trial cache, a finished trial comes from the cache, not from SQL again: a
    param deleted in SQL after the first read still shows."""
    import optuna_dashboard
    import sqlalchemy as sa

    from hpsearch.dashboard import serve
    from hpsearch.storage import open_storage

    url = f"sqlite:///{tmp_path}/cache.db"
    study = optuna.create_study(study_name="cached", storage=open_storage(url))
    study.optimize(lambda trial: trial.suggest_float("x", 0, 1), n_trials=3)
    served: list[optuna.storages.BaseStorage] = []
    monkeypatch.setattr(optuna_dashboard, "run_server", lambda storage, **_: served.append(storage))
    serve(open_storage(url, heartbeat=False, create=False))
    storage = served[0]
    study_id = storage.get_study_id_from_name("cached")
    assert [set(t.params) for t in storage.get_all_trials(study_id)] == [{"x"}] * 3
    with sa.create_engine(url).begin() as connection:
        connection.execute(sa.text("DELETE FROM trial_params"))
    assert [set(t.params) for t in storage.get_all_trials(study_id)] == [{"x"}] * 3


def test_the_note_of_a_spec_built_in_python_says_how_to_run_it_again(tmp_path: Path) -> None:
    spec = spec_from_dict(toy_spec())
    note = study_note(spec, "built")
    assert "<spec>" not in note and "spec built in Python" in note
    url = f"sqlite:///{tmp_path / 'store.db'}"
    stored = optuna.create_study(study_name="built", storage=url)
    stored.set_user_attr(SPEC_ATTR, spec.model_dump(mode="json"))
    code = note.split("```python\n")[1].split("```")[0].replace("<URL>", url)
    *rebuild, run_line = code.strip().splitlines()
    assert run_line == f'hpsearch.run(spec, study_name="built", storage="{url}")'
    names: dict[str, object] = {}
    exec("\n".join(rebuild), names)  # the note's code, less the run itself
    assert names["spec"] == spec


def test_serve_warns_when_optuna_dashboard_has_no_front_to_override(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    import optuna_dashboard
    from optuna_dashboard import _app

    from hpsearch.dashboard import serve, use_feasible_front

    assert use_feasible_front()  # the installed optuna-dashboard: overridden
    monkeypatch.delattr(_app, "get_pareto_front_trials")
    served: list[object] = []
    monkeypatch.setattr(optuna_dashboard, "run_server", lambda *a, **k: served.append(a))
    serve(optuna.storages.InMemoryStorage(), port=0)
    assert served  # served all the same
    assert "its Best Trials may list infeasible trials" in caplog.text
