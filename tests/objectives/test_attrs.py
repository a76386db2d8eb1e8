from __future__ import annotations

import optuna
import pytest

from hpsearch.objectives.attrs import set_user_attrs
from hpsearch.storage import open_storage


@pytest.mark.parametrize("backend", ["sqlite", "in-memory"])
def test_user_attrs_written_together_read_back_like_set_user_attr(
    backend: str, sqlite_url: str
) -> None:
    storage = open_storage(sqlite_url) if backend == "sqlite" else None
    study = optuna.create_study(storage=storage)
    trial = study.ask()
    set_user_attrs(trial, {"a": 1, "b": {"nested": [1.5, "x"]}, "c": None})
    set_user_attrs(trial, {"a": 2})  # overwrite, as set_user_attr does
    study.tell(trial, 0.0)
    assert study.trials[0].user_attrs == {"a": 2, "b": {"nested": [1.5, "x"]}, "c": None}


def test_finished_trials_refuse_writes_as_optuna_does(sqlite_url: str) -> None:
    study = optuna.create_study(storage=open_storage(sqlite_url))
    trial = study.ask()
    study.tell(trial, 0.0)
    with pytest.raises(RuntimeError):
        set_user_attrs(trial, {"late": 1})


def test_postgresql_takes_the_same_path(postgres_url: str, unique_name: str) -> None:
    study = optuna.create_study(study_name=unique_name, storage=open_storage(postgres_url))
    trial = study.ask()
    set_user_attrs(trial, {"a": [1, 2], "b": "text"})
    set_user_attrs(trial, {"b": "new"})
    study.tell(trial, 1.0)
    assert study.trials[0].user_attrs == {"a": [1, 2], "b": "new"}
