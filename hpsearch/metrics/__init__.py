"""Pure metric functions on tensors: no Optuna, no MLflow, no training state."""

from __future__ import annotations

from hpsearch.metrics.convergence import convergence_rate, per_token_mse
from hpsearch.metrics.rank import effective_rank, effective_rank_ratio

__all__ = ["convergence_rate", "effective_rank", "effective_rank_ratio", "per_token_mse"]
