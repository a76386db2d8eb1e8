"""What hpsearch writes for optuna-dashboard, and the server of ``hpsearch dashboard``.

- ``describe_study``: the study note (``save_note``, markdown, from the spec), rewritten only
  when the spec changes;
- ``save_figures``: hpsearch's figures (``hpsearch.visualization``) saved with
  ``save_plotly_graph_object`` under fixed ids, thinned to ``DASHBOARD_MAX_POINTS`` points per
  scatter so that the study's attributes stay small;
- ``FigureRefresher``: an Optuna callback that saves them at most every
  ``HPSEARCH_FIGURES_S`` seconds (default 10) of wall time after a trial, never per epoch;
- ``serve``: optuna-dashboard on 127.0.0.1 by default, whose "best trials" of a
  multi-objective study are the feasible Pareto front.
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
import warnings
from collections.abc import Callable
from typing import Any

import optuna

from hpsearch.search_spaces import SPEC_ATTR, StudySpec
from hpsearch.storage.internals import (
    cached_trials,
    set_study_system_attr,
    study_system_attrs,
    with_trial_cache,
)

logger = logging.getLogger("hpsearch")
NOTE_DIGEST_SYSTEM_ATTR = "hpsearch:note_digest"
DASHBOARD_MAX_POINTS = 1000
# A refresh may take at most this share of wall time: at 10,000 trials reading them and drawing
# takes seconds, so the interval grows with the time the last refresh took.
MAX_REFRESH_SHARE = 0.1
REFRESH_S_ENV = "HPSEARCH_FIGURES_S"
DEFAULT_REFRESH_S = 10.0


def stored_spec(study: optuna.Study) -> dict[str, Any] | None:
    """The spec a study was run from, as ``create_study`` stored it (None if absent)."""
    value = study.user_attrs.get(SPEC_ATTR)
    return value if isinstance(value, dict) else None


def describe_study(study: optuna.Study, spec: StudySpec) -> bool:
    """Write the study note, unless this spec's note is there already; whether it wrote it."""
    from optuna_dashboard import save_note

    from hpsearch.dashboard.note import study_note

    note = study_note(spec, study.study_name)
    digest = hashlib.sha256(note.encode()).hexdigest()[:16]
    if study_system_attrs(study).get(NOTE_DIGEST_SYSTEM_ATTR) == digest:
        return False
    save_note(study, note)
    set_study_system_attr(study, NOTE_DIGEST_SYSTEM_ATTR, digest)
    return True


def save_figures(
    study: optuna.Study,
    spec: StudySpec,
    trials: list[optuna.trial.FrozenTrial] | None = None,
) -> list[str]:
    """Save hpsearch's figures to the study for optuna-dashboard; their ids."""
    from optuna_dashboard import save_plotly_graph_object

    from hpsearch.visualization import study_figures

    figures = study_figures(study, spec, max_points=DASHBOARD_MAX_POINTS, trials=trials)
    for name, figure in figures.items():
        save_plotly_graph_object(study, figure, graph_object_id=name)
    return list(figures)


def refresh_interval() -> float:
    """Seconds between two figure refreshes: ``HPSEARCH_FIGURES_S`` (default 10; 0 = after
    every trial)."""
    text = os.environ.get(REFRESH_S_ENV, "").strip()
    try:
        return max(0.0, float(text)) if text else DEFAULT_REFRESH_S
    except ValueError:
        return DEFAULT_REFRESH_S


class FigureRefresher:
    """Optuna callback: after a trial, save the figures if ``interval`` seconds of wall time
    passed since the last save, and at least ten times as long as the last save took (so
    refreshing costs at most a tenth of the run); ``flush`` saves them once more (the end of a
    run). A failing save logs a warning and never stops the study."""

    def __init__(self, spec: StudySpec, interval: float | None = None) -> None:
        self.spec = spec
        self.interval = refresh_interval() if interval is None else interval
        self.last_saved = 0.0
        self.last_duration = 0.0
        self.pending = False

    def __call__(self, study: optuna.Study, trial: optuna.trial.FrozenTrial | None) -> None:
        self.pending = True
        wait = max(self.interval, self.last_duration / MAX_REFRESH_SHARE)
        if time.monotonic() - self.last_saved >= wait:
            self.flush(study)

    def before_each(
        self, objective: Callable[[optuna.Trial], Any]
    ) -> Callable[[optuna.Trial], Any]:
        """``objective``, refreshing the figures (as after a trial) before each trial but the
        first: for loops that tell trials themselves (``hpsearch worker``)."""
        first = True

        def wrapped(trial: optuna.Trial) -> Any:
            nonlocal first
            if not first:
                self(trial.study, None)
            first = False
            return objective(trial)

        return wrapped

    def flush(self, study: optuna.Study) -> None:
        if not self.pending:
            return
        self.pending = False
        started = self.last_saved = time.monotonic()
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                save_figures(study, self.spec, cached_trials(study))
        except Exception as error:  # a plot must never fail a study
            logger.warning("could not save the study figures for the dashboard: %s", error)
        self.last_duration = time.monotonic() - started


def serve(storage: Any, host: str = "127.0.0.1", port: int = 8080) -> None:
    """optuna-dashboard on ``storage`` with the feasible Pareto front as its best trials.

    An RDB store is served behind Optuna's trial cache: optuna-dashboard re-reads a study's
    trials when its own cache expires (10 s past 500 trials), and without Optuna's cache that
    read takes every trial from SQL again (tens of seconds at 10,000 trials)."""
    from optuna_dashboard import run_server

    if not use_feasible_front():
        logger.warning(
            "this optuna-dashboard has no get_pareto_front_trials to override: its Best Trials "
            "may list infeasible trials (hpsearch best lists the feasible front)"
        )
    run_server(with_trial_cache(storage), host=host, port=port)


def use_feasible_front() -> bool:
    """Make optuna-dashboard's "best trials" of a multi-objective study the feasible Pareto
    front (0.21 ranks every complete trial, infeasible ones too); whether it could."""
    try:
        from optuna_dashboard import _app
    except ImportError:
        return False
    original = getattr(_app, "get_pareto_front_trials", None)
    if original is None or getattr(original, "hpsearch_feasible", False):
        return original is not None

    def feasible_front(trials: Any, directions: Any) -> Any:
        feasible = [t for t in trials if all(v <= 0.0 for v in t.constraints.values())]
        return original(trials=feasible, directions=directions)

    feasible_front.hpsearch_feasible = True  # type: ignore[attr-defined]
    _app.get_pareto_front_trials = feasible_front
    return True
