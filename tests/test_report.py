"""`fear-mlflow report` on runs made with the tool (tiny nets, real NATS-Bench ground truth)."""

from __future__ import annotations

import json
import math
import shlex
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient
from scipy.stats import spearmanr

from fear_mlflow.cli import main
from tests.report_fixtures import (  # noqa: F401  (fixtures)
    EXPERIMENT,
    N_CONFIGURATIONS,
    SWEEP,
    SWEEP_ARCHS,
    SWEEP_EXPERIMENT,
    ZC_MEASURES,
    ReportStore,
    report_store_fixture,
    report_template_fixture,
)

FIGURES = ("duration_vs_spearman", "duration_vs_common_ratio", "curves", "score_vs_truth")
LABELS = {*ZC_MEASURES, "shortreg batch=32", "shortreg batch=64", "FEAR"}


def report(out: Path, *args: str) -> None:
    main(["report", "--experiment", EXPERIMENT, "--out", str(out), "--resamples", "200", *args])


def user_error(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    with pytest.raises(SystemExit) as exit_info:
        main(list(argv))
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and "Traceback" not in err
    return err


def zerocost_rho_from_runs(client: MlflowClient) -> dict[str, float]:
    """ρ per measure straight from the runs' metrics, not through the report's code."""
    experiment = client.get_experiment_by_name(EXPERIMENT)
    runs = client.search_runs([experiment.experiment_id], "tags.`fear.method` = 'zerocost'")
    rho = {}
    for measure in ZC_MEASURES:
        pairs = np.array(
            [
                (r.data.metrics["gt_test_acc"], r.data.metrics.get(f"zc/{measure}", np.nan))
                for r in runs
            ]
        )
        pairs = pairs[np.isfinite(pairs).all(axis=1)]
        rho[measure] = spearmanr(pairs[:, 0], pairs[:, 1]).statistic
    return rho


def test_report_writes_tables_figures_and_logs_them(
    report_store: ReportStore, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    report(out)
    printed = capsys.readouterr().out
    summary = pd.read_csv(out / "summary.csv")
    assert len(summary) == N_CONFIGURATIONS
    assert set(summary["config_label"]) == LABELS
    assert all(label in printed for label in LABELS)
    rows = summary.set_index("config_label")
    assert rows.loc["FEAR", "n_degenerate"] == 1
    assert rows.loc["shortreg batch=32", "n_failed"] == 1
    assert rows.loc["shortreg batch=64", "n_used"] == 4
    assert (summary["duration_mean_s"] > 0).all()
    assert (summary["spearman_lo"] <= summary["spearman"]).all()

    # ρ of every zero-cost measure is what the runs themselves say
    expected = zerocost_rho_from_runs(report_store_client())
    for measure, rho in expected.items():
        assert rows.loc[measure, "spearman"] == pytest.approx(rho, abs=1e-12)

    for stem in FIGURES:
        png = out / "figures" / f"{stem}_synthetic.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert ET.parse(out / "figures" / f"{stem}_synthetic.svg").getroot().tag.endswith("svg")
    # zero-cost seconds are attributed shares: the duration figures say so
    from fear_mlflow.plots import ZEROCOST_COST_NOTE, duration_panels

    figure = duration_panels(pd.read_csv(out / "summary.csv"), "synthetic", "spearman", [100])
    assert figure.get_supxlabel() == ZEROCOST_COST_NOTE
    evaluations = pd.read_csv(out / "evaluations.csv")
    assert set(evaluations["run_id"]) == set(report_store.run_ids)
    assert json.loads((out / "report.json").read_text())["runs"] == sorted(report_store.run_ids)

    client = report_store_client()
    experiment = client.get_experiment_by_name(EXPERIMENT).experiment_id
    (run,) = client.search_runs([experiment], "tags.`fear.report` = 'report'")
    assert run.info.status == "FINISHED"
    assert run.data.metrics["n_runs"] == len(report_store.run_ids)
    logged = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"summary.csv", "curves.csv", "evaluations.csv", "figures"} <= logged
    figures = {a.path for a in client.list_artifacts(run.info.run_id, "figures")}
    assert "figures/curves_synthetic.svg" in figures


def report_store_client() -> MlflowClient:
    return MlflowClient()  # the tracking URI the report_store fixture set


def test_filters_pick_runs(report_store: ReportStore, tmp_path: Path) -> None:
    report(tmp_path / "zc", "--method", "zerocost", "--no-log", "--no-figures")
    zc = pd.read_csv(tmp_path / "zc" / "summary.csv")
    assert set(zc["config_label"]) == set(ZC_MEASURES)
    report(tmp_path / "trained", "--method", "fear,shortreg", "--no-log", "--top-x", "50,100")
    trained = pd.read_csv(tmp_path / "trained" / "summary.csv")
    assert (tmp_path / "trained" / "figures" / "curves_synthetic.png").exists()
    assert not (tmp_path / "zc" / "figures").exists()
    assert len(trained) == 3
    assert "spearman_top50" in trained and "spearman_top10" not in trained
    client = report_store_client()
    assert not client.search_runs(
        [client.get_experiment_by_name(EXPERIMENT).experiment_id], "tags.`fear.report` != ''"
    )


def test_sweep_filter_finds_exactly_the_sweeps_runs(
    report_store: ReportStore, tmp_path: Path
) -> None:
    main(
        ["report", "--experiment", EXPERIMENT, "--experiment", SWEEP_EXPERIMENT]
        + ["--sweep", SWEEP, "--out", str(tmp_path), "--no-log", "--no-figures"]
    )
    evaluations = pd.read_csv(tmp_path / "evaluations.csv")
    assert evaluations["sweep"].eq(SWEEP).all()
    assert evaluations["run_id"].nunique() == len(SWEEP_ARCHS)
    assert set(evaluations["measure"]) == {"synflow", "params"}


def test_benchmark_option_replaces_the_runs_ground_truth(
    report_store: ReportStore, tmp_path: Path
) -> None:
    """With every accuracy mirrored (100 - acc), every ρ must flip sign."""
    table = pd.read_csv(report_store.benchmark_csv)
    table["synthetic"] = 100 - table["synthetic"]
    mirrored = tmp_path / "mirrored.csv"
    table.to_csv(mirrored, index=False)
    quick = ("--no-log", "--no-figures", "--method", "zerocost")
    report(tmp_path / "own", *quick)
    report(tmp_path / "flip", *quick, "--benchmark", str(mirrored))
    own = pd.read_csv(tmp_path / "own" / "summary.csv").set_index("config_label")["spearman"]
    flip = pd.read_csv(tmp_path / "flip" / "summary.csv").set_index("config_label")["spearman"]
    assert np.allclose(flip[own.index], -own)
    assert not np.allclose(own, 0)


def test_user_errors_are_one_line(
    report_store: ReportStore, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    err = user_error(capsys, "report", "--experiment", "nope", "--out", str(tmp_path))
    assert "nope" in err
    err = user_error(
        capsys, "report", "--experiment", EXPERIMENT, "--dataset", "cifar10", "--out", str(tmp_path)
    )
    assert "no evaluation runs" in err
    err = user_error(
        capsys, "report", "--experiment", EXPERIMENT, "--top-x", "0,10", "--out", str(tmp_path)
    )
    assert "--top-x" in err


def test_mlproject_report_entry_point_runs_the_command(
    report_store: ReportStore, tmp_path: Path
) -> None:
    """The entry point's command, with its defaults filled in, is a valid `report` call."""
    from mlflow.projects._project_spec import load_project

    entry = load_project(str(Path(__file__).resolve().parents[1])).get_entry_point("report")
    values = {"experiment": EXPERIMENT, "method": "fear", "out": str(tmp_path / "mlproject")}
    values["resamples"] = "0"
    argv = shlex.split(entry.compute_command(values, str(tmp_path)))  # MLflow quotes values
    assert argv[:3] == ["python", "-m", "fear_mlflow"]
    main(argv[3:])
    summary = pd.read_csv(tmp_path / "mlproject" / "summary.csv")
    assert summary["config_label"].tolist() == ["FEAR"]
    assert summary["spearman_lo"].isna().all()  # resamples=0: no intervals
    assert not math.isnan(summary["spearman"].iloc[0])
