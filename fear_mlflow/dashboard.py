"""`fear-mlflow dashboard`: one self-contained HTML page to watch sweeps and studies.

The page (a Jinja2 template from ``dashboards/``) holds sweep progress with ETAs, the report's
summary tables (sortable, no external scripts) and figures (PNG embedded as data URIs), and,
given an Optuna storage, each study's Pareto front. It is written atomically to ``--out`` and
logged as an artifact, which the MLflow UI displays. ``--watch`` renders again every N seconds
while sweeps or evaluations are running, and the page reloads itself meanwhile.
"""

from __future__ import annotations

import base64
import io
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import mlflow
import pandas as pd
from matplotlib.figure import Figure
from mlflow.tracking import MlflowClient

from fear_mlflow.analysis import Analysis, AnalysisOptions, analyse, x_name
from fear_mlflow.report import (
    REPORT_TAG,
    RunFilter,
    close_output_run,
    collect,
    open_output_run,
)
from fear_mlflow.run_table import experiment_ids
from fear_mlflow.study_front import StudyFront, front_figure, load_fronts
from fear_mlflow.sweep_status import STALL_S, is_active, shard_table, sweep_totals
from fear_mlflow.tracking import redact

#: Default template folder: ``dashboards/`` beside the package (env ``FEAR_DASHBOARDS``).
TEMPLATE_DIR_ENV = "FEAR_DASHBOARDS"
DEFAULT_TEMPLATE = "dashboard.html.j2"
#: Figure resolution inside the page (the report writes 150 dpi files).
PAGE_DPI = 100


@dataclass(frozen=True)
class DashboardRequest:
    """Everything `run_dashboard` needs."""

    runs: RunFilter
    out: Path
    benchmark: str | None = None
    storage: str | None = None
    options: AnalysisOptions = field(default_factory=AnalysisOptions)
    title: str = "fear-mlflow dashboard"
    watch_s: float = 0.0
    log: bool = True
    report_experiment: str | None = None
    template: str | None = None


@dataclass
class DashboardState:
    """What one rendering shows."""

    frame: pd.DataFrame
    analysis: Analysis
    truth: str
    shards: pd.DataFrame
    fronts: list[StudyFront]

    @property
    def active(self) -> bool:
        """Sweeps or evaluations still at work (a silent RUNNING run counts as dead)."""
        running = self.frame[self.frame["status"] == "running"]
        fresh = (time.time() - running["last_seen"]) < STALL_S
        return is_active(self.shards) or bool(fresh.any())


def gather(request: DashboardRequest) -> DashboardState:
    """Runs, analysis, sweep shards and studies, read fresh from the stores."""
    frame, truth = collect(request.runs, request.benchmark, allow_empty=True)
    analysis = analyse(frame, request.options)
    shards = shard_table(experiment_ids(request.runs.experiments), request.runs.sweeps)
    fronts = load_fronts(request.storage, request.runs.studies) if request.storage else []
    return DashboardState(frame, analysis, truth, shards, fronts)


# ----------------------------------------------------------------------------- page content


def figure_uri(fig: Figure) -> str:
    """A PNG data URI: the page carries its figures, so it works offline and as an artifact."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=PAGE_DPI)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _cell(value: object, text: str | None = None) -> dict[str, object]:
    """A table cell: shown text, and the value sorting uses (numbers sort numerically)."""
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if number and not math.isfinite(float(value)):  # type: ignore[arg-type]
        return {"text": text if text is not None else "–", "sort": "", "num": True}
    shown = text if text is not None else str(value)
    return {"text": shown, "sort": value if number else shown, "num": number}


def _table(frame: pd.DataFrame, numeric: dict[str, Callable[[float], str]]) -> dict[str, object]:
    """Columns and rows for the template; ``numeric`` formats the numeric columns."""
    rows = []
    for record in frame.to_dict("records"):
        cells = []
        for column in frame.columns:
            value = record[column]
            if column in numeric and isinstance(value, (int, float)):
                cells.append(_cell(float(value), numeric[column](float(value))))
            else:
                cells.append(_cell(value))
        rows.append(cells)
    return {"columns": list(frame.columns), "rows": rows}


def _f(digits: int) -> Callable[[float], str]:
    return lambda v: "–" if not math.isfinite(v) else f"{v:.{digits}f}"


def _duration(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "–"
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours} h {minutes:02d} min" if hours else f"{minutes} min {secs:02d} s"


def _ranking_table(analysis: Analysis, dataset: str) -> dict[str, object]:
    summary = analysis.summary[analysis.summary["dataset"] == dataset]
    columns = {
        "config_label": "configuration",
        "family": "method",
        "n_used": "n",
        "spearman": "Spearman ρ",
        "spearman_lo": "ρ 95% low",
        "spearman_hi": "ρ 95% high",
        "kendall": "Kendall τ",
    }
    for x in analysis.options.top_x:
        if x < 100:
            columns[f"spearman_top{x_name(x)}"] = f"ρ top {x_name(x)}%"
    for x in analysis.options.top_x:
        if x < 100:  # the common ratio over all archs is 1 by definition
            columns[f"common_ratio_top{x_name(x)}"] = f"CR {x_name(x)}%"
    columns["duration_mean_s"] = "s / arch"
    columns["duration_se_s"] = "± SE"
    for status in ("threshold_not_reached", "degenerate", "diverged", "failed"):
        columns[f"n_{status}"] = status.replace("_", " ")
    columns["n_running"] = "running"
    table = summary[list(columns)].rename(columns=columns)
    formats = {name: _f(3) for name in columns.values()}
    formats["s / arch"] = formats["± SE"] = _f(3)
    for name in ("n", "threshold not reached", "degenerate", "diverged", "failed", "running"):
        formats[name] = _f(0)
    return _table(table, formats)


def _progress(state: DashboardState) -> dict[str, object]:
    totals = sweep_totals(state.shards)
    sweeps = []
    for _, row in totals.iterrows():
        fraction = float(row["fraction"]) if pd.notna(row["fraction"]) else 0.0
        sweeps.append(
            {
                "name": row["sweep"],
                "percent": round(100 * fraction, 1),
                "done": _f(0)(float(row["done"])),
                "total": _f(0)(float(row["total"])),
                "failed": _f(0)(float(row["failed"])),
                "running": int(row["running"]),
                "shards": int(row["shards"]),
                "eta": _duration(float(row["eta_s"])) if int(row["running"]) else "–",
            }
        )
    shards = state.shards.assign(
        eta=state.shards["eta_s"].map(_duration),
        heartbeat=state.shards["silent_s"].map(lambda s: _duration(s) + " ago"),
    )[["sweep", "shard", "state", "done", "total", "failed", "eta", "heartbeat", "run_id"]]
    shards.columns = [
        "sweep", "shard", "state", "done", "total", "failed", "ETA", "last heartbeat", "parent run"
    ]  # fmt: skip
    return {
        "sweeps": sweeps,
        "shards": _table(shards, {c: _f(0) for c in ("done", "total", "failed")}),
    }


def _datasets(state: DashboardState) -> list[dict[str, object]]:
    from fear_mlflow import plots

    analysis = state.analysis
    sections = []
    for dataset in analysis.summary["dataset"].unique():
        figures = [
            (
                "Mean duration per arch against Spearman ρ",
                plots.duration_panels(
                    analysis.summary, dataset, "spearman", analysis.options.top_x
                ),
            ),
            (
                "Mean duration per arch against the common ratio",
                plots.duration_panels(
                    analysis.summary, dataset, "common_ratio", analysis.options.top_x
                ),
            ),
            (
                "ρ and common ratio over the top x %",
                plots.curves_figure(analysis.curves, analysis.summary, dataset),
            ),
            (
                "Score against ground truth",
                plots.scatter_grid(analysis.evaluations, analysis.summary, dataset),
            ),
        ]
        sections.append(
            {
                "name": dataset,
                "table": _ranking_table(analysis, dataset),
                "figures": [{"title": t, "uri": figure_uri(f)} for t, f in figures],
            }
        )
    return sections


def _studies(state: DashboardState) -> list[dict[str, object]]:
    studies = []
    for front in state.fronts:
        fig = front_figure(front)
        best = front.trials[front.trials["on_front"]] if len(front.trials) else front.trials
        numeric = {c: _f(4) for c in front.objectives}
        studies.append(
            {
                "name": front.name,
                "objectives": [f"{o} ({d})" for o, d in zip(front.objectives, front.directions)],
                "n_trials": front.n_trials,
                "n_complete": len(front.trials),
                "n_running": front.n_running,
                "figure": figure_uri(fig) if fig is not None else None,
                "table": _table(best.drop(columns="on_front"), {"number": _f(0), **numeric}),
            }
        )
    return studies


def _status_counts(frame: pd.DataFrame) -> dict[str, int]:
    runs = frame.drop_duplicates("run_id")
    return {str(k): int(v) for k, v in runs["status"].value_counts().sort_index().items()}


def render(state: DashboardState, request: DashboardRequest) -> str:
    """The page as one HTML string."""
    import jinja2

    folder, name = template_location(request.template)
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(folder),
        autoescape=jinja2.select_autoescape(["html", "j2"], default=True),
        undefined=jinja2.StrictUndefined,
    )
    return env.get_template(name).render(
        title=request.title,
        generated=datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC"),
        tracking=redact(mlflow.get_tracking_uri()),
        experiments=", ".join(request.runs.experiments),
        filters={k: v for k, v in request.runs.params().items() if v and k != "experiments"},
        truth=redact(state.truth),
        storage=redact(request.storage) if request.storage else None,
        refresh=max(1, math.ceil(request.watch_s)) if request.watch_s and state.active else None,
        active=state.active,
        counts=_status_counts(state.frame),
        n_runs=int(state.frame["run_id"].nunique()),
        progress=_progress(state),
        datasets=_datasets(state),
        studies=_studies(state),
        n_configurations=len(state.analysis.summary),
        options={
            "resamples": request.options.resamples,
            "include_not_reached": request.options.include_not_reached,
        },
    )


def template_location(template: str | None) -> tuple[Path, str]:
    """(folder, file name) of the template: ``--template FILE`` or the default one."""
    if template:
        path = Path(template).expanduser()
        if not path.is_file():
            from fear_mlflow.errors import UserError

            raise UserError(f"--template {template}: no such file")
        return path.parent, path.name
    folder = os.environ.get(TEMPLATE_DIR_ENV)
    base = Path(folder) if folder else Path(__file__).resolve().parent.parent / "dashboards"
    return base, DEFAULT_TEMPLATE


def write_page(html: str, out: Path) -> None:
    """Replace ``out`` atomically, so a browser reloading it never reads half a page."""
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(f".{out.name}.partial")
    partial.write_text(html, encoding="utf-8")
    os.replace(partial, out)


# ----------------------------------------------------------------------------- the command


def run_dashboard(request: DashboardRequest, echo: Callable[[str], None] = print) -> str | None:
    """Render once, or with ``watch_s`` > 0 until nothing runs (or Ctrl-C); returns the run id.

    Every rendering replaces ``out`` and its artifact in one dashboard run.
    """
    client = MlflowClient()
    run_id: str | None = None
    try:
        while True:
            state = gather(request)
            write_page(render(state, request), request.out)
            if request.log:
                if run_id is None:
                    run_id = open_output_run(
                        client,
                        request.report_experiment or request.runs.experiments[0],
                        "dashboard",
                        {REPORT_TAG: "dashboard"},
                    )
                client.log_artifact(run_id, str(request.out))
            echo(
                f"{datetime.now().strftime('%H:%M:%S')} wrote {request.out} "
                f"({int(state.frame['run_id'].nunique())} runs, "
                f"{len(state.analysis.summary)} configurations"
                f"{', work in progress' if state.active else ''})"
            )
            if request.watch_s <= 0 or not state.active:
                break
            time.sleep(request.watch_s)
    except KeyboardInterrupt:
        echo("stopped watching")
    finally:
        if run_id is not None:
            close_output_run(client, run_id)
    return run_id
