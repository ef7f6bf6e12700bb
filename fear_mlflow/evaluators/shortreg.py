"""Shortened regular training: E epochs at batch B with a cosine schedule over E epochs.

The score is the best running train top-1 over the epochs (the paper's baseline).
"""

from __future__ import annotations

import time

import torch

from fear_mlflow.config import RunContext, ShortregSettings
from fear_mlflow.data.datasets import ImageData
from fear_mlflow.data.loader import DeviceLoader
from fear_mlflow.evaluators.common import (
    chance_level,
    seeded_model,
    size_summary,
    test_accuracy_record,
)
from fear_mlflow.evaluators.result import EvalResult
from fear_mlflow.space.arch import Arch
from fear_mlflow.train.trainer import DIVERGED, EpochCallback, StopRules, Trainer


def evaluate_shortreg(
    arch: Arch,
    data: ImageData,
    settings: ShortregSettings,
    context: RunContext,
    device: torch.device,
    *,
    precision: str = "fp32",
    compile_model: bool = False,
    on_epoch: EpochCallback | None = None,
    progress: bool = False,
) -> EvalResult:
    wall_start = time.perf_counter()
    model = seeded_model(arch, data, context, device)
    summary = size_summary(model, data)
    if arch.is_degenerate:
        return EvalResult(
            "shortreg",
            "degenerate",
            chance_level(data),
            0.0,
            time.perf_counter() - wall_start,
            summary,
        )
    loader = DeviceLoader.from_data(
        data, "train", batch_size=settings.batch_size, device=device, seed=context.seed
    )
    outcome = Trainer(
        model,
        loader,
        settings.optim,
        schedule_epochs=settings.epochs,
        stage="train",
        device=device,
        precision=precision,
        compile_model=compile_model,
        on_epoch=on_epoch,
        progress=progress,
    ).run(StopRules(max_epochs=settings.epochs, max_seconds=settings.max_seconds))
    history = list(outcome.history)
    summary["epochs_run"] = outcome.epochs
    if settings.eval_test:
        record = test_accuracy_record(model, data, device, precision, len(history) - 1, on_epoch)
        history.append(record)
        summary["test_top1"] = record.metrics["top1"]
    status = "diverged" if outcome.reason == DIVERGED else "ok"
    score = -1.0 if status == "diverged" else outcome.best_top1
    return EvalResult(
        "shortreg",
        status,
        score,
        outcome.seconds,
        time.perf_counter() - wall_start,
        summary,
        history,
    )
