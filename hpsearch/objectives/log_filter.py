"""One warning line per failed trial instead of Optuna's traceback.

A trial that hpsearch fails on purpose (``TrialFailed``: a trainer crash, a bad param, a NaN)
already has its reason stored on the trial; the traceback of the re-raise adds nothing. The
filter keeps Optuna's warning (trial number, params, reason), drops its traceback, and drops
the redundant "failed with value None." line that follows it. Other errors keep their traceback.
"""

from __future__ import annotations

import logging

from hpsearch.storage.internals import OPTUNA_TRIAL_LOGGER


class FailedTrialFilter(logging.Filter):
    def __init__(self, failure_type: type[BaseException]) -> None:
        super().__init__()
        self.failure_type = failure_type

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and isinstance(record.exc_info[1], self.failure_type):
            record.exc_info = None
            record.exc_text = None
        return not record.getMessage().endswith("failed with value None.")


def install_failed_trial_filter(failure_type: type[BaseException]) -> None:
    """Attach the filter to Optuna's trial logger once."""
    logger = logging.getLogger(OPTUNA_TRIAL_LOGGER)
    if not any(isinstance(f, FailedTrialFilter) for f in logger.filters):
        logger.addFilter(FailedTrialFilter(failure_type))
