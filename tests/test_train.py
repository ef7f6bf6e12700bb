"""Trainer schedule and stop rules, and FEAR's freezing."""

from __future__ import annotations

import pytest
import torch

from fear_mlflow.config import OptimSettings
from fear_mlflow.data.loader import DeviceLoader
from fear_mlflow.errors import UserError
from fear_mlflow.space.arch import parse_arch
from fear_mlflow.space.model import build_model
from fear_mlflow.train.freeze import freeze_all_but, frozen_prefix_forward, name_matches
from fear_mlflow.train.trainer import (
    COMPLETED,
    THRESHOLD_REACHED,
    TIME_BUDGET,
    StopRules,
    Trainer,
    cosine_lr,
)
from tests.helpers import CONV_CELL, TINY, synthetic

CPU = torch.device("cpu")


def test_cosine_schedule_endpoints() -> None:
    assert cosine_lr(0.1, 0, 100) == pytest.approx(0.1)
    assert cosine_lr(0.1, 50, 100) == pytest.approx(0.05)
    assert cosine_lr(0.1, 100, 100) == pytest.approx(0.0)
    assert cosine_lr(0.1, 150, 100) == pytest.approx(0.0)


def _trainer(seed: int = 0, epochs: int = 8) -> Trainer:
    data = synthetic()
    torch.manual_seed(seed)
    model = build_model(parse_arch(CONV_CELL), data.num_classes, **TINY)
    loader = DeviceLoader.from_data(data, "train", batch_size=64, seed=seed)
    return Trainer(
        model, loader, OptimSettings(), schedule_epochs=epochs, stage="stage1", device=CPU
    )


def test_stopping_at_a_threshold_does_not_change_the_trajectory() -> None:
    """The schedule spans the nominal epochs, so a threshold only cuts the same curve."""
    full = _trainer().run(StopRules(max_epochs=4))
    cut = _trainer().run(StopRules(max_epochs=4, threshold=0.2))
    assert full.reason == COMPLETED
    assert cut.reason == THRESHOLD_REACHED
    assert len(cut.history) < len(full.history)
    for a, b in zip(cut.history, full.history):
        assert a.metrics["train_top1"] == b.metrics["train_top1"]
        assert a.metrics["train_loss"] == b.metrics["train_loss"]
        assert a.metrics["lr"] == b.metrics["lr"]


def test_time_budget_stops_training() -> None:
    outcome = _trainer().run(StopRules(max_epochs=50, max_seconds=1e-6))
    assert outcome.reason == TIME_BUDGET
    assert len(outcome.history) == 1


def test_epoch_callback_sees_every_epoch() -> None:
    seen = []
    trainer = _trainer()
    trainer.on_epoch = seen.append
    outcome = trainer.run(StopRules(max_epochs=2))
    assert [r.epoch for r in seen] == [0, 1]
    assert seen == outcome.history


def test_name_matching_respects_dotted_parts() -> None:
    assert name_matches("cells.1.layers.0.op.1.weight", "cells.1")
    assert not name_matches("cells.13.layers.0.op.1.weight", "cells.1")
    assert name_matches("classifier.weight", "classifier")
    assert not name_matches("lastact_extra.weight", "lastact")


def test_freeze_keeps_only_named_modules_trainable() -> None:
    model = build_model(parse_arch(CONV_CELL), 10, **TINY)  # cells 0..4
    trainable = freeze_all_but(model, ("classifier", "cells.4"))
    names = {n for n, p in model.named_parameters() if p.requires_grad}
    assert names and all(n.startswith(("classifier", "cells.4")) for n in names)
    assert len(trainable) == len(names)
    with pytest.raises(UserError, match="cells.9"):
        freeze_all_but(model, ("cells.9",))


def test_frozen_prefix_forward_gives_same_outputs_and_gradients() -> None:
    torch.manual_seed(0)
    model = build_model(parse_arch(CONV_CELL), 10, **TINY)
    freeze_all_but(model, ("classifier", "lastact", "cells.4", "cells.3"))
    x = torch.randn(8, 3, 16, 16)
    model.eval()  # same BN statistics in both passes
    plain = model(x)
    plain.sum().backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}
    model.zero_grad(set_to_none=True)
    fast = frozen_prefix_forward(model)(x)
    fast.sum().backward()
    torch.testing.assert_close(fast, plain)
    for name, param in model.named_parameters():
        if param.requires_grad:
            torch.testing.assert_close(param.grad, grads[name])
        else:
            assert param.grad is None
