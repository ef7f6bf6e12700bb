"""Training and zero-cost throughput: our pipeline against the pipeline users run today.

For five fixed NATS-Bench cells spanning the parameter range (A: pools and skips only ...
E: all 3x3 convolutions), on the current device, in one run:

- FEAR stage 1 (batch 256, whole net trained) in images/s;
- FEAR stage 2 (batch 512, head + last four cells trained) in images/s: without the cache,
  with ``--stage2-cache`` (per epoch after the first, and the first epoch with its cache fill);
- seconds per arch for the six zero-cost measures (grad_norm, snip, grasp, fisher, jacob_cov,
  synflow);

each for **ours** and for a **reference pipeline** standing for what users run today, and the
ratio. Ours: `DeviceLoader` (uint8 images on the device, batch-wise crop + flip + normalise),
channels-last model, glibc set to reuse freed memory (`keep_freed_memory`, as every CPU
command does; the reference keeps glibc's defaults), the project's `Trainer` (bf16 autocast
on CUDA), stage 2 through
`frozen_prefix_forward` (frozen prefix under ``no_grad``) or `CachedFeatureBatches`; zero-cost
through `compute_measures` (shared passes). Reference: a torchvision-``CIFAR10``-style `Dataset`
over the same uint8 arrays returning PIL images through ``RandomCrop(32, padding=4)``,
``RandomHorizontalFlip``, ``ToTensor``, ``Normalize``, a `DataLoader` with 2 workers, an NCHW
float32 eager model, the same optimiser, lr schedule and gradient clip; stage 2 runs the plain
forward (frozen parameters have ``requires_grad=False`` but the whole graph is built, as the
paper's code does); zero-cost through ``compute_measures(..., reference_way=True)``: a fresh
copy of the net and its own passes for every measure (Abdelfattah et al.'s procedure).

Measurement: per cell every variant first runs one untimed warm-up block; then ``--rounds``
rounds each time one block of ``--steps`` steps per variant, in an order that rotates every
round, so a change of machine load hits all variants alike. A reference block starts a fresh
`DataLoader` iterator (its workers do not prefetch while another variant is timed), waits for
its first batch untimed, then times the steps (the workers' transform work overlaps the
training, as it does for users). Reported: the median over rounds of images/s, and the ratio
as the median over rounds of (ours / reference) of the same round. Zero-cost: one arch per
block. The machine's load average is printed at start and end.

GFLOP/s: ``count_flops`` gives NATS-Bench's forward multiply-accumulates (MACs) per image
(dead edges included, pooling not counted); a MAC counts as 2 FLOPs and a training step as 3
forwards, so model GFLOP/s = 6 * MMACs * images/s / 1000. Stage 2 counts its frozen prefix
as one forward and the trained rest as three: 2 * prefix MMACs + 6 * rest MMACs per image.
Two limits on the same device: a 2048x2048 fp32 ``torch.mm`` (2 * n^3 FLOPs; and bf16 on CUDA)
and one 3x3 convolution of the cells' own shape (batch 512, 64 -> 64 channels, 8x8,
channels-last), which on a CPU runs faster than the matmul and so is the tighter ceiling.

Usage::

    .venv/bin/python bench/throughput.py                       # full run, prints the tables
    .venv/bin/python bench/throughput.py --quick               # smoke: cells A and E, fewer steps
    .venv/bin/python bench/throughput.py --json /tmp/tp.json   # also save every timing
    .venv/bin/python bench/throughput.py --device cuda --compile --cells E
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import math
import os
import platform
import signal
import statistics
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from fear_mlflow.config import PAPER_UNFREEZE, FearSettings, OptimSettings, RunContext
from fear_mlflow.data.datasets import ImageData, class_balanced_subset, load_dataset
from fear_mlflow.data.loader import DeviceLoader
from fear_mlflow.device import resolve_device, resolve_precision, synchronize
from fear_mlflow.errors import UserError
from fear_mlflow.evaluators.fear import evaluate_fear
from fear_mlflow.evaluators.zerocost import compute_measures, random_minibatch
from fear_mlflow.host_memory import keep_freed_memory
from fear_mlflow.space.arch import parse_arch
from fear_mlflow.space.model import (
    TinyNetwork,
    build_model,
    count_flops,
    count_parameters,
    macs_by_module,
)
from fear_mlflow.train.feature_cache import CachedFeatureBatches, prefix_features
from fear_mlflow.train.freeze import (
    freeze_all_but,
    frozen_prefix_forward,
    frozen_prefix_length,
    name_matches,
    run_suffix,
)
from fear_mlflow.train.trainer import StopRules, Trainer, cosine_lr, make_optimizer

#: Five fixed cells spanning the parameter range (73 k .. 1.53 M parameters on 10 classes).
CELLS: dict[str, str] = {
    "A": "|avg_pool_3x3~0|+|skip_connect~0|avg_pool_3x3~1|+|skip_connect~0|none~1|avg_pool_3x3~2|",
    "B": "|nor_conv_1x1~0|+|skip_connect~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_1x1~1|avg_pool_3x3~2|",
    "C": "|nor_conv_3x3~0|+|skip_connect~0|nor_conv_1x1~1|+|avg_pool_3x3~0|nor_conv_1x1~1|skip_connect~2|",
    "D": "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_3x3~1|nor_conv_3x3~2|",
    "E": "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|nor_conv_3x3~0|nor_conv_3x3~1|nor_conv_3x3~2|",
}
QUICK_CELLS = ("A", "E")
SIX = ("grad_norm", "snip", "grasp", "fisher", "jacob_cov", "synflow")
STAGE1_BATCH = 256
STAGE2_BATCH = 512
REF_WORKERS = 2
SECTIONS = ("stage1", "stage2", "zerocost", "checkevery")
#: The issue's thresholds (this CPU, same cells and batch sizes).
MUST = {"stage1": 1.8, "stage2": 1.8, "stage2_cache": 4.0, "zerocost": 1.5}


# ----------------------------------------------------------------------------- arguments


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Cells:\n" + "\n".join(f"  {k}: {v}" for k, v in CELLS.items()),
    )
    p.add_argument("--dataset", default="cifar10", help="cifar10 (default), cifar100, ...")
    p.add_argument(
        "--dataroot",
        default=os.environ.get("FEAR_DATAROOT", "~/dataroot"),
        help="folder holding cifar-10-batches-py [env FEAR_DATAROOT, default ~/dataroot]",
    )
    p.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda[:N]")
    p.add_argument(
        "--precision",
        default="auto",
        choices=("auto", "fp32", "bf16"),
        help="ours' precision: auto = bf16 autocast on CUDA, fp32 on CPU (reference: fp32)",
    )
    p.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    p.add_argument("--quick", action="store_true", help="smoke run: cells A and E, fewer steps")
    p.add_argument("--cells", help="comma-separated cell letters (default: all, --quick: A,E)")
    p.add_argument(
        "--sections",
        default=",".join(SECTIONS),
        help=f"comma-separated subset of {','.join(SECTIONS)} (checkevery is skipped by --quick)",
    )
    p.add_argument("--steps", type=int, help="timed steps per block (CPU 3, CUDA 40; quick 2/20)")
    p.add_argument("--rounds", type=int, help="interleaved rounds per cell (default 3; quick 2)")
    p.add_argument(
        "--ablations",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="also time ours with one feature off: NCHW (stage 1), full graph (stage 2), fp32 "
        "(stage 1 on CUDA) (default: on, off with --quick)",
    )
    p.add_argument(
        "--compile",
        action="store_true",
        help="also time ours with torch.compile (stage 1, stage 2 and its cached suffix)",
    )
    p.add_argument("--check-every", type=int, default=5, help="K for the check-every section")
    p.add_argument("--json", metavar="OUT", help="write every measurement to this JSON file")
    args = p.parse_args(argv)
    quick = args.quick
    args.cells = tuple(
        c.strip().upper()
        for c in (args.cells or ",".join(QUICK_CELLS if quick else CELLS)).split(",")
    )
    unknown = [c for c in args.cells if c not in CELLS]
    if unknown:
        p.error(f"unknown cell(s) {unknown}; choose from {','.join(CELLS)}")
    args.sections = tuple(s.strip() for s in args.sections.split(",") if s.strip())
    bad = [s for s in args.sections if s not in SECTIONS]
    if bad:
        p.error(f"unknown section(s) {bad}; choose from {','.join(SECTIONS)}")
    if quick:
        args.sections = tuple(s for s in args.sections if s != "checkevery")
    if args.ablations is None:
        args.ablations = not quick
    for name in ("steps", "rounds", "threads", "check_every"):
        value = getattr(args, name)
        if value is not None and value < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1")
    return args


# ----------------------------------------------------------------------------- helpers


def load_average() -> str:
    try:
        return " ".join(f"{v:.2f}" for v in os.getloadavg())
    except OSError:
        return "n/a"


def load_data(args: argparse.Namespace) -> tuple[ImageData, str]:
    """The real dataset; without it a 32x32 stand-in built from `synthetic` (said so)."""
    try:
        return load_dataset(args.dataset, args.dataroot), f"{args.dataset} from {args.dataroot}"
    except UserError as exc:
        print(f"WARNING: {exc}\nWARNING: falling back to synthetic data resized to 32x32")
    small = load_dataset("synthetic")
    reps = math.ceil(50_000 / small.train_x.shape[0])
    big = F.interpolate(small.train_x.float(), size=32, mode="bilinear", align_corners=False)
    images = big.round().clamp(0, 255).to(torch.uint8).repeat(reps, 1, 1, 1)[:50_000]
    labels = small.train_y.repeat(reps)[:50_000]
    data = dataclasses.replace(small, train_x=images.contiguous(), train_y=labels, pad=4)
    return data, "SYNTHETIC stand-in (cifar10 not found), 50,000 images 32x32"


class Steps:
    """Exactly ``steps`` batches per ``iter()``, continuing through the loader's epochs."""

    def __init__(self, loader: Iterable[Any], steps: int) -> None:
        self.loader = loader
        self.steps = steps

    def __len__(self) -> int:
        return self.steps

    def __iter__(self) -> Iterator[Any]:
        return itertools.islice(itertools.chain.from_iterable(self._epochs()), self.steps)

    def _epochs(self) -> Iterator[Iterable[Any]]:
        while True:
            yield self.loader


def clock(device: torch.device) -> float:
    synchronize(device)
    return time.perf_counter()


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values)) if values else math.nan


# ----------------------------------------------------------------------------- reference


class PILDataset(torch.utils.data.Dataset):
    """torchvision ``CIFAR10``'s way: HWC uint8 array, one PIL image per sample, a transform."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, transform: Callable) -> None:
        self.data = images.permute(0, 2, 3, 1).contiguous().numpy()
        self.targets = labels.tolist()
        self.transform = transform

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        from PIL import Image

        return self.transform(Image.fromarray(self.data[index])), self.targets[index]


def reference_loader(data: ImageData, batch_size: int, device: torch.device) -> Any:
    from torchvision import transforms

    transform = transforms.Compose(
        [
            transforms.RandomCrop(data.image_size, padding=data.pad),
            transforms.RandomHorizontalFlip(),
            transforms.ToTensor(),
            transforms.Normalize([m / 255 for m in data.mean], [s / 255 for s in data.std]),
        ]
    )
    return torch.utils.data.DataLoader(
        PILDataset(data.train_x, data.train_y, transform),
        batch_size=batch_size,
        shuffle=True,
        num_workers=REF_WORKERS,
        pin_memory=device.type == "cuda",
        drop_last=True,
    )


class ReferenceRun:
    """The users' training loop: DataLoader batches moved to the device, NCHW fp32 eager."""

    def __init__(self, model: nn.Module, params: list[nn.Parameter], loader: Any, device) -> None:
        self.model = model
        self.params = params
        self.loader = loader
        self.device = device
        self.optim = OptimSettings()
        self.optimizer = make_optimizer(params, self.optim)
        self.step = 0
        self.correct = 0

    def block(self, steps: int) -> float:
        """Seconds for ``steps`` training steps; the iterator (and its workers) is fresh."""
        self.model.train()
        batches = iter(self.loader)
        batch = next(batches)  # untimed: worker start-up
        start = clock(self.device)
        for i in range(steps):
            x, y = batch
            x = x.to(self.device, non_blocking=True)
            y = y.to(self.device, non_blocking=True)
            lr = cosine_lr(self.optim.lr, self.step, 200 * 195)
            for group in self.optimizer.param_groups:
                group["lr"] = lr
            logits = self.model(x)
            loss = F.cross_entropy(logits, y)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_norm_(self.params, self.optim.grad_clip)
            self.optimizer.step()
            self.correct += int((logits.detach().argmax(1) == y).sum().item())
            self.step += 1
            if i < steps - 1:
                batch = next(batches)
        seconds = clock(self.device) - start
        del batches  # shuts the workers down before the next variant is timed
        return seconds


# ----------------------------------------------------------------------------- ours


def our_trainer(
    model: TinyNetwork,
    loader: Iterable[Any],
    steps: int,
    device: torch.device,
    precision: str,
    *,
    params: list[nn.Parameter] | None = None,
    forward: Callable[[torch.Tensor], torch.Tensor] | None = None,
    compile_model: bool = False,
) -> Callable[[int], float]:
    """A block runner: one `Trainer.run` epoch of ``steps`` batches, timed around the call."""
    trainer = Trainer(
        model,
        Steps(loader, steps),  # type: ignore[arg-type]
        OptimSettings(),
        schedule_epochs=200,
        stage="bench",
        device=device,
        params=params,
        forward=forward,
        precision=precision,
        compile_model=compile_model,
    )

    def block(n: int) -> float:
        trainer.loader.steps = n  # type: ignore[attr-defined]
        start = clock(device)
        trainer.run(StopRules(max_epochs=1))
        return clock(device) - start

    return block


def device_loader(
    data: ImageData, batch_size: int, device: torch.device, channels_last: bool = True
) -> DeviceLoader:
    return DeviceLoader.from_data(  # drop_last: every timed batch has the same size
        data,
        "train",
        batch_size=batch_size,
        device=device,
        seed=1,
        channels_last=channels_last,
        drop_last=True,
    )


def model_for(arch: str, data: ImageData, device: torch.device, channels_last: bool) -> TinyNetwork:
    torch.manual_seed(36)
    return build_model(
        parse_arch(arch), data.num_classes, device=device, channels_last=channels_last
    )


# ----------------------------------------------------------------------------- timing core


def interleave(
    variants: dict[str, Callable[[int], float]],
    steps: int,
    rounds: int,
    warmup_steps: int,
    log_prefix: str,
) -> dict[str, list[float]]:
    """Seconds per block for every variant: one warm-up each, then rotating rounds."""
    names = list(variants)
    for name in names:
        run_block(variants, name, warmup_steps)
    seconds: dict[str, list[float]] = {n: [] for n in names}
    for r in range(rounds):
        order = names[r % len(names) :] + names[: r % len(names)]
        for name in order:
            seconds[name].append(run_block(variants, name, steps))
        line = "  ".join(f"{n} {seconds[n][-1]:.2f}s" for n in names)
        print(
            f"    {log_prefix} round {r + 1}/{rounds}: {line}  (load {load_average()})", flush=True
        )
    return seconds


#: Variants that run with glibc's default allocator, as users' processes do; the others get
#: what every CPU command of ours sets up (`keep_freed_memory`).
GLIBC_DEFAULT_MALLOC = ("ref", "ours_glibc_malloc")


def run_block(variants: dict[str, Callable[[int], float]], name: str, steps: int) -> float:
    keep_freed_memory(name not in GLIBC_DEFAULT_MALLOC)
    return variants[name](steps)


def rates(seconds: list[float], images: int) -> list[float]:
    return [images / s for s in seconds]


def paired_ratio(num: list[float], den: list[float]) -> float:
    """Median over rounds of num/den (rates of the same round)."""
    return median([a / b for a, b in zip(num, den)])


# ----------------------------------------------------------------------------- sections


def bench_stage1(cell: str, data: ImageData, device, precision: str, args) -> dict[str, Any]:
    steps = args.steps
    variants: dict[str, Callable[[int], float]] = {}
    ours = model_for(CELLS[cell], data, device, channels_last=True)
    variants["ours"] = our_trainer(
        ours, device_loader(data, STAGE1_BATCH, device), steps, device, precision
    )
    ref_model = model_for(CELLS[cell], data, device, channels_last=False)
    ref = ReferenceRun(
        ref_model,
        list(ref_model.parameters()),
        reference_loader(data, STAGE1_BATCH, device),
        device,
    )
    variants["ref"] = ref.block
    if args.ablations:
        nchw = model_for(CELLS[cell], data, device, channels_last=False)
        loader = device_loader(data, STAGE1_BATCH, device, channels_last=False)
        variants["ours_nchw"] = our_trainer(nchw, loader, steps, device, precision)
        if device.type == "cuda" and precision != "fp32":
            fp32 = model_for(CELLS[cell], data, device, channels_last=True)
            loader = device_loader(data, STAGE1_BATCH, device)
            variants["ours_fp32"] = our_trainer(fp32, loader, steps, device, "fp32")
    if args.compile:
        comp = model_for(CELLS[cell], data, device, channels_last=True)
        loader = device_loader(data, STAGE1_BATCH, device)
        variants["ours_compiled"] = our_trainer(
            comp, loader, steps, device, precision, compile_model=True
        )
    warm = 3 if args.compile else 1
    secs = interleave(variants, steps, args.rounds, warm, f"{cell} stage1")
    img = {k: rates(v, steps * STAGE1_BATCH) for k, v in secs.items()}
    out: dict[str, Any] = {"seconds": secs, "img_s": {k: median(v) for k, v in img.items()}}
    out["ratio"] = paired_ratio(img["ours"], img["ref"])
    for k in img:
        if k.startswith("ours_"):
            out[f"ratio_{k}"] = paired_ratio(img["ours"], img[k])  # ours / ours-without-feature
    return out


def frozen(model: TinyNetwork) -> list[nn.Parameter]:
    """The paper's stage-2 freeze; cells without parameters (pools, skips) are left out."""
    names = [n for n, _ in model.named_parameters()]
    held = tuple(i for i in PAPER_UNFREEZE if any(name_matches(n, i) for n in names))
    return freeze_all_but(model, held)


def stage2_variant(
    cell: str,
    data: ImageData,
    device: torch.device,
    precision: str,
    steps: int,
    *,
    no_grad_prefix: bool = True,
    compile_model: bool = False,
) -> Callable[[int], float]:
    """Ours in stage 2 on a fresh copy of the cell, frozen as in the paper."""
    model = model_for(cell, data, device, channels_last=True)
    return our_trainer(
        model,
        device_loader(data, STAGE2_BATCH, device),
        steps,
        device,
        precision,
        params=frozen(model),
        forward=frozen_prefix_forward(model) if no_grad_prefix else None,
        compile_model=compile_model,
    )


def bench_stage2(cell: str, data: ImageData, device, precision: str, args) -> dict[str, Any]:
    steps = args.steps
    variants: dict[str, Callable[[int], float]] = {}
    variant = partial(stage2_variant, CELLS[cell], data, device, precision, steps)
    variants["ours"] = variant()

    cached = model_for(CELLS[cell], data, device, channels_last=True)
    cached_params = frozen(cached)
    prefix = frozen_prefix_length(cached)
    cache_images = steps * STAGE2_BATCH
    plain = DeviceLoader(
        data.train_x[:cache_images],
        data.train_y[:cache_images],
        batch_size=1024,
        mean=data.mean,
        std=data.std,
        augment=False,
        shuffle=False,
        drop_single=False,
        device=device,
    )
    batches = CachedFeatureBatches(
        lambda: prefix_features(cached, prefix, plain, device, precision),
        cache_images,
        batch_size=STAGE2_BATCH,
        seed=1,
    )
    cache_trainer = Trainer(
        cached,
        batches,  # type: ignore[arg-type]
        OptimSettings(),
        schedule_epochs=5,
        stage="bench",
        device=device,
        params=cached_params,
        forward=partial(run_suffix, cached, prefix),
        precision=precision,
    )

    def cache_epoch(_n: int) -> float:  # one epoch over the cached features = `steps` steps
        start = clock(device)
        cache_trainer.run(StopRules(max_epochs=1))
        return clock(device) - start

    keep_freed_memory(True)
    first_epoch_s = cache_epoch(steps)  # computes the cache: stage 2's first epoch
    variants["ours_cache"] = cache_epoch

    ref_model = model_for(CELLS[cell], data, device, channels_last=False)
    ref = ReferenceRun(
        ref_model, frozen(ref_model), reference_loader(data, STAGE2_BATCH, device), device
    )
    variants["ref"] = ref.block
    if args.ablations:
        variants["ours_fullgraph"] = variant(no_grad_prefix=False)
        variants["ours_glibc_malloc"] = variant()  # `run_block` keeps glibc's defaults for it
    if args.compile:
        variants["ours_compiled"] = variant(compile_model=True)
    warm = 3 if args.compile else 1
    secs = interleave(variants, steps, args.rounds, warm, f"{cell} stage2")
    img = {k: rates(v, steps * STAGE2_BATCH) for k, v in secs.items()}
    out: dict[str, Any] = {"seconds": secs, "img_s": {k: median(v) for k, v in img.items()}}
    out["cache_first_epoch_s"] = first_epoch_s
    out["cache_first_epoch_img_s"] = cache_images / first_epoch_s
    out["cache_images"] = cache_images
    out["ratio"] = paired_ratio(img["ours"], img["ref"])
    out["ratio_cache"] = paired_ratio(img["ours_cache"], img["ref"])
    out["ratio_cache_first_epoch"] = out["cache_first_epoch_img_s"] / median(img["ref"])
    for k in ("ours_fullgraph", "ours_glibc_malloc", "ours_compiled"):
        if k in img:
            out[f"ratio_{k}"] = paired_ratio(img["ours"], img[k])
    return out


def bench_zerocost(cell: str, data: ImageData, device, args) -> dict[str, Any]:
    # channels-last, as evaluate_zerocost builds it (its passes switch to NCHW themselves)
    ours = model_for(CELLS[cell], data, device, channels_last=True)
    ref_model = model_for(CELLS[cell], data, device, channels_last=False)
    ref_model.load_state_dict(ours.state_dict())
    x, y = random_minibatch(data, 64, seed=42, device=device)
    x_nchw = x.contiguous()
    values: dict[str, dict[str, float]] = {}

    def runner(name: str, model: TinyNetwork, inputs: torch.Tensor, reference: bool):
        def block(_n: int) -> float:
            start = clock(device)
            got = compute_measures(
                model, inputs, y, SIX, num_classes=data.num_classes, reference_way=reference
            )
            seconds = clock(device) - start
            values[name] = {m: v for m, (v, _s) in got.items()}
            return seconds

        return block

    variants = {
        "ours": runner("ours", ours, x, False),
        "ref": runner("ref", ref_model, x_nchw, True),
    }
    secs = interleave(variants, 1, args.rounds, 1, f"{cell} zerocost")
    rel = {
        m: abs(values["ours"][m] - values["ref"][m]) / max(abs(values["ref"][m]), 1e-30)
        for m in SIX
    }
    return {
        "seconds": secs,
        "s_per_arch": {k: median(v) for k, v in secs.items()},
        "ratio": paired_ratio(secs["ref"], secs["ours"]),
        "values": values,
        "max_rel_diff": max(rel.values()),
        "rel_diff": rel,
    }


def bench_check_every(data: ImageData, device, precision: str, args) -> dict[str, Any]:
    """Stage 1 of cell A to a (low) threshold on a 5,120-image subset: check-every 0 vs K."""
    subset = class_balanced_subset(data.train_y, 5120, seed=0)
    small = dataclasses.replace(
        data, train_x=data.train_x[subset].contiguous(), train_y=data.train_y[subset].contiguous()
    )
    context = RunContext(dataset=data.name, seed=36, device=device.type)
    out: dict[str, Any] = {"cell": "A", "train_images": 5120, "threshold": 0.25}
    for k in (0, args.check_every):
        settings = FearSettings(
            threshold=0.25,
            batch_size=STAGE1_BATCH,
            stage1_epochs=40,
            freeze_epochs=0,
            check_every=k,
        )
        res = evaluate_fear(
            parse_arch(CELLS["A"]), small, settings, context, device, precision=precision
        )
        out[f"k{k}"] = {
            "status": res.status,
            "stage1_epochs": res.summary["stage1_epochs"],
            "stage1_s": res.summary["stage1_s"],
            "score": res.score,
        }
        print(f"    check-every {k}: {out[f'k{k}']}  (load {load_average()})", flush=True)
    return out


def gflops_of(
    run: Callable[[], object], flops: float, device: torch.device, reps: int
) -> list[float]:
    """GFLOP/s of ``run`` (doing ``flops`` each call) per repetition, after one warm-up call."""
    run()
    inner = 1 if device.type == "cpu" else 20
    out = []
    for _ in range(reps):
        start = clock(device)
        for _ in range(inner):
            run()
        out.append(flops * inner / (clock(device) - start) / 1e9)
    return out


def conv_gflops(device: torch.device, dtype: torch.dtype, reps: int = 5) -> list[float]:
    """A 3x3 conv of the last stage's shape (every cell does this work): the model's ceiling."""
    n, c, hw = STAGE2_BATCH, 64, 8
    x = torch.randn(n, c, hw, hw, device=device, dtype=dtype)
    x = x.contiguous(memory_format=torch.channels_last)
    w = torch.randn(c, c, 3, 3, device=device, dtype=dtype)
    with torch.no_grad():
        return gflops_of(
            lambda: F.conv2d(x, w, padding=1), 2 * n * hw * hw * c * c * 9, device, reps
        )


def stage2_mmacs(model: TinyNetwork, image_size: int) -> tuple[float, float]:
    """(frozen prefix, trained rest) MMACs per image under the paper's stage-2 freeze
    (which this applies to ``model``: pass a throwaway copy)."""
    frozen(model)
    body = ["stem"] + [f"cells.{i}" for i in range(len(model.cells))]
    prefix = set(body[: frozen_prefix_length(model)])
    head = rest = 0.0
    for name, macs in macs_by_module(model, image_size).items():
        parts = name.split(".")
        if parts[0] in prefix or ".".join(parts[:2]) in prefix:
            head += macs
        else:
            rest += macs
    return head / 1e6, rest / 1e6


def matmul_gflops(
    device: torch.device, dtype: torch.dtype, n: int = 2048, reps: int = 5
) -> list[float]:
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    return gflops_of(lambda: torch.mm(a, b), 2 * n**3, device, reps)


# ----------------------------------------------------------------------------- report


def fmt(value: float | None, digits: int = 0) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return f"{value:,.{digits}f}"


def ratio_fmt(value: float | None) -> str:
    return "–" if value is None or math.isnan(value) else f"{value:.2f}×"


def limit_columns(gflops: float, matmul: float, conv: float) -> str:
    """Achieved GFLOP/s and its share of the two device limits, as table cells."""
    return f" {gflops:,.1f} | {100 * gflops / matmul:.0f} % | {100 * gflops / conv:.0f} % |"


def print_report(res: dict[str, Any]) -> list[str]:
    """Markdown tables; returns the verdict lines."""
    cells = res["cells"]
    limit = res["matmul_gflops"]
    prec = res["precision"]
    lim_key = "bf16" if prec == "bf16" and "bf16" in limit else "fp32"
    lim = median(limit[lim_key])
    conv_lim = median(res["conv_gflops"])
    print()
    print(
        f"device: {res['device_name']}; threads {res['threads']}; ours' precision {prec}; "
        f"data: {res['data']}"
    )
    print(f"load average (1, 5, 15 min): start {res['load_start']}, end {res['load_end']}")
    print(
        f"steps per block {res['steps']}, rounds {res['rounds']}; matmul 2048² "
        + ", ".join(f"{k} {median(v):,.0f} GFLOP/s" for k, v in limit.items())
        + f"; conv 3x3 (512x64x8x8, {prec if prec == 'bf16' else 'fp32'}) {conv_lim:,.0f} GFLOP/s"
    )
    verdict: list[str] = []
    if any("stage1" in c for c in cells.values()):
        abl = any("ours_nchw" in c.get("stage1", {}).get("img_s", {}) for c in cells.values())
        fp = any("ours_fp32" in c.get("stage1", {}).get("img_s", {}) for c in cells.values())
        comp = any("ours_compiled" in c.get("stage1", {}).get("img_s", {}) for c in cells.values())
        print(f"\n### FEAR stage 1 (batch {STAGE1_BATCH}), images/s\n")
        head = "| cell | params | MFLOPs | ours | ref | ours/ref |"
        if abl:
            head += " ours NCHW | channels-last gain |"
        if fp:
            head += " ours fp32 | bf16 gain |"
        if comp:
            head += " ours compiled | compiled/eager |"
        head += f" ours GFLOP/s | % of {lim_key} mm | % of conv 3x3 |"
        print(head)
        print("|" + "---|" * (head.count("|") - 1))
        for name, c in cells.items():
            s = c.get("stage1")
            if not s:
                continue
            ours = s["img_s"]["ours"]
            gflops = 6 * c["mflops"] * ours / 1000
            row = (
                f"| {name} | {c['params']:,} | {c['mflops']:.1f} | {fmt(ours)} | "
                f"{fmt(s['img_s']['ref'])} | **{ratio_fmt(s['ratio'])}** |"
            )
            if abl:
                row += (
                    f" {fmt(s['img_s'].get('ours_nchw'))} | {ratio_fmt(s.get('ratio_ours_nchw'))} |"
                )
            if fp:
                row += (
                    f" {fmt(s['img_s'].get('ours_fp32'))} | {ratio_fmt(s.get('ratio_ours_fp32'))} |"
                )
            if comp:
                compiled = s["img_s"].get("ours_compiled")
                row += f" {fmt(compiled)} | {ratio_fmt(1 / s['ratio_ours_compiled'] if compiled else None)} |"
            row += limit_columns(gflops, lim, conv_lim)
            print(row)
            verdict.append(_verdict(f"stage 1 {name}", s["ratio"], MUST["stage1"]))
    if any("stage2" in c for c in cells.values()):
        abl = any("ours_fullgraph" in c.get("stage2", {}).get("img_s", {}) for c in cells.values())
        comp = any("ours_compiled" in c.get("stage2", {}).get("img_s", {}) for c in cells.values())
        print(f"\n### FEAR stage 2 (batch {STAGE2_BATCH}, head + last 4 cells), images/s\n")
        head = (
            "| cell | ours | ours cache (epoch ≥ 2) | ours cache (epoch 1) | ref | ours/ref | "
            "cache/ref (≥ 2) | cache/ref (epoch 1) |"
        )
        if abl:
            head += (
                " ours full graph | no_grad-prefix gain | ours glibc malloc | freed-memory gain |"
            )
        if comp:
            head += " ours compiled | compiled/eager |"
        head += f" ours GFLOP/s | % of {lim_key} mm | % of conv 3x3 |"
        print(head)
        print("|" + "---|" * (head.count("|") - 1))
        for name, c in cells.items():
            s = c.get("stage2")
            if not s:
                continue
            i = s["img_s"]
            row = (
                f"| {name} | {fmt(i['ours'])} | {fmt(i['ours_cache'])} | "
                f"{fmt(s['cache_first_epoch_img_s'])} | {fmt(i['ref'])} | "
                f"**{ratio_fmt(s['ratio'])}** | **{ratio_fmt(s['ratio_cache'])}** | "
                f"{ratio_fmt(s['ratio_cache_first_epoch'])} |"
            )
            if abl:
                row += f" {fmt(i.get('ours_fullgraph'))} | {ratio_fmt(s.get('ratio_ours_fullgraph'))} |"
                row += (
                    f" {fmt(i.get('ours_glibc_malloc'))} |"
                    f" {ratio_fmt(s.get('ratio_ours_glibc_malloc'))} |"
                )
            if comp:
                compiled = i.get("ours_compiled")
                row += f" {fmt(compiled)} | {ratio_fmt(1 / s['ratio_ours_compiled'] if compiled else None)} |"
            head_mmacs, rest_mmacs = c["stage2_mmacs"]
            gflops = (2 * head_mmacs + 6 * rest_mmacs) * i["ours"] / 1000
            row += limit_columns(gflops, lim, conv_lim)
            print(row)
            verdict.append(_verdict(f"stage 2 {name}", s["ratio"], MUST["stage2"]))
            verdict.append(
                _verdict(f"stage 2 cache {name}", s["ratio_cache"], MUST["stage2_cache"])
            )
    if any("zerocost" in c for c in cells.values()):
        print("\n### Zero-cost, six measures (batch 64), seconds per arch\n")
        print(
            "| cell | ours (shared passes) | reference way (copy + passes per measure) | "
            "ref/ours | max rel. diff of values |"
        )
        print("|---|---|---|---|---|")
        for name, c in cells.items():
            z = c.get("zerocost")
            if not z:
                continue
            print(
                f"| {name} | {z['s_per_arch']['ours']:.2f} | {z['s_per_arch']['ref']:.2f} | "
                f"**{ratio_fmt(z['ratio'])}** | {z['max_rel_diff']:.1e} |"
            )
            verdict.append(_verdict(f"zero-cost {name}", z["ratio"], MUST["zerocost"]))
    ce = res.get("check_every")
    if ce:
        k = res["check_every_k"]
        print(
            f"\n### --check-every (cell A, stage 1 to train top-1 ≥ {ce['threshold']} on "
            f"{ce['train_images']:,} images, {ce['train_images'] // STAGE1_BATCH} steps/epoch)\n"
        )
        print("| check-every | status | stage-1 epochs | stage-1 s |")
        print("|---|---|---|---|")
        for key, label in (("k0", "0 (end of epoch)"), (f"k{k}", str(k))):
            r = ce[key]
            print(f"| {label} | {r['status']} | {r['stage1_epochs']:.2f} | {r['stage1_s']:.1f} |")
    print("\nCells: " + "; ".join(f"{k} = {CELLS[k]}" for k in cells))
    if res["device"] == "cpu" and verdict:
        print("\nThresholds of issue #7 (this CPU):")
        for line in verdict:
            print("  " + line)
    return verdict


def _verdict(what: str, ratio: float, need: float) -> str:
    ok = "PASS" if ratio >= need else "FAIL"
    return f"{ok} {what}: {ratio:.2f}× (need ≥ {need}×)"


# ----------------------------------------------------------------------------- main


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    precision = resolve_precision(args.precision, device)
    if args.steps is None:
        args.steps = (
            (20 if args.quick else 40) if device.type == "cuda" else (2 if args.quick else 3)
        )
    if args.rounds is None:
        args.rounds = 2 if args.quick else 3
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    name = (
        torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else (f"CPU {platform.processor() or platform.machine()}, {os.cpu_count()} cores")
    )
    res: dict[str, Any] = {
        "argv": sys.argv,
        "device": device.type,
        "device_name": name,
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "precision": precision,
        "steps": args.steps,
        "rounds": args.rounds,
        "load_start": load_average(),
        "cells": {},
    }
    print(
        f"throughput bench on {name}, torch {torch.__version__}, threads "
        f"{torch.get_num_threads()}, load average {res['load_start']}",
        flush=True,
    )
    data, res["data"] = load_data(args)
    print(f"data: {res['data']}", flush=True)
    limit: dict[str, list[float]] = {"fp32": matmul_gflops(device, torch.float32)}
    if device.type == "cuda":
        limit["bf16"] = matmul_gflops(device, torch.bfloat16)
    conv_dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    conv_limit = conv_gflops(device, conv_dtype)
    signal.signal(signal.SIGTERM, _interrupt)  # `timeout` still gets the tables done so far
    try:
        run_sections(args, data, device, precision, res)
    except KeyboardInterrupt:
        print("INTERRUPTED: reporting what finished", flush=True)
        res["interrupted"] = True
    for dtype, values in zip(("fp32", "bf16"), (torch.float32, torch.bfloat16)):
        if dtype in limit:
            limit[dtype] += matmul_gflops(device, values)
    res["matmul_gflops"] = limit
    res["conv_gflops"] = conv_limit + conv_gflops(device, conv_dtype)
    res["load_end"] = load_average()
    res["verdict"] = print_report(res)
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=1, default=float))
        print(f"\nwrote {args.json}")
    return 0


def _interrupt(_signum: int, _frame: object) -> None:
    raise KeyboardInterrupt


def run_sections(args, data: ImageData, device, precision: str, res: dict[str, Any]) -> None:
    for cell in args.cells:
        model = model_for(CELLS[cell], data, device, channels_last=True)
        entry: dict[str, Any] = {
            "arch": CELLS[cell],
            "params": count_parameters(model),
            "mflops": count_flops(model, data.image_size),
            "stage2_mmacs": stage2_mmacs(model, data.image_size),
        }
        del model
        print(f"cell {cell}: {entry['params']:,} params, {entry['mflops']:.1f} MFLOPs", flush=True)
        res["cells"][cell] = entry
        if "stage1" in args.sections:
            entry["stage1"] = bench_stage1(cell, data, device, precision, args)
        if "stage2" in args.sections:
            entry["stage2"] = bench_stage2(cell, data, device, precision, args)
        if "zerocost" in args.sections:
            entry["zerocost"] = bench_zerocost(cell, data, device, args)
        if args.json:  # partial results survive an interrupted run
            Path(args.json).write_text(json.dumps(res, indent=1, default=float))
    if "checkevery" in args.sections:
        print("check-every:", flush=True)
        res["check_every_k"] = args.check_every
        res["check_every"] = bench_check_every(data, device, precision, args)


if __name__ == "__main__":
    sys.exit(main())
