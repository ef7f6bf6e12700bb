"""FEAR (Dey et al.): train to a training-accuracy threshold, then briefly train the last cells.

Stage 1 trains the whole net with a cosine schedule over a nominal ``stage1_epochs``
and stops as soon as the running train top-1 reaches the threshold. Stage 2 freezes
everything but ``unfreeze`` (the head and the last four cells by default), builds a fresh
optimiser with a cosine schedule over ``freeze_epochs`` and trains at the freeze batch
size. The score is the train top-1 of the last stage-2 epoch; the cost is the seconds of
both training loops.
"""

from __future__ import annotations

import time
from functools import partial

import torch

from fear_mlflow.config import (
    FearSettings,
    RunContext,
    effective_unfreeze,
    validate_unfreeze,
)
from fear_mlflow.data.datasets import ImageData
from fear_mlflow.data.loader import DeviceLoader
from fear_mlflow.evaluators.common import chance_level, seeded_model, size_summary
from fear_mlflow.evaluators.fear_stage1 import can_reuse, run_stage1, stage1_identity
from fear_mlflow.evaluators.result import EvalResult
from fear_mlflow.space.arch import Arch
from fear_mlflow.train.feature_cache import CachedFeatureBatches, prefix_features
from fear_mlflow.train.freeze import (
    freeze_all_but,
    frozen_prefix_forward,
    frozen_prefix_length,
    run_suffix,
)
from fear_mlflow.train.stage1_store import Stage1Store
from fear_mlflow.train.trainer import (
    DIVERGED,
    THRESHOLD_REACHED,
    EpochCallback,
    StopRules,
    Trainer,
)

#: Stage-2 loader seed offset, so stage 2 sees a different order than stage 1's epoch 0.
STAGE2_SEED_OFFSET = 1_000_003


def not_reached_score(stage1_top1: float) -> float:
    """Below every arch that reached the threshold (scores in [0, 1]) yet ordered by progress."""
    return stage1_top1 - 1.0


def evaluate_fear(
    arch: Arch,
    data: ImageData,
    settings: FearSettings,
    context: RunContext,
    device: torch.device,
    *,
    precision: str = "fp32",
    compile_model: bool = False,
    on_epoch: EpochCallback | None = None,
    progress: bool = False,
    stage1_store: Stage1Store | None = None,
) -> EvalResult:
    """Run FEAR's two stages on ``arch``; degenerate cells are not trained at all.

    With ``stage1_store``, stage 1 is reused exactly across thresholds; ``duration_s``
    still reports what a fresh run costs (the originally measured epoch seconds).
    """
    wall_start = time.perf_counter()
    unfreeze = effective_unfreeze(settings.unfreeze, context.total_cells)
    validate_unfreeze(unfreeze, context.total_cells)
    model = seeded_model(arch, data, context, device)
    summary = size_summary(model, data)
    if arch.is_degenerate:
        return EvalResult(
            "fear",
            "degenerate",
            chance_level(data),
            0.0,
            time.perf_counter() - wall_start,
            {**summary, "stage1_s": 0.0, "stage2_s": 0.0, "stage1_epochs": 0.0},
        )

    stage1_loader = DeviceLoader.from_data(
        data, "train", batch_size=settings.batch_size, device=device, seed=context.seed
    )
    trainer = Trainer(
        model,
        stage1_loader,
        settings.optim,
        schedule_epochs=settings.stage1_epochs,
        stage="stage1",
        device=device,
        precision=precision,
        compile_model=compile_model,
        progress=progress,
    )
    rules = StopRules(
        max_epochs=settings.stage1_epochs,
        threshold=settings.threshold,
        check_every=settings.check_every,
        max_seconds=settings.max_seconds,
    )
    store = stage1_store if stage1_store is not None and can_reuse(settings) else None
    key = stage1_identity(arch, settings, context, device, precision)
    stage1 = run_stage1(trainer, rules, store, key, on_epoch)
    summary.update(stage1_s=stage1.seconds, stage1_epochs=stage1.epochs, stage2_s=0.0)
    history = list(stage1.history)
    if stage1.reason != THRESHOLD_REACHED:
        status = "diverged" if stage1.reason == DIVERGED else "threshold_not_reached"
        score = -1.0 if status == "diverged" else not_reached_score(stage1.last_top1)
        return EvalResult(
            "fear",
            status,
            score,
            stage1.seconds,
            time.perf_counter() - wall_start,
            summary,
            history,
        )
    if settings.freeze_epochs == 0:
        return EvalResult(
            "fear",
            "ok",
            stage1.last_top1,
            stage1.seconds,
            time.perf_counter() - wall_start,
            summary,
            history,
        )

    stage2_seed = context.seed + STAGE2_SEED_OFFSET
    stage2_loader: DeviceLoader | CachedFeatureBatches = DeviceLoader.from_data(
        data, "train", batch_size=settings.freeze_batch_size, device=device, seed=stage2_seed
    )
    if settings.no_freeze:
        trainable = list(model.parameters())
        forward = model
    else:
        trainable = freeze_all_but(model, unfreeze)
        forward = frozen_prefix_forward(model)
    if settings.stage2_cache:
        prefix = frozen_prefix_length(model)
        plain = DeviceLoader(
            data.train_x,
            data.train_y,
            batch_size=1024,
            mean=data.mean,
            std=data.std,
            augment=False,
            shuffle=False,
            drop_single=False,
            device=device,
        )
        stage2_loader = CachedFeatureBatches(
            lambda: prefix_features(model, prefix, plain, device, precision),
            len(data.train_y),
            batch_size=settings.freeze_batch_size,
            seed=stage2_seed,
        )
        forward = partial(run_suffix, model, prefix)
    stage2 = Trainer(
        model,
        stage2_loader,
        settings.optim,
        schedule_epochs=settings.freeze_epochs,
        stage="stage2",
        device=device,
        params=trainable,
        forward=forward,
        precision=precision,
        compile_model=compile_model,
        on_epoch=on_epoch,
        progress=progress,
    ).run(StopRules(max_epochs=settings.freeze_epochs))
    history.extend(stage2.history)
    summary["stage2_s"] = stage2.seconds
    duration = stage1.seconds + stage2.seconds
    status = "diverged" if stage2.reason == DIVERGED else "ok"
    score = -1.0 if status == "diverged" else stage2.last_top1
    return EvalResult(
        "fear", status, score, duration, time.perf_counter() - wall_start, summary, history
    )
