"""Distributed workers (docs/design.md, Workers): one worker with the study-wide budget, and a
launcher that supervises one worker process per GPU slot."""

from __future__ import annotations

from hpsearch.workers.budget import BudgetCount, BudgetCounter, count_trials
from hpsearch.workers.worker import Worker, WorkerError, WorkerResult, ensure_study, run_worker

__all__ = [
    "BudgetCount",
    "BudgetCounter",
    "Worker",
    "WorkerError",
    "WorkerResult",
    "count_trials",
    "ensure_study",
    "run_worker",
]
