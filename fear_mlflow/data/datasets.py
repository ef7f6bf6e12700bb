"""Readers for the datasets in DESIGN.md, all returning uint8 CPU tensors in one shape.

Every reader ends in the same `ImageData`: N×3×H×W uint8 images and int64 labels, so the
loader and the evaluators never care where the pixels came from. The pickled formats are
read with numpy in whole arrays (CIFAR-10 loads in about a second); torchvision's dataset
classes are avoided on purpose, because their md5 check refuses re-encoded copies.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from fear_mlflow.errors import UserError

DATASET_NAMES = (
    "cifar10",
    "cifar100",
    "ImageNet16-120",
    "digits",
    "imagefolder:PATH",
    "synthetic",
)

CIFAR_MEAN = (125.3, 123.0, 113.9)
CIFAR_STD = (63.0, 62.1, 66.7)
IMAGENET16_MEAN = (122.68, 116.66, 104.01)
IMAGENET16_STD = (63.22, 61.26, 65.09)
IMAGENET16_CLASSES = 120
IMAGEFOLDER_SIZE = 32
SYNTHETIC_TRAIN = 512
SYNTHETIC_TEST = 128
SYNTHETIC_SIZE = 16
SYNTHETIC_MAX_CLASSES = 128
_SYNTHETIC_SEED = 20240
_CACHE_VERSION = 1

Split = tuple[torch.Tensor, torch.Tensor]

_ROOT_HINT = "--dataroot DIR or FEAR_DATAROOT=DIR set the folder that holds it"
_CIFAR_SITE = "https://www.cs.toronto.edu/~kriz/cifar.html"
_OBTAIN = {
    "cifar10": (
        "create it with `python ../shared/tools/cifar10_from_jpeg.py --dataroot DIR` "
        f"or extract the official python-version archive cifar-10-python.tar.gz ({_CIFAR_SITE}) "
        "into DIR"
    ),
    "cifar100": (
        f"extract the official python-version archive cifar-100-python.tar.gz ({_CIFAR_SITE}) "
        "into DIR"
    ),
    "ImageNet16-120": (
        "download the 16x16 downsampled ImageNet used by NATS-Bench (Imagenet16_train.tar.gz "
        "and Imagenet16_val.tar.gz from image-net.org, Chrabaszcz et al. 2017) and extract both "
        "into DIR/ImageNet16"
    ),
}


@dataclass
class ImageData:
    """One dataset in memory: uint8 images plus what the loader needs to normalise and crop."""

    name: str
    train_x: torch.Tensor
    train_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    num_classes: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    pad: int

    @property
    def image_size(self) -> int:
        return int(self.train_x.shape[-1])


def resolve_dataroot(dataroot: str | None) -> Path:
    """--dataroot wins, then FEAR_DATAROOT, then ~/dataroot (the paper's default)."""
    chosen = dataroot or os.environ.get("FEAR_DATAROOT") or "~/dataroot"
    return Path(chosen).expanduser()


def load_dataset(
    name: str,
    dataroot: str | None = None,
    *,
    train_subset: int | None = None,
    seed: int = 0,
) -> ImageData:
    """Reads dataset `name`; `train_subset` keeps a seeded, class-balanced part of train."""
    data = _read(name, dataroot)
    if train_subset is not None:
        data = _subset_train(data, train_subset, seed)
    return data


def class_balanced_subset(labels: torch.Tensor, n: int, seed: int) -> torch.Tensor:
    """Sorted indices of `n` samples, as equal per class as the class sizes allow.

    Balanced rather than uniform so a small subset never loses a class by chance; which
    classes get the remainder and which samples are kept depend only on `seed`.
    """
    labels = torch.as_tensor(labels).reshape(-1).to(torch.int64)
    if not 0 < n <= labels.numel():
        raise UserError(
            f"--train-subset must be between 1 and the train split size {labels.numel()}, got {n}"
        )
    gen = torch.Generator().manual_seed(_seed64(seed))
    classes, counts = torch.unique(labels, return_counts=True)
    quota = _balanced_quota(counts, n, gen)
    shuffled = torch.randperm(labels.numel(), generator=gen)
    by_class = shuffled[torch.argsort(labels[shuffled], stable=True)]
    starts = torch.cumsum(counts, 0) - counts
    keep = [by_class[s : s + q] for s, q in zip(starts.tolist(), quota.tolist(), strict=True)]
    return torch.sort(torch.cat(keep)).values


def dataset_summary(data: ImageData) -> dict[str, object]:
    """The facts `fear-mlflow data check` prints: sizes, classes, shape, normalisation."""
    per_class = torch.bincount(data.train_y, minlength=data.num_classes)
    return {
        "name": data.name,
        "num_classes": data.num_classes,
        "train_size": int(data.train_y.numel()),
        "test_size": int(data.test_y.numel()),
        "image_shape": tuple(int(s) for s in data.train_x.shape[1:]),
        "train_per_class_min": int(per_class.min()),
        "train_per_class_max": int(per_class.max()),
        "pad": data.pad,
        "mean": tuple(round(m, 2) for m in data.mean),
        "std": tuple(round(s, 2) for s in data.std),
    }


# --- dispatch -------------------------------------------------------------------------------


def _read(name: str, dataroot: str | None) -> ImageData:
    if name.lower().startswith("imagefolder:"):
        return _read_imagefolder(name, name.split(":", 1)[1])
    if name.lower() == "synthetic" or name.lower().startswith("synthetic:"):
        return _make_synthetic(name)
    readers: dict[str, Callable[[Path], ImageData]] = {
        "cifar10": _read_cifar10,
        "cifar100": _read_cifar100,
        "imagenet16-120": _read_imagenet16,
        "digits": lambda _root: _read_digits(),
    }
    reader = readers.get(name.lower())
    if reader is None:
        valid = ", ".join(DATASET_NAMES + ("synthetic:NUM_CLASSES",))
        raise UserError(f"unknown dataset {name!r}; use one of: {valid}")
    return reader(resolve_dataroot(dataroot))


def _subset_train(data: ImageData, n: int, seed: int) -> ImageData:
    if n > data.train_y.numel():
        raise UserError(
            f"--train-subset {n} is larger than the {data.name} train split "
            f"({data.train_y.numel()} images); use at most {data.train_y.numel()}"
        )
    idx = class_balanced_subset(data.train_y, n, seed)
    data.train_x = data.train_x[idx].contiguous()
    data.train_y = data.train_y[idx].contiguous()
    return data


def _balanced_quota(counts: torch.Tensor, n: int, gen: torch.Generator) -> torch.Tensor:
    """Per-class take: min(count, level), the remainder +1 each to randomly chosen classes."""
    lo, hi = 0, int(counts.max())
    while lo < hi:  # largest level whose total fits in n
        mid = (lo + hi + 1) // 2
        if int(counts.clamp(max=mid).sum()) <= n:
            lo = mid
        else:
            hi = mid - 1
    quota = counts.clamp(max=lo)
    remainder = n - int(quota.sum())
    room = torch.nonzero(counts > quota).reshape(-1)
    lucky = room[torch.randperm(room.numel(), generator=gen)[:remainder]]
    quota[lucky] += 1
    return quota


def _seed64(seed: int) -> int:
    return int(seed) % (2**63)


# --- pickled formats (CIFAR-10, CIFAR-100, ImageNet16) ---------------------------------------


def _require_dir(dataset: str, folder: Path, root: Path) -> None:
    if not folder.is_dir():
        how = _OBTAIN[dataset].replace("DIR", str(root))
        raise UserError(f"{dataset}: missing folder {folder}; {how} ({_ROOT_HINT})")


def _load_pickle(dataset: str, path: Path, root: Path) -> dict[str, object]:
    """Unpickles one batch file; keys are normalised to `str` (old files have `bytes` keys)."""
    if not path.is_file():
        how = _OBTAIN[dataset].replace("DIR", str(root))
        raise UserError(f"{dataset}: missing file {path}; {how} ({_ROOT_HINT})")
    try:
        with path.open("rb") as f:
            obj = pickle.load(f, encoding="latin1")
    except Exception as exc:  # any unpickling failure means the same thing to the user
        raise UserError(
            f"{dataset}: {path} is not a readable pickle ({type(exc).__name__}: {exc}); "
            f"replace it with the python-version file of the same name"
        ) from exc
    if not isinstance(obj, dict):
        raise UserError(
            f"{dataset}: {path} holds a {type(obj).__name__}, expected a pickled dict; "
            f"replace it with the python-version file of the same name"
        )
    return {k.decode("latin1") if isinstance(k, bytes) else str(k): v for k, v in obj.items()}


def _read_batch(
    dataset: str, path: Path, root: Path, label_key: str, side: int
) -> tuple[np.ndarray, np.ndarray]:
    """(N×3×side×side uint8, N int64) from one pickled batch, shape-checked."""
    batch = _load_pickle(dataset, path, root)
    expected = f"a dict with 'data' (N×{3 * side * side} uint8) and '{label_key}' (N ints)"
    missing = [k for k in ("data", label_key) if k not in batch]
    if missing:
        raise UserError(
            f"{dataset}: {path} lacks key(s) {missing}; expected {expected}; "
            f"replace it with the python-version file"
        )
    data = np.asarray(batch["data"])
    labels = np.asarray(batch[label_key])
    if data.ndim != 2 or data.shape[1] != 3 * side * side or not _is_pixels(data):
        raise UserError(
            f"{dataset}: {path} has 'data' of shape {data.shape} and dtype {data.dtype}; "
            f"expected {expected}; replace it with the python-version file"
        )
    if labels.shape != (data.shape[0],) or not np.issubdtype(labels.dtype, np.integer):
        raise UserError(
            f"{dataset}: {path} has {labels.size} '{label_key}' for {data.shape[0]} images; "
            f"expected {expected}; replace it with the python-version file"
        )
    images = data.astype(np.uint8, copy=False).reshape(-1, 3, side, side)
    return images, labels.astype(np.int64, copy=False)


def _is_pixels(data: np.ndarray) -> bool:
    if data.dtype == np.uint8:
        return True
    if not np.issubdtype(data.dtype, np.integer) or data.size == 0:
        return data.size == 0
    return int(data.min()) >= 0 and int(data.max()) <= 255


def _read_split(
    dataset: str, paths: list[Path], root: Path, label_key: str, side: int
) -> tuple[np.ndarray, np.ndarray]:
    parts = [_read_batch(dataset, p, root, label_key, side) for p in paths]
    images = np.concatenate([p[0] for p in parts]) if len(parts) > 1 else parts[0][0]
    labels = np.concatenate([p[1] for p in parts]) if len(parts) > 1 else parts[0][1]
    return images, labels


def _check_labels(dataset: str, folder: Path, labels: np.ndarray, num_classes: int) -> None:
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        raise UserError(
            f"{dataset}: labels in {folder} range {labels.min()}..{labels.max()}, expected "
            f"0..{num_classes - 1}; the files are not {dataset}: replace them"
        )


def _cifar(
    dataset: str, root: Path, folder: str, train: list[str], test: list[str], key: str, k: int
) -> ImageData:
    base = root / folder
    _require_dir(dataset, base, root)
    tr_x, tr_y = _read_split(dataset, [base / f for f in train], root, key, 32)
    te_x, te_y = _read_split(dataset, [base / f for f in test], root, key, 32)
    _check_labels(dataset, base, np.concatenate([tr_y, te_y]), k)
    return _image_data(dataset, tr_x, tr_y, te_x, te_y, k, CIFAR_MEAN, CIFAR_STD, pad=4)


def _read_cifar10(root: Path) -> ImageData:
    train = [f"data_batch_{i}" for i in range(1, 6)]
    return _cifar("cifar10", root, "cifar-10-batches-py", train, ["test_batch"], "labels", 10)


def _read_cifar100(root: Path) -> ImageData:
    return _cifar("cifar100", root, "cifar-100-python", ["train"], ["test"], "fine_labels", 100)


def _read_imagenet16(root: Path) -> ImageData:
    """ImageNet16 labels are 1..1000; the 120-class benchmark keeps 1..120 as 0..119."""
    dataset, base = "ImageNet16-120", root / "ImageNet16"
    _require_dir(dataset, base, root)
    train = [base / f"train_data_batch_{i}" for i in range(1, 11)]
    tr_x, tr_y = _keep_first_classes(*_read_split(dataset, train, root, "labels", 16))
    te_x, te_y = _keep_first_classes(*_read_split(dataset, [base / "val_data"], root, "labels", 16))
    if tr_y.size == 0 or te_y.size == 0:
        raise UserError(
            f"{dataset}: no images with labels 1..{IMAGENET16_CLASSES} in {base}; expected the "
            f"ImageNet16 files with labels 1..1000: replace them"
        )
    mean, std = IMAGENET16_MEAN, IMAGENET16_STD
    return _image_data(dataset, tr_x, tr_y, te_x, te_y, IMAGENET16_CLASSES, mean, std, pad=2)


def _keep_first_classes(images: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    keep = (labels >= 1) & (labels <= IMAGENET16_CLASSES)
    return images[keep], labels[keep] - 1


def _image_data(
    name: str,
    tr_x: np.ndarray,
    tr_y: np.ndarray,
    te_x: np.ndarray,
    te_y: np.ndarray,
    num_classes: int,
    mean: tuple[float, float, float],
    std: tuple[float, float, float],
    pad: int,
) -> ImageData:
    def tensor(a: np.ndarray, dtype: torch.dtype) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(a)).to(dtype)

    return ImageData(
        name=name,
        train_x=tensor(tr_x, torch.uint8),
        train_y=tensor(tr_y, torch.int64),
        test_x=tensor(te_x, torch.uint8),
        test_y=tensor(te_y, torch.int64),
        num_classes=num_classes,
        mean=mean,
        std=std,
        pad=pad,
    )


def _channel_stats(images: torch.Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean/std on the 0..255 scale, in chunks so big sets stay cheap in memory."""
    total = torch.zeros(images.shape[1], dtype=torch.float64)
    squares = torch.zeros_like(total)
    for chunk in images.split(4096):
        x = chunk.to(torch.float64)
        total += x.sum(dim=(0, 2, 3))
        squares += x.square().sum(dim=(0, 2, 3))
    count = images.shape[0] * images.shape[2] * images.shape[3]
    mean = total / count
    std = (squares / count - mean.square()).clamp(min=1e-12).sqrt()
    return tuple(mean.tolist()), tuple(std.tolist())


def _with_computed_stats(
    name: str, train: Split, test: Split, num_classes: int, pad: int
) -> ImageData:
    """For datasets without published statistics: measured on the train split."""
    mean, std = _channel_stats(train[0])
    return ImageData(name, train[0], train[1], test[0], test[1], num_classes, mean, std, pad)


# --- digits (scikit-learn) -------------------------------------------------------------------


def _read_digits() -> ImageData:
    """The 1,797 real 8×8 digits as 3×16×16 uint8, with a fixed stratified 80/20 split."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    pixels = (digits.images.astype(np.int64) * 255 + 8) // 16  # 0..16 → 0..255
    big = pixels.repeat(2, axis=1).repeat(2, axis=2).astype(np.uint8)  # nearest 8→16
    images = np.ascontiguousarray(np.repeat(big[:, None], 3, axis=1))
    labels = digits.target.astype(np.int64)
    idx_tr, idx_te = train_test_split(
        np.arange(labels.size), test_size=0.2, stratify=labels, random_state=0
    )
    train = (torch.from_numpy(images[idx_tr]), torch.from_numpy(labels[idx_tr]))
    test = (torch.from_numpy(images[idx_te]), torch.from_numpy(labels[idx_te]))
    return _with_computed_stats("digits", train, test, 10, pad=2)


# --- synthetic -------------------------------------------------------------------------------


def _make_synthetic(name: str) -> ImageData:
    """Per-class smooth random templates plus noise: learnable in a few epochs, always equal."""
    num_classes = _synthetic_classes(name)
    gen = torch.Generator().manual_seed(_SYNTHETIC_SEED)
    coarse = torch.rand(num_classes, 3, 4, 4, generator=gen) * 255
    templates = F.interpolate(coarse, size=SYNTHETIC_SIZE, mode="bilinear", align_corners=False)

    def split(n: int) -> tuple[torch.Tensor, torch.Tensor]:
        labels = (torch.arange(n) % num_classes)[torch.randperm(n, generator=gen)]
        noise = torch.randn(n, 3, SYNTHETIC_SIZE, SYNTHETIC_SIZE, generator=gen) * 32
        images = (templates[labels] + noise).round().clamp(0, 255).to(torch.uint8)
        return images.contiguous(), labels

    train, test = split(SYNTHETIC_TRAIN), split(SYNTHETIC_TEST)
    return _with_computed_stats(name, train, test, num_classes, pad=2)


def _synthetic_classes(name: str) -> int:
    _, _, count = name.partition(":")
    if not count:
        return 10
    if not count.isdigit() or not 2 <= int(count) <= SYNTHETIC_MAX_CLASSES:
        raise UserError(
            f"bad dataset {name!r}: write synthetic:NUM_CLASSES with NUM_CLASSES an integer "
            f"from 2 to {SYNTHETIC_MAX_CLASSES}, or plain synthetic (10 classes)"
        )
    return int(count)


# --- imagefolder -----------------------------------------------------------------------------


def _read_imagefolder(name: str, raw_path: str) -> ImageData:
    """PATH/train/<class>/* and PATH/test/<class>/*, decoded once and cached as a .pt file."""
    root = Path(raw_path).expanduser().resolve()
    for split in ("train", "test"):
        if not (root / split).is_dir():
            raise UserError(
                f"{name}: missing folder {root / split}; an image folder needs "
                f"PATH/train/<class>/<image> and PATH/test/<class>/<image>"
            )
    classes = _folder_classes(name, root / "train")
    files = {s: _folder_files(name, root / s, classes) for s in ("train", "test")}
    cache = _cache_path(root, files)
    tensors = _load_cache(cache)
    if tensors is None:
        tensors = {}
        for split, entries in files.items():
            tensors[f"{split}_x"] = _decode_all(name, [p for p, _ in entries])
            tensors[f"{split}_y"] = torch.tensor([c for _, c in entries], dtype=torch.int64)
        _save_cache(cache, tensors)
    train = (tensors["train_x"], tensors["train_y"])
    test = (tensors["test_x"], tensors["test_y"])
    return _with_computed_stats(name, train, test, len(classes), pad=4)


def _folder_classes(name: str, train_dir: Path) -> list[str]:
    classes = sorted(p.name for p in train_dir.iterdir() if p.is_dir() and _visible(p))
    if not classes:
        raise UserError(
            f"{name}: no class folders in {train_dir}; put each class's images in "
            f"{train_dir}/<class>/"
        )
    return classes


def _folder_files(name: str, split_dir: Path, classes: list[str]) -> list[tuple[Path, int]]:
    found = sorted(p.name for p in split_dir.iterdir() if p.is_dir() and _visible(p))
    unknown = sorted(set(found) - set(classes))
    if unknown:
        raise UserError(
            f"{name}: {split_dir} has classes {unknown} that the train split lacks; "
            f"give train and test the same class folders"
        )
    entries = [
        (f, label)
        for label, cls in enumerate(classes)
        if (split_dir / cls).is_dir()
        for f in sorted((split_dir / cls).iterdir())
        if f.is_file() and _visible(f)
    ]
    if not entries:
        raise UserError(f"{name}: no image files under {split_dir}/<class>/; add some images")
    return entries


def _visible(path: Path) -> bool:
    return not path.name.startswith(".")


def _decode_all(name: str, paths: list[Path]) -> torch.Tensor:
    out = np.empty((len(paths), 3, IMAGEFOLDER_SIZE, IMAGEFOLDER_SIZE), dtype=np.uint8)
    for i, path in enumerate(paths):
        out[i] = _decode(name, path)
    return torch.from_numpy(out)


def _decode(name: str, path: Path) -> np.ndarray:
    from PIL import Image

    try:
        with Image.open(path) as img:
            rgb = img.convert("RGB")
    except Exception as exc:
        raise UserError(
            f"{name}: cannot decode {path} as an image ({exc}); remove it or replace it "
            f"with a PNG/JPEG"
        ) from exc
    size = (IMAGEFOLDER_SIZE, IMAGEFOLDER_SIZE)
    if rgb.size != size:
        rgb = rgb.resize(size, Image.Resampling.BILINEAR)
    return np.asarray(rgb, dtype=np.uint8).transpose(2, 0, 1)


def _cache_dir() -> Path:
    return Path(os.environ.get("FEAR_CACHE") or "~/.cache/fear-mlflow").expanduser()


def _cache_path(root: Path, files: dict[str, list[tuple[Path, int]]]) -> Path:
    """Keyed by the folder and every file's name, size and mtime: any change re-decodes."""
    listing = {
        split: [_file_key(root, p, c) for p, c in entries] for split, entries in files.items()
    }
    key = json.dumps([_CACHE_VERSION, IMAGEFOLDER_SIZE, str(root), listing])
    digest = hashlib.sha256(key.encode()).hexdigest()[:24]
    return _cache_dir() / f"imagefolder-{digest}.pt"


def _file_key(root: Path, path: Path, label: int) -> tuple[str, int, int, int]:
    stat = path.stat()
    return str(path.relative_to(root)), label, stat.st_size, stat.st_mtime_ns


def _load_cache(path: Path) -> dict[str, torch.Tensor] | None:
    if not path.is_file():
        return None
    try:
        tensors = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # a torn or foreign cache file is just a miss
        return None
    keys = {"train_x", "train_y", "test_x", "test_y"}
    return tensors if isinstance(tensors, dict) and keys <= tensors.keys() else None


def _save_cache(path: Path, tensors: dict[str, torch.Tensor]) -> None:
    """Written to a temp name then renamed, so a concurrent reader never sees half a file."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        torch.save(tensors, tmp)
        os.replace(tmp, path)
    except OSError:
        pass  # no writable cache: the next load simply decodes again
