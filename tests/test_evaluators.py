"""Evaluators on a tiny net: statuses, scores, determinism, stage bookkeeping."""

from __future__ import annotations

import math

import pytest
import torch

from fear_mlflow.config import FearSettings, OptimSettings, RegularSettings, ShortregSettings
from fear_mlflow.evaluators.fear import evaluate_fear
from fear_mlflow.evaluators.regular import evaluate_regular
from fear_mlflow.evaluators.shortreg import evaluate_shortreg
from fear_mlflow.space.arch import parse_arch
from tests.helpers import CONV_CELL, DEGENERATE_CELL, synthetic, tiny_context

CPU = torch.device("cpu")


def _history_values(result) -> list[tuple[str, int, dict[str, float]]]:
    return [
        (r.stage, r.epoch, {k: v for k, v in r.metrics.items() if k != "epoch_s"})
        for r in result.history
    ]


def test_fear_same_seed_gives_identical_score_and_history() -> None:
    data = synthetic()
    settings = FearSettings(
        threshold=0.3, batch_size=64, stage1_epochs=6, freeze_batch_size=128, freeze_epochs=2
    )
    first = evaluate_fear(parse_arch(CONV_CELL), data, settings, tiny_context(), CPU)
    second = evaluate_fear(parse_arch(CONV_CELL), data, settings, tiny_context(), CPU)
    other_seed = evaluate_fear(parse_arch(CONV_CELL), data, settings, tiny_context(7), CPU)
    assert first.status == "ok"
    assert first.score == second.score
    assert _history_values(first) == _history_values(second)
    assert _history_values(first) != _history_values(other_seed)


def test_fear_stages_and_bookkeeping() -> None:
    data = synthetic()
    settings = FearSettings(
        threshold=0.3, batch_size=64, stage1_epochs=10, freeze_batch_size=128, freeze_epochs=3
    )
    result = evaluate_fear(parse_arch(CONV_CELL), data, settings, tiny_context(), CPU)
    stage1 = [r for r in result.history if r.stage == "stage1"]
    stage2 = [r for r in result.history if r.stage == "stage2"]
    assert result.status == "ok"
    assert stage1[-1].metrics["train_top1"] >= 0.3
    assert all(r.metrics["train_top1"] < 0.3 for r in stage1[:-1])
    assert len(stage2) == 3
    assert result.score == stage2[-1].metrics["train_top1"]
    assert result.summary["stage1_epochs"] == len(stage1)
    assert result.duration_s == pytest.approx(
        result.summary["stage1_s"] + result.summary["stage2_s"]
    )
    assert result.wall_s >= result.duration_s
    # stage 2 has its own cosine schedule: its lr starts at the base lr again
    assert stage2[0].metrics["lr"] == stage1[0].metrics["lr"] == 0.1
    assert stage1[-1].metrics["lr"] < 0.1
    assert stage2[-1].metrics["lr"] < stage2[0].metrics["lr"]


def test_fear_threshold_not_reached_ranks_below_every_reached_arch() -> None:
    data = synthetic()
    settings = FearSettings(threshold=1.0, batch_size=64, stage1_epochs=2, freeze_epochs=1)
    result = evaluate_fear(parse_arch(CONV_CELL), data, settings, tiny_context(), CPU)
    assert result.status == "threshold_not_reached"
    assert result.score < 0 <= result.score + 1
    assert [r.stage for r in result.history] == ["stage1", "stage1"]


def test_fear_degenerate_cell_is_not_trained() -> None:
    data = synthetic()
    arch = parse_arch(DEGENERATE_CELL)
    assert arch.is_degenerate
    result = evaluate_fear(arch, data, FearSettings(threshold=0.5), tiny_context(), CPU)
    assert result.status == "degenerate"
    assert result.score == pytest.approx(1 / data.num_classes)
    assert result.history == []
    assert result.duration_s == 0.0


def test_check_every_stops_inside_the_epoch() -> None:
    data = synthetic()
    per_epoch = FearSettings(threshold=0.3, batch_size=32, stage1_epochs=10, freeze_epochs=0)
    mid_epoch = FearSettings(
        threshold=0.3, batch_size=32, stage1_epochs=10, freeze_epochs=0, check_every=2
    )
    a = evaluate_fear(parse_arch(CONV_CELL), data, per_epoch, tiny_context(), CPU)
    b = evaluate_fear(parse_arch(CONV_CELL), data, mid_epoch, tiny_context(), CPU)
    assert a.status == b.status == "ok"
    assert b.summary["stage1_epochs"] <= a.summary["stage1_epochs"]
    assert b.summary["stage1_epochs"] != int(b.summary["stage1_epochs"])  # stopped mid-epoch


def test_diverging_training_is_reported() -> None:
    data = synthetic()
    wild = OptimSettings(lr=1e12, grad_clip=0.0, momentum=0.0)
    result = evaluate_shortreg(
        parse_arch(CONV_CELL),
        data,
        ShortregSettings(batch_size=64, epochs=3, optim=wild),
        tiny_context(),
        CPU,
    )
    assert result.status == "diverged"
    assert result.score == -1.0
    assert not math.isfinite(result.history[-1].metrics["train_loss"])


def test_shortreg_score_is_best_train_top1_and_test_is_optional() -> None:
    data = synthetic()
    settings = ShortregSettings(batch_size=64, epochs=3, eval_test=True)
    result = evaluate_shortreg(parse_arch(CONV_CELL), data, settings, tiny_context(), CPU)
    train = [r.metrics["train_top1"] for r in result.history if r.stage == "train"]
    assert len(train) == 3
    assert result.score == max(train)
    assert 0.0 <= result.summary["test_top1"] <= 1.0
    assert result.history[-1].stage == "test"
    # lr follows a cosine over exactly the 3 epochs
    lrs = [r.metrics["lr"] for r in result.history if r.stage == "train"]
    assert lrs == sorted(lrs, reverse=True)


def test_regular_scores_test_accuracy_and_learns() -> None:
    data = synthetic()
    result = evaluate_regular(
        parse_arch(CONV_CELL), data, RegularSettings(batch_size=64, epochs=4), tiny_context(), CPU
    )
    assert result.status == "ok"
    assert result.score == result.summary["test_top1"]
    assert result.score > 2.0 / data.num_classes  # well above chance on the learnable set
