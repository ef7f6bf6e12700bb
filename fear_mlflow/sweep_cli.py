"""``fear-mlflow sweep METHOD``: many archs x a settings grid, resumable and shardable.

Each subcommand takes the single command's data, tracking and method options (so the
same validation applies) plus the sweep's own options below.
"""

from __future__ import annotations

import sys
from typing import Any

import click

from fear_mlflow.cli_methods import DEFAULT_SEEDS, method_options
from fear_mlflow.cli_options import Decorator, context_from, data_options, stack, tracking_options
from fear_mlflow.errors import UserError

SWEEP_KEYS = (
    "archs",
    "archs_file",
    "sample",
    "sample_seed",
    "grid",
    "shard",
    "workers",
    "heartbeat_timeout",
    "sweep_name",
    "max_failures",
    "parent_run_id",
    "report",
    "threads",
)


def _blank_to_none(_ctx: click.Context, _param: click.Parameter, value: Any) -> Any:
    """MLproject passes unset values as '' or 0: both mean "not given"."""
    return None if value in ("", 0, None) else value


def sweep_options() -> Decorator:
    return stack(
        click.option(
            "--archs",
            callback=_blank_to_none,
            help="Comma-separated benchmark indices (need --benchmark) or cell strings, "
            "e.g. --archs 13714,0,42.",
        ),
        click.option(
            "--archs-file",
            callback=_blank_to_none,
            metavar="FILE",
            help="One index or cell string a line ('#' starts a comment), "
            "e.g. --archs-file ../shared/data/fear_paper_archs.txt.",
        ),
        click.option(
            "--sample",
            type=int,
            callback=_blank_to_none,
            metavar="N",
            help="N cells uniformly without replacement: benchmark indices with --benchmark, "
            "else cells of the 15,625-cell enumeration, e.g. --sample 1000.",
        ),
        click.option(
            "--sample-seed",
            type=int,
            default=0,
            show_default=True,
            help="Seed of --sample (same seed, same cells), e.g. --sample-seed 1.",
        ),
        click.option(
            "--grid",
            multiple=True,
            metavar="KEY=V1,V2",
            help="Expand a method option over values (repeatable: the product of all), e.g. "
            "--grid batch-size=256,512,1024,2048 --grid epochs=10,20,30. Use ';' between "
            "values that contain commas (--grid 'measures=synflow;snip,grasp').",
        ),
        click.option(
            "--shard",
            default="0/1",
            show_default=True,
            metavar="i/N",
            help="Evaluate only slice i of N (every N-th planned evaluation from the i-th); "
            "one command per machine, e.g. --shard 0/4 ... --shard 3/4.",
        ),
        click.option(
            "--workers",
            type=int,
            default=1,
            show_default=True,
            metavar="K",
            help="Evaluations at once on this machine: K processes splitting the shard, "
            "torch threads divided between them (K per GPU on multi-GPU hosts), e.g. --workers 2.",
        ),
        click.option(
            "--heartbeat-timeout",
            type=float,
            default=1800.0,
            show_default=True,
            metavar="SECONDS",
            help="A RUNNING evaluation silent this long is dead and redone (a dead process on "
            "this host is spotted at once), e.g. --heartbeat-timeout 600.",
        ),
        click.option(
            "--sweep-name",
            callback=_blank_to_none,
            metavar="NAME",
            help="Tag fear.sweep of every run (default: METHOD-<hash of the plan>); "
            "e.g. --sweep-name shortreg-grid-c10.",
        ),
        click.option(
            "--max-failures",
            type=int,
            default=0,
            show_default=True,
            metavar="N",
            help="Stop after N failed evaluations (0 = never stop; failures are redone on the "
            "next run), e.g. --max-failures 10.",
        ),
        click.option("--parent-run-id", hidden=True, default=None),
        click.option("--report", hidden=True, type=click.Choice(["text", "json"]), default="text"),
        click.option(
            "--threads",
            type=int,
            callback=_blank_to_none,
            metavar="T",
            help="Torch CPU threads per worker (default: this machine's cores / workers); "
            "on a busy, shared CPU 1 is often much faster, e.g. --threads 1.",
        ),
    )


def _sweep(method: str, kw: dict[str, Any]) -> None:
    """Resolve and validate everything, then run this shard here or in K workers."""
    import torch

    from fear_mlflow.benchmark import load_benchmark
    from fear_mlflow.device import prepare_device, resolve_device, resolve_precision
    from fear_mlflow.sweep_archs import select_archs
    from fear_mlflow.sweep_grid import expand_grid, parse_grid
    from fear_mlflow.sweep_plan import build_items, parse_shard, sweep_id
    from fear_mlflow.tracking import bound_http_retries, connect, redact

    opts = {key: kw.pop(key) for key in SWEEP_KEYS}
    context = context_from(kw)
    table = load_benchmark(kw.pop("benchmark"))
    experiment = kw.pop("experiment")
    tracking_uri = kw.pop("tracking_uri")
    precision_choice = kw.pop("precision")
    shard = parse_shard(opts["shard"])
    if opts["workers"] < 1:
        raise UserError(f"--workers must be >= 1, got {opts['workers']}")
    if opts["heartbeat_timeout"] <= 0:
        raise UserError(f"--heartbeat-timeout must be > 0 seconds, got {opts['heartbeat_timeout']}")
    if opts["max_failures"] < 0:
        raise UserError(f"--max-failures must be >= 0 (0 = no limit), got {opts['max_failures']}")
    grid_axes = parse_grid(opts["grid"], method)
    archs = select_archs(
        archs=opts["archs"],
        archs_file=opts["archs_file"],
        sample=opts["sample"],
        sample_seed=opts["sample_seed"],
        benchmark=table,
    )
    device = resolve_device(context.device)
    precision = resolve_precision(precision_choice, device)
    prepare_device(device)
    items = build_items(method, kw, context, expand_grid(grid_axes), archs, precision)
    sweep = sweep_id(method, items, opts["sweep_name"])
    if opts["threads"] is not None and opts["threads"] < 1:
        raise UserError(f"--threads must be >= 1, got {opts['threads']}")
    if opts["threads"]:
        torch.set_num_threads(opts["threads"])
    bound_http_retries()
    uri = connect(tracking_uri)
    parent_params = {
        "sweep_method": method,
        "dataset": context.dataset,
        "seed": context.seed,
        "archs": len(archs),
        "grid": " ".join(f"{k}={','.join(map(str, v))}" for k, v in grid_axes) or "-",
        "evaluations": len(items),
        "shard": str(shard),
    }
    common = dict(
        method=method,
        items=items,
        sweep=sweep,
        shard=shard,
        experiment=experiment,
        tracking_uri=uri,
        heartbeat_timeout=opts["heartbeat_timeout"],
        parent_params=parent_params,
    )
    if opts["workers"] > 1:
        from fear_mlflow.sweep_launch import launch

        progress = launch(
            click.get_current_context(),
            common,
            opts["workers"],
            context.device,
        )
    else:
        from fear_mlflow.sweep import SweepJob, run_shard

        job = SweepJob(
            **common,
            benchmark=table,
            device=device,
            max_failures=opts["max_failures"],
            parent_run_id=opts["parent_run_id"],
            report_json=opts["report"] == "json",
        )
        progress = run_shard(job)
    if opts["report"] == "json":
        sys.exit(1 if progress.failed else 0)
    click.echo(progress.summary())
    click.echo(f"sweep {sweep}: experiment '{experiment}' at {redact(uri)}")
    if progress.failed:
        click.echo(
            f"{progress.failed} evaluation(s) failed (errors above); re-run the same command "
            "to redo them",
            err=True,
        )
        sys.exit(1)


@click.group()
def sweep() -> None:
    """Evaluate many archs (x a settings grid): resumable, shardable, one run each.

    \b
    Kill it and run the same command again: FINISHED evaluations (same
    fear.config_hash) are skipped, dead or failed ones redone. Run one --shard
    per machine against one tracking server to spread the work.
    """


def sweep_command(method: str, example: str) -> Any:
    """``fear-mlflow sweep <method>``: the method's options + data/tracking + sweep options."""

    def run(**kw: Any) -> None:
        _sweep(method, kw)

    run.__doc__ = (
        f"Sweep `{method}` over many archs; each evaluation is one MLflow run.\n\n"
        "Pick archs with exactly one of --archs, --archs-file or --sample. Every option of\n"
        f"`fear-mlflow {method}` applies to all evaluations; --grid expands some of them.\n\n"
        f"\b\nExamples:\n{example}"
    )
    decorated = stack(
        sweep_options(),
        data_options(DEFAULT_SEEDS[method]),
        tracking_options(),
        method_options(method),
    )(run)
    return sweep.command(method)(decorated)


sweep_command(
    "fear",
    "  fear-mlflow sweep fear --archs-file fear_paper_archs.txt --benchmark tss.csv \\\n"
    "      --experiment fear-c10 --shard 0/4 --workers 2\n"
    "  fear-mlflow sweep fear --dataset synthetic --channels 4 --cells-per-stage 1 \\\n"
    "      --sample 20 --grid freeze-epochs=1,2   # a smoke run in seconds",
)
sweep_command(
    "shortreg",
    "  # the paper's grid, 12 settings x 1,000 cells:\n"
    "  fear-mlflow sweep shortreg --archs-file fear_paper_archs.txt --benchmark tss.csv \\\n"
    "      --grid batch-size=256,512,1024,2048 --grid epochs=10,20,30",
)
sweep_command(
    "regular",
    "  fear-mlflow sweep regular --dataset digits --sample 50 --epochs 30 --experiment gt-digits",
)
sweep_command(
    "zerocost",
    "  fear-mlflow sweep zerocost --archs-file fear_paper_archs.txt --benchmark tss.csv \\\n"
    "      --dataroot ~/dataroot --experiment zc-cifar10",
)
