"""`fear-mlflow`: the command line every MLproject entry point calls.

Problems the user can fix end as one ``error: ...`` line and exit code 2, never a traceback.
"""

from __future__ import annotations

import signal
import sys
import threading
from typing import Any

import click

from fear_mlflow import __version__
from fear_mlflow.cli_methods import DEFAULT_SEEDS, method_options, settings_from
from fear_mlflow.cli_options import (
    Decorator,
    context_from,
    data_options,
    stack,
    tracking_options,
)
from fear_mlflow.errors import UserError

#: The paper's 94.37 % CIFAR-10 cell (NATS-Bench index 13714): the entry points' default.
DEFAULT_ARCH = "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_1x1~1|nor_conv_3x3~2|"
NUM_CLASSES = {"cifar10": 10, "cifar100": 100, "ImageNet16-120": 120}


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="fear-mlflow")
def cli() -> None:
    """Rank NATS-Bench architectures cheaply and track every evaluation in MLflow.

    \b
    Evaluate one cell (one MLflow run each):
      fear-mlflow fear --arch 13714 --benchmark tss.csv --dataset cifar10
      fear-mlflow shortreg --arch '|nor_conv_3x3~0|+...' --epochs 10
      fear-mlflow zerocost --arch 13714 --benchmark tss.csv
    Inspect:
      fear-mlflow arch show 13714 --benchmark tss.csv
      fear-mlflow data check --dataset cifar10
    Browse the runs with `mlflow ui --backend-store-uri sqlite:///mlflow.db`.
    """


# ----------------------------------------------------------------------------- arch / data
@cli.group()
def arch() -> None:
    """Inspect cells of the NATS-Bench topology space."""


@arch.command("show")
@click.argument("arch_spec", metavar="ARCH")
@click.option("--benchmark", default=None, help="Ground-truth table [env FEAR_BENCHMARK].")
@click.option(
    "--dataset",
    default="cifar10",
    show_default=True,
    help="Sets the class count and image size for params/FLOPs.",
)
@click.option("--num-classes", type=int, default=None, help="Override the class count.")
def arch_show(arch_spec: str, benchmark: str | None, dataset: str, num_classes: int | None) -> None:
    """Print index, canonical string, parameter count, MFLOPs, degeneracy and ground truth.

    ARCH is a benchmark index (needs --benchmark) or a NATS-Bench cell string.
    """
    from fear_mlflow.benchmark import load_benchmark, resolve_arch
    from fear_mlflow.space.model import build_model, count_flops, count_parameters

    table = load_benchmark(benchmark)
    cell, index = resolve_arch(arch_spec, table)
    classes = num_classes or NUM_CLASSES.get(dataset, 10)
    if classes <= 0:
        raise UserError(f"--num-classes must be > 0, got {classes}")
    image_size = 16 if dataset in ("ImageNet16-120", "digits", "synthetic") else 32
    model = build_model(cell, classes, channels_last=False)
    click.echo(f"index       {index if index is not None else 'unknown (no benchmark row)'}")
    click.echo(f"arch        {cell}")
    click.echo(f"params      {count_parameters(model)}  ({classes} classes)")
    click.echo(
        f"MFLOPs      {count_flops(model, image_size):.2f}  ({image_size}x{image_size} input)"
    )
    click.echo(f"degenerate  {'yes' if cell.is_degenerate else 'no'}")
    if table is not None:
        for name in table.datasets:
            acc = table.accuracy(cell, name)
            click.echo(f"gt {name:<15} {'n/a' if acc is None else f'{acc:.2f}'}")


@cli.group()
def data() -> None:
    """Check datasets on disk."""


@data.command("check")
@click.option("--dataset", required=True, help="cifar10, cifar100, ImageNet16-120, digits, ...")
@click.option("--dataroot", default=None, help="Dataset folder [env FEAR_DATAROOT, ~/dataroot].")
def data_check(dataset: str, dataroot: str | None) -> None:
    """Load DATASET and print split sizes, classes and image shape, or the precise problem."""
    from fear_mlflow.data.datasets import dataset_summary, load_dataset

    summary = dataset_summary(load_dataset(dataset, dataroot))
    for key, value in summary.items():
        click.echo(f"{key:<12} {value}")


@cli.group()
def benchmark() -> None:
    """Build ground-truth tables."""


@benchmark.command("from-runs")
@click.option("--experiment", required=True, multiple=True, help="Experiment(s) with regular runs.")
@click.option("--out", "out_path", required=True, help="CSV file to write.")
@click.option("--tracking-uri", default=None, help="[env MLFLOW_TRACKING_URI]")
def benchmark_from_runs(
    experiment: tuple[str, ...], out_path: str, tracking_uri: str | None
) -> None:
    """Turn finished `regular` runs into a benchmark table (test accuracy in %).

    Archs evaluated several times (e.g. seeds) get the mean. The table works with
    --benchmark everywhere, e.g. for `digits`, which NATS-Bench does not cover.
    """
    from fear_mlflow.benchmark import write_benchmark_csv
    from fear_mlflow.ground_truth import table_from_regular_runs
    from fear_mlflow.tracking import connect

    connect(tracking_uri)
    frame = table_from_regular_runs(list(experiment))
    write_benchmark_csv(frame, out_path)
    click.echo(f"wrote {len(frame)} archs x {len(frame.columns) - 2} dataset(s) to {out_path}")


# ----------------------------------------------------------------------------- evaluations
def _evaluate(method: str, kw: dict[str, Any]) -> None:
    """Every evaluation command: validate settings, resolve, check, run, report."""
    from fear_mlflow.benchmark import load_benchmark, resolve_arch
    from fear_mlflow.data.datasets import load_dataset
    from fear_mlflow.device import prepare_device, resolve_device, resolve_precision
    from fear_mlflow.runner import Evaluation, run_tracked
    from fear_mlflow.tracking import connect, redact, run_experiment_name

    context = context_from(kw)
    settings = settings_from(method, kw, context)
    table = load_benchmark(kw["benchmark"])
    cell, index = resolve_arch(kw["arch"], table)
    device = resolve_device(context.device)
    precision = resolve_precision(kw["precision"], device)
    prepare_device(device)
    data = load_dataset(
        context.dataset, context.dataroot, train_subset=context.train_subset, seed=context.seed
    )
    uri = connect(kw["tracking_uri"])
    evaluation = Evaluation(
        method, settings, context, cell, index, precision, compile=kw["compile_model"]
    )
    run_id, result = run_tracked(
        evaluation,
        data,
        device,
        benchmark=table,
        experiment=kw["experiment"],
        progress=sys.stderr.isatty(),
    )
    click.echo(
        f"{method} {cell} on {context.dataset}: status {result.status}, score {result.score:.4f}, "
        f"duration {result.duration_s:.1f} s (wall {result.wall_s:.1f} s)"
    )
    click.echo(
        f"MLflow run {run_id} in experiment '{run_experiment_name(run_id)}' at {redact(uri)}"
    )
    if uri.startswith("sqlite:"):
        click.echo(f"browse it: mlflow ui --backend-store-uri {uri}")


arch_option = click.option(
    "--arch",
    default=DEFAULT_ARCH,
    show_default="the 94.37 % cell, index 13714",
    help="Benchmark index (needs --benchmark) or NATS-Bench cell string.",
)


def evaluation_command(method: str) -> Decorator:
    """Arch, data, tracking and ``method``'s own options on one command."""
    return stack(
        arch_option,
        data_options(DEFAULT_SEEDS[method]),
        tracking_options(),
        method_options(method),
    )


@cli.command()
@evaluation_command("fear")
def fear(**kw: Any) -> None:
    """FEAR: train to a train-accuracy threshold, then train only the last cells briefly.

    \b
    Example (paper defaults, CIFAR-10):
      fear-mlflow fear --arch 13714 --benchmark tss_test_accuracy_200ep.csv
    Smoke run on scikit-learn's digits (offline, under a minute on a laptop CPU):
      fear-mlflow fear --dataset digits --freeze-epochs 2
    """
    _evaluate("fear", kw)


@cli.command()
@evaluation_command("shortreg")
def shortreg(**kw: Any) -> None:
    """Shortened regular training; score = best train top-1 over the epochs.

    \b
    The paper's grid: --batch-size 256|512|1024|2048 x --epochs 10|20|30, e.g.
      fear-mlflow shortreg --arch 13714 --benchmark tss.csv --batch-size 512 --epochs 20
    """
    _evaluate("shortreg", kw)


@cli.command()
@evaluation_command("regular")
def regular(**kw: Any) -> None:
    """Full training (NATS-Bench schedule), test top-1 at the end: ground truth.

    \b
    Ground truth for a dataset NATS-Bench does not cover, then a table from the runs:
      fear-mlflow regular --dataset digits --arch '...' --epochs 30 --experiment gt-digits
      fear-mlflow benchmark from-runs --experiment gt-digits --out digits_gt.csv
    """
    _evaluate("regular", kw)


@cli.command()
@evaluation_command("zerocost")
def zerocost(**kw: Any) -> None:
    """Zero-cost proxies at initialisation on one minibatch (Abdelfattah et al. 2021).

    \b
    Logs zc/<measure> and zc/<measure>_s for grad_norm, snip, grasp, fisher, jacob_cov,
    synflow, naswot, params and flops; the run's score is synflow.
      fear-mlflow zerocost --arch 13714 --benchmark tss.csv --measures synflow,jacob_cov
    """
    _evaluate("zerocost", kw)


# ----------------------------------------------------------------------------- sweeps
from fear_mlflow.sweep_cli import sweep  # noqa: E402  (defines `fear-mlflow sweep METHOD`)

cli.add_command(sweep)

# ----------------------------------------------------------------------------- reports
from fear_mlflow.cli_report import dashboard, report  # noqa: E402  (report, dashboard)

cli.add_command(report)
cli.add_command(dashboard)


# ----------------------------------------------------------------------------- tuning
from fear_mlflow.tune_cli import tune  # noqa: E402

cli.add_command(tune)


def _terminate_as_interrupt(_signum: int, _frame: object) -> None:
    """SIGTERM (a scheduler's kill) unwinds like Ctrl-C, so open runs are closed as KILLED."""
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> None:
    """Entry point: click in non-standalone mode so every error is one line."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _terminate_as_interrupt)
    try:
        cli.main(args=argv, prog_name="fear-mlflow", standalone_mode=False)
    except UserError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(2)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except click.UsageError as exc:
        hint = f" (see `{exc.ctx.command_path} --help`)" if exc.ctx else ""
        click.echo(f"error: {exc.format_message()}{hint}", err=True)
        sys.exit(2)
    except click.ClickException as exc:
        click.echo(f"error: {exc.format_message()}", err=True)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        click.echo("interrupted", err=True)
        sys.exit(130)


if __name__ == "__main__":
    main()
