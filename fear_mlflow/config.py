"""Settings of every method, the paper's defaults, and their validation.

Each dataclass is frozen and validated on construction, so a bad value fails once,
early, with one clear message (a `UserError`), before any data is loaded or run opened.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from fear_mlflow.errors import UserError

#: FEAR stage-1 training-accuracy thresholds from the paper, per dataset.
DEFAULT_THRESHOLDS: dict[str, float] = {"cifar10": 0.6, "cifar100": 0.3, "ImageNet16-120": 0.2}
#: Threshold for datasets the paper did not use (digits, imagefolder, synthetic).
FALLBACK_THRESHOLD = 0.6
#: Parameter-name fragments that stay trainable in FEAR stage 2 (the last four cells + head).
PAPER_UNFREEZE: tuple[str, ...] = (
    "classifier",
    "lastact",
    "cells.16",
    "cells.15",
    "cells.14",
    "cells.13",
)
ZEROCOST_MEASURES: tuple[str, ...] = (
    "grad_norm",
    "snip",
    "grasp",
    "fisher",
    "jacob_cov",
    "synflow",
    "naswot",
    "params",
    "flops",
)
#: Networks the zero-cost measures can run on. "reference": the network of the measures'
#: reference code, whose cell-edge convs carry a bias; "natsbench": NATS-Bench's own
#: TinyNetwork (bias-free convs), the one fear/shortreg/regular train. See ZerocostSettings.
ZEROCOST_NETWORKS = ("reference", "natsbench")
TRAINING_SEED = 36
ZEROCOST_SEED = 42
METHODS = ("fear", "shortreg", "regular", "zerocost")


def default_threshold(dataset: str) -> float:
    return DEFAULT_THRESHOLDS.get(dataset, FALLBACK_THRESHOLD)


def _positive(name: str, value: float | int | None, *, flag: str | None = None) -> None:
    if value is not None and value <= 0:
        raise UserError(f"{flag or '--' + name.replace('_', '-')} must be > 0, got {value}")


@dataclass(frozen=True)
class OptimSettings:
    """SGD as in the paper: lr 0.1, momentum 0.9, Nesterov, wd 5e-4, grad-norm clip 5."""

    lr: float = 0.1
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = 5e-4
    grad_clip: float = 5.0

    def __post_init__(self) -> None:
        _positive("lr", self.lr)
        if not 0 <= self.momentum < 1:
            raise UserError(f"--momentum must be in [0, 1), got {self.momentum}")
        if self.weight_decay < 0:
            raise UserError(f"--weight-decay must be >= 0, got {self.weight_decay}")
        if self.grad_clip < 0:
            raise UserError(f"--grad-clip must be >= 0 (0 disables clipping), got {self.grad_clip}")


@dataclass(frozen=True)
class RunContext:
    """What every method needs besides its own settings: data, seed, device, net size."""

    dataset: str = "cifar10"
    dataroot: str | None = None
    train_subset: int | None = None
    seed: int = TRAINING_SEED
    device: str = "auto"
    channels: int = 16
    cells_per_stage: int = 5

    def __post_init__(self) -> None:
        _positive("train_subset", self.train_subset)
        _positive("channels", self.channels)
        _positive("cells_per_stage", self.cells_per_stage)
        if self.device not in ("auto", "cpu", "cuda") and not self.device.startswith("cuda:"):
            raise UserError(f"--device must be auto, cpu, cuda or cuda:N, got {self.device!r}")

    @property
    def total_cells(self) -> int:
        return 3 * self.cells_per_stage + 2

    def params(self) -> dict[str, object]:
        """Settings that change results (device and dataroot do not)."""
        return {
            "dataset": self.dataset,
            "train_subset": self.train_subset or 0,
            "seed": self.seed,
            "channels": self.channels,
            "cells_per_stage": self.cells_per_stage,
        }


def last_cells_unfreeze(k: int, total_cells: int = 17) -> tuple[str, ...]:
    """Identifiers that keep the head and the last ``k`` cells trainable."""
    if not 0 <= k <= total_cells:
        raise UserError(f"--unfreeze-last-cells must be in 0..{total_cells}, got {k}")
    cells = tuple(f"cells.{total_cells - 1 - i}" for i in range(k))
    return ("classifier", "lastact", *cells)


def effective_unfreeze(unfreeze: tuple[str, ...], total_cells: int) -> tuple[str, ...]:
    """The paper's default means "head + last four cells": keep that meaning on smaller nets."""
    if unfreeze == PAPER_UNFREEZE and total_cells != 17:
        return last_cells_unfreeze(4, total_cells)
    return unfreeze


def validate_unfreeze(unfreeze: tuple[str, ...], total_cells: int) -> None:
    """Reject identifiers that name no module, before any training starts."""
    tops = {"classifier", "lastact", "stem", *(f"cells.{i}" for i in range(total_cells))}
    for ident in effective_unfreeze(unfreeze, total_cells):
        parts = ident.split(".")
        head = ".".join(parts[:2]) if parts[0] == "cells" else parts[0]
        if head not in tops:
            raise UserError(
                f"--unfreeze: {ident!r} names no module of this network; use classifier, "
                f"lastact, stem or cells.0 .. cells.{total_cells - 1} (comma-separated)"
            )


@dataclass(frozen=True)
class FearSettings:
    """FEAR: train to a training-accuracy threshold, then train only the last cells briefly."""

    threshold: float
    batch_size: int = 256
    stage1_epochs: int = 200
    freeze_batch_size: int = 512
    freeze_epochs: int = 5
    unfreeze: tuple[str, ...] = PAPER_UNFREEZE
    no_freeze: bool = False
    check_every: int = 0
    max_seconds: float | None = None
    stage2_cache: bool = False
    optim: OptimSettings = field(default_factory=OptimSettings)

    def __post_init__(self) -> None:
        if self.stage2_cache and self.no_freeze:
            raise UserError("--stage2-cache needs a frozen prefix; drop --no-freeze or the cache")
        if not 0 < self.threshold <= 1:
            raise UserError(
                f"--threshold must be a training accuracy in (0, 1], got {self.threshold} "
                "(e.g. 0.6 for 60 %)"
            )
        _positive("batch_size", self.batch_size)
        _positive("stage1_epochs", self.stage1_epochs)
        _positive("freeze_batch_size", self.freeze_batch_size)
        if self.freeze_epochs < 0:
            raise UserError(f"--freeze-epochs must be >= 0, got {self.freeze_epochs}")
        if self.check_every < 0:
            raise UserError(
                f"--check-every must be >= 0 (0 = end of epoch only), got {self.check_every}"
            )
        _positive("max_seconds", self.max_seconds)
        if not self.no_freeze and not self.unfreeze:
            raise UserError("--unfreeze is empty: name at least one module, e.g. classifier")

    def params(self) -> dict[str, object]:
        flat = {k: v for k, v in asdict(self).items() if k != "optim"}
        flat["unfreeze"] = ",".join(self.unfreeze)
        return {**flat, **asdict(self.optim)}


@dataclass(frozen=True)
class ShortregSettings:
    """Shortened regular training: E epochs at batch B, cosine over E epochs."""

    batch_size: int = 256
    epochs: int = 10
    eval_test: bool = False
    max_seconds: float | None = None
    optim: OptimSettings = field(default_factory=OptimSettings)

    def __post_init__(self) -> None:
        _positive("batch_size", self.batch_size)
        _positive("epochs", self.epochs)
        _positive("max_seconds", self.max_seconds)

    def params(self) -> dict[str, object]:
        flat = {k: v for k, v in asdict(self).items() if k != "optim"}
        return {**flat, **asdict(self.optim)}


@dataclass(frozen=True)
class RegularSettings:
    """Full training with the benchmark's schedule; test top-1 at the end is ground truth."""

    batch_size: int = 256
    epochs: int = 200
    max_seconds: float | None = None
    optim: OptimSettings = field(default_factory=OptimSettings)

    def __post_init__(self) -> None:
        _positive("batch_size", self.batch_size)
        _positive("epochs", self.epochs)
        _positive("max_seconds", self.max_seconds)

    def params(self) -> dict[str, object]:
        flat = {k: v for k, v in asdict(self).items() if k != "optim"}
        return {**flat, **asdict(self.optim)}


@dataclass(frozen=True)
class ZerocostSettings:
    """Zero-cost proxies on one random training minibatch at initialisation.

    ``network="reference"`` (default) reproduces Abdelfattah et al.'s values: their network
    gives every cell-edge conv a bias. On a cell whose output is a conv of an all-zero node
    (e.g. ``|none~0|+|none~0|nor_conv_1x1~1|+|none~0|skip_connect~1|nor_conv_1x1~2|``) that
    bias feeds BatchNorm a constant, BN's backward then amplifies rounding noise ~316× per
    layer and fisher reaches ~1e9 on a 10 %-accuracy cell, which is why the published fisher
    |ρ| is low. ``"natsbench"`` runs the measures on NATS-Bench's bias-free TinyNetwork, where
    those cells score ~0 (fisher |ρ| 0.59 instead of 0.33 on the paper's first 300 cells).
    """

    batch_size: int = 64
    measures: tuple[str, ...] = ZEROCOST_MEASURES
    network: str = "reference"

    def __post_init__(self) -> None:
        _positive("batch_size", self.batch_size)
        if self.network not in ZEROCOST_NETWORKS:
            raise UserError(
                f"--network must be one of {', '.join(ZEROCOST_NETWORKS)}, got {self.network!r}"
            )
        unknown = [m for m in self.measures if m not in ZEROCOST_MEASURES]
        if unknown:
            raise UserError(
                f"unknown zero-cost measure(s) {', '.join(unknown)}; "
                f"choose from {', '.join(ZEROCOST_MEASURES)}"
            )
        if not self.measures:
            raise UserError("--measures is empty; choose from " + ", ".join(ZEROCOST_MEASURES))

    def params(self) -> dict[str, object]:
        return {
            "batch_size": self.batch_size,
            "measures": ",".join(self.measures),
            "network": self.network,
        }
