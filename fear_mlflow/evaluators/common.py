"""What the training evaluators share: seeded model construction and result assembly."""

from __future__ import annotations

import torch

from fear_mlflow.config import RunContext
from fear_mlflow.data.datasets import ImageData
from fear_mlflow.data.loader import DeviceLoader
from fear_mlflow.evaluators.result import EpochRecord
from fear_mlflow.space.arch import Arch
from fear_mlflow.space.model import TinyNetwork, build_model, count_flops, count_parameters
from fear_mlflow.train.trainer import EpochCallback, evaluate_top1


def seeded_model(
    arch: Arch,
    data: ImageData,
    context: RunContext,
    device: torch.device,
    *,
    edge_conv_bias: bool = False,
) -> TinyNetwork:
    """The network with weights drawn from ``context.seed`` (same seed → same init)."""
    torch.manual_seed(context.seed)
    return build_model(
        arch,
        data.num_classes,
        channels=context.channels,
        cells_per_stage=context.cells_per_stage,
        device=device,
        edge_conv_bias=edge_conv_bias,
    )


def size_summary(model: TinyNetwork, data: ImageData) -> dict[str, float]:
    """``params`` (exact count) and ``flops`` (MFLOPs per image)."""
    return {
        "params": float(count_parameters(model)),
        "flops": count_flops(model, data.image_size),
    }


def chance_level(data: ImageData) -> float:
    """Top-1 of guessing: the score a degenerate (constant-output) cell gets."""
    return 1.0 / data.num_classes


def test_accuracy_record(
    model: TinyNetwork,
    data: ImageData,
    device: torch.device,
    precision: str,
    epoch: int,
    on_epoch: EpochCallback | None,
) -> EpochRecord:
    """Test top-1/loss after training, as a ``test`` record handed to the callback too."""
    test_loader = DeviceLoader.from_data(data, "test", batch_size=1024, device=device)
    top1, loss = evaluate_top1(model, test_loader, device, precision)
    record = EpochRecord("test", epoch, {"top1": top1, "loss": loss})
    if on_epoch is not None:
        on_epoch(record)
    return record
