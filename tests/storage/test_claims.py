"""Each queued trial is claimed by one worker only, on SQLite too (hpsearch.storage.claims)."""

from __future__ import annotations

import multiprocessing
import random
import threading
from pathlib import Path

import optuna
import pytest
from optuna.storages import RDBStorage
from optuna.trial import TrialState

from hpsearch.storage import open_storage
from hpsearch.storage.claims import SQLiteClaimStorage

QUEUED = 30
CLAIMANTS = 4
ROUNDS = 5


def _queue_trials(url: str) -> list[int]:
    study = optuna.create_study(storage=open_storage(url), study_name="claims")
    for number in range(QUEUED):
        study.enqueue_trial({"x": number})
    return [trial._trial_id for trial in study.get_trials(deepcopy=False)]


def _claim_all(url: str, trial_ids: list[int], seed: int) -> list[int]:
    """The ids this claimant won, trying every queued trial in a random order."""
    storage = open_storage(url)
    order = list(trial_ids)
    random.Random(seed).shuffle(order)
    return [tid for tid in order if storage.set_trial_state_values(tid, TrialState.RUNNING)]


def _claim_into(url: str, trial_ids: list[int], seed: int, won: list[list[int]]) -> None:
    won.append(_claim_all(url, trial_ids, seed))


def _claims_of_processes(url: str, trial_ids: list[int]) -> list[list[int]]:
    context = multiprocessing.get_context("spawn")
    with context.Pool(CLAIMANTS) as pool:
        return pool.starmap(_claim_all, [(url, trial_ids, seed) for seed in range(CLAIMANTS)])


def _claims_of_threads(url: str, trial_ids: list[int]) -> list[list[int]]:
    won: list[list[int]] = []
    threads = [
        threading.Thread(target=_claim_into, args=(url, trial_ids, seed, won))
        for seed in range(CLAIMANTS)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return won


@pytest.mark.parametrize("claimants", [_claims_of_processes, _claims_of_threads])
def test_every_queued_trial_is_claimed_exactly_once(tmp_path: Path, claimants: object) -> None:
    for round_number in range(ROUNDS):  # a race that passes once is not fixed
        url = f"sqlite:///{tmp_path}/round{round_number}.db"
        trial_ids = _queue_trials(url)
        won = claimants(url, trial_ids)  # type: ignore[operator]
        claimed = sorted(tid for ids in won for tid in ids)
        assert claimed == sorted(trial_ids), f"round {round_number}: claims {won}"


def test_sqlite_stores_serialise_claims_and_pickle(tmp_path: Path) -> None:
    import pickle

    storage = open_storage(f"sqlite:///{tmp_path}/store.db")
    assert isinstance(storage, SQLiteClaimStorage) and isinstance(storage, RDBStorage)
    assert isinstance(pickle.loads(pickle.dumps(storage)), SQLiteClaimStorage)
