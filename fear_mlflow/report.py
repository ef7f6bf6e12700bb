"""`fear-mlflow report`: evaluation runs → analysis tables, figures, and a report run.

Steps, each a function so the dashboard and the bench reuse them: `collect` (runs from the
tracking store → one row per evaluation), `analyse` (fear_mlflow.analysis), `write_tables`,
`write_figures`, `log_report` (everything as artifacts of one MLflow run) and
`summary_text` (what the command prints).
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
from mlflow.entities import Metric, Param, RunTag
from mlflow.tracking import MlflowClient

from fear_mlflow.analysis import Analysis, AnalysisOptions, analyse, x_name
from fear_mlflow.errors import UserError
from fear_mlflow.run_table import config_labels, fetch_runs, runs_frame
from fear_mlflow.tracking import experiment_id, redact

#: Tag of report (and dashboard) runs; evaluations are the runs tagged ``fear.method``.
REPORT_TAG = "fear.report"


@dataclass(frozen=True)
class RunFilter:
    """Which evaluation runs a report reads: experiments, then any-of per filter."""

    experiments: tuple[str, ...]
    datasets: tuple[str, ...] = ()
    methods: tuple[str, ...] = ()
    sweeps: tuple[str, ...] = ()
    studies: tuple[str, ...] = ()
    archs_file: str | None = None

    def params(self) -> dict[str, str]:
        """The filter as run params (comma-joined; empty = all)."""
        return {
            name: values if isinstance(values, str) else ",".join(values or ())
            for name, values in vars(self).items()
        }


def only_listed_archs(frame: pd.DataFrame, path: str) -> pd.DataFrame:
    """Rows whose cell the file lists (benchmark indices or cell strings, one a line)."""
    from fear_mlflow.space.arch import parse_arch
    from fear_mlflow.sweep_archs import read_archs_file

    specs = read_archs_file(path)
    indices = {int(spec) for spec in specs if spec.isdigit()}
    try:
        cells = {str(parse_arch(spec)) for spec in specs if not spec.isdigit()}
    except UserError as exc:
        raise UserError(f"--archs-file {path}: {exc}") from None
    return frame[frame["arch_index"].isin(indices) | frame["arch"].isin(cells)]


@dataclass(frozen=True)
class ReportRequest:
    """Everything `make_report` needs."""

    runs: RunFilter
    out_dir: Path
    benchmark: str | None = None
    options: AnalysisOptions = field(default_factory=AnalysisOptions)
    log: bool = True
    report_experiment: str | None = None
    figures: bool = True


@dataclass
class ReportResult:
    """What a report produced."""

    frame: pd.DataFrame
    analysis: Analysis
    files: list[Path]
    run_id: str | None
    truth_source: str


def collect(
    runs: RunFilter, benchmark_path: str | None, *, allow_empty: bool = False
) -> tuple[pd.DataFrame, str]:
    """One row per evaluation with a ``config_label``, and where the ground truth came from."""
    from fear_mlflow.benchmark import load_benchmark

    table = load_benchmark(benchmark_path)
    found = fetch_runs(
        runs.experiments,
        datasets=runs.datasets,
        methods=runs.methods,
        sweeps=runs.sweeps,
        studies=runs.studies,
    )
    if not found and not allow_empty:
        raise UserError(
            f"no evaluation runs in experiment(s) {', '.join(runs.experiments)} match the "
            "filters; check --experiment/--dataset/--method/--sweep/--study"
        )
    frame = runs_frame(found, table)
    if runs.archs_file:
        frame = only_listed_archs(frame, runs.archs_file).reset_index(drop=True)
        if frame.empty and not allow_empty:
            raise UserError(f"no evaluation runs of the cells listed in {runs.archs_file}")
    labels = config_labels(frame)
    frame["config_label"] = frame["config_key"].map(labels)
    source = f"benchmark {table.source}" if table is not None else "the runs' gt_test_acc"
    return frame, source


def write_tables(frame: pd.DataFrame, analysis: Analysis, out_dir: Path) -> list[Path]:
    """``summary.csv`` (one row per configuration), ``curves.csv``, ``evaluations.csv``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    used = pd.Series(False, index=frame.index)
    used[analysis.evaluations.index[analysis.evaluations["used"]]] = True
    paths = [out_dir / "summary.csv", out_dir / "curves.csv", out_dir / "evaluations.csv"]
    analysis.summary.to_csv(paths[0], index=False)
    analysis.curves.to_csv(paths[1], index=False)
    frame.assign(used=used).to_csv(paths[2], index=False)
    return paths


def write_figures(analysis: Analysis, out_dir: Path) -> list[Path]:
    """Per dataset: duration vs ρ, duration vs common ratio, curves over x, score scatter."""
    from fear_mlflow import plots

    paths: list[Path] = []
    summary, top_x = analysis.summary, analysis.options.top_x
    for dataset in summary["dataset"].unique():
        name = plots.safe_name(str(dataset))
        figures = {
            f"duration_vs_spearman_{name}": plots.duration_panels(
                summary, dataset, "spearman", top_x
            ),
            f"duration_vs_common_ratio_{name}": plots.duration_panels(
                summary, dataset, "common_ratio", top_x
            ),
            f"curves_{name}": plots.curves_figure(analysis.curves, summary, dataset),
            f"score_vs_truth_{name}": plots.scatter_grid(analysis.evaluations, summary, dataset),
        }
        for stem, fig in figures.items():
            paths.extend(plots.save_figure(fig, out_dir / "figures", stem))
    return paths


def _fmt(value: float, digits: int = 3) -> str:
    return "–" if value is None or not math.isfinite(value) else f"{value:.{digits}f}"


def _duration(mean: float, se: float) -> str:
    if not math.isfinite(mean):
        return "–"
    spec = ".2g" if mean < 1 else ".1f"
    return f"{mean:{spec}} ± {se:{spec}}" if math.isfinite(se) else f"{mean:{spec}}"


def _excluded(row: pd.Series) -> str:
    parts = [
        ("not reached", row["n_threshold_not_reached"]),
        ("degenerate", row["n_degenerate"]),
        ("diverged", row["n_diverged"]),
        ("failed", row["n_failed"]),
        ("no truth", row["n_no_gt"]),
        ("NaN score", row["n_nan_score"]),
        ("running", row["n_running"]),
    ]
    return ", ".join(f"{n} {what}" for what, n in parts if n) or "none"


def summary_table(analysis: Analysis) -> pd.DataFrame:
    """The printed summary: one readable row per configuration."""
    partial = [x for x in analysis.options.top_x if x < 100]
    rows = []
    for _, row in analysis.summary.iterrows():
        entry = {
            "dataset": row["dataset"],
            "configuration": row["config_label"],
            "n": row["n_used"],
            "Spearman ρ [95% CI]": (
                f"{_fmt(row['spearman'])} [{_fmt(row['spearman_lo'], 2)}, "
                f"{_fmt(row['spearman_hi'], 2)}]"
            ),
            "Kendall τ": _fmt(row["kendall"]),
        }
        for x in partial:
            entry[f"ρ top{x_name(x)}%"] = _fmt(row[f"spearman_top{x_name(x)}"], 2)
        for x in partial:
            entry[f"CR {x_name(x)}%"] = _fmt(row[f"common_ratio_top{x_name(x)}"], 2)
        entry["s/arch ± SE"] = _duration(row["duration_mean_s"], row["duration_se_s"])
        entry["excluded"] = _excluded(row)
        rows.append(entry)
    return pd.DataFrame(rows)


def summary_text(analysis: Analysis) -> str:
    """The summary table as aligned text."""
    table = summary_table(analysis)
    if table.empty:
        return "no configurations"
    return table.to_string(index=False)


def open_output_run(
    client: MlflowClient, experiment: str, run_name: str, tags: dict[str, str]
) -> str:
    """The run that receives a report's or dashboard's files.

    Inside `mlflow run` it is the run MLflow created (``MLFLOW_RUN_ID``); otherwise a new run
    in ``experiment``. It has no ``fear.method`` tag, so reports never read it back.
    """
    attached = os.environ.get("MLFLOW_RUN_ID")
    if attached:
        client.log_batch(attached, tags=[RunTag(k, v) for k, v in tags.items()])
        return attached
    return client.create_run(experiment_id(experiment), run_name=run_name, tags=tags).info.run_id


def close_output_run(client: MlflowClient, run_id: str) -> None:
    """End a run `open_output_run` created (the one `mlflow run` made is MLflow's to end)."""
    if run_id != os.environ.get("MLFLOW_RUN_ID"):
        client.set_terminated(run_id)


def log_report(
    request: ReportRequest,
    frame: pd.DataFrame,
    analysis: Analysis,
    truth: str,
    files: Sequence[Path],
) -> str:
    """This report's ``files`` (not older ones in ``out_dir``) as artifacts of one run.

    The run is tagged ``fear.report=report``, in ``report_experiment`` (default: the first
    ``--experiment``), or the `mlflow run -e report` run itself.
    """
    client = MlflowClient()
    tags = {REPORT_TAG: "report", "fear.ground_truth": redact(truth)[:500]}
    datasets = ",".join(sorted(frame["dataset"].unique()))
    run_id = open_output_run(
        client, request.report_experiment or request.runs.experiments[0], f"report {datasets}", tags
    )
    params = {
        **{f"filter.{k}": v for k, v in request.runs.params().items()},
        "benchmark": redact(request.benchmark or ""),
        "top_x": ",".join(x_name(x) for x in analysis.options.top_x),
        "resamples": str(analysis.options.resamples),
        "bootstrap_seed": str(analysis.options.seed),
        "include_not_reached": str(analysis.options.include_not_reached),
    }
    already = client.get_run(run_id).data.params
    now = int(time.time() * 1000)
    metrics = {
        "n_runs": frame["run_id"].nunique(),
        "n_evaluations": len(frame),
        "n_configurations": len(analysis.summary),
    }
    client.log_batch(
        run_id,
        params=[Param(k, v) for k, v in params.items() if k not in already],
        metrics=[Metric(k, float(v), now, 0) for k, v in metrics.items()],
    )
    for path in files:
        folder = path.parent.relative_to(request.out_dir).as_posix()
        client.log_artifact(run_id, str(path), None if folder == "." else folder)
    close_output_run(client, run_id)
    return run_id


def make_report(request: ReportRequest) -> ReportResult:
    """Collect, analyse, write tables and figures, and log them (unless ``log`` is off)."""
    frame, truth = collect(request.runs, request.benchmark)
    analysis = analyse(frame, request.options)
    files = write_tables(frame, analysis, request.out_dir)
    if request.figures and not analysis.summary.empty:
        files += write_figures(analysis, request.out_dir)
    manifest = request.out_dir / "report.json"
    manifest.write_text(
        json.dumps(
            {
                "filter": request.runs.params(),
                "ground_truth": redact(truth),
                "runs": sorted(frame["run_id"].unique()),
                "files": [str(p.relative_to(request.out_dir)) for p in files],
            },
            indent=1,
        )
    )
    files.append(manifest)
    run_id = log_report(request, frame, analysis, truth, files) if request.log else None
    return ReportResult(frame, analysis, files, run_id, truth)


def parse_percentages(text: str, option: str) -> tuple[float, ...]:
    """``10,25,50,100`` → (10.0, 25.0, 50.0, 100.0), each in (0, 100]."""
    values: list[float] = []
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        try:
            value = float(part.rstrip("%"))
        except ValueError:
            raise UserError(f"{option}: {part!r} is not a percentage (e.g. 10,25,50,100)") from None
        if not 0 < value <= 100:
            raise UserError(f"{option}: {part} is outside (0, 100]")
        values.append(value)
    if not values:
        raise UserError(f"{option} is empty; give percentages such as 10,25,50,100")
    return tuple(dict.fromkeys(values))


def unique(values: Sequence[str], *, split: bool = True) -> tuple[str, ...]:
    """Repeatable options (each also comma-separable when ``split``), in order, once each."""
    parts = (p.strip() for v in values for p in (v.split(",") if split else [v]))
    return tuple(dict.fromkeys(p for p in parts if p))
