"""Reusable click options and the converters that turn them into validated settings."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click

from fear_mlflow.config import OptimSettings, RunContext
from fear_mlflow.errors import UserError

Decorator = Callable[[Callable[..., Any]], Callable[..., Any]]


def _empty_to_none(_ctx: click.Context, _param: click.Parameter, value: Any) -> Any:
    """MLproject passes unset optional values as '' (or 0 for counts): treat as not given."""
    return None if value in ("", None) else value


def bool_flag(name: str, help: str) -> Decorator:
    """``--name`` alone means true; ``--name true|false`` too, as MLproject passes values."""
    return click.option(
        name, type=click.BOOL, default=False, is_flag=False, flag_value=True, help=help
    )


def stack(*decorators: Decorator) -> Decorator:
    def apply(func: Callable[..., Any]) -> Callable[..., Any]:
        for decorator in reversed(decorators):
            func = decorator(func)
        return func

    return apply


def data_options(default_seed: int) -> Decorator:
    return stack(
        click.option(
            "--dataset",
            default="cifar10",
            show_default=True,
            help="cifar10, cifar100, ImageNet16-120, digits, imagefolder:PATH or synthetic.",
        ),
        click.option(
            "--dataroot",
            default=None,
            callback=_empty_to_none,
            help="Folder holding the datasets [env FEAR_DATAROOT, default ~/dataroot].",
        ),
        click.option(
            "--train-subset",
            type=int,
            default=0,
            show_default=True,
            help="Train on N class-balanced, seeded training images (0 = all).",
        ),
        click.option(
            "--seed",
            type=int,
            default=default_seed,
            show_default=True,
            help="Seed for weights, data order and augmentation.",
        ),
        click.option(
            "--device",
            default="auto",
            show_default=True,
            help="auto (CUDA when present), cpu, cuda or cuda:N.",
        ),
        click.option(
            "--precision",
            default="auto",
            show_default=True,
            type=click.Choice(["auto", "fp32", "bf16"]),
            help="auto = bf16 autocast on CUDA, fp32 on CPU. bf16 on a CPU autocasts too: "
            "faster only on CPUs with native bf16 (AVX512-BF16 / AMX).",
        ),
        click.option(
            "--compile/--no-compile",
            "compile_model",
            default=False,
            show_default=True,
            help="torch.compile the training forward (pays on GPUs for long runs).",
        ),
        click.option(
            "--channels",
            type=int,
            default=16,
            show_default=True,
            help="Stem width C (NATS-Bench: 16). Change only for smoke tests.",
        ),
        click.option(
            "--cells-per-stage",
            type=int,
            default=5,
            show_default=True,
            help="Cells per stage N (NATS-Bench: 5). Change only for smoke tests.",
        ),
    )


def tracking_options() -> Decorator:
    return stack(
        click.option(
            "--experiment",
            default="fear-mlflow",
            show_default=True,
            help="MLflow experiment that receives the run.",
        ),
        click.option(
            "--tracking-uri",
            default=None,
            callback=_empty_to_none,
            help="MLflow tracking URI [env MLFLOW_TRACKING_URI, default sqlite:///mlflow.db].",
        ),
        click.option(
            "--benchmark",
            default=None,
            callback=_empty_to_none,
            help="Ground-truth table (CSV/Parquet or NATS-Bench archive) [env FEAR_BENCHMARK].",
        ),
    )


def optim_options() -> Decorator:
    return stack(
        click.option("--lr", type=float, default=0.1, show_default=True, help="SGD learning rate."),
        click.option("--momentum", type=float, default=0.9, show_default=True),
        click.option("--nesterov/--no-nesterov", default=True, show_default=True),
        click.option("--weight-decay", type=float, default=5e-4, show_default=True),
        click.option(
            "--grad-clip",
            type=float,
            default=5.0,
            show_default=True,
            help="Gradient-norm clip (0 disables).",
        ),
    )


def optim_from(kw: dict[str, Any]) -> OptimSettings:
    return OptimSettings(
        lr=kw.pop("lr"),
        momentum=kw.pop("momentum"),
        nesterov=kw.pop("nesterov"),
        weight_decay=kw.pop("weight_decay"),
        grad_clip=kw.pop("grad_clip"),
    )


def context_from(kw: dict[str, Any]) -> RunContext:
    subset = kw.pop("train_subset")
    if subset is not None and subset < 0:
        raise UserError(f"--train-subset must be >= 0 (0 = all images), got {subset}")
    return RunContext(
        dataset=kw.pop("dataset"),
        dataroot=kw.pop("dataroot"),
        train_subset=subset or None,
        seed=kw.pop("seed"),
        device=kw.pop("device"),
        channels=kw.pop("channels"),
        cells_per_stage=kw.pop("cells_per_stage"),
    )


def parse_threshold(text: str | None) -> float | None:
    """``auto``/empty → None (the dataset's default); otherwise a float."""
    if text is None or text.strip().lower() in ("", "auto"):
        return None
    try:
        return float(text)
    except ValueError:
        raise UserError(f"--threshold must be a number in (0, 1] or 'auto', got {text!r}") from None


def parse_list(text: str | None) -> tuple[str, ...]:
    return tuple(part.strip() for part in (text or "").split(",") if part.strip())
