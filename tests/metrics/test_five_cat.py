"""5CAT on hand-made predictors: an oracle, a copy of the last frame, context-blind ones."""

from __future__ import annotations

import json
import math

import pytest
import torch
from torch.nn import functional

from hpsearch.metrics.five_cat import (
    EvalSet,
    Predictor,
    bins_delta,
    five_cat,
    mini_five_cat,
    shuffled_contexts,
)
from hpsearch.trainers.lvm_data import ArticleGenerator, LvmData, make_lvm_data


@pytest.fixture(scope="module")
def data() -> LvmData:
    return make_lvm_data(
        ArticleGenerator(dim=32, step_low=0.6, step_high=1.0, noise=0.3, topic=0.0),
        ArticleGenerator(dim=32, step_low=0.7, step_high=1.1, noise=0.35, topic=0.0),
        train_articles=4,
        val_articles=48,
        ood_articles=48,
        length=20,
        context=5,
        horizon=5,
        seed=0,
    )


@pytest.fixture(scope="module")
def splits(data: LvmData) -> dict[str, EvalSet]:
    return {"val": data.val.eval_set(400, seed=0), "ood": data.ood.eval_set(400, seed=0)}


def successor_oracle(data: LvmData, back: int = 1) -> Predictor:
    """Finds the article frame nearest to context frame ``-back`` and returns the true frame
    ``back`` steps after it: the exact next vector for real contexts (and, with ``back=1``, for
    its own rollouts)."""
    articles = torch.cat([data.val.articles, data.ood.articles])
    dim = articles.shape[-1]
    frames = articles[:, :-back].reshape(-1, dim)
    successors = articles[:, back:].reshape(-1, dim)

    def predict(context: torch.Tensor) -> torch.Tensor:
        scores = functional.normalize(context[:, -back], dim=-1) @ frames.T
        return successors[scores.argmax(dim=1)]

    return predict


def copy_last(context: torch.Tensor) -> torch.Tensor:
    return context[:, -1]


def constant(context: torch.Tensor) -> torch.Tensor:
    """Ignores its context entirely."""
    out = torch.zeros(context.shape[0], context.shape[-1])
    out[:, 0] = 1.0
    return out


def context_mean(context: torch.Tensor) -> torch.Tensor:
    """Ignores the order of its context."""
    return context.mean(dim=1)


def test_oracle_passes_a_b_d_e_with_peak_plus_one(
    data: LvmData, splits: dict[str, EvalSet]
) -> None:
    report = five_cat(successor_oracle(data), splits)
    for split in report.splits.values():
        assert split.peak_offset == 1
        assert split.cosine == pytest.approx(1.0, abs=1e-5)
        assert split.margin >= 0.12
        assert split.r_at_k == 1.0
        assert split.rollout_cosine == pytest.approx(1.0, abs=1e-5)
        assert all(split.gates[key].passed for key in "ABD")
    assert report.splits["val"].bins_delta == pytest.approx(0.0, abs=1e-5)
    # It reads only the last frame, so shuffling the frames before it costs nothing: gate C
    # fails (the same oracle reading frame -2 passes it, below).
    assert report.splits["val"].shuffle_delta == pytest.approx(0.0, abs=1e-5)
    assert [key for key, gate in report.splits["val"].gates.items() if not gate.passed] == ["C"]


def test_copy_last_frame_peaks_at_minus_one_and_fails_a(splits: dict[str, EvalSet]) -> None:
    report = five_cat(copy_last, splits)
    for split in report.splits.values():
        assert split.peak_offset == -1
        assert split.offset_cosines[-1] == pytest.approx(1.0, abs=1e-5)
        assert split.margin < 0
        assert not split.gates["A"].passed


@pytest.mark.parametrize(
    "predict", [constant, context_mean, copy_last], ids=["constant", "context-mean", "copy-last"]
)
def test_order_blind_predictors_fail_c(predict: Predictor, splits: dict[str, EvalSet]) -> None:
    report = five_cat(predict, splits)
    for split in report.splits.values():
        assert split.shuffle_delta == pytest.approx(0.0, abs=1e-5)
        assert not split.gates["C"].passed


def test_a_predictor_that_uses_the_order_passes_c(
    data: LvmData, splits: dict[str, EvalSet]
) -> None:
    report = five_cat(successor_oracle(data, back=2), splits)
    for split in report.splits.values():
        assert split.peak_offset == 1
        assert split.shuffle_delta <= -0.15
        assert split.gates["C"].passed


def test_report_is_json_safe_and_counts_gates(splits: dict[str, EvalSet]) -> None:
    report = five_cat(copy_last, splits)
    data = json.loads(json.dumps(report.to_dict()))
    val = data["splits"]["val"]
    assert set(val["gates"]) == set("ABCDE")
    assert val["gates_passed"] == sum(gate["passed"] for gate in val["gates"].values())
    assert set(val["offset_cosines"]) == {"-2", "-1", "+1", "+2", "+3"}
    assert len(val["rollout_cosines"]) == 5
    assert data["thresholds"]["margin"] == 0.12
    metrics = report.metrics()
    assert metrics["val_gates_passed"] == report.splits["val"].gates_passed
    assert metrics["ood_margin"] == report.splits["ood"].margin


def test_gate_e_compares_each_split_with_val(splits: dict[str, EvalSet]) -> None:
    report = five_cat(copy_last, splits)
    val, ood = report.splits["val"], report.splits["ood"]
    assert val.bins_delta == ood.bins_delta == bins_delta(ood.bin_cosines, val.bin_cosines)
    alone = five_cat(copy_last, {"val": splits["val"]}).splits["val"]
    assert math.isnan(alone.bins_delta) and not alone.gates["E"].passed


def test_bins_delta_skips_empty_bins() -> None:
    assert bins_delta([0.5, math.nan, 0.7], [0.6, 0.2, 0.7]) == pytest.approx(0.05)
    assert math.isnan(bins_delta([math.nan], [0.1]))


def test_mini_five_cat_matches_the_full_figures(data: LvmData, splits: dict[str, EvalSet]) -> None:
    subset = splits["val"].head(100)
    full = five_cat(copy_last, {"val": subset}).splits["val"]
    mini = mini_five_cat(copy_last, splits["val"], samples=100, retrieval_k=5)
    assert mini.peak_offset == full.peak_offset == -1
    assert mini.margin == pytest.approx(full.margin)
    assert mini.cosine == pytest.approx(full.cosine)
    assert mini.r_at_k == pytest.approx(full.r_at_k)
    assert mini_five_cat(copy_last, splits["val"], samples=100).r_at_k is None


def test_offsets_map_to_window_frames(splits: dict[str, EvalSet]) -> None:
    val = splits["val"]
    assert torch.equal(val.at_offset(-1), val.frames[:, 4])
    assert torch.equal(val.at_offset(1), val.frames[:, 5])
    assert torch.equal(val.at_offset(3), val.frames[:, 7])
    with pytest.raises(ValueError, match="outside the window"):
        val.at_offset(6)
    with pytest.raises(ValueError, match="must include -1 and \\+1"):
        five_cat(copy_last, splits, offsets=(1, 2))


def test_shuffle_permutes_frames_within_each_context(splits: dict[str, EvalSet]) -> None:
    contexts = splits["val"].contexts[:50]
    shuffled = shuffled_contexts(contexts, seed=3)
    assert torch.allclose(shuffled.sum(dim=1), contexts.sum(dim=1), atol=1e-5)
    assert not torch.equal(shuffled, contexts)
    assert torch.equal(shuffled[:, -1], contexts[:, -1])  # the last frame stays in place
    assert torch.equal(shuffled, shuffled_contexts(contexts, seed=3))


def test_retrieval_bank_holds_every_target(splits: dict[str, EvalSet]) -> None:
    val = splits["val"]
    assert torch.equal(val.bank[val.target_index], val.at_offset(1))
