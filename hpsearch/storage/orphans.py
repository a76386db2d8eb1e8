"""RUNNING trials that never recorded a heartbeat: failed after the grace period and retried.

Optuna's ``fail_stale_trials`` looks only at trials whose heartbeat is too old; a trial whose
worker died between ``study.ask()`` and its first heartbeat (or whose ``ask`` was committed by a
PostgreSQL server that then restarted, so the worker asked again) has no heartbeat row at all,
stays RUNNING for ever and holds a slot of the study's budget: every worker would wait for it.
Such a trial is failed here once it started more than the grace period ago, with a
``fail_reason``, and re-queued with the same params by the store's stale-trial callback (the
same retry, and the same retry limit, as a trial whose heartbeat stopped).

The start time of a trial is written by the worker that asked for it, from its own clock, so
the age is measured with this process's clock: clocks of different hosts must agree to well
within the grace period (minutes by default), as NTP keeps them.
"""

from __future__ import annotations

import copy
import warnings
from typing import Any

import optuna
from optuna.trial import TrialState

from hpsearch.storage.internals import orphan_trial_ids, rdb_of, storage_of, study_id_of

ORPHAN_REASON = "its worker stopped before the trial's first heartbeat (no heartbeat recorded)"


def fail_orphaned_trials(study: optuna.Study) -> list[int]:
    """Fail and re-queue the study's RUNNING trials with no heartbeat row that started more
    than the grace period ago; their numbers. A no-op on stores without heartbeats."""
    storage = storage_of(study)
    rdb = rdb_of(storage)
    interval = rdb.get_heartbeat_interval() if rdb is not None else None
    if rdb is None or interval is None:
        return []
    grace = rdb.grace_period or 2 * interval
    failed = []
    for trial_id in orphan_trial_ids(rdb, study_id_of(study), grace):
        try:
            storage.set_trial_user_attr(trial_id, "fail_reason", ORPHAN_REASON)
            if storage.set_trial_state_values(trial_id, state=TrialState.FAIL):
                failed.append(trial_id)
        except optuna.exceptions.UpdateFinishedTrialError:
            pass  # another worker failed it first
    return [_retry(study, storage, trial_id) for trial_id in failed]


def _retry(study: optuna.Study, storage: Any, trial_id: int) -> int:
    frozen = copy.deepcopy(storage.get_trial(trial_id))
    callback = storage.get_heartbeat_stale_trial_callback()
    if callback is not None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            callback(study, frozen)
    return int(frozen.number)
