"""Small shared builders for tests: tiny nets on the synthetic dataset."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np

from fear_mlflow.config import RunContext
from fear_mlflow.data.datasets import ImageData, load_dataset

TINY = {"channels": 4, "cells_per_stage": 1}
CONV_CELL = "|nor_conv_3x3~0|+|nor_conv_1x1~0|skip_connect~1|+|skip_connect~0|nor_conv_3x3~1|avg_pool_3x3~2|"
DEGENERATE_CELL = "|none~0|+|nor_conv_3x3~0|none~1|+|none~0|none~1|none~2|"


def synthetic() -> ImageData:
    return load_dataset("synthetic")


def tiny_context(seed: int = 36) -> RunContext:
    return RunContext(dataset="synthetic", seed=seed, device="cpu", **TINY)


def pixels(n: int, side: int, start: int) -> np.ndarray:
    """Distinct, recognisable rows: image i is filled with (start + i + position) mod 256."""
    flat = np.arange(3 * side * side)[None, :] + np.arange(n)[:, None] + start
    return (flat % 256).astype(np.uint8)


def dump_pickle(path: Path, obj: object, bytes_keys: bool) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if bytes_keys:  # the original python-2 era files come back with bytes keys
        obj = {k.encode(): v for k, v in obj.items()}
    with path.open("wb") as f:
        pickle.dump(obj, f, protocol=2 if bytes_keys else 4)


def write_cifar10(root: Path, bytes_keys: bool = False) -> None:
    base = root / "cifar-10-batches-py"
    for b in range(1, 6):
        labels = [(b + i) % 10 for i in range(4)]
        dump_pickle(
            base / f"data_batch_{b}", {"data": pixels(4, 32, b), "labels": labels}, bytes_keys
        )
    dump_pickle(base / "test_batch", {"data": pixels(3, 32, 77), "labels": [9, 0, 1]}, bytes_keys)
