"""The study's hypervolume after each trial, kept incrementally, at one reference point per study.

The reference point is stored on the study (user attr ``hypervolume_reference``, objective
values): the spec's ``reference_point`` when it gives one, else one derived once the study has
``REFERENCE_AFTER_TRIALS`` complete trials (just beyond the worst of them). Trials that complete
before it is fixed store no hypervolume; every stored value uses the same point.

Each call looks at the study's complete trials but does real work only for the ones it has not
seen: it keeps the running best and worst of every objective (for a derived reference point)
and the feasible Pareto front, so the hypervolume is computed over the front alone. Trials of
other workers are picked up as they complete, in any order.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import optuna

from hpsearch.metrics.pareto import as_losses, derived_reference, hypervolume, pareto_mask
from hpsearch.storage.internals import cached_trials

COMPLETE = (optuna.trial.TrialState.COMPLETE,)
REFERENCE_ATTR = "hypervolume_reference"  # study user attr: objective values, one per objective
REFERENCE_AFTER_TRIALS = 5  # complete trials seen before a reference point is derived


def stored_reference(study: optuna.Study) -> list[float] | None:
    """The study's fixed hypervolume reference point (objective values), if one is stored."""
    value = study.user_attrs.get(REFERENCE_ATTR)
    if isinstance(value, list) and value and all(isinstance(v, int | float) for v in value):
        return [float(v) for v in value]
    return None


def fix_reference(study: optuna.Study, reference: Sequence[float]) -> list[float]:
    """Store ``reference`` as the study's reference point unless one is stored already, and
    return the stored one (another worker may have stored its own first)."""
    stored = stored_reference(study)
    if stored is not None:
        return stored
    study.set_user_attr(REFERENCE_ATTR, [float(v) for v in reference])
    return stored_reference(study) or [float(v) for v in reference]


def derive_reference(values: Sequence[Sequence[float]], directions: Sequence[str]) -> list[float]:
    """A reference point (objective values) just beyond the worst of ``values``."""
    losses = as_losses([list(v) for v in values], directions)
    return [float(v) for v in as_losses([derived_reference(losses)], directions)[0]]


def complete_trials(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    """The study's complete trials. Inside ``study.optimize`` this reuses the list the sampler
    read when the running trial was asked for (Optuna keeps it per trial), so no extra query
    is made; trials that complete meanwhile are picked up at the next trial."""
    cached = cached_trials(study)
    if cached is not None:
        return [trial for trial in cached if trial.state in COMPLETE]
    return study.get_trials(deepcopy=False, states=COMPLETE)


class StudyHypervolume:
    """Hypervolume of the feasible complete trials of one study, updated per trial.

    ``reference_point`` is in objective values; until one is set (``set_reference``) it is
    derived from the worst and best values of every complete trial (``derived_reference``),
    so it moves as trials arrive. The objective fixes one per study (stored on the study) so
    that stored values compare.
    """

    def __init__(
        self, directions: Sequence[str], reference_point: Sequence[float] | None = None
    ) -> None:
        self.directions = list(directions)
        self.reference = (
            as_losses([list(reference_point)], self.directions)[0]
            if reference_point is not None
            else None
        )
        self.seen: set[int] = set()
        self.front = np.empty((0, len(self.directions)))
        self.worst: np.ndarray | None = None
        self.best: np.ndarray | None = None

    def set_reference(self, reference_point: Sequence[float]) -> None:
        """Use this reference point (objective values) from now on."""
        self.reference = as_losses([list(reference_point)], self.directions)[0]

    def derived_reference_values(self) -> list[float] | None:
        """The reference point (objective values) derived from the trials seen so far."""
        reference = self._reference(self.worst, self.best) if self.reference is None else None
        if reference is None:
            return None
        return [float(v) for v in as_losses([reference], self.directions)[0]]

    def update(
        self, study: optuna.Study, extra: tuple[Sequence[float], bool] | None = None
    ) -> tuple[float, list[float] | None]:
        """(hypervolume, reference point in objective values) with the study's complete trials
        and ``extra`` (values, feasible) of a trial not yet told; (0, None) with neither."""
        for trial in complete_trials(study):
            if trial.number not in self.seen and trial.values is not None:
                self.seen.add(trial.number)
                feasible = all(value <= 0.0 for value in trial.constraints.values())
                self._add(trial.values, feasible)
        front, worst, best = self.front, self.worst, self.best
        if extra is not None:  # counted now; added for good once the study has it as COMPLETE
            losses = as_losses([list(extra[0])], self.directions)
            worst = losses[0] if worst is None else np.maximum(worst, losses[0])
            best = losses[0] if best is None else np.minimum(best, losses[0])
            if extra[1]:
                front = np.vstack([front, losses])
        reference = self._reference(worst, best)
        if reference is None:
            return 0.0, None
        volume = hypervolume(front, reference) if len(front) else 0.0
        return volume, [float(v) for v in as_losses([reference], self.directions)[0]]

    def _add(self, values: Sequence[float], feasible: bool) -> None:
        losses = as_losses([list(values)], self.directions)
        self._track_range(losses[0])
        if feasible:
            candidates = np.vstack([self.front, losses])
            self.front = candidates[pareto_mask(candidates)]

    def _track_range(self, losses: np.ndarray) -> None:
        self.worst = losses.copy() if self.worst is None else np.maximum(self.worst, losses)
        self.best = losses.copy() if self.best is None else np.minimum(self.best, losses)

    def _reference(self, worst: np.ndarray | None, best: np.ndarray | None) -> np.ndarray | None:
        if self.reference is not None:
            return self.reference
        if worst is None or best is None:
            return None
        return derived_reference(np.vstack([worst, best]))
