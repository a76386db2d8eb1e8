"""Plotly figures of a study as its researcher thinks about it.

``study_figures(study, spec)`` returns named figures, the same ones saved to optuna-dashboard,
written into ``hpsearch report`` and logged to MLflow:

- ``pareto_front``: the feasible Pareto front, dominated, infeasible and pruned trials (at the
  last epoch they reported), with band objectives drawn on their raw metric, the band shaded
  (two or more objectives);
- ``hypervolume``: the hypervolume of the feasible front over completed trials, at the one
  reference point stored on the study (two or more objectives);
- ``objective_curves``: the objective per epoch of the front and of recently stopped trials,
  with a marker where a rule fired or a rung decided;
- ``pruning``: epochs spent per trial, coloured by who stopped it, rungs drawn;
- ``best_configs``: a table of the feasible front at its effective params.

plotly is imported only when a figure is built.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import optuna

from hpsearch.search_spaces import StudySpec
from hpsearch.visualization._trials import TrialView, trial_views

if TYPE_CHECKING:
    import plotly.graph_objects as go

FIGURE_NAMES = ("pareto_front", "hypervolume", "objective_curves", "pruning", "best_configs")


def study_figures(
    study: optuna.Study,
    spec: StudySpec,
    *,
    max_points: int | None = None,
    trials: Sequence[optuna.trial.FrozenTrial] | None = None,
) -> dict[str, go.Figure]:
    """The study's figures by name (see the module doc). ``max_points`` thins each scatter
    (the front is always whole) for stores where figures are kept small (the dashboard);
    ``trials`` reuses a trial list already read."""
    if trials is None:
        trials = study.get_trials(deepcopy=False)
    views = trial_views(trials, spec)
    return figures_of(views, spec, reference_point(study, spec, views), max_points=max_points)


def figures_of(
    views: Sequence[TrialView],
    spec: StudySpec,
    reference: Sequence[float] | None,
    *,
    max_points: int | None = None,
) -> dict[str, go.Figure]:
    from hpsearch.visualization._curves import best_table_figure, curves_figure
    from hpsearch.visualization._history import hypervolume_figure, pruning_figure
    from hpsearch.visualization._pareto import pareto_figure

    figures: dict[str, go.Figure] = {}
    if len(spec.objectives) >= 2:
        figures["pareto_front"] = pareto_figure(views, spec, max_points=max_points)
        if reference is not None:
            figures["hypervolume"] = hypervolume_figure(
                views, spec, reference, max_points=max_points
            )
    figures["objective_curves"] = curves_figure(views, spec)
    figures["pruning"] = pruning_figure(views, spec, _rungs(spec), max_points=max_points)
    figures["best_configs"] = best_table_figure(views, spec)
    return figures


def reference_point(
    study: optuna.Study, spec: StudySpec, views: Sequence[TrialView]
) -> list[float] | None:
    """The study's stored hypervolume reference point, else one derived from the complete
    trials (None with fewer than two objectives or no complete trial)."""
    from hpsearch.objectives.hypervolume import derive_reference, stored_reference

    if len(spec.objectives) < 2:
        return None
    stored = stored_reference(study)
    if stored is not None:
        return stored
    values = [v.values for v in views if v.state == "COMPLETE" and v.values is not None]
    return derive_reference(values, spec.directions) if values else None


def _rungs(spec: StudySpec) -> list[int]:
    from hpsearch.pruners.pareto_asha import PRUNER_NAME

    if spec.pruner is None or spec.pruner.name != PRUNER_NAME:
        return []
    from hpsearch.objectives.factories import make_pareto_asha

    return list(make_pareto_asha(spec.pruner, spec).rungs)


__all__ = ["FIGURE_NAMES", "TrialView", "figures_of", "study_figures", "trial_views"]
