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

import time
from collections import Counter, deque
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import optuna
from optuna.storages import RDBStorage
from optuna.trial import TrialState

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
        counts = _count_in_sql(rdb, study._study_id)
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
        rows = _trial_states(self.rdb, self.study._study_id, above=self.watermark)
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
    """The SQL store under the study (Optuna wraps it in a trial cache), or None."""
    storage = study._storage
    backend = getattr(storage, "_backend", storage)  # optuna.storages._CachedStorage
    return backend if isinstance(backend, RDBStorage) else None


def _count_in_sql(storage: RDBStorage, study_id: int) -> Counter[TrialState]:
    from optuna.storages._rdb import models
    from sqlalchemy import func

    trial = models.TrialModel
    with _session(storage) as session:
        rows = (
            session.query(trial.state, func.count(trial.trial_id))
            .filter(trial.study_id == study_id, trial.state.in_(COUNTED_STATES))
            .group_by(trial.state)
            .all()
        )
    return Counter({state: count for state, count in rows})


@contextmanager
def _session(storage: RDBStorage) -> Iterator[Any]:
    """A read-only session of the store, closed after use."""
    session = storage.scoped_session()
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


def _trial_states(storage: RDBStorage, study_id: int, above: int) -> list[tuple[int, TrialState]]:
    """(trial id, state) of the study's trials with ids above ``above``, ascending."""
    from optuna.storages._rdb import models
    from sqlalchemy import and_

    trial = models.TrialModel
    if above < 0:
        where = trial.study_id == study_id
    else:  # "+ 0": walk the primary key from ``above``, not the study's index (all its trials)
        where = and_(trial.trial_id > above, (trial.study_id + 0) == study_id)
    with _session(storage) as session:
        query = session.query(trial.trial_id, trial.state).filter(where)
        rows = query.order_by(trial.trial_id).all()
    return [(trial_id, state) for trial_id, state in rows]


def release_trial(study: optuna.Study, trial: optuna.Trial) -> None:
    """Put a trial that was asked for but not started back in the queue (WAITING).

    The next ``study.ask()`` of any worker pops it; an enqueued retry keeps its params."""
    study._storage.set_trial_state_values(trial._trial_id, TrialState.WAITING)
