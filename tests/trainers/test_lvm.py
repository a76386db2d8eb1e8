"""The lvm trainer: params, heads and losses, the micro-scheduler, a short run, the spec."""

from __future__ import annotations

import json
import math
from importlib import resources
from typing import Any

import pytest
import torch
import yaml

from hpsearch.errors import ParamError
from hpsearch.pruners import RuleEngine, build_rules
from hpsearch.search_spaces import load_spec, spec_from_dict
from hpsearch.trainers import get_trainer_class
from hpsearch.trainers.lvm import LvmTrainer, NextVectorModel, guard_losses

CPU = torch.device("cpu")
TINY: dict[str, Any] = {
    "dim": 16,
    "train_articles": 24,
    "val_articles": 12,
    "ood_articles": 12,
    "article_length": 14,
    "hidden": 32,
    "mini_samples": 50,
    "eval_samples": 60,
    "guard_start_epoch": 2,
}


def run(params: dict[str, Any], epochs: int) -> tuple[LvmTrainer, list[dict[str, float]]]:
    trainer = LvmTrainer(params, device=CPU, seed=0)
    return trainer, list(trainer.epochs(epochs))


@pytest.fixture(scope="module")
def tiny_run() -> tuple[LvmTrainer, list[dict[str, float]]]:
    return run(TINY, 3)


# The seed's two runs (seed 003): V3 = direct head, directional + anti-copy guards at 0.01 from
# epoch 4; P2 = residual head, directional + future guards at 0.002 from epoch 6.
V3 = {
    "residual": False,
    "lambda_dir": 0.01,
    "lambda_ac": 0.01,
    "lambda_fut": 0.0,
    "guard_start_epoch": 4,
}
P2 = {
    "residual": True,
    "lambda_dir": 0.002,
    "lambda_fut": 0.002,
    "lambda_ac": 0.0,
    "guard_start_epoch": 6,
}


def test_registry_resolves_lvm() -> None:
    assert get_trainer_class("lvm") is LvmTrainer


def test_short_run_reports_declared_finite_metrics(
    tiny_run: tuple[LvmTrainer, list[dict[str, float]]],
) -> None:
    trainer, history = tiny_run
    final = trainer.final_metrics()
    for metrics in [*history, final]:
        assert set(metrics) <= set(LvmTrainer.metric_names)
        assert all(math.isfinite(value) for value in metrics.values())
    assert {"val_cosine", "val_margin", "val_peak_offset", "val_r_at_5"} <= set(history[0])
    assert final["gates_passed"] == sum(final[f"gate_{key}"] for key in "abcde")
    assert {"ood_cosine", "ood_gates_passed", "val_rollout_cosine", "gates_passed"} <= set(final)


def test_report_holds_the_final_five_cat(
    tiny_run: tuple[LvmTrainer, list[dict[str, float]]],
) -> None:
    trainer, history = tiny_run
    report = json.loads(json.dumps(trainer.report()))
    splits = report["five_cat"]["splits"]
    assert set(splits) == {"val", "ood"}
    assert splits["val"]["samples"] == 60
    assert splits["val"]["gates_passed"] == trainer.final_metrics()["gates_passed"]
    assert [row["epoch"] for row in report["mini_five_cat"]] == [1, 2, 3]
    assert report["mini_five_cat"][-1]["val_margin"] == history[-1]["val_margin"]


def test_guards_off_until_the_start_epoch(
    tiny_run: tuple[LvmTrainer, list[dict[str, float]]],
) -> None:
    trainer, history = tiny_run
    assert [m["guards_on"] for m in history] == [0.0, 1.0, 1.0]
    assert trainer.loss_weights(1) == {
        "lambda_dir": 0.0,
        "lambda_fut": 0.0,
        "lambda_ac": 0.0,
        "lambda_res": 1e-4,
    }
    assert trainer.loss_weights(2)["lambda_dir"] == 0.002


def test_a_backoff_changes_the_next_epochs_weights() -> None:
    trainer = LvmTrainer(TINY, device=CPU, seed=0)
    engine = RuleEngine(build_rules(["directional-guards"]), trainer.params)
    for epoch, margin in enumerate([-0.05, -0.08, -0.1], start=1):  # drifting backward
        backward = {"val_cosine": 0.5, "val_margin": margin, "val_peak_offset": -1.0}
        engine.observe(epoch, backward, trainer.knobs)
    assert trainer.loss_weights(4)["lambda_dir"] == trainer.loss_weights(4)["lambda_fut"] == 0.0
    assert trainer.effective_params()["lambda_dir"] == 0.0


def test_v3_guards_collapse_a_direct_head_that_copies() -> None:
    """The seed's V3: the direct head starts backward (copying the last frame is the early
    attractor), the 0.01 guards at epoch 4 cut val cosine by >= 0.1 and it ends backward."""
    trainer, history = run(V3, 8)
    assert [m["val_peak_offset"] for m in history[:3]] == [-1.0, -1.0, -1.0]
    assert history[2]["val_margin"] < 0
    assert history[3]["val_cosine"] <= max(m["val_cosine"] for m in history[:3]) - 0.1
    assert trainer.run_five_cat().splits["val"].peak_offset == -1


@pytest.fixture(scope="module")
def p2_run() -> tuple[LvmTrainer, list[dict[str, float]]]:
    return run(P2, 12)


def test_p2_residual_head_with_tiny_late_guards_meets_the_final_criterion(
    p2_run: tuple[LvmTrainer, list[dict[str, float]]],
) -> None:
    """The seed's P2 at the spec's sizes: no collapse when the guards start at epoch 6, and
    the residual head ends with its peak at k=+1 and the seed's final criterion (>= 4 val
    gates, margin >= 0.10 on val and OOD)."""
    trainer, history = p2_run
    assert history[0]["val_peak_offset"] == -1.0  # it starts as a copy of the last frame
    assert history[5]["val_cosine"] > max(m["val_cosine"] for m in history[:5]) - 0.1
    report = trainer.run_five_cat()
    assert report.splits["val"].gates_passed >= 4
    for split in ("val", "ood"):
        assert report.splits[split].peak_offset == 1
        assert report.splits[split].margin >= 0.10


def test_a_guard_margin_above_the_mses_buys_margin_for_cosine(
    p2_run: tuple[LvmTrainer, list[dict[str, float]]],
) -> None:
    """The seed's tension between the MSE and the guards, which the study's front spans: with
    the seed's hinge margin 0.01 P2's guards are met once the head turns forward; a margin of
    0.25 (directional guard 0.01) pulls past the margin the MSE settles at (~0.12), so the head
    ends with a larger margin (val and OOD) and a lower val cosine, still feasible."""
    p2_report = p2_run[0].run_five_cat()
    pushed, _ = run({**P2, "guard_margin": 0.25, "lambda_dir": 0.01}, 12)
    report = pushed.run_five_cat()
    for split in ("val", "ood"):
        assert report.splits[split].margin >= p2_report.splits[split].margin + 0.05
    assert report.splits["val"].cosine <= p2_report.splits["val"].cosine - 0.02
    assert report.splits["val"].gates_passed >= 4 and report.splits["ood"].margin >= 0.10


def test_future_guard_steps_up_at_epoch_11() -> None:
    trainer = LvmTrainer(TINY, device=CPU, seed=0)
    assert trainer.params["late_epoch"] == 11
    assert trainer.loss_weights(10)["lambda_fut"] == 0.002
    assert trainer.loss_weights(11)["lambda_fut"] == pytest.approx(0.003)
    trainer.knobs["lambda_fut"] = 0.0  # a backoff keeps it at zero
    assert trainer.loss_weights(11)["lambda_fut"] == 0.0


def test_same_seed_same_metrics() -> None:
    _, first = run({**TINY, "eval_samples": 20}, 1)
    _, second = run({**TINY, "eval_samples": 20}, 1)
    assert first == second


def test_transformer_and_direct_head_run() -> None:
    params = {**TINY, "model": "transformer", "residual": False, "heads": 2}
    trainer, history = run(params, 1)
    assert all(math.isfinite(value) for value in history[0].values())
    assert history[0]["loss_res"] == 0.0
    assert not trainer.model.alpha.requires_grad


def test_residual_head_with_zero_delta_copies_the_last_frame() -> None:
    model = NextVectorModel(torch.nn.Flatten(), residual=True, alpha_init=0.0)
    context = torch.nn.functional.normalize(torch.randn(4, 5, 8), dim=-1)
    model.backbone = _Zeros()
    prediction, delta = model(context)
    assert torch.allclose(prediction, context[:, -1]) and not delta.any()


class _Zeros(torch.nn.Module):
    def forward(self, context: torch.Tensor) -> torch.Tensor:
        return torch.zeros(context.shape[0], context.shape[-1])


def test_guard_losses_follow_the_seed() -> None:
    frames = torch.nn.functional.normalize(torch.randn(6, 8, 16), dim=-1)
    next_frame, last = frames[:, 5], frames[:, 4]
    on_target = guard_losses(next_frame, frames, 5, 0.01)
    cos = torch.nn.functional.cosine_similarity
    expected_dir = torch.relu(0.01 - (1 - cos(next_frame, last, dim=-1))).mean()
    assert on_target["dir"] == pytest.approx(float(expected_dir))
    copying = guard_losses(last, frames, 5, 0.01)
    assert copying["dir"] == pytest.approx(float((0.01 + 1 - cos(last, next_frame, dim=-1)).mean()))
    assert copying["ac"] > 0 and copying["cos"] < 1


@pytest.mark.parametrize(
    ("params", "match"),
    [
        ({"model": "rnn"}, "model='rnn'"),
        ({"residual": "yes"}, "residual"),
        ({"article_length": 8}, "too short"),
        ({"step_low": 1.0, "step_high": 0.5}, "swap"),
        ({"dim": 0}, "dim=0"),
        ({"lambda_dir": -0.1}, "lambda_dir"),
        ({"heads": 3, "model": "transformer"}, "divisible"),
        ({"contex": 5}, "no param 'contex'"),
    ],
)
def test_bad_params_are_clear_errors(params: dict[str, Any], match: str) -> None:
    with pytest.raises(ParamError, match=match):
        LvmTrainer.resolve_params(params)


def test_packaged_spec_validates() -> None:
    spec = load_spec("lvm")
    assert spec.trainer == "lvm"
    assert spec.objective_names == ["val_cosine", "val_margin"]
    assert spec.directions == ["maximize", "maximize"]
    assert [(c.metric, c.op, c.value) for c in spec.constraints] == [
        ("gates_passed", ">=", 4),
        ("val_margin", ">=", 0.10),
        ("ood_margin", ">=", 0.10),
    ]
    assert spec.rules == ["directional-guards"]
    assert set(spec.space) == {
        "lr",
        "lambda_dir",
        "lambda_fut",
        "lambda_ac",
        "guard_start_epoch",
        "guard_margin",
        "alpha_init",
    }
    margin = spec.space["guard_margin"]
    assert margin.low == 0.01 < 0.12 < margin.high  # from the seed's hinge past gate A's margin
    assert spec.fixed["residual"] is True  # the seed's P2 head: decisive, so fixed
    assert spec.fixed["mse_dims"] == 768 and spec.quick is not None
    assert all(param.default is not None for param in spec.space.values())


def test_commented_success_table_rules_validate() -> None:
    text = resources.files("hpsearch.search_spaces").joinpath("lvm.yaml").read_text()
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if "P2 success table" in line) + 2
    uncommented = [
        line.replace("  # ", "  ", 1) if line.startswith("  # ") and i >= start else line
        for i, line in enumerate(lines)
    ]
    spec = spec_from_dict(yaml.safe_load("\n".join(uncommented)), "lvm.yaml (uncommented)")
    names = [rule if isinstance(rule, str) else rule.name for rule in spec.rules]
    assert names == ["directional-guards", "p2-epoch-1", "p2-epoch-3", "p2-epoch-6"]
