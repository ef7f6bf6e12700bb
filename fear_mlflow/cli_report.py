"""``fear-mlflow report`` and ``fear-mlflow dashboard``: what the runs say, as files and a page.

Both read evaluation runs through the same filters; heavy imports (pandas, matplotlib,
Jinja2, Optuna) wait until a command runs, so ``--help`` stays fast.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from fear_mlflow.cli_options import Decorator, stack
from fear_mlflow.config import METHODS


def _empty_to_none(_ctx: click.Context, _param: click.Parameter, value: Any) -> Any:
    """MLproject passes unset values as '': not given."""
    return None if value in ("", None) else value


def _split(_ctx: click.Context, _param: click.Parameter, value: tuple[str, ...]) -> tuple[str, ...]:
    from fear_mlflow.report import unique

    return unique(value)


def run_filter_options() -> Decorator:
    """Which evaluation runs to read: experiments, then any-of filters."""
    return stack(
        click.option(
            "--experiment",
            "experiments",
            multiple=True,
            required=True,
            metavar="NAME",
            help="Experiment holding evaluation runs (repeatable), e.g. --experiment zc-cifar10.",
        ),
        click.option(
            "--dataset",
            "datasets",
            multiple=True,
            callback=_split,
            metavar="NAME",
            help="Only these datasets (repeatable or comma-separated), e.g. --dataset cifar10.",
        ),
        click.option(
            "--method",
            "methods",
            multiple=True,
            callback=_split,
            metavar="NAME",
            help=f"Only these methods ({', '.join(METHODS)}; repeatable or comma-separated).",
        ),
        click.option(
            "--sweep",
            "sweeps",
            multiple=True,
            callback=_split,
            metavar="NAME",
            help="Only runs of these sweeps (tag fear.sweep; repeatable).",
        ),
        click.option(
            "--study",
            "studies",
            multiple=True,
            callback=_split,
            metavar="NAME",
            help="Only runs of these Optuna studies (tag fear.study; repeatable); with "
            "--storage also the studies whose Pareto front the dashboard shows.",
        ),
        click.option(
            "--archs-file",
            default=None,
            callback=_empty_to_none,
            metavar="FILE",
            help="Only these cells: one benchmark index or cell string a line, e.g. "
            "--archs-file ../shared/data/fear_paper_archs.txt.",
        ),
        click.option(
            "--benchmark",
            default=None,
            callback=_empty_to_none,
            help="Ground truth from this table instead of each run's gt_test_acc "
            "[env FEAR_BENCHMARK].",
        ),
        click.option(
            "--tracking-uri",
            default=None,
            callback=_empty_to_none,
            help="MLflow tracking URI [env MLFLOW_TRACKING_URI, default sqlite:///mlflow.db].",
        ),
    )


def analysis_options() -> Decorator:
    """How the rankings are measured."""
    return stack(
        click.option(
            "--top-x",
            default="10,25,50,100",
            show_default=True,
            metavar="PERCENTS",
            help="Top-x % of archs (by ground truth) for the tables and one figure panel each.",
        ),
        click.option(
            "--resamples",
            type=click.IntRange(min=0),
            default=1000,
            show_default=True,
            help="Bootstrap resamples for the 95 % CIs of ρ and τ (0 = no CIs).",
        ),
        click.option(
            "--bootstrap-seed", type=int, default=0, show_default=True, help="Bootstrap seed."
        ),
        click.option(
            "--include-not-reached",
            is_flag=True,
            help="Also rank FEAR archs that never reached the threshold (their scores sit "
            "below every reached one); by default correlations use status ok only.",
        ),
        click.option(
            "--report-experiment",
            default=None,
            callback=_empty_to_none,
            metavar="NAME",
            help="Experiment of the run that receives the files [default: the first --experiment].",
        ),
        click.option(
            "--log/--no-log",
            default=True,
            show_default=True,
            help="Log the files as artifacts of a report run.",
        ),
    )


def _options_and_filter(kw: dict[str, Any]) -> tuple[Any, Any]:
    from fear_mlflow.analysis import AnalysisOptions
    from fear_mlflow.report import RunFilter, parse_percentages, unique

    options = AnalysisOptions(
        top_x=parse_percentages(kw["top_x"], "--top-x"),
        resamples=kw["resamples"],
        seed=kw["bootstrap_seed"],
        include_not_reached=kw["include_not_reached"],
    )
    runs = RunFilter(
        experiments=unique(kw["experiments"], split=False),
        datasets=kw["datasets"],
        methods=kw["methods"],
        sweeps=kw["sweeps"],
        studies=kw["studies"],
        archs_file=kw["archs_file"],
    )
    return options, runs


@click.command()
@run_filter_options()
@analysis_options()
@click.option(
    "--out",
    "out_dir",
    default="reports",
    show_default=True,
    type=click.Path(file_okay=False),
    help="Folder for the CSV tables and figures/ (PNG + SVG).",
)
@click.option(
    "--figures/--no-figures",
    default=True,
    show_default=True,
    help="Also draw the figures (--no-figures: tables only, quicker).",
)
def report(out_dir: str, figures: bool, **kw: Any) -> None:
    """Tables and the FEAR paper's figures from evaluation runs.

    \b
    Groups runs by method configuration (every setting but the arch; each zero-cost
    measure is its own configuration) and computes Spearman ρ and Kendall τ with
    bootstrap 95 % CIs, ρ within the top x %, the common ratio at x %, the mean
    duration per arch ± SE, and how many archs were excluded and why.
    Writes into --out: summary.csv, curves.csv, evaluations.csv, report.json, and per
    dataset figures/duration_vs_spearman_<dataset>, duration_vs_common_ratio_<dataset>,
    curves_<dataset> and score_vs_truth_<dataset> as .png and .svg; logs them as
    artifacts of a run tagged fear.report; prints the summary below.
    Example:
      fear-mlflow report --experiment zc-cifar10 --experiment fear-cifar10 --out reports/c10
    """
    from fear_mlflow.report import ReportRequest, make_report, summary_text
    from fear_mlflow.tracking import connect, redact

    options, runs = _options_and_filter(kw)
    uri = connect(kw["tracking_uri"])
    request = ReportRequest(
        runs=runs,
        out_dir=Path(out_dir),
        benchmark=kw["benchmark"],
        options=options,
        log=kw["log"],
        report_experiment=kw["report_experiment"],
        figures=figures,
    )
    result = make_report(request)
    click.echo(summary_text(result.analysis))
    click.echo(
        f"\n{result.frame['run_id'].nunique()} runs, {len(result.analysis.summary)} "
        f"configurations; ground truth from {redact(result.truth_source)}"
    )
    click.echo(f"wrote {len(result.files)} files to {out_dir}")
    if result.run_id:
        click.echo(f"logged as MLflow run {result.run_id} at {redact(uri)}")


@click.command()
@run_filter_options()
@analysis_options()
@click.option(
    "--storage",
    default=None,
    callback=_empty_to_none,
    metavar="URL",
    help="Optuna storage (e.g. sqlite:///optuna.db): show each study's Pareto front.",
)
@click.option(
    "--out",
    "out_file",
    default="reports/dashboard.html",
    show_default=True,
    type=click.Path(dir_okay=False),
    help="The HTML page to write (self-contained: open it in any browser).",
)
@click.option(
    "--watch",
    "watch_s",
    type=click.FloatRange(min=0),
    default=0,
    show_default=True,
    metavar="SECONDS",
    help="Render again every SECONDS while sweeps or evaluations run (0 = once); "
    "stops when nothing runs, or on Ctrl-C.",
)
@click.option("--title", default="fear-mlflow dashboard", show_default=True)
@click.option(
    "--template",
    default=None,
    callback=_empty_to_none,
    type=click.Path(dir_okay=False),
    help="Own Jinja2 template instead of dashboards/dashboard.html.j2.",
)
def dashboard(out_file: str, **kw: Any) -> None:
    """One HTML page to watch sweeps and studies: progress, tables, figures, Pareto fronts.

    \b
    The page shows each sweep's progress with an ETA, the report's per-configuration
    table (click a header to sort) and figures, and with --storage the Pareto front of
    the Optuna studies. It is logged as an artifact (the MLflow UI shows it).
    Example, while a sweep runs:
      fear-mlflow dashboard --experiment zc-cifar10 --watch 60 --out dash.html
    """
    from fear_mlflow.dashboard import DashboardRequest, run_dashboard
    from fear_mlflow.tracking import connect

    options, runs = _options_and_filter(kw)
    connect(kw["tracking_uri"])
    request = DashboardRequest(
        runs=runs,
        out=Path(out_file),
        benchmark=kw["benchmark"],
        storage=kw["storage"],
        options=options,
        title=kw["title"],
        watch_s=kw["watch_s"],
        log=kw["log"],
        report_experiment=kw["report_experiment"],
        template=kw["template"],
    )
    run_id = run_dashboard(request, echo=click.echo)
    if run_id:
        click.echo(f"logged as artifact dashboard.html of MLflow run {run_id}")
