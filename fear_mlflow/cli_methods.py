"""Each method's own click options and the builder that turns them into settings.

Shared by the single-evaluation commands (`fear-mlflow fear`) and `fear-mlflow sweep fear`,
so both accept exactly the same method options.
"""

from __future__ import annotations

from typing import Any

import click

from fear_mlflow.cli_options import (
    Decorator,
    bool_flag,
    optim_from,
    optim_options,
    parse_list,
    parse_threshold,
    stack,
)
from fear_mlflow.config import (
    PAPER_UNFREEZE,
    TRAINING_SEED,
    ZEROCOST_MEASURES,
    ZEROCOST_NETWORKS,
    ZEROCOST_SEED,
    FearSettings,
    RegularSettings,
    RunContext,
    ShortregSettings,
    ZerocostSettings,
    default_threshold,
    last_cells_unfreeze,
    validate_unfreeze,
)

DEFAULT_SEEDS = {
    "fear": TRAINING_SEED,
    "shortreg": TRAINING_SEED,
    "regular": TRAINING_SEED,
    "zerocost": ZEROCOST_SEED,
}

_FEAR = stack(
    click.option(
        "--threshold",
        default="auto",
        show_default=True,
        help="Stage-1 train top-1 to reach, in (0, 1]; auto = cifar10 0.6, cifar100 0.3, "
        "ImageNet16-120 0.2, others 0.6.",
    ),
    click.option(
        "--batch-size", type=int, default=256, show_default=True, help="Stage-1 batch size."
    ),
    click.option(
        "--stage1-epochs",
        type=int,
        default=200,
        show_default=True,
        help="Nominal cosine schedule length and cap of stage 1.",
    ),
    click.option(
        "--freeze-batch-size", type=int, default=512, show_default=True, help="Stage-2 batch size."
    ),
    click.option(
        "--freeze-epochs",
        type=int,
        default=5,
        show_default=True,
        help="Stage-2 epochs (own cosine schedule).",
    ),
    click.option(
        "--unfreeze",
        default=",".join(PAPER_UNFREEZE),
        show_default=True,
        help="Comma-separated module names that stay trainable in stage 2.",
    ),
    click.option(
        "--unfreeze-last-cells",
        type=int,
        default=None,
        help="Instead of --unfreeze: keep the head and the last K cells trainable.",
    ),
    bool_flag(
        "--no-freeze",
        "Stage 2 trains the whole net (ablation).",
    ),
    click.option(
        "--check-every",
        type=int,
        default=0,
        show_default=True,
        help="Also check the threshold every N steps (0 = end of each epoch only).",
    ),
    click.option("--max-seconds", type=float, default=None, help="Stage-1 wall-clock budget."),
    bool_flag(
        "--stage2-cache",
        "Compute the frozen prefix's features once and train only the suffix in "
        "stage 2 (faster; no stage-2 augmentation, frozen BN in eval mode).",
    ),
    optim_options(),
)

_SHORTREG = stack(
    click.option("--batch-size", type=int, default=256, show_default=True),
    click.option(
        "--epochs",
        type=int,
        default=10,
        show_default=True,
        help="Epochs (the cosine schedule spans exactly these).",
    ),
    bool_flag(
        "--eval-test",
        "Also measure test top-1 at the end (logged as test/top1).",
    ),
    click.option("--max-seconds", type=float, default=None, help="Wall-clock budget."),
    optim_options(),
)

_REGULAR = stack(
    click.option("--batch-size", type=int, default=256, show_default=True),
    click.option("--epochs", type=int, default=200, show_default=True),
    click.option("--max-seconds", type=float, default=None, help="Wall-clock budget."),
    optim_options(),
)

_ZEROCOST = stack(
    click.option(
        "--batch-size",
        type=int,
        default=64,
        show_default=True,
        help="Size of the one random training minibatch.",
    ),
    click.option(
        "--measures",
        default=",".join(ZEROCOST_MEASURES),
        show_default=True,
        help="Comma-separated subset of the measures.",
    ),
    click.option(
        "--network",
        type=click.Choice(ZEROCOST_NETWORKS),
        default=ZerocostSettings.network,
        show_default=True,
        help="reference: the network of Abdelfattah et al.'s code (cell convs with a bias), "
        "so values match the published ones; natsbench: NATS-Bench's bias-free TinyNetwork "
        "(fisher no longer scores cells whose output is a conv of an all-zero node ~1e9).",
    ),
)

_OPTIONS = {"fear": _FEAR, "shortreg": _SHORTREG, "regular": _REGULAR, "zerocost": _ZEROCOST}


def method_options(method: str) -> Decorator:
    """The click options of ``method`` (its settings, not data/arch/tracking)."""
    return _OPTIONS[method]


def settings_from(method: str, kw: dict[str, Any], context: RunContext) -> Any:
    """Pop ``method``'s options from ``kw`` and build its validated settings."""
    if method == "zerocost":
        return ZerocostSettings(
            batch_size=kw.pop("batch_size"),
            measures=parse_list(kw.pop("measures")),
            network=kw.pop("network"),
        )
    optim = optim_from(kw)
    if method == "fear":
        threshold = parse_threshold(kw.pop("threshold"))
        last_cells = kw.pop("unfreeze_last_cells")
        unfreeze_text = kw.pop("unfreeze")
        unfreeze = (
            last_cells_unfreeze(last_cells, context.total_cells)
            if last_cells is not None
            else parse_list(unfreeze_text)
        )
        validate_unfreeze(unfreeze, context.total_cells)
        return FearSettings(
            threshold=threshold if threshold is not None else default_threshold(context.dataset),
            batch_size=kw.pop("batch_size"),
            stage1_epochs=kw.pop("stage1_epochs"),
            freeze_batch_size=kw.pop("freeze_batch_size"),
            freeze_epochs=kw.pop("freeze_epochs"),
            unfreeze=unfreeze,
            no_freeze=bool(kw.pop("no_freeze")),
            check_every=kw.pop("check_every"),
            max_seconds=kw.pop("max_seconds"),
            optim=optim,
        )
    if method == "shortreg":
        return ShortregSettings(
            batch_size=kw.pop("batch_size"),
            epochs=kw.pop("epochs"),
            eval_test=bool(kw.pop("eval_test")),
            max_seconds=kw.pop("max_seconds"),
            optim=optim,
        )
    return RegularSettings(
        batch_size=kw.pop("batch_size"),
        epochs=kw.pop("epochs"),
        max_seconds=kw.pop("max_seconds"),
        optim=optim,
    )
