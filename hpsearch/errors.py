"""The error hierarchy: every error a user can cause is an HpsearchError.

The CLI prints ``str(error)`` on one line and exits with code 2, so each message names the bad
value (file, key, value) and the fix.
"""

from __future__ import annotations


class HpsearchError(Exception):
    """Base class of every error hpsearch raises for bad input or a missing resource."""


class SpecError(HpsearchError):
    """A study spec is malformed: unknown key, wrong type, bad range, unknown name."""


class ParamError(HpsearchError):
    """A parameter value given to a trainer or with ``--set`` is invalid."""


class RuleError(HpsearchError):
    """A rule (or its condition) is malformed, or names an unknown preset."""


class TrainerError(HpsearchError):
    """A trainer name cannot be resolved to a Trainer class."""


class TrainerContractError(HpsearchError):
    """A trainer and its spec disagree, found on first use (an undeclared trainer reads a param
    the spec does not give, or does not report a metric the spec needs): every trial would fail
    the same way, so it stops the run instead of failing one trial."""


class StorageError(HpsearchError):
    """A storage URL is malformed or the store cannot be opened."""


class StudyNotFoundError(HpsearchError):
    """A study name does not exist in the store."""
