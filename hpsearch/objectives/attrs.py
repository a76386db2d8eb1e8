"""Writing a trial's user attributes in one transaction.

Optuna's ``Trial.set_user_attr`` commits once per key, and each write looks the trial up again;
a trial of hpsearch stores several keys at its start and at its end (worker and run id; effective
params, rule events, metric history, final metrics, ...). On SQLite and PostgreSQL the keys are
written here in one session: one lookup of the trial (refused, as by Optuna, once the trial is
finished) and one multi-row upsert into Optuna's own ``trial_user_attributes`` table, with the
same JSON encoding, so Optuna reads them back as if ``set_user_attr`` had written them. Any
other store, or an Optuna whose internals differ (``hpsearch.storage.internals``), falls back
to one ``set_user_attr`` per key.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import optuna

from hpsearch.storage.internals import set_trial_system_attr, upsert_trial_attrs, upsert_user_attrs


def set_user_attrs(trial: optuna.Trial, attrs: Mapping[str, Any]) -> None:
    """Store every ``attrs`` item as a user attribute of ``trial``: in one transaction on
    SQLite and PostgreSQL, else one by one."""
    if not attrs:
        return
    if not upsert_user_attrs(trial, attrs):
        for key, value in attrs.items():
            trial.set_user_attr(key, value)


def set_system_attrs(trial: optuna.Trial, attrs: Mapping[str, Any]) -> None:
    """Store every ``attrs`` item as a system attribute of ``trial`` (not shown by
    optuna-dashboard; read back with ``FrozenTrial.system_attrs``), in one transaction on
    SQLite and PostgreSQL, else one by one."""
    if not attrs:
        return
    if not upsert_trial_attrs(trial, attrs, system=True):
        for key, value in attrs.items():
            set_trial_system_attr(trial, key, value)
