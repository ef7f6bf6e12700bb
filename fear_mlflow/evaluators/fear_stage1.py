"""FEAR stage 1 with optional exact reuse through a `Stage1Store` (see that module)."""

from __future__ import annotations

from dataclasses import asdict

import torch

from fear_mlflow.config import FearSettings, RunContext
from fear_mlflow.evaluators.result import EpochRecord
from fear_mlflow.space.arch import Arch
from fear_mlflow.train.stage1_store import Stage1Record, Stage1Store, stage1_key
from fear_mlflow.train.trainer import (
    COMPLETED,
    DIVERGED,
    THRESHOLD_REACHED,
    EpochCallback,
    StopRules,
    Trainer,
    TrainOutcome,
)


def stage1_identity(
    arch: Arch, settings: FearSettings, context: RunContext, device: torch.device, precision: str
) -> str:
    """Key of everything the stage-1 trajectory depends on (not the threshold).

    On a CPU that includes the torch thread count: it changes float reductions, and a
    trajectory trained with 2 threads is not the one a 1-thread process would train.
    """
    return stage1_key(
        {
            "arch": str(arch),
            **context.params(),
            "batch_size": settings.batch_size,
            "stage1_epochs": settings.stage1_epochs,
            **asdict(settings.optim),
            "precision": precision,
            "device": device.type,
            **({"torch_threads": torch.get_num_threads()} if device.type == "cpu" else {}),
        }
    )


def can_reuse(settings: FearSettings) -> bool:
    """Reuse needs epoch-boundary stops only: no mid-epoch checks, no time budget."""
    return settings.check_every == 0 and settings.max_seconds is None


def run_stage1(
    trainer: Trainer,
    rules: StopRules,
    store: Stage1Store | None,
    key: str,
    on_epoch: EpochCallback | None,
) -> TrainOutcome:
    """Stage 1, served from ``store`` when it can be, else trained (and remembered)."""
    if store is None:
        trainer.on_epoch = on_epoch
        return trainer.run(rules)
    with store.session(key) as record:
        return _run_with_record(trainer, rules, store, record, on_epoch)


def _snapshot(trainer: Trainer) -> dict[str, object]:
    model_state = {
        k: v.detach().to("cpu", copy=True) for k, v in trainer.model.state_dict().items()
    }
    return {"model": model_state, "optimizer": trainer.optimizer.state_dict()}


def _replay(records: list[EpochRecord], on_epoch: EpochCallback | None) -> None:
    if on_epoch is not None:
        for record in records:
            on_epoch(record)


def _outcome(reason: str, history: list[EpochRecord]) -> TrainOutcome:
    """Outcome of a (partly) replayed stage 1; seconds are the originally measured ones."""
    top1 = [r.metrics["train_top1"] for r in history]
    seconds = sum(r.metrics["epoch_s"] for r in history)
    return TrainOutcome(
        reason,
        float(sum(r.metrics.get("epoch_fraction", 1.0) for r in history)),
        seconds,
        top1[-1] if top1 else 0.0,
        max(top1, default=0.0),
        history,
    )


def _run_with_record(
    trainer: Trainer,
    rules: StopRules,
    store: Stage1Store,
    record: Stage1Record,
    on_epoch: EpochCallback | None,
) -> TrainOutcome:
    assert rules.threshold is not None
    cross = record.crossing_epoch(rules.threshold)
    saved = record.saved_epochs
    if cross is not None and cross in saved:
        trainer.model.load_state_dict(record.load_state(cross)["model"])
        replay = [r for r in record.trajectory if r.epoch <= cross]
        _replay(replay, on_epoch)
        return _outcome(THRESHOLD_REACHED, replay)
    if cross is None and record.complete_reason is not None:
        _replay(record.trajectory, on_epoch)
        return _outcome(record.complete_reason, list(record.trajectory))

    target = cross if cross is not None else rules.max_epochs
    start = max((e for e in saved if e < target), default=-1)
    if start >= 0:
        state = record.load_state(start)
        trainer.model.load_state_dict(state["model"])
        trainer.optimizer.load_state_dict(state["optimizer"])
    record.truncate_after(start)
    replay = list(record.trajectory)
    _replay(replay, on_epoch)
    previous = replay[-1].metrics["train_top1"] if replay else 0.0

    def remember(epoch_record: EpochRecord) -> None:
        nonlocal previous
        top1 = epoch_record.metrics["train_top1"]
        record.trajectory.append(epoch_record)
        if store.levels_crossed(previous, top1):
            record.save_state(epoch_record.epoch, _snapshot(trainer))
        previous = top1
        if on_epoch is not None:
            on_epoch(epoch_record)

    trainer.on_epoch = remember
    fresh = trainer.run(rules, start_epoch=start + 1)
    if fresh.history and fresh.history[-1].epoch not in record.saved_epochs:
        record.save_state(fresh.history[-1].epoch, _snapshot(trainer))
    if fresh.reason in (COMPLETED, DIVERGED):
        record.complete_reason = fresh.reason
    history = replay + fresh.history
    return _outcome(fresh.reason, history)
