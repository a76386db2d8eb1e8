"""5CAT, the five-gate acceptance test of a next-vector predictor (seed 003), and mini-5CAT.

A predictor maps contexts ``[n, context, d]`` to predicted next vectors ``[n, d]``. Offsets are
relative to the target: ``k=+1`` is the target (the frame right after the context), ``k=-1``
the last context frame, ``-2`` the one before, ``+2`` and ``+3`` further ahead.

Gates (thresholds in ``FiveCatThresholds``, the seed's by default), per split:

- A offset sweep: ``margin = cos(pred, y+1) - cos(pred, y-1) >= 0.12`` and the mean cosine
  peaks at ``k=+1`` over the swept offsets;
- B retrieval: R@5 of the true next vector among the split's bank of frames ``>= 0.95``;
- C ablation: cosine with each context's frames before the last shuffled minus the normal
  cosine ``<= -0.15`` (a model that uses the order of its context loses when it is shuffled).
  The last frame stays in place: the seed's gate is about order and contiguity, and shuffling
  the last frame away would fail a copy of it as much as a forward predictor (a copier would
  pass); with it in place a copier, or any order-blind predictor, scores 0 and fails;
- D rollout: mean cosine over an autoregressive rollout of ``horizon`` steps ``>= 0.45``
  (each prediction, normalized, is appended to the context and the oldest frame dropped);
- E bins delta: the samples are binned by position in their article; the figure is the mean
  over bins of ``|cos_split(bin) - cos_reference(bin)|`` between a split and the reference
  split (VAL), ``<= 0.05``. The reference split carries the largest delta of the others; with
  no other split gate E fails (there is nothing to generalize to).

Every figure is a mean over samples; NaN figures fail their gate.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch.nn import functional

from hpsearch._util import json_safe

Predictor = Callable[[torch.Tensor], torch.Tensor]

DEFAULT_OFFSETS: tuple[int, ...] = (-2, -1, 1, 2, 3)
GATE_NAMES: dict[str, str] = {
    "A": "offset sweep",
    "B": "retrieval",
    "C": "ablation",
    "D": "rollout",
    "E": "bins delta",
}


@dataclass(frozen=True)
class EvalSet:
    """Samples of one split for 5CAT.

    ``frames``: ``[n, context + horizon, d]``, the context then the frames ahead (the target
    first). ``bank``: ``[m, d]`` retrieval candidates, holding every true next vector at
    ``target_index`` ``[n]``. ``positions``: ``[n]`` in ``[0, 1)``, each sample's place in its
    article (for the bins of gate E).
    """

    frames: torch.Tensor
    context: int
    bank: torch.Tensor
    target_index: torch.Tensor
    positions: torch.Tensor

    def __len__(self) -> int:
        return int(self.frames.shape[0])

    @property
    def horizon(self) -> int:
        return int(self.frames.shape[1]) - self.context

    @property
    def contexts(self) -> torch.Tensor:
        return self.frames[:, : self.context]

    def at_offset(self, offset: int) -> torch.Tensor:
        """The frames at ``offset`` from the target (``+1`` target, ``-1`` last context)."""
        index = self.context + offset - 1 if offset > 0 else self.context + offset
        if offset == 0 or not 0 <= index < self.frames.shape[1]:
            raise ValueError(
                f"offset {offset:+d} is outside the window of {self.context} context and "
                f"{self.horizon} future frames"
            )
        return self.frames[:, index]

    def head(self, count: int) -> EvalSet:
        """The first ``count`` samples (same bank)."""
        return EvalSet(
            frames=self.frames[:count],
            context=self.context,
            bank=self.bank,
            target_index=self.target_index[:count],
            positions=self.positions[:count],
        )


@dataclass(frozen=True)
class FiveCatThresholds:
    """Pass thresholds of the gates (the seed's by default)."""

    margin: float = 0.12
    r_at_k: float = 0.95
    shuffle_delta: float = -0.15
    rollout: float = 0.45
    bins_delta: float = 0.05


@dataclass(frozen=True)
class GateResult:
    """One gate of one split: the figure it judged, the rule and the verdict."""

    name: str
    value: float
    rule: str
    passed: bool


@dataclass(frozen=True)
class SplitReport:
    """Every 5CAT figure of one split, and its gates."""

    split: str
    samples: int
    offset_cosines: dict[int, float]
    peak_offset: int
    margin: float
    cosine: float
    r_at_k: float
    shuffle_cosine: float
    shuffle_delta: float
    rollout_cosines: list[float]
    rollout_cosine: float
    bin_cosines: list[float]
    bins_delta: float
    gates: dict[str, GateResult] = field(default_factory=dict)

    @property
    def gates_passed(self) -> int:
        return sum(gate.passed for gate in self.gates.values())

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe (offset keys as ``"+1"``, non-finite floats as strings)."""
        data = asdict(self)
        data["offset_cosines"] = {f"{k:+d}": v for k, v in self.offset_cosines.items()}
        data["gates_passed"] = self.gates_passed
        return json_safe(data)


@dataclass(frozen=True)
class FiveCatReport:
    """5CAT of every split, with the thresholds and settings used."""

    splits: dict[str, SplitReport]
    thresholds: FiveCatThresholds
    retrieval_k: int
    rollout_horizon: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "thresholds": json_safe(asdict(self.thresholds)),
            "retrieval_k": self.retrieval_k,
            "rollout_horizon": self.rollout_horizon,
            "splits": {name: split.to_dict() for name, split in self.splits.items()},
        }

    def metrics(self) -> dict[str, float]:
        """Flat figures per split: ``{split}_cosine``, ``{split}_margin``, ...,
        ``{split}_gates_passed``."""
        flat: dict[str, float] = {}
        for name, split in self.splits.items():
            flat.update(
                {
                    f"{name}_cosine": split.cosine,
                    f"{name}_margin": split.margin,
                    f"{name}_peak_offset": float(split.peak_offset),
                    f"{name}_r_at_{self.retrieval_k}": split.r_at_k,
                    f"{name}_shuffle_delta": split.shuffle_delta,
                    f"{name}_rollout_cosine": split.rollout_cosine,
                    f"{name}_bins_delta": split.bins_delta,
                    f"{name}_gates_passed": float(split.gates_passed),
                }
            )
        return flat


@dataclass(frozen=True)
class MiniFiveCat:
    """The per-epoch early warning: peak offset, margin(+1), cosine and optionally R@k."""

    peak_offset: int
    margin: float
    cosine: float
    r_at_k: float | None = None


# -- building blocks ----------------------------------------------------------------------------


@torch.no_grad()
def predict_batched(predict: Predictor, contexts: torch.Tensor, batch_size: int) -> torch.Tensor:
    """``predict`` over ``contexts`` in batches, concatenated."""
    parts = [predict(contexts[i : i + batch_size]) for i in range(0, len(contexts), batch_size)]
    return torch.cat(parts) if parts else contexts.new_empty(0, contexts.shape[-1])


def mean_cosine(predictions: torch.Tensor, targets: torch.Tensor) -> float:
    """Mean cosine similarity of matching rows."""
    return float(functional.cosine_similarity(predictions, targets, dim=-1).mean())


def offset_sweep(
    predictions: torch.Tensor, data: EvalSet, offsets: Sequence[int]
) -> tuple[dict[int, float], int, float]:
    """Mean cosine at each offset, the peak offset and ``margin = cos(+1) - cos(-1)``."""
    cosines = {offset: mean_cosine(predictions, data.at_offset(offset)) for offset in offsets}
    peak = max(cosines, key=lambda offset: _nan_low(cosines[offset]))
    return cosines, peak, cosines[1] - cosines[-1]


@torch.no_grad()
def recall_at_k(predictions: torch.Tensor, data: EvalSet, k: int, batch_size: int = 1024) -> float:
    """Share of samples whose true next vector ranks in the top ``k`` of the bank by cosine."""
    bank = functional.normalize(data.bank, dim=-1)
    hits = 0
    for i in range(0, len(predictions), batch_size):
        scores = functional.normalize(predictions[i : i + batch_size], dim=-1) @ bank.T
        target = scores.gather(1, data.target_index[i : i + batch_size, None])
        rank = (scores > target).sum(dim=1) + 1
        hits += int((rank <= k).sum())
    return hits / max(len(predictions), 1)


def shuffled_contexts(contexts: torch.Tensor, seed: int) -> torch.Tensor:
    """Each context's frames before the last in a random order (fixed by ``seed``); the last
    frame stays in place.

    Keeping the last frame is what makes gate C a test of order: shuffling it away too would
    cost a copy of the last frame as much as a forward predictor, so a copier would pass.
    """
    generator = torch.Generator().manual_seed(seed)
    count, length = contexts.shape[:2]
    order = torch.argsort(torch.rand(count, length - 1, generator=generator), dim=1)
    order = torch.cat([order, torch.full((count, 1), length - 1)], dim=1)
    order = order.to(contexts.device)[..., None].expand_as(contexts)
    return contexts.gather(1, order)


@torch.no_grad()
def rollout_cosines(
    predict: Predictor, data: EvalSet, horizon: int, batch_size: int
) -> list[float]:
    """Mean cosine at each step of an autoregressive rollout of ``horizon`` steps."""
    if horizon > data.horizon:
        raise ValueError(f"rollout horizon {horizon} exceeds the {data.horizon} frames ahead")
    context = data.contexts
    cosines = []
    for step in range(horizon):
        prediction = functional.normalize(predict_batched(predict, context, batch_size), dim=-1)
        cosines.append(mean_cosine(prediction, data.frames[:, data.context + step]))
        context = torch.cat([context[:, 1:], prediction[:, None]], dim=1)
    return cosines


def bin_cosines(predictions: torch.Tensor, data: EvalSet, bins: int) -> list[float]:
    """Mean cosine to the target per position bin (NaN for an empty bin)."""
    cosine = functional.cosine_similarity(predictions, data.at_offset(1), dim=-1)
    which = (data.positions * bins).long().clamp(0, bins - 1)
    return [
        float(cosine[which == b].mean()) if bool((which == b).any()) else math.nan
        for b in range(bins)
    ]


def bins_delta(these: Sequence[float], reference: Sequence[float]) -> float:
    """Mean over bins present in both of ``|these - reference|``; NaN if none is."""
    pairs = [
        abs(a - b)
        for a, b in zip(these, reference, strict=True)
        if math.isfinite(a) and math.isfinite(b)
    ]
    return sum(pairs) / len(pairs) if pairs else math.nan


# -- the suites -------------------------------------------------------------------------------


def mini_five_cat(
    predict: Predictor,
    data: EvalSet,
    *,
    samples: int = 500,
    offsets: Sequence[int] = DEFAULT_OFFSETS,
    retrieval_k: int | None = None,
    batch_size: int = 1024,
) -> MiniFiveCat:
    """Peak offset, margin(+1) and cosine on the first ``samples`` of ``data`` (plus R@k when
    ``retrieval_k`` is given): cheap enough for every epoch."""
    _check_offsets(offsets)
    subset = data.head(samples)
    predictions = predict_batched(predict, subset.contexts, batch_size)
    cosines, peak, margin = offset_sweep(predictions, subset, offsets)
    r_at_k = None if retrieval_k is None else recall_at_k(predictions, subset, retrieval_k)
    return MiniFiveCat(peak_offset=peak, margin=margin, cosine=cosines[1], r_at_k=r_at_k)


def five_cat(
    predict: Predictor,
    data: Mapping[str, EvalSet],
    *,
    thresholds: FiveCatThresholds | None = None,
    offsets: Sequence[int] = DEFAULT_OFFSETS,
    retrieval_k: int = 5,
    rollout_horizon: int = 5,
    bins: int = 3,
    shuffle_seed: int = 0,
    batch_size: int = 1024,
) -> FiveCatReport:
    """Run gates A–E on every split of ``data``; the first split is the reference for gate E.

    Returns every figure per split, each gate's verdict and the count passed.
    """
    _check_offsets(offsets)
    if not data:
        raise ValueError("five_cat needs at least one split, e.g. {'val': ..., 'ood': ...}")
    thresholds = thresholds or FiveCatThresholds()
    figures = {
        name: _split_figures(
            predict, split, offsets, retrieval_k, rollout_horizon, bins, shuffle_seed, batch_size
        )
        for name, split in data.items()
    }
    deltas = _bins_deltas({name: f["bin_cosines"] for name, f in figures.items()})
    splits = {
        name: _judge(name, len(data[name]), {**f, "bins_delta": deltas[name]}, thresholds)
        for name, f in figures.items()
    }
    return FiveCatReport(splits, thresholds, retrieval_k, rollout_horizon)


def _split_figures(
    predict: Predictor,
    data: EvalSet,
    offsets: Sequence[int],
    retrieval_k: int,
    rollout_horizon: int,
    bins: int,
    shuffle_seed: int,
    batch_size: int,
) -> dict[str, Any]:
    predictions = predict_batched(predict, data.contexts, batch_size)
    cosines, peak, margin = offset_sweep(predictions, data, offsets)
    shuffled = predict_batched(predict, shuffled_contexts(data.contexts, shuffle_seed), batch_size)
    shuffle_cosine = mean_cosine(shuffled, data.at_offset(1))
    rollout = rollout_cosines(predict, data, rollout_horizon, batch_size)
    return {
        "offset_cosines": cosines,
        "peak_offset": peak,
        "margin": margin,
        "cosine": cosines[1],
        "r_at_k": recall_at_k(predictions, data, retrieval_k, batch_size),
        "shuffle_cosine": shuffle_cosine,
        "shuffle_delta": shuffle_cosine - cosines[1],
        "rollout_cosines": rollout,
        "rollout_cosine": sum(rollout) / len(rollout) if rollout else math.nan,
        "bin_cosines": bin_cosines(predictions, data, bins),
    }


def _bins_deltas(bin_cosines_by_split: Mapping[str, list[float]]) -> dict[str, float]:
    """Each non-reference split against the reference; the reference gets the largest."""
    names = list(bin_cosines_by_split)
    reference = bin_cosines_by_split[names[0]]
    deltas = {name: bins_delta(bin_cosines_by_split[name], reference) for name in names[1:]}
    finite = [value for value in deltas.values() if math.isfinite(value)]
    deltas[names[0]] = max(finite) if finite else math.nan
    return deltas


def _judge(
    name: str, samples: int, figures: dict[str, Any], thresholds: FiveCatThresholds
) -> SplitReport:
    gates = {
        "A": GateResult(
            GATE_NAMES["A"],
            figures["margin"],
            f"margin(+1) >= {thresholds.margin:g} and peak at k=+1",
            figures["margin"] >= thresholds.margin and figures["peak_offset"] == 1,
        ),
        "B": _threshold_gate("B", figures["r_at_k"], ">=", thresholds.r_at_k, "R@k"),
        "C": _threshold_gate(
            "C", figures["shuffle_delta"], "<=", thresholds.shuffle_delta, "shuffle delta"
        ),
        "D": _threshold_gate(
            "D", figures["rollout_cosine"], ">=", thresholds.rollout, "rollout cosine"
        ),
        "E": _threshold_gate(
            "E", figures["bins_delta"], "<=", thresholds.bins_delta, "|bins delta|"
        ),
    }
    return SplitReport(split=name, samples=samples, gates=gates, **figures)


def _threshold_gate(key: str, value: float, op: str, threshold: float, label: str) -> GateResult:
    passed = value >= threshold if op == ">=" else value <= threshold
    return GateResult(GATE_NAMES[key], value, f"{label} {op} {threshold:g}", bool(passed))


def _check_offsets(offsets: Sequence[int]) -> None:
    if 1 not in offsets or -1 not in offsets:
        raise ValueError(f"offsets {tuple(offsets)} must include -1 and +1 (the margin needs both)")


def _nan_low(value: float) -> float:
    return -math.inf if math.isnan(value) else value
