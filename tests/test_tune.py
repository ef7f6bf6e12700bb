"""Optuna studies over FEAR's hyperparameters, with real MLflow stores and real storages."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.request
import uuid
from pathlib import Path

import optuna
import pytest
from mlflow.tracking import MlflowClient

from fear_mlflow.cli import main
from tests.fixtures_services import optuna_dashboard
from tests.helpers import TINY

CELLS = [
    "|nor_conv_3x3~0|+|nor_conv_1x1~0|skip_connect~1|+|skip_connect~0|nor_conv_3x3~1|avg_pool_3x3~2|",
    "|skip_connect~0|+|none~0|avg_pool_3x3~1|+|none~0|none~1|skip_connect~2|",
    "|nor_conv_1x1~0|+|nor_conv_3x3~0|none~1|+|avg_pool_3x3~0|skip_connect~1|nor_conv_1x1~2|",
    "|avg_pool_3x3~0|+|skip_connect~0|avg_pool_3x3~1|+|none~0|avg_pool_3x3~1|skip_connect~2|",
    "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|nor_conv_3x3~0|nor_conv_3x3~1|nor_conv_3x3~2|",
]
TINY_ARGS = [
    "--dataset",
    "synthetic",
    "--channels",
    str(TINY["channels"]),
    "--cells-per-stage",
    str(TINY["cells_per_stage"]),
    "--device",
    "cpu",
]
# a small space so trials are quick: threshold 0.15-0.4, stage 2 of 1-2 epochs
SMALL_SPACE = [
    "--threshold-range",
    "0.15,0.4",
    "--freeze-batch-sizes",
    "64,128",
    "--freeze-epochs-range",
    "1,2",
    "--last-cells-range",
    "1,3",
    "--batch-size",
    "64",
    "--stage1-epochs",
    "6",
]


def _invoke(args: list[str]) -> int:
    try:
        main(args)
    except SystemExit as exc:
        return int(exc.code or 0)
    return 0


def _write_benchmark(path: Path) -> Path:
    """Ground truth for the synthetic set as a table (accuracies made up for the test)."""
    rows = "\n".join(f"{i},{cell},{50 + 7 * i}" for i, cell in enumerate(CELLS))
    path.write_text(f"index,arch,synthetic\n{rows}\n")
    return path


def test_multi_objective_study_with_ground_truth_from_regular_runs(
    tmp_path: Path, mlflow_store: MlflowClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    uri = mlflow_store.tracking_uri
    for cell in CELLS:  # ground truth made by the tool itself
        assert (
            _invoke(
                [
                    "regular",
                    *TINY_ARGS,
                    "--arch",
                    cell,
                    "--epochs",
                    "2",
                    "--batch-size",
                    "64",
                    "--tracking-uri",
                    uri,
                    "--experiment",
                    "gt",
                ]
            )
            == 0
        )
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    args = [
        "tune",
        *TINY_ARGS,
        *SMALL_SPACE,
        "--study-name",
        "s",
        "--storage",
        storage,
        "--n-trials",
        "3",
        "--archs",
        ",".join(CELLS),
        "--gt-experiment",
        "gt",
        "--tracking-uri",
        uri,
        "--experiment",
        "tune",
        "--stage1-cache",
        str(tmp_path / "c"),
    ]
    assert _invoke(args) == 0
    study = optuna.load_study(study_name="s", storage=storage)
    assert len(study.directions) == 2
    states = [t.state for t in study.trials]
    assert len(states) == 3 and all(s == optuna.trial.TrialState.COMPLETE for s in states)
    assert study.metric_names == ["spearman", "mean_duration_s"]
    exp = mlflow_store.get_experiment_by_name("tune").experiment_id
    trials = mlflow_store.search_runs([exp], "tags.`fear.role` = 'trial'")
    assert sorted(int(r.data.tags["fear.trial"]) for r in trials) == [0, 1, 2]
    for run in trials:
        nested = mlflow_store.search_runs([exp], f"tags.`mlflow.parentRunId` = '{run.info.run_id}'")
        assert len(nested) == len(CELLS)
        assert {r.data.tags["fear.method"] for r in nested} == {"fear"}
        assert "spearman" in run.data.metrics and "mean_duration_s" in run.data.metrics
    summary = mlflow_store.search_runs([exp], "tags.`fear.role` = 'study-summary'")
    assert len(summary) == 1
    artifacts = [a.path for a in mlflow_store.list_artifacts(summary[0].info.run_id)]
    assert any(path.endswith("pareto.png") for path in artifacts)
    # same --study-name again continues the study
    assert (
        _invoke([*args[: args.index("--n-trials") + 1], "4", *args[args.index("--n-trials") + 2 :]])
        == 0
    )
    assert len(optuna.load_study(study_name="s", storage=storage).trials) == 4
    # the same study through optuna-dashboard's own API (what its web page shows)
    with optuna_dashboard(storage, tmp_path / "dashboard.log") as url:
        with urllib.request.urlopen(url + "/api/studies", timeout=30) as response:
            studies = json.load(response)["study_summaries"]
        (shown,) = [s for s in studies if s["study_name"] == "s"]
        with urllib.request.urlopen(f"{url}/api/studies/{shown['study_id']}", timeout=30) as r:
            detail = json.load(r)
    assert [t["number"] for t in detail["trials"]] == [0, 1, 2, 3]
    assert {t["state"] for t in detail["trials"]} == {"Complete"}
    assert detail["objective_names"] == ["spearman", "mean_duration_s"]


def test_a_failing_trial_is_recorded_and_the_study_goes_on(
    tmp_path: Path, mlflow_store: MlflowClient
) -> None:
    bench = _write_benchmark(tmp_path / "gt.csv")
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    # an absurd learning rate without clipping: every arch diverges, rho is undefined
    assert (
        _invoke(
            [
                "tune",
                *TINY_ARGS,
                *SMALL_SPACE,
                "--study-name",
                "boom",
                "--storage",
                storage,
                "--n-trials",
                "2",
                "--archs",
                ",".join(CELLS[:3]),
                "--benchmark",
                str(bench),
                "--lr",
                "1e12",
                "--grad-clip",
                "0",
                "--momentum",
                "0",
                "--tracking-uri",
                mlflow_store.tracking_uri,
                "--experiment",
                "boom",
                "--no-stage1-reuse",
            ]
        )
        == 0
    )
    study = optuna.load_study(study_name="boom", storage=storage)
    assert [t.state for t in study.trials] == [optuna.trial.TrialState.FAIL] * 2
    exp = mlflow_store.get_experiment_by_name("boom").experiment_id
    trials = mlflow_store.search_runs([exp], "tags.`fear.role` = 'trial'")
    assert len(trials) == 2 and {r.info.status for r in trials} == {"FAILED"}


def test_tune_needs_ground_truth(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("FEAR_BENCHMARK", raising=False)
    code = _invoke(
        [
            "tune",
            *TINY_ARGS,
            "--study-name",
            "x",
            "--storage",
            f"sqlite:///{tmp_path / 'o.db'}",
            "--archs",
            CELLS[0],
            "--tracking-uri",
            f"sqlite:///{tmp_path / 'm.db'}",
        ]
    )
    assert code == 2
    assert "needs ground truth" in capsys.readouterr().err


def test_two_processes_share_one_postgres_study(
    tmp_path: Path, optuna_postgres: str, postgres_uri: str
) -> None:
    bench = _write_benchmark(tmp_path / "gt.csv")
    experiment = f"tune-{uuid.uuid4().hex[:6]}"
    command = [
        sys.executable,
        "-m",
        "fear_mlflow",
        "tune",
        *TINY_ARGS,
        *SMALL_SPACE,
        "--study-name",
        "shared",
        "--storage",
        optuna_postgres,
        "--n-trials",
        "4",
        "--archs",
        ",".join(CELLS[:3]),
        "--benchmark",
        str(bench),
        "--tracking-uri",
        postgres_uri,
        "--experiment",
        experiment,
    ]
    env = {**os.environ, "FEAR_CACHE": str(tmp_path / "cache")}
    workers = [
        subprocess.Popen(
            command,
            cwd=tmp_path,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for _ in range(2)
    ]
    outputs = [w.communicate(timeout=600)[0] for w in workers]
    assert [w.returncode for w in workers] == [0, 0], outputs
    study = optuna.load_study(study_name="shared", storage=optuna_postgres)
    numbers = sorted(t.number for t in study.trials)
    assert numbers == [0, 1, 2, 3]
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials)
    assert all("trial" in out for out in outputs)  # both processes ran trials
    client = MlflowClient(postgres_uri)
    exp = client.get_experiment_by_name(experiment).experiment_id
    trials = client.search_runs([exp], "tags.`fear.role` = 'trial'")
    assert sorted(int(r.data.tags["fear.trial"]) for r in trials) == numbers


def test_bare_postgresql_storage_url_names_the_driver_fix(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """SQLAlchemy maps a bare postgresql:// to psycopg 3, which we do not ship: say what to write."""
    monkeypatch.chdir(tmp_path)
    bench = _write_benchmark(tmp_path / "gt.csv")
    code = _invoke(
        ["tune", *TINY_ARGS, "--study-name", "x", "--archs", ",".join(CELLS[:3]),
         "--storage", "postgresql://postgres:secret@127.0.0.1:5432/postgres",
         "--benchmark", str(bench), "--tracking-uri", f"sqlite:///{tmp_path / 'm.db'}"]
    )  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2
    lines = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1 and "postgresql+psycopg2://" in lines[0], err
    assert "secret" not in err and "Traceback" not in err
