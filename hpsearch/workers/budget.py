"""The study-wide trial budget shared by every worker of a study.

The budget counts finished trials (COMPLETE + PRUNED) across all workers. A worker asks for a
new trial only while ``finished + running < budget``, and after ``study.ask()`` it checks again
with its own trial counted: if the study is now over budget, the trial is put back in the queue
(WAITING) instead of run. Of any set of trials that all pass that second check, the one checked
last saw all the others RUNNING or finished, so no more than ``budget`` trials ever finish.

A worker checks twice per trial, so the check must not grow with the study: ``BudgetCounter``
reads from an SQL store only the trials past a watermark (every trial below it is finished and
already counted), that is the recent and the unfinished ones.
"""

from __future__ import annotations

import logging
import time
from collections import Counter, deque
from dataclasses import dataclass

import optuna
from optuna.storages import RDBStorage
from optuna.trial import TrialState

from hpsearch.storage.internals import (
    count_states,
    rdb_of,
    storage_of,
    study_id_of,
    trial_id_of,
    trial_states_above,
)

logger = logging.getLogger("hpsearch.workers")
FINISHED_STATES = (TrialState.COMPLETE, TrialState.PRUNED)
COUNTED_STATES = (*FINISHED_STATES, TrialState.RUNNING)
# A trial id the watermark passed must not show up later: ids are drawn when a trial is
# inserted and visible at its commit, so the watermark only passes ids seen this long ago.
SETTLE_S = 10.0


@dataclass(frozen=True)
class BudgetCount:
    """Trials of a study that count against its budget, read from the store."""

    finished: int
    running: int

    @property
    def claimed(self) -> int:
        """Finished trials plus those running now (which may still finish)."""
        return self.finished + self.running


def count_trials(study: optuna.Study) -> BudgetCount:
    """Finished (COMPLETE + PRUNED) and RUNNING trials of the study, across all workers, as
    the store has them now (a full count; ``BudgetCounter`` for repeated checks)."""
    rdb = _rdb_storage(study)
    if rdb is not None:
        counts = count_states(rdb, study_id_of(study), COUNTED_STATES)
    else:
        counts = Counter(t.state for t in study.get_trials(deepcopy=False, states=COUNTED_STATES))
    return _budget_count(counts, finished_before=0)


class BudgetCounter:
    """``count_trials`` for one worker's repeated checks: on an SQL store it reads only the
    trials above its watermark (all trials at or below it are finished and counted)."""

    def __init__(self, study: optuna.Study, settle_s: float | None = None) -> None:
        self.study = study
        self.rdb = _rdb_storage(study)
        self.settle_s = SETTLE_S if settle_s is None else settle_s
        self.watermark = -1  # a trial id
        self.finished_below = 0  # COMPLETE + PRUNED trials with ids <= watermark
        self._seen: deque[tuple[float, int]] = deque()  # (when, highest trial id read)

    def count(self) -> BudgetCount:
        if self.rdb is None:
            return count_trials(self.study)
        rows = trial_states_above(self.rdb, study_id_of(self.study), above=self.watermark)
        count = _budget_count(Counter(state for _, state in rows), self.finished_below)
        self._advance(rows)
        return count

    def _advance(self, rows: list[tuple[int, TrialState]]) -> None:
        """Move the watermark over the leading finished trials read at least ``settle_s`` ago."""
        now = time.monotonic()
        self._seen.append((now, max((trial_id for trial_id, _ in rows), default=self.watermark)))
        settled = self.watermark
        while self._seen and now - self._seen[0][0] >= self.settle_s:
            settled = max(settled, self._seen.popleft()[1])
        for trial_id, state in rows:  # ascending ids
            if trial_id > settled or not state.is_finished():
                break
            self.watermark = trial_id
            self.finished_below += state in FINISHED_STATES


def _budget_count(counts: Counter[TrialState], finished_before: int) -> BudgetCount:
    finished = finished_before + sum(counts[state] for state in FINISHED_STATES)
    return BudgetCount(finished=finished, running=counts[TrialState.RUNNING])


def _rdb_storage(study: optuna.Study) -> RDBStorage | None:
    """The SQL store under the study for the SQL counts, or None (then trials are read)."""
    return rdb_of(storage_of(study))


def release_trial(study: optuna.Study, trial: optuna.Trial) -> None:
    """Put a trial that was asked for but not started back in the queue (WAITING).

    The next ``study.ask()`` of any worker pops it; an enqueued retry keeps its params.

    Two workers can pop the same WAITING trial at once on SQLite (Optuna's pop is not atomic
    there): if the other one has finished it meanwhile, there is nothing to release."""
    try:
        storage_of(study).set_trial_state_values(trial_id_of(trial), TrialState.WAITING)
    except optuna.exceptions.UpdateFinishedTrialError:
        logger.info("trial %d was finished by another worker; nothing to release", trial.number)
