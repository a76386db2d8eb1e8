"""Writing a trial's user attributes in one transaction.

Optuna's ``Trial.set_user_attr`` commits once per key; a trial of hpsearch stores several keys
at its end (effective params, rule events, metric history, final metrics, worker, run id), and
on an RDB store each commit costs a round trip and a sync. For RDB stores the keys are written
in one session here (through ``RDBStorage``'s own per-key writer, so the rows are exactly those
``set_user_attr`` writes); any other store, or an Optuna whose internals differ, falls back to
one ``set_user_attr`` per key.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import optuna


def set_user_attrs(trial: optuna.Trial, attrs: Mapping[str, Any]) -> None:
    """Store every ``attrs`` item as a user attribute of ``trial``."""
    if not attrs:
        return
    try:
        _set_in_one_rdb_session(trial, attrs)
    except _NotBatchable:
        for key, value in attrs.items():
            trial.set_user_attr(key, value)


class _NotBatchable(Exception):
    pass


def _set_in_one_rdb_session(trial: optuna.Trial, attrs: Mapping[str, Any]) -> None:
    try:
        from optuna.storages._rdb import models
        from optuna.storages._rdb.storage import RDBStorage, _create_scoped_session
    except ImportError:
        raise _NotBatchable from None
    backend = getattr(trial.storage, "_backend", trial.storage)
    writer = getattr(backend, "_set_trial_attr_without_commit", None)
    trial_id = getattr(trial, "_trial_id", None)
    if not isinstance(backend, RDBStorage) or writer is None or trial_id is None:
        raise _NotBatchable
    with _create_scoped_session(backend.scoped_session, True) as session:
        for key, value in attrs.items():
            writer(session, models.TrialUserAttributeModel, trial_id, key, value)
