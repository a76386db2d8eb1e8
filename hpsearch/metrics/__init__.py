"""Pure metric functions on tensors: no Optuna, no MLflow, no training state.

The tensor metrics are imported on first use (they bring torch), so that ``metrics.pareto``
(numpy only, used by ``hpsearch best``) loads without torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from hpsearch._util import lazy_attribute

if TYPE_CHECKING:
    from hpsearch.metrics.convergence import convergence_rate, per_token_mse
    from hpsearch.metrics.rank import effective_rank, effective_rank_ratio

_HOMES = {
    "convergence_rate": "convergence",
    "effective_rank": "rank",
    "effective_rank_ratio": "rank",
    "per_token_mse": "convergence",
}


def __getattr__(name: str) -> Any:
    return lazy_attribute(__name__, _HOMES, name)


__all__ = ["convergence_rate", "effective_rank", "effective_rank_ratio", "per_token_mse"]
