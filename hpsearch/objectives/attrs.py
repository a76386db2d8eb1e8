"""Writing a trial's user attributes in one transaction.

Optuna's ``Trial.set_user_attr`` commits once per key, and each write looks the trial up again;
a trial of hpsearch stores several keys at its start and at its end (worker and run id; effective
params, rule events, metric history, final metrics, ...). On SQLite and PostgreSQL the keys are
written here in one session: one lookup of the trial (refused, as by Optuna, once the trial is
finished) and one multi-row upsert into Optuna's own ``trial_user_attributes`` table, with the
same JSON encoding, so Optuna reads them back as if ``set_user_attr`` had written them. Any
other store, or an Optuna whose internals differ, falls back to one ``set_user_attr`` per key.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import optuna


class _NotBatchable(Exception):
    pass


def set_user_attrs(trial: optuna.Trial, attrs: Mapping[str, Any]) -> None:
    """Store every ``attrs`` item as a user attribute of ``trial``."""
    if not attrs:
        return
    try:
        _upsert_in_one_session(trial, attrs, system=False)
    except _NotBatchable:
        for key, value in attrs.items():
            trial.set_user_attr(key, value)


def set_system_attrs(trial: optuna.Trial, attrs: Mapping[str, Any]) -> None:
    """Store every ``attrs`` item as a system attribute of ``trial`` (not shown by
    optuna-dashboard; read back with ``FrozenTrial.system_attrs``)."""
    if not attrs:
        return
    try:
        _upsert_in_one_session(trial, attrs, system=True)
    except _NotBatchable:
        for key, value in attrs.items():
            trial.storage.set_trial_system_attr(trial._trial_id, key, value)


def _upsert_in_one_session(trial: optuna.Trial, attrs: Mapping[str, Any], *, system: bool) -> None:
    try:
        from optuna.storages._rdb import models
        from optuna.storages._rdb.storage import RDBStorage, _create_scoped_session
        from sqlalchemy.dialects import postgresql, sqlite
    except ImportError:
        raise _NotBatchable from None
    backend = getattr(trial.storage, "_backend", trial.storage)
    trial_id = getattr(trial, "_trial_id", None)
    if not isinstance(backend, RDBStorage) or trial_id is None:
        raise _NotBatchable
    dialects = {"sqlite": sqlite, "postgresql": postgresql}
    dialect = dialects.get(backend.engine.name)
    if dialect is None:
        raise _NotBatchable
    table = models.TrialSystemAttributeModel if system else models.TrialUserAttributeModel
    rows = [
        {"trial_id": trial_id, "key": key, "value_json": json.dumps(value)}
        for key, value in attrs.items()
    ]
    insert = dialect.insert(table).values(rows)
    upsert = insert.on_conflict_do_update(
        index_elements=[table.trial_id, table.key],
        set_={"value_json": insert.excluded.value_json},
    )
    with _create_scoped_session(backend.scoped_session, True) as session:
        stored = models.TrialModel.find_or_raise_by_id(trial_id, session)
        backend.check_trial_is_updatable(trial_id, stored.state)  # type: ignore[arg-type]
        session.execute(upsert)
