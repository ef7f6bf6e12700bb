"""`fear-mlflow dashboard`: the page from runs, a sweep and an Optuna study made for real."""

from __future__ import annotations

import base64
import threading
import time
from html.parser import HTMLParser
from pathlib import Path

import optuna
import pytest
from mlflow.tracking import MlflowClient

from fear_mlflow.cli import main
from fear_mlflow.tracking import EvaluationRun
from tests.report_fixtures import (  # noqa: F401  (fixtures)
    EXPERIMENT,
    N_CONFIGURATIONS,
    STUDY,
    SWEEP,
    SWEEP_ARCHS,
    SWEEP_EXPERIMENT,
    ReportStore,
    report_store_fixture,
    report_template_fixture,
)

PNG = b"\x89PNG\r\n\x1a\n"


class Page(HTMLParser):
    """What a reader of the page gets: tables (id → rows), images, links, section ids."""

    def __init__(self, html: str) -> None:
        super().__init__()
        self.tables: dict[str, list[list[str]]] = {}
        self.images: list[dict[str, str]] = []
        self.external: list[str] = []
        self.ids: set[str] = set()
        self.refresh: str | None = None
        self._table: str | None = None
        self._row: list[str] | None = None
        self._cell: list[str] | None = None
        self.feed(html)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if "id" in a:
            self.ids.add(a["id"])
        for key in ("src", "href"):
            if a.get(key, "").startswith(("http:", "https:", "//")):
                self.external.append(a[key])
        if tag == "meta" and a.get("http-equiv") == "refresh":
            self.refresh = a.get("content")
        if tag == "table":
            self._table = a.get("id", f"table{len(self.tables)}")
            self.tables[self._table] = []
        elif tag == "tr" and self._table:
            self._row = []
        elif tag in ("td", "th") and self._row is not None:
            self._cell = []
        elif tag == "img":
            self.images.append(a)

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th") and self._cell is not None and self._row is not None:
            self._row.append("".join(self._cell).strip())
            self._cell = None
        elif tag == "tr" and self._row is not None and self._table:
            self.tables[self._table].append(self._row)
            self._row = None
        elif tag == "table":
            self._table = None


def dashboard(out: Path, *args: str) -> Page:
    main(
        ["dashboard", "--experiment", EXPERIMENT, "--experiment", SWEEP_EXPERIMENT]
        + ["--out", str(out), "--resamples", "100", *args]
    )
    return Page(out.read_text(encoding="utf-8"))


def test_page_shows_progress_rankings_figures_and_pareto_front(
    report_store: ReportStore, tmp_path: Path
) -> None:
    out = tmp_path / "dash.html"
    page = dashboard(out, "--storage", report_store.optuna_url)

    sweeps = page.tables["sweeps"]
    assert sweeps[1][0] == SWEEP and "100.0 %" in sweeps[1][1]
    assert sweeps[1][2:4] == [str(len(SWEEP_ARCHS)), str(len(SWEEP_ARCHS))]
    assert page.tables["shards"][1][:3] == [SWEEP, "0/1", "FINISHED"]

    ranking = page.tables["ranking-1"]
    header, rows = ranking[0], ranking[1:]
    assert header[:4] == ["configuration", "method", "n", "Spearman ρ"]
    assert len(rows) == N_CONFIGURATIONS + 2  # + the sweep's synflow and params (batch 64)

    study = optuna.load_study(study_name=STUDY, storage=report_store.optuna_url)
    front = page.tables["study-1"]
    assert len(front) - 1 == len(study.best_trials)
    assert {row[0] for row in front[1:]} == {str(t.number) for t in study.best_trials}

    assert len(page.images) == 4 + 1  # four report figures for one dataset, one front
    for image in page.images:
        assert image["alt"]
        prefix, data = image["src"].split(",", 1)
        assert prefix == "data:image/png;base64"
        assert base64.b64decode(data)[:8] == PNG
    assert page.external == [] and page.refresh is None

    client = MlflowClient()
    experiment = client.get_experiment_by_name(EXPERIMENT).experiment_id
    (run,) = client.search_runs([experiment], "tags.`fear.report` = 'dashboard'")
    assert [a.path for a in client.list_artifacts(run.info.run_id)] == ["dash.html"]


def test_without_storage_there_is_no_study_section(
    report_store: ReportStore, tmp_path: Path
) -> None:
    page = dashboard(tmp_path / "dash.html", "--method", "fear", "--no-log", "--resamples", "0")
    assert "studies" not in page.ids and "progress" in page.ids
    assert len(page.tables["ranking-1"]) == 2


def test_watch_renders_again_until_the_running_evaluation_ends(
    report_store: ReportStore, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "watch.html"
    run = EvaluationRun(
        method="fear",
        arch="|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_1x1~1|nor_conv_3x3~2|",
        arch_index=13714,
        dataset="synthetic",
        seed=36,
        params={"threshold": 0.2},
        experiment=EXPERIMENT,
    )
    run.__enter__()  # an evaluation in progress, as a running `fear-mlflow fear` leaves it
    seen: list[str] = []

    def finish_later() -> None:
        while not out.exists():
            time.sleep(0.1)
        seen.append(out.read_text(encoding="utf-8"))
        run.__exit__(None, None, None)

    worker = threading.Thread(target=finish_later)
    worker.start()
    try:
        dashboard(out, "--method", "fear", "--no-log", "--resamples", "0", "--watch", "0.3")
    finally:
        worker.join(timeout=60)
    lines = [line for line in capsys.readouterr().out.splitlines() if "wrote" in line]
    assert len(lines) >= 2
    assert "work in progress" in lines[0] and "work in progress" not in lines[-1]
    assert Page(seen[0]).refresh == "1"  # while watching the page reloads (whole seconds)
    assert Page(out.read_text(encoding="utf-8")).refresh is None  # done: no more reloads


def test_empty_experiment_renders_a_page_that_says_so(
    report_store: ReportStore, tmp_path: Path
) -> None:
    MlflowClient().create_experiment("empty", artifact_location=str(tmp_path / "art"))
    out = tmp_path / "empty.html"
    main(["dashboard", "--experiment", "empty", "--out", str(out), "--no-log"])
    text = out.read_text(encoding="utf-8")
    assert "No finished evaluations yet." in text and "No sweeps in these experiments" in text


def test_bad_template_and_storage_are_one_line_errors(
    report_store: ReportStore, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    base = ["dashboard", "--experiment", EXPERIMENT, "--out", str(tmp_path / "x.html"), "--no-log"]
    for extra, needle in (
        (["--template", str(tmp_path / "none.j2")], "--template"),
        (["--storage", report_store.optuna_url, "--study", "nope"], "no study nope"),
    ):
        with pytest.raises(SystemExit) as exit_info:
            main(base + extra)
        assert exit_info.value.code == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("error: ") and needle in err and "\n" not in err
