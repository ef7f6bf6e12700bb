"""Datasets as uint8 tensors, and the device-resident loader that augments them in batches."""

from fear_mlflow.data.datasets import (
    DATASET_NAMES,
    ImageData,
    class_balanced_subset,
    dataset_summary,
    load_dataset,
    resolve_dataroot,
)
from fear_mlflow.data.loader import DeviceLoader

__all__ = [
    "DATASET_NAMES",
    "DeviceLoader",
    "ImageData",
    "class_balanced_subset",
    "dataset_summary",
    "load_dataset",
    "resolve_dataroot",
]
