"""Dataset readers against tiny files written here in the exact published formats."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from fear_mlflow.data import (
    DATASET_NAMES,
    class_balanced_subset,
    dataset_summary,
    load_dataset,
    resolve_dataroot,
)
from fear_mlflow.data import datasets as ds
from fear_mlflow.errors import UserError
from tests.helpers import dump_pickle as _dump
from tests.helpers import pixels as _pixels
from tests.helpers import write_cifar10 as _write_cifar10


@pytest.mark.parametrize("bytes_keys", [False, True])
def test_cifar10_format(tmp_path: Path, bytes_keys: bool) -> None:
    _write_cifar10(tmp_path, bytes_keys)
    data = load_dataset("cifar10", str(tmp_path))
    assert data.train_x.shape == (20, 3, 32, 32) and data.train_x.dtype == torch.uint8
    assert data.test_x.shape == (3, 3, 32, 32) and data.test_y.tolist() == [9, 0, 1]
    assert data.train_y.dtype == torch.int64 and data.train_x.is_contiguous()
    expected_labels = [(b + i) % 10 for b in range(1, 6) for i in range(4)]
    assert data.train_y.tolist() == expected_labels  # batches 1..5 in order
    # CHW row-major: flat index c*1024 + y*32 + x of batch 3's first image
    assert data.train_x[8].numpy().tolist() == _pixels(1, 32, 3).reshape(3, 32, 32).tolist()
    assert data.train_x[8, 1, 2, 5] == (3 + 1024 + 2 * 32 + 5) % 256
    assert (data.num_classes, data.pad, data.image_size) == (10, 4, 32)
    assert data.mean == (125.3, 123.0, 113.9) and data.std == (63.0, 62.1, 66.7)


@pytest.mark.parametrize("bytes_keys", [False, True])
def test_cifar100_fine_labels(tmp_path: Path, bytes_keys: bool) -> None:
    base = tmp_path / "cifar-100-python"
    train = {"data": _pixels(5, 32, 0), "fine_labels": [0, 99, 50, 7, 7], "coarse_labels": [0] * 5}
    _dump(base / "train", train, bytes_keys)
    _dump(base / "test", {"data": _pixels(2, 32, 9), "fine_labels": [98, 1]}, bytes_keys)
    data = load_dataset("cifar100", str(tmp_path))
    assert data.train_y.tolist() == [0, 99, 50, 7, 7] and data.test_y.tolist() == [98, 1]
    assert data.num_classes == 100 and data.train_x.shape == (5, 3, 32, 32)
    assert torch.equal(data.test_x[1].flatten(), torch.from_numpy(_pixels(2, 32, 9)[1]))


@pytest.mark.parametrize("bytes_keys", [False, True])
def test_imagenet16_keeps_labels_1_to_120(tmp_path: Path, bytes_keys: bool) -> None:
    base = tmp_path / "ImageNet16"
    labels = [1, 5, 120, 121, 999]
    for b in range(1, 11):
        _dump(
            base / f"train_data_batch_{b}",
            {"data": _pixels(5, 16, b), "labels": labels},
            bytes_keys,
        )
    _dump(base / "val_data", {"data": _pixels(3, 16, 50), "labels": [121, 120, 2]}, bytes_keys)
    data = load_dataset("imagenet16-120", str(tmp_path))
    assert data.name == "ImageNet16-120" and data.num_classes == 120
    assert data.train_y.tolist() == [0, 4, 119] * 10
    assert data.test_y.tolist() == [119, 1]
    assert data.train_x.shape == (30, 3, 16, 16) and (data.pad, data.image_size) == (2, 16)
    assert torch.equal(data.train_x[2].flatten(), torch.from_numpy(_pixels(5, 16, 1)[2]))
    assert torch.equal(data.test_x[0].flatten(), torch.from_numpy(_pixels(3, 16, 50)[1]))


def test_missing_root_names_expected_path_and_fix(tmp_path: Path) -> None:
    with pytest.raises(UserError) as err:
        load_dataset("cifar10", str(tmp_path / "nowhere"))
    msg = str(err.value)
    assert str(tmp_path / "nowhere" / "cifar-10-batches-py") in msg
    assert "cifar10_from_jpeg.py" in msg and "FEAR_DATAROOT" in msg and "--dataroot" in msg


def test_missing_file_names_it(tmp_path: Path) -> None:
    _write_cifar10(tmp_path)
    (tmp_path / "cifar-10-batches-py" / "data_batch_4").unlink()
    with pytest.raises(UserError, match="data_batch_4") as err:
        load_dataset("cifar10", str(tmp_path))
    assert str(tmp_path / "cifar-10-batches-py" / "data_batch_4") in str(err.value)


def test_imagenet16_missing_names_folder(tmp_path: Path) -> None:
    with pytest.raises(UserError) as err:
        load_dataset("ImageNet16-120", str(tmp_path))
    assert str(tmp_path / "ImageNet16") in str(err.value)


@pytest.mark.parametrize(
    "content, expected",
    [
        (b"this is not a pickle", "not a readable pickle"),
        ({"labels": [0]}, "lacks key"),
        ({"data": np.zeros((2, 100), np.uint8), "labels": [0, 1]}, "shape"),
        ({"data": np.zeros((2, 3072), np.uint8), "labels": [0]}, "labels"),
        ([1, 2, 3], "expected a pickled dict"),
    ],
)
def test_corrupt_file_names_file(tmp_path: Path, content: object, expected: str) -> None:
    _write_cifar10(tmp_path)
    bad = tmp_path / "cifar-10-batches-py" / "test_batch"
    if isinstance(content, bytes):
        bad.write_bytes(content)
    else:
        bad.write_bytes(pickle.dumps(content))
    with pytest.raises(UserError, match=expected) as err:
        load_dataset("cifar10", str(tmp_path))
    assert str(bad) in str(err.value)


def test_out_of_range_labels_rejected(tmp_path: Path) -> None:
    _write_cifar10(tmp_path)
    _dump(
        tmp_path / "cifar-10-batches-py" / "test_batch",
        {"data": _pixels(1, 32, 0), "labels": [10]},
        False,
    )
    with pytest.raises(UserError, match="0..9"):
        load_dataset("cifar10", str(tmp_path))


def test_unknown_name_lists_valid_names() -> None:
    with pytest.raises(UserError) as err:
        load_dataset("mnist")
    assert all(name in str(err.value) for name in DATASET_NAMES)


def test_resolve_dataroot_precedence(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("FEAR_DATAROOT", str(tmp_path / "env"))
    assert resolve_dataroot(str(tmp_path / "flag")) == tmp_path / "flag"
    assert resolve_dataroot(None) == tmp_path / "env"
    monkeypatch.delenv("FEAR_DATAROOT")
    assert resolve_dataroot(None) == Path.home() / "dataroot"


def test_env_dataroot_is_used(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    _write_cifar10(tmp_path)
    monkeypatch.setenv("FEAR_DATAROOT", str(tmp_path))
    assert load_dataset("cifar10").train_y.numel() == 20


def test_digits() -> None:
    data = load_dataset("digits")
    assert data.train_x.shape[1:] == (3, 16, 16) and data.train_x.dtype == torch.uint8
    assert data.train_y.numel() + data.test_y.numel() == 1797
    assert data.test_y.numel() == 360 and data.num_classes == 10
    assert torch.bincount(data.test_y).min() >= 35  # stratified: every class ~36
    assert int(data.train_x.max()) == 255 and int(data.train_x.min()) == 0
    assert torch.equal(data.train_x[:, 0], data.train_x[:, 2])  # grey in three channels
    assert torch.equal(data.train_x[:, :, ::2, ::2], data.train_x[:, :, 1::2, 1::2])  # 2x upscale
    x = data.train_x.double()
    assert data.mean[0] == pytest.approx(x[:, 0].mean().item())
    assert data.std[0] == pytest.approx(x[:, 0].std(correction=0).item())
    again = load_dataset("digits")
    assert torch.equal(again.test_x, data.test_x) and torch.equal(again.train_y, data.train_y)


def test_synthetic_deterministic_and_learnable() -> None:
    data, again = load_dataset("synthetic"), load_dataset("synthetic")
    assert torch.equal(data.train_x, again.train_x) and torch.equal(data.test_y, again.test_y)
    assert data.train_x.shape == (512, 3, 16, 16) and data.test_x.shape == (128, 3, 16, 16)
    assert data.num_classes == 10 and torch.bincount(data.train_y).min() >= 51
    # learnable: nearest class centroid of train already classifies the test split
    centroids = torch.stack(
        [data.train_x[data.train_y == c].float().mean(0) for c in range(10)]
    ).flatten(1)
    dist = torch.cdist(data.test_x.float().flatten(1), centroids)
    assert (dist.argmin(1) == data.test_y).float().mean() > 0.9
    five = load_dataset("synthetic:5")
    assert five.num_classes == 5 and set(five.train_y.tolist()) == set(range(5))
    with pytest.raises(UserError, match="synthetic:NUM_CLASSES"):
        load_dataset("synthetic:one")


def _write_folder(root: Path, sizes: dict[str, int]) -> None:
    colours = {"cat": (255, 0, 0), "dog": (0, 0, 255)}
    for split, count in sizes.items():
        for cls, colour in colours.items():
            (root / split / cls).mkdir(parents=True, exist_ok=True)
            for i in range(count):
                size = (32, 32) if i % 2 == 0 else (48, 40)  # odd ones need resizing
                Image.new("RGB", size, colour).save(root / split / cls / f"{i}.png")


def test_imagefolder_decodes_and_caches(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("FEAR_CACHE", str(tmp_path / "cache"))
    _write_folder(tmp_path / "imgs", {"train": 3, "test": 1})
    (tmp_path / "imgs" / "train" / "cat" / ".DS_Store").write_bytes(b"junk")
    name = f"imagefolder:{tmp_path / 'imgs'}"
    data = load_dataset(name)
    assert data.train_x.shape == (6, 3, 32, 32) and data.test_x.shape == (2, 3, 32, 32)
    assert data.train_y.tolist() == [0, 0, 0, 1, 1, 1] and data.num_classes == 2
    assert data.train_x[1, :, 5, 5].tolist() == [255, 0, 0]  # resized cat stays red
    assert data.train_x[4, :, 5, 5].tolist() == [0, 0, 255]
    assert data.mean[0] == pytest.approx(127.5) and data.pad == 4
    assert len(list((tmp_path / "cache").glob("imagefolder-*.pt"))) == 1

    def refuse(*_args: object, **_kwargs: object) -> None:
        raise AssertionError("decoded again although cached")

    monkeypatch.setattr(ds, "_decode", refuse)
    cached = load_dataset(name)
    assert torch.equal(cached.train_x, data.train_x) and torch.equal(cached.test_y, data.test_y)
    monkeypatch.undo()
    monkeypatch.setenv("FEAR_CACHE", str(tmp_path / "cache"))
    Image.new("RGB", (32, 32), (0, 255, 0)).save(tmp_path / "imgs" / "test" / "dog" / "new.png")
    assert load_dataset(name).test_x.shape[0] == 3  # a changed file list misses the cache
    assert len(list((tmp_path / "cache").glob("imagefolder-*.pt"))) == 2


def test_imagefolder_errors(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("FEAR_CACHE", str(tmp_path / "cache"))
    with pytest.raises(UserError) as err:
        load_dataset(f"imagefolder:{tmp_path / 'none'}")
    assert str(tmp_path / "none" / "train") in str(err.value)
    _write_folder(tmp_path / "imgs", {"train": 1, "test": 1})
    bad = tmp_path / "imgs" / "train" / "dog" / "broken.png"
    bad.write_bytes(b"not an image")
    with pytest.raises(UserError) as err:
        load_dataset(f"imagefolder:{tmp_path / 'imgs'}")
    assert str(bad) in str(err.value)


def test_class_balanced_subset_counts_and_seed() -> None:
    labels = torch.tensor([0] * 50 + [1] * 30 + [2] * 3 + [3] * 17)
    idx = class_balanced_subset(labels, 40, seed=1)
    assert idx.numel() == 40 and idx.unique().numel() == 40
    counts = torch.bincount(labels[idx], minlength=4).tolist()
    assert counts[2] == 3 and sorted(counts) == [3, 12, 12, 13]  # class 2 gives all it has
    assert torch.equal(idx, class_balanced_subset(labels, 40, seed=1))
    others = [class_balanced_subset(labels, 40, seed=s) for s in range(2, 6)]
    assert any(not torch.equal(idx, o) for o in others)
    assert class_balanced_subset(labels, 100, seed=0).tolist() == list(range(100))
    with pytest.raises(UserError):
        class_balanced_subset(labels, 101, seed=0)


def test_train_subset_and_summary(tmp_path: Path) -> None:
    _write_cifar10(tmp_path)
    data = load_dataset("cifar10", str(tmp_path), train_subset=10, seed=3)
    per_class = torch.bincount(data.train_y, minlength=10)
    assert data.train_x.shape[0] == 10 and (per_class > 0).sum() == 8  # all 8 present classes
    assert per_class.max() == 2  # 10 over 8 classes: as equal as possible
    assert data.test_x.shape[0] == 3  # test split untouched
    summary = dataset_summary(data)
    assert summary["train_size"] == 10 and summary["test_size"] == 3
    assert summary["image_shape"] == (3, 32, 32) and summary["num_classes"] == 10
    with pytest.raises(UserError, match="larger than"):
        load_dataset("cifar10", str(tmp_path), train_subset=21)
