"""DeviceLoader: determinism, coverage, normalisation, and crop/flip correctness."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from fear_mlflow.data import DeviceLoader, ImageData, load_dataset
from fear_mlflow.data.loader import crop_flip

UNIT = dict(mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))


def _coordinate_images(n: int, side: int = 8) -> torch.Tensor:
    """Pixel (c, y, x) of image i: channel 0 = y+1, 1 = x+1, 2 = i+1 (0 only in padding)."""
    ys = torch.arange(side).view(1, side, 1).expand(n, side, side) + 1
    xs = torch.arange(side).view(1, 1, side).expand(n, side, side) + 1
    ids = torch.arange(n).view(n, 1, 1).expand(n, side, side) + 1
    return torch.stack([ys, xs, ids], dim=1).to(torch.uint8)


def _loader(n: int = 10, **kwargs: object) -> DeviceLoader:
    options = dict(batch_size=4, pad=2, **UNIT)
    options.update(kwargs)
    return DeviceLoader(_coordinate_images(n), torch.arange(n), **options)


def _epoch(loader: DeviceLoader) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return [(x.clone(), y.clone()) for x, y in loader]


def _same(a: list, b: list) -> bool:
    return len(a) == len(b) and all(
        torch.equal(xa, xb) and torch.equal(ya, yb) for (xa, ya), (xb, yb) in zip(a, b, strict=True)
    )


def test_same_seed_same_batches_and_epochs_differ() -> None:
    first, second = _loader(seed=7), _loader(seed=7)
    e0, e1 = _epoch(first), _epoch(first)
    assert _same(e0, _epoch(second)) and _same(e1, _epoch(second))
    assert not _same(e0, e1)  # the epoch counter advanced
    assert not _same(e0, _epoch(_loader(seed=8)))
    first.set_epoch(1)
    assert _same(_epoch(first), e1) and first.epoch == 2


def test_global_rng_untouched() -> None:
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    _epoch(_loader())
    assert torch.equal(torch.rand(3), expected)


def test_every_sample_once_per_epoch() -> None:
    loader = _loader(n=23, batch_size=5)
    for _ in range(3):
        labels = torch.cat([y for _, y in loader])
        assert sorted(labels.tolist()) == list(range(23))
    sizes = [y.numel() for _, y in loader]
    assert sizes == [5, 5, 5, 5, 3] and len(loader) == 5


def test_single_sample_tail_dropped() -> None:
    loader = _loader(n=9, batch_size=4)
    assert [y.numel() for _, y in loader] == [4, 4] and len(loader) == 2
    assert [y.numel() for _, y in _loader(n=9, batch_size=4, drop_single=False)] == [4, 4, 1]
    assert [y.numel() for _, y in _loader(n=11, batch_size=4, drop_last=True)] == [4, 4]
    assert len(_loader(n=11, batch_size=4)) == 3 and _loader(n=9).num_samples == 9


def test_shapes_dtypes_channels_last() -> None:
    x, y = next(iter(_loader(n=6, batch_size=6)))
    assert x.shape == (6, 3, 8, 8) and x.dtype == torch.float32 and y.dtype == torch.int64
    assert x.is_contiguous(memory_format=torch.channels_last)
    x, _ = next(iter(_loader(channels_last=False, dtype=torch.bfloat16)))
    assert x.is_contiguous() and x.dtype == torch.bfloat16


def test_normalisation_without_augment() -> None:
    images = torch.randint(0, 256, (5, 3, 4, 4), dtype=torch.uint8)
    mean, std = (125.3, 123.0, 113.9), (63.0, 62.1, 66.7)
    loader = DeviceLoader(
        images,
        torch.arange(5),
        batch_size=5,
        mean=mean,
        std=std,
        pad=4,
        augment=False,
        shuffle=False,
    )
    x, y = next(iter(loader))
    for c in range(3):
        expected = (images[:, c].double() - mean[c]) / std[c]
        assert torch.allclose(x[:, c].double(), expected, atol=1e-5)
    assert y.tolist() == [0, 1, 2, 3, 4]


def _windows(image: torch.Tensor, pad: int) -> list[torch.Tensor]:
    """Every crop of the zero-padded image, plain and mirrored."""
    padded = F.pad(image, (pad, pad, pad, pad))
    h, w = image.shape[1:]
    crops = [
        padded[:, dy : dy + h, dx : dx + w]
        for dy in range(2 * pad + 1)
        for dx in range(2 * pad + 1)
    ]
    return crops + [c.flip(-1) for c in crops]


def test_augmented_samples_are_padded_windows() -> None:
    images = _coordinate_images(32)
    loader = DeviceLoader(images, torch.arange(32), batch_size=7, pad=2, seed=3, **UNIT)
    seen_shifts, seen_flips = set(), set()
    for _ in range(2):
        for x, y in loader:
            for sample, label in zip(x, y, strict=True):
                windows = _windows(images[label].float(), 2)
                match = [i for i, w in enumerate(windows) if torch.equal(w, sample)]
                assert match, f"sample of image {label} is no padded window"
                seen_flips.add(match[0] >= 25)
                seen_shifts.add(match[0] % 25)
    assert seen_flips == {False, True} and len(seen_shifts) > 10  # augmentation really varies


def test_crop_flip_matches_explicit_window() -> None:
    x = _coordinate_images(2, side=6)
    shifts = torch.tensor([[0, 4], [3, 1]])
    out = crop_flip(x, shifts, torch.tensor([False, True]), pad=2)
    padded = F.pad(x, (2, 2, 2, 2))
    assert torch.equal(out[0], padded[0, :, 0:6, 4:10])
    assert torch.equal(out[1], padded[1, :, 3:9, 1:7].flip(-1))


def test_no_augment_no_shuffle_is_identity_order() -> None:
    images = _coordinate_images(6)
    loader = DeviceLoader(
        images, torch.arange(6), batch_size=4, augment=False, shuffle=False, **UNIT
    )
    x = torch.cat([b for b, _ in loader])
    assert torch.equal(x, images.float())


def test_from_data_defaults() -> None:
    data: ImageData = load_dataset("synthetic")
    train = DeviceLoader.from_data(data, batch_size=100)
    test = DeviceLoader.from_data(data, "test", batch_size=100)
    assert (train.augment, train.shuffle, train.pad) == (True, True, 2)
    assert (test.augment, test.shuffle) == (False, False)
    assert train.num_samples == 512 and len(test) == 2
    x, y = next(iter(test))
    mean = torch.tensor(data.mean).view(1, 3, 1, 1)
    std = torch.tensor(data.std).view(1, 3, 1, 1)
    assert torch.allclose(x, (data.test_x[:100].float() - mean) / std, atol=1e-5)
    assert torch.equal(y, data.test_y[:100])
    assert DeviceLoader.from_data(data, "test", batch_size=100, shuffle=True).shuffle
    with pytest.raises(ValueError):
        DeviceLoader.from_data(data, "val", batch_size=10)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_cuda_matches_cpu() -> None:
    cpu = _epoch(_loader(n=40, seed=5))
    gpu = [(x.cpu(), y.cpu()) for x, y in _loader(n=40, seed=5, device="cuda")]
    assert _same(cpu, gpu)
