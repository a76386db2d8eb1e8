"""RUNNING trials of dead workers: failed with their reason and retried with the same params.

Two kinds are found, on stores with heartbeats (SQLite, PostgreSQL):

- *stale* trials, whose heartbeat stopped more than the grace period ago (Optuna's own
  notion: ``optuna.storages.fail_stale_trials``), recorded here with a ``fail_reason`` and
  ``failure_class`` = infrastructure, which Optuna's version does not write;
- *orphaned* trials, which never recorded a heartbeat at all: the worker died between
  ``study.ask()`` and its first heartbeat, or a PostgreSQL restart cut the ``ask``'s commit
  after it was made and the worker asked again. Optuna never finds those stale, so each would
  stay RUNNING for ever and hold a slot of the study's budget: every worker would wait for it.
  They are failed once they started more than the grace period ago.

Both are then re-queued by ``retry`` (the store's stale-trial callback: the same retry, and the
same retry limit, for both). The start time of a trial is written by the worker that asked for
it, from its own clock, and the age is measured with this process's clock: the hosts' clocks
must agree to well within the grace period (minutes by default), as NTP keeps them.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from hpsearch._util import quiet_experimental
from hpsearch.objectives.failures import FAILURE_CLASS_ATTR
from hpsearch.storage.internals import (
    backend_of,
    orphan_trial_ids,
    rdb_of,
    stale_trial_ids,
    storage_of,
    study_id_of,
)

STALE_REASON = "heartbeat stopped: the worker died or lost the store"
ORPHAN_REASON = "its worker stopped before the trial's first heartbeat (no heartbeat recorded)"
Retry = Callable[[optuna.Study, FrozenTrial], None]


def fail_stale_trials(study: optuna.Study, retry: Retry) -> list[int]:
    """Fail the trials whose heartbeat stopped, with their reason, and retry each; their
    numbers. Without Optuna's internals, Optuna's public ``fail_stale_trials`` does it (the
    trials then carry no reason). Stores without heartbeats: a no-op."""
    storage = storage_of(study)
    if _grace_s(storage) is None:
        return []
    ids = stale_trial_ids(storage, study_id_of(study))
    if ids is None:
        with quiet_experimental():
            optuna.storages.fail_stale_trials(study)
        return []
    return fail_and_retry(study, ids, STALE_REASON, retry)


def fail_orphaned_trials(study: optuna.Study, retry: Retry) -> list[int]:
    """Fail the RUNNING trials that never recorded a heartbeat and started more than the grace
    period ago, with their reason, and retry each; their numbers. A no-op on stores without
    heartbeats, and when Optuna's internals are not to be used (no public way to tell)."""
    storage = storage_of(study)
    grace = _grace_s(storage)
    rdb = rdb_of(storage)
    if grace is None or rdb is None:
        return []
    orphans = orphan_trial_ids(rdb, study_id_of(study), grace)
    return fail_and_retry(study, orphans, ORPHAN_REASON, retry)


def _grace_s(storage: Any) -> float | None:
    """The store's grace period in seconds, or None when it has no heartbeat."""
    interval = getattr(storage, "get_heartbeat_interval", lambda: None)()
    if interval is None:
        return None
    return float(getattr(backend_of(storage), "grace_period", None) or 2 * interval)


def fail_and_retry(
    study: optuna.Study, trial_ids: Iterable[int], reason: str, retry: Retry
) -> list[int]:
    """Fail each RUNNING trial of ``trial_ids`` (storage ids) with ``reason`` and
    ``failure_class`` infrastructure, then ``retry`` it; the numbers of those it failed (one
    another process finished first is left alone)."""
    storage = storage_of(study)
    failed = []
    for trial_id in trial_ids:
        try:
            storage.set_trial_user_attr(trial_id, "fail_reason", reason)
            storage.set_trial_user_attr(trial_id, FAILURE_CLASS_ATTR, "infrastructure")
            if storage.set_trial_state_values(trial_id, state=TrialState.FAIL):
                failed.append(trial_id)
        except optuna.exceptions.UpdateFinishedTrialError:
            continue  # another worker failed it first
    numbers = []
    for trial_id in failed:
        frozen = copy.deepcopy(storage.get_trial(trial_id))
        retry(study, frozen)
        numbers.append(frozen.number)
    return numbers
