"""Optional FEAR stage-2 shortcut: compute the frozen prefix's features once, then train the rest.

Semantics differ from the paper's stage 2 in two documented ways, which is why it is off
by default (``--stage2-cache``): (1) stage 2 sees the training images without
augmentation, and (2) frozen BatchNorm layers use their running statistics (eval mode)
instead of per-batch statistics. In exchange every stage-2 epoch after the first runs
only the trainable suffix.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import torch

from fear_mlflow.data.loader import DeviceLoader, epoch_seed
from fear_mlflow.device import autocast
from fear_mlflow.space.model import TinyNetwork
from fear_mlflow.train.freeze import run_prefix, stages

Batch = tuple[torch.Tensor, torch.Tensor]


@torch.no_grad()
def prefix_features(
    model: TinyNetwork, prefix: int, loader: DeviceLoader, device: torch.device, precision: str
) -> tuple[torch.Tensor, torch.Tensor]:
    """Features after the first ``prefix`` body stages for every image, frozen BN in eval mode."""
    modules = stages(model)[:prefix]
    modes = [m.training for m in modules]
    for m in modules:
        m.eval()
    feats, labels = [], []
    try:
        for x, y in loader:
            with autocast(device, precision):
                feats.append(run_prefix(model, prefix, x).float())
            labels.append(y)
    finally:
        for m, mode in zip(modules, modes):
            m.train(mode)
    return torch.cat(feats), torch.cat(labels)


class CachedFeatureBatches:
    """Shuffled minibatches over features computed lazily on the first epoch.

    The first ``iter()`` computes the cache (so its cost lands in stage 2's first epoch and
    in ``stage2_s``); order per epoch comes from a private generator seeded by (seed, epoch).
    """

    def __init__(
        self,
        compute: Callable[[], tuple[torch.Tensor, torch.Tensor]],
        num_samples: int,
        *,
        batch_size: int,
        seed: int,
    ) -> None:
        self._compute = compute
        self._features: torch.Tensor | None = None
        self._labels: torch.Tensor | None = None
        self.num_samples = num_samples
        self.batch_size = batch_size
        self.seed = seed
        self._epoch = 0

    def __len__(self) -> int:
        return len(self._bounds())

    def _bounds(self) -> list[tuple[int, int]]:
        n, bs = self.num_samples, self.batch_size
        stop = n - 1 if n % bs == 1 else n  # BatchNorm cannot train on a 1-sample batch
        return [(s, min(s + bs, stop)) for s in range(0, stop, bs)]

    def __iter__(self) -> Iterator[Batch]:
        epoch, self._epoch = self._epoch, self._epoch + 1
        return self._batches(epoch)

    def _batches(self, epoch: int) -> Iterator[Batch]:
        if self._features is None:
            self._features, self._labels = self._compute()
        assert self._labels is not None
        gen = torch.Generator().manual_seed(epoch_seed(self.seed, epoch))
        order = torch.randperm(self.num_samples, generator=gen).to(self._features.device)
        for start, stop in self._bounds():
            idx = order[start:stop]
            # indexing keeps the features channels-last; index_select would return NCHW and
            # leave the trainable suffix on the slow memory format
            yield self._features[idx], self._labels[idx]
