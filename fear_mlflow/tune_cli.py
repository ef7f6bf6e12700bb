"""`fear-mlflow tune`: an Optuna study over FEAR's hyperparameters (see `fear_mlflow.tune`)."""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path
from typing import Any

import click

from fear_mlflow.cli_options import (
    bool_flag,
    context_from,
    data_options,
    optim_from,
    optim_options,
    parse_list,
    stack,
)
from fear_mlflow.config import TRAINING_SEED, FearSettings, default_threshold
from fear_mlflow.errors import UserError

EXAMPLE = """\b
Example (CIFAR-10 subset, shared ground truth, 20 archs, 10 trials):
  fear-mlflow tune --study-name fear-c10 --dataset cifar10 --train-subset 2000 \\
      --benchmark tss_test_accuracy_200ep.csv --sample 20 --n-trials 10
Two machines on one study: same command with --storage postgresql+psycopg2://user@host/db
Browse: optuna-dashboard sqlite:///optuna.db   and   mlflow ui"""


def _pair(text: str, cast: type, flag: str) -> tuple[Any, Any]:
    try:
        parts = [cast(p) for p in parse_list(text)]
    except ValueError:
        raise UserError(f"{flag} takes LO,HI numbers, got {text!r}") from None
    if len(parts) == 1:
        parts *= 2
    if len(parts) != 2:
        raise UserError(f"{flag} takes LO,HI (or one value to fix it), got {text!r}")
    return parts[0], parts[1]


def _space(kw: dict[str, Any], dataset: str, total_cells: int) -> Any:
    from fear_mlflow.tune import SearchSpace, default_space

    space = default_space(dataset, total_cells)
    threshold = kw.pop("threshold_range")
    batches = kw.pop("freeze_batch_sizes")
    epochs = kw.pop("freeze_epochs_range")
    cells = kw.pop("last_cells_range")
    try:
        batch_sizes = tuple(int(b) for b in parse_list(batches)) if batches else None
    except ValueError:
        raise UserError(f"--freeze-batch-sizes takes integers, got {batches!r}") from None
    return SearchSpace(
        threshold=_pair(threshold, float, "--threshold-range") if threshold else space.threshold,
        freeze_batch_sizes=batch_sizes or space.freeze_batch_sizes,
        freeze_epochs=_pair(epochs, int, "--freeze-epochs-range")
        if epochs
        else space.freeze_epochs,
        last_cells=_pair(cells, int, "--last-cells-range") if cells else space.last_cells,
    )


tune_options = stack(
    click.option("--study-name", required=True, help="Optuna study; the same name continues it."),
    click.option(
        "--storage",
        default="sqlite:///optuna.db",
        show_default=True,
        help="Optuna RDB URL, e.g. postgresql+psycopg2://user@host:5432/db (shared by workers).",
    ),
    click.option(
        "--n-trials",
        type=int,
        default=10,
        show_default=True,
        help="Trials the study should hold in total, counted over every process.",
    ),
    click.option("--timeout", type=float, default=None, help="Stop starting trials after N s."),
    click.option(
        "--objective",
        type=click.Choice(["multi", "spearman"]),
        default="multi",
        show_default=True,
        help="multi: maximise rho and minimise mean seconds per arch; spearman: rho "
        "only, with median pruning on the running rho.",
    ),
    click.option(
        "--report-every",
        type=int,
        default=5,
        show_default=True,
        help="Report the running rho to the pruner every N archs (spearman objective).",
    ),
    click.option("--archs", default=None, help="Comma-separated indices or cell strings."),
    click.option("--archs-file", default=None, help="One index or cell string a line."),
    click.option("--sample", type=int, default=None, help="N cells uniformly at random."),
    click.option("--sample-seed", type=int, default=0, show_default=True),
    click.option("--benchmark", default=None, help="Ground truth table [env FEAR_BENCHMARK]."),
    click.option(
        "--gt-experiment",
        default=None,
        help="Ground truth from finished `regular` runs of this experiment instead.",
    ),
    click.option(
        "--threshold-range",
        default=None,
        help="LO,HI of the stage-1 threshold [default: around the paper's value].",
    ),
    click.option(
        "--freeze-batch-sizes",
        default=None,
        help="Choices of the stage-2 batch size [default: 128,256,512,1024].",
    ),
    click.option("--freeze-epochs-range", default=None, help="LO,HI stage-2 epochs [1,10]."),
    click.option(
        "--last-cells-range", default=None, help="LO,HI trainable last cells in stage 2 [1,8]."
    ),
    click.option(
        "--batch-size", type=int, default=256, show_default=True, help="Stage-1 batch size (fixed)."
    ),
    click.option(
        "--stage1-epochs",
        type=int,
        default=200,
        show_default=True,
        help="Stage-1 nominal schedule and cap (fixed).",
    ),
    bool_flag(
        "--stage2-cache",
        "Cached frozen-prefix features in stage 2 (see `fear --help`).",
    ),
    click.option(
        "--stage1-reuse/--no-stage1-reuse",
        default=True,
        show_default=True,
        help="Reuse stage 1 exactly across trials (same arch, other threshold).",
    ),
    click.option(
        "--stage1-cache",
        default=None,
        help="Folder of the stage-1 store [$FEAR_CACHE/stage1, ~/.cache/fear-mlflow/stage1].",
    ),
    click.option(
        "--stage1-cache-mb",
        type=float,
        default=4096,
        show_default=True,
        help="Size bound of the stage-1 store (least recently used states go first).",
    ),
    click.option(
        "--experiment",
        default="fear-tune",
        show_default=True,
        help="MLflow experiment for trial and evaluation runs.",
    ),
    click.option("--tracking-uri", default=None, help="[env MLFLOW_TRACKING_URI]"),
    click.option(
        "--seed-sampler", type=int, default=0, show_default=True, help="Seed of Optuna's sampler."
    ),
    optim_options(),
)


@click.command(epilog=EXAMPLE)
@data_options(TRAINING_SEED)
@tune_options
def tune(**kw: Any) -> None:
    """Tune FEAR's threshold, freeze batch size, freeze epochs and trainable cells with Optuna.

    Every trial is an MLflow parent run with one nested FEAR run per arch; the study lives
    in --storage, so the same --study-name continues it and several processes (one
    PostgreSQL storage) cooperate on it.
    """
    from fear_mlflow.benchmark import Benchmark, load_benchmark
    from fear_mlflow.data.datasets import load_dataset
    from fear_mlflow.device import prepare_device, resolve_device, resolve_precision
    from fear_mlflow.ground_truth import table_from_regular_runs
    from fear_mlflow.sweep_archs import select_archs
    from fear_mlflow.tracking import connect
    from fear_mlflow.train.stage1_store import Stage1Store
    from fear_mlflow.tune import TuneJob, ground_truth_for, run_study

    optim = optim_from(kw)
    context = context_from(kw)
    for name in ("n_trials", "report_every"):
        if kw[name] is not None and kw[name] <= 0:
            raise UserError(f"--{name.replace('_', '-')} must be > 0, got {kw[name]}")
    space = _space(kw, context.dataset, context.total_cells)
    base = FearSettings(
        threshold=default_threshold(context.dataset),
        batch_size=kw["batch_size"],
        stage1_epochs=kw["stage1_epochs"],
        stage2_cache=bool(kw["stage2_cache"]),
        optim=optim,
    )
    table = load_benchmark(kw["benchmark"])
    uri = connect(kw["tracking_uri"])
    if kw["gt_experiment"]:
        table = Benchmark.from_frame(
            table_from_regular_runs([kw["gt_experiment"]]), f"experiment {kw['gt_experiment']}"
        )
    if table is None:
        raise UserError(
            "tuning needs ground truth: pass --benchmark FILE (or FEAR_BENCHMARK) or "
            "--gt-experiment NAME with finished `regular` runs"
        )
    archs = select_archs(
        archs=kw["archs"],
        archs_file=kw["archs_file"],
        sample=kw["sample"],
        sample_seed=kw["sample_seed"],
        benchmark=table,
    )
    truth = ground_truth_for(archs, table, context.dataset)
    device = resolve_device(context.device)
    prepare_device(device)
    data = load_dataset(
        context.dataset, context.dataroot, train_subset=context.train_subset, seed=context.seed
    )
    store = (
        Stage1Store(kw["stage1_cache"], max_mb=kw["stage1_cache_mb"])
        if kw["stage1_reuse"]
        else None
    )
    job = TuneJob(
        study_name=kw["study_name"],
        storage=kw["storage"],
        n_trials=kw["n_trials"],
        timeout=kw["timeout"],
        objective=kw["objective"],
        report_every=kw["report_every"],
        archs=archs,
        ground_truth=truth,
        base=base,
        space=space,
        context=context,
        data=data,
        device=device,
        precision=resolve_precision(kw["precision"], device),
        experiment=kw["experiment"],
        stage1_store=store,
        seed=kw["seed_sampler"],
    )
    click.echo(
        f"study {job.study_name}: {len(archs)} archs on {context.dataset}, "
        f"objective {job.objective}, tracking {uri}",
        err=True,
    )
    study = run_study(job, on_trial=_print_trial)
    _summarise(job, study)


def _print_trial(study: Any, trial: Any) -> None:
    values = ", ".join(f"{v:.4f}" for v in trial.values) if trial.values else "-"
    click.echo(
        f"trial {trial.number} {trial.state.name.lower()}: {values} {trial.params}",
        err=not sys.stdout.isatty(),
    )


def _summarise(job: Any, study: Any) -> None:
    """Print the best trial(s) and log the Pareto front (or best) as a figure."""
    from fear_mlflow.study_front import front_figure, load_fronts
    from fear_mlflow.tune_runs import log_study_summary

    complete = [t for t in study.trials if t.state.name == "COMPLETE"]
    if not complete:
        click.echo("no trial completed yet")
        return
    best = study.best_trials
    for trial in best:
        click.echo(f"best trial {trial.number}: values {trial.values} params {trial.params}")
    metrics = {"n_complete": len(complete), "best_spearman": max(t.values[0] for t in complete)}
    artifacts = []
    out = Path(tempfile.mkdtemp(prefix="fear-tune-"))
    for front in load_fronts(job.storage, [job.study_name]):
        figure = front_figure(front)
        if figure is not None:
            path = out / f"{job.study_name}-pareto.png"
            figure.savefig(path, dpi=120)
            artifacts.append(path)
    run_id = log_study_summary(job.experiment, job.study_name, metrics, artifacts)
    click.echo(f"study summary run {run_id} (figure: {artifacts[0] if artifacts else 'none'})")
