"""The retry of a failed trial: a new WAITING trial with the same params, and none of the
failed run's own attributes."""

from __future__ import annotations

import copy

import optuna
from optuna.storages import RetryHeartbeatStaleTrialCallback
from optuna.trial import FrozenTrial


class RetrySameParams(RetryHeartbeatStaleTrialCallback):
    """Optuna's retry (the same params; ``failed_trial`` and ``retry_history`` in its system
    attrs; at most ``max_retry`` retries of one original trial) without the failed trial's user
    attrs, which Optuna copies. Those describe the failed run: kept, a retry claimed by another
    worker would name the dead worker in ``worker`` until its objective starts (the launchers
    fail a dead worker's RUNNING trials by that attr, and a test requeueing the task a trial runs
    on would pick the wrong task), and a retry that completes would still carry the failure's
    ``fail_reason``, ``failure_class`` and ``mlflow_run_id``."""

    def __call__(self, study: optuna.Study, trial: FrozenTrial) -> None:
        fresh = copy.copy(trial)
        fresh.user_attrs = {}
        super().__call__(study, fresh)
