"""Device-resident batches: uint8 images stay on the device, augmentation runs per batch.

In the manner of airbench: no workers and no per-sample Python, so a small network on a GPU
is never starved by the input pipeline. Crop and flip are one `gather` per axis with
broadcast (never materialised) index tensors. Every random draw of epoch e comes from a
private generator seeded by (seed, e), so batches are reproducible, independent of the
global RNG, and the same on every device.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F

if TYPE_CHECKING:
    from fear_mlflow.data.datasets import ImageData

Batch = tuple[torch.Tensor, torch.Tensor]


class DeviceLoader:
    """uint8 images live on the device; each epoch yields shuffled, augmented, normalised batches."""

    def __init__(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        *,
        batch_size: int,
        mean: Sequence[float],
        std: Sequence[float],
        pad: int = 0,
        augment: bool = True,
        shuffle: bool = True,
        drop_last: bool = False,
        device: str | torch.device = "cpu",
        seed: int = 0,
        channels_last: bool = True,
        dtype: torch.dtype = torch.float32,
        drop_single: bool = True,
    ) -> None:
        _check_inputs(images, labels, batch_size, mean, std, pad)
        self.device = torch.device(device)
        self.images = images.to(self.device).contiguous()
        self.labels = labels.to(self.device, torch.int64)
        self.batch_size = int(batch_size)
        stats = dict(device=self.device, dtype=torch.float32)
        self.mean = torch.tensor([float(m) for m in mean], **stats).view(1, -1, 1, 1)
        self.std = torch.tensor([float(s) for s in std], **stats).view(1, -1, 1, 1)
        self.pad = int(pad)
        self.augment = augment
        self.shuffle = shuffle
        self.drop_last = drop_last
        self.drop_single = drop_single
        self.seed = int(seed)
        self.channels_last = channels_last
        self.dtype = dtype
        self._epoch = 0

    @classmethod
    def from_data(cls, data: ImageData, split: str = "train", **kwargs: Any) -> DeviceLoader:
        """Loader over one split of `data`; the test split defaults to no augment, no shuffle."""
        if split not in ("train", "test"):
            raise ValueError(f"split must be 'train' or 'test', got {split!r}")
        train = split == "train"
        images, labels = (data.train_x, data.train_y) if train else (data.test_x, data.test_y)
        defaults: dict[str, Any] = dict(mean=data.mean, std=data.std, pad=data.pad)
        defaults.update(augment=train, shuffle=train, drop_single=train)
        return cls(images, labels, **{**defaults, **kwargs})

    @property
    def num_samples(self) -> int:
        """Images held (an epoch may yield fewer when drop_last/drop_single cut the tail)."""
        return int(self.labels.shape[0])

    @property
    def epoch(self) -> int:
        """The epoch the next `iter()` yields."""
        return self._epoch

    def set_epoch(self, epoch: int) -> None:
        self._epoch = int(epoch)

    def __len__(self) -> int:
        return len(self._bounds())

    def __iter__(self) -> Iterator[Batch]:
        epoch, self._epoch = self._epoch, self._epoch + 1
        return self._batches(epoch)

    def _bounds(self) -> list[tuple[int, int]]:
        """(start, stop) per batch; a 1-sample tail is dropped since BatchNorm cannot train on it."""
        n, bs = self.num_samples, self.batch_size
        stop = n - n % bs if self.drop_last else n
        if self.drop_single and stop % bs == 1:
            stop -= 1
        return [(s, min(s + bs, stop)) for s in range(0, stop, bs)]

    def _batches(self, epoch: int) -> Iterator[Batch]:
        order, shifts, flips = self._draws(epoch)
        for start, stop in self._bounds():
            idx = order[start:stop]
            x = self.images.index_select(0, idx)
            if self.augment:
                x = crop_flip(x, shifts[start:stop], flips[start:stop], self.pad)
            yield self._normalise(x), self.labels.index_select(0, idx)

    def _draws(self, epoch: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Order, crop offsets (N×2) and flips of one epoch, drawn on the CPU then moved."""
        gen = torch.Generator().manual_seed(epoch_seed(self.seed, epoch))
        n = self.num_samples
        order = torch.randperm(n, generator=gen) if self.shuffle else torch.arange(n)
        shifts = torch.randint(0, 2 * self.pad + 1, (n, 2), generator=gen)
        flips = torch.randint(0, 2, (n,), generator=gen, dtype=torch.bool)
        return order.to(self.device), shifts.to(self.device), flips.to(self.device)

    def _normalise(self, x: torch.Tensor) -> torch.Tensor:
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        out = (x.to(torch.float32) - self.mean) / self.std
        return out if self.dtype == torch.float32 else out.to(self.dtype)


def crop_flip(x: torch.Tensor, shifts: torch.Tensor, flips: torch.Tensor, pad: int) -> torch.Tensor:
    """Random crop of a zero-padded batch plus horizontal flip, as two gathers.

    Sample i becomes the window of `pad(x[i])` at (shifts[i, 0], shifts[i, 1]), mirrored when
    flips[i]: the same as torchvision's RandomCrop(padding=pad) then RandomHorizontalFlip.
    The index tensors are B×H and B×W, broadcast to the batch shape without copies.
    """
    b, c, h, w = x.shape
    if pad:
        x = F.pad(x, (pad, pad, pad, pad))
    rows = shifts[:, :1] + torch.arange(h, device=x.device)
    cols = torch.arange(w, device=x.device)
    cols = shifts[:, 1:] + torch.where(flips[:, None], w - 1 - cols, cols)
    x = x.gather(2, rows.view(b, 1, h, 1).expand(b, c, h, x.shape[3]))
    return x.gather(3, cols.view(b, 1, 1, w).expand(b, c, h, w))


def epoch_seed(seed: int, epoch: int) -> int:
    """A well-mixed 63-bit seed for (seed, epoch), so nearby pairs give unrelated streams."""
    words = np.random.SeedSequence([seed % 2**64, epoch % 2**64]).generate_state(2, np.uint32)
    return (int(words[0]) << 31) ^ int(words[1])


def _check_inputs(
    images: torch.Tensor,
    labels: torch.Tensor,
    batch_size: int,
    mean: Sequence[float],
    std: Sequence[float],
    pad: int,
) -> None:
    """Programming errors (not user input), so plain ValueErrors with the offending value."""
    if images.dim() != 4 or images.dtype != torch.uint8:
        raise ValueError(f"images must be uint8 N×C×H×W, got {images.dtype} {tuple(images.shape)}")
    if labels.shape != (images.shape[0],):
        raise ValueError(f"labels must have shape ({images.shape[0]},), got {tuple(labels.shape)}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if len(mean) != images.shape[1] or len(std) != images.shape[1]:
        raise ValueError(f"mean/std need {images.shape[1]} values, got {len(mean)}/{len(std)}")
    if any(s <= 0 for s in std) or pad < 0:
        raise ValueError(f"std must be > 0 and pad >= 0, got std={tuple(std)} pad={pad}")
