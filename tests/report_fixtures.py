"""Evaluation runs made with the tool, once per test session, for report and dashboard tests.

Test modules import `report_store_fixture` and `report_template_fixture` and ask for the
fixtures ``report_store`` (a per-test copy of the store) or ``report_template``.

Tiny nets on the synthetic dataset; ground truth is the real NATS-Bench CIFAR-10 accuracy of
each cell, put in a ``synthetic`` column of a benchmark table, so every run logs a real
``gt_test_acc``. The store is a sqlite file copied per test, so tests cannot see each
other's report runs.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pytest
import torch
from mlflow.tracking import MlflowClient

from fear_mlflow.benchmark import Benchmark
from fear_mlflow.config import FearSettings, RunContext, ShortregSettings, ZerocostSettings
from fear_mlflow.data.datasets import ImageData, load_dataset
from fear_mlflow.device import resolve_device
from fear_mlflow.runner import Evaluation, run_tracked
from fear_mlflow.space.arch import parse_arch
from fear_mlflow.tracking import EvaluationRun, connect
from tests.helpers import DEGENERATE_CELL, TINY

#: The fixture's benchmark table, written by the tests (never read from ../shared): its own
#: index -> cell mapping with test accuracies (%) spread over the range, as column synthetic.
TABLE = {
    13714: ("|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_1x1~1|nor_conv_3x3~2|", 94.4),
    0: ("|avg_pool_3x3~0|+|nor_conv_1x1~0|skip_connect~1|+|nor_conv_1x1~0|skip_connect~1|skip_connect~2|", 85.9),
    1: ("|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_3x3~1|skip_connect~2|", 90.1),
    6983: ("|none~0|+|nor_conv_1x1~0|nor_conv_1x1~1|+|nor_conv_3x3~0|none~1|nor_conv_1x1~2|", 92.3),
    1891: ("|nor_conv_1x1~0|+|nor_conv_1x1~0|nor_conv_1x1~1|+|nor_conv_1x1~0|nor_conv_1x1~1|skip_connect~2|", 89.3),
    100: ("|avg_pool_3x3~0|+|skip_connect~0|none~1|+|avg_pool_3x3~0|none~1|avg_pool_3x3~2|", 61.2),
}  # fmt: skip
#: Benchmark indices evaluated by every configuration (spread over the accuracy range).
INDICES = tuple(TABLE)
#: Training images (of the synthetic set's 512): enough to learn something, fast.
TRAIN_SUBSET = 128
ZC_MEASURES = ("synflow", "snip", "params", "jacob_cov")
EXPERIMENT = "report-test"
#: A cell whose one shortreg evaluation fails (outside the benchmark table).
FAILING_CELL = "|none~0|+|nor_conv_3x3~0|none~1|+|none~0|none~1|skip_connect~2|"
#: Configurations the store holds: 4 zero-cost measures, 2 shortreg, 1 FEAR.
N_CONFIGURATIONS = len(ZC_MEASURES) + 3


#: A zero-cost sweep in its own experiment, made with `fear-mlflow sweep`.
SWEEP = "zc-sweep"
SWEEP_EXPERIMENT = "sweep-test"
SWEEP_ARCHS = (13714, 1, 100)
#: A real multi-objective Optuna study (sqlite) for the dashboard's Pareto front.
STUDY = "fear-tune"


@dataclass(frozen=True)
class ReportStore:
    """A sqlite store path (template), its benchmark CSV, and what it holds."""

    db: Path
    artifacts: Path
    benchmark_csv: Path
    run_ids: frozenset[str]
    failed_run_id: str
    optuna_url: str


def truth_table(path: Path) -> Benchmark:
    """The fixture table of `TABLE` (plus the degenerate cell, no index) in the CSV format."""
    rows = pd.DataFrame(
        [{"index": i, "arch": arch, "synthetic": acc} for i, (arch, acc) in TABLE.items()]
    )
    degenerate = pd.DataFrame(
        {"index": [None], "arch": [str(parse_arch(DEGENERATE_CELL))], "synthetic": [10.0]}
    )
    table = pd.concat([rows, degenerate], ignore_index=True)
    table.to_csv(path, index=False)
    return Benchmark.from_frame(table, str(path))


CONTEXT = RunContext(dataset="synthetic", train_subset=TRAIN_SUBSET, device="cpu", **TINY)


def _evaluate(
    method: str, settings: object, benchmark: Benchmark, arch: str, data: ImageData
) -> str:
    cell = parse_arch(arch) if "|" in arch else benchmark.arch(int(arch))
    evaluation = Evaluation(method, settings, CONTEXT, cell, benchmark.index(cell))  # type: ignore[arg-type]
    run_id, _ = run_tracked(
        evaluation, data, resolve_device("cpu"), benchmark=benchmark, experiment=EXPERIMENT
    )
    return run_id


def make_runs(benchmark: Benchmark) -> tuple[set[str], str]:
    """Every configuration over the cells; returns (all run ids, the failed run's id).

    One torch thread: tiny nets gain nothing from more, and lose a lot on a busy machine.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _make_runs(benchmark)
    finally:
        torch.set_num_threads(threads)


def _make_runs(benchmark: Benchmark) -> tuple[set[str], str]:
    data = load_dataset("synthetic", train_subset=TRAIN_SUBSET, seed=CONTEXT.seed)
    archs = [str(i) for i in INDICES]
    ids: set[str] = set()
    zerocost = ZerocostSettings(batch_size=32, measures=ZC_MEASURES)
    for arch in archs:
        ids.add(_evaluate("zerocost", zerocost, benchmark, arch, data))
    for batch, cells in ((32, archs), (64, archs[:4])):
        shortreg = ShortregSettings(batch_size=batch, epochs=1)
        for arch in cells:
            ids.add(_evaluate("shortreg", shortreg, benchmark, arch, data))
    fear = FearSettings(
        threshold=0.2, batch_size=32, stage1_epochs=3, freeze_epochs=1, freeze_batch_size=64
    )
    for arch in (*archs[:3], DEGENERATE_CELL):
        ids.add(_evaluate("fear", fear, benchmark, arch, data))
    # A failed evaluation of a cell the shortreg configuration has not seen, recorded the
    # way every evaluation is: the tool's run context around an evaluation that raised.
    cell = parse_arch(FAILING_CELL)
    failing = Evaluation("shortreg", ShortregSettings(batch_size=32, epochs=1), CONTEXT, cell)
    run = EvaluationRun(
        method="shortreg",
        arch=str(cell),
        arch_index=None,
        dataset="synthetic",
        seed=CONTEXT.seed,
        params=failing.params(),
        experiment=EXPERIMENT,
    )
    with pytest.raises(RuntimeError), run:
        raise RuntimeError("out of memory (simulated by the test)")
    ids.add(run.run_id)
    return ids, run.run_id


def make_sweep(benchmark_csv: Path) -> None:
    """A finished zero-cost sweep: a parent run with progress metrics, nested evaluations."""
    from fear_mlflow.cli import main

    threads = torch.get_num_threads()
    try:
        _sweep_command(main, benchmark_csv)
    finally:
        torch.set_num_threads(threads)  # the sweep sets its own


def _sweep_command(main: object, benchmark_csv: Path) -> None:
    main(  # type: ignore[operator]
        [
            "sweep",
            "zerocost",
            "--archs",
            ",".join(str(i) for i in SWEEP_ARCHS),
            "--benchmark",
            str(benchmark_csv),
            "--dataset",
            "synthetic",
            "--device",
            "cpu",
            "--channels",
            str(TINY["channels"]),
            "--cells-per-stage",
            str(TINY["cells_per_stage"]),
            "--measures",
            "synflow,params",
            "--experiment",
            SWEEP_EXPERIMENT,
            "--sweep-name",
            SWEEP,
            "--threads",
            "1",
        ]
    )


def make_study(url: str) -> None:
    """Two objectives (cost down, quality up) over one knob: a real trade-off front."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(
        study_name=STUDY,
        storage=url,
        directions=["minimize", "maximize"],
        sampler=optuna.samplers.RandomSampler(seed=0),
    )
    study.set_metric_names(["duration_s", "spearman"])

    def objective(trial: optuna.Trial) -> tuple[float, float]:
        epochs = trial.suggest_int("freeze_epochs", 1, 10)
        threshold = trial.suggest_float("threshold", 0.3, 0.9)
        return 10.0 * epochs + 50.0 * threshold, 1 - 1 / (epochs + 10 * threshold)

    study.optimize(objective, n_trials=16)


@pytest.fixture(scope="session", name="report_template")
def report_template_fixture(
    mlflow_template_db: Path, tmp_path_factory: pytest.TempPathFactory
) -> ReportStore:
    """The runs, made once: a sqlite store every test copies."""
    folder = tmp_path_factory.mktemp("report-store")
    db = folder / "mlflow.db"
    shutil.copy(mlflow_template_db, db)
    benchmark = truth_table(folder / "truth.csv")
    uri = f"sqlite:///{db}"
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(folder)  # artifact root ./mlruns lands here, not in the repo
        patch.delenv("MLFLOW_RUN_ID", raising=False)
        patch.setenv("MLFLOW_TRACKING_URI", uri)
        connect(uri)
        for name in (EXPERIMENT, SWEEP_EXPERIMENT):
            MlflowClient(uri).create_experiment(name, artifact_location=str(folder / "art"))
        ids, failed = make_runs(benchmark)
        make_sweep(folder / "truth.csv")
    optuna_url = f"sqlite:///{folder / 'optuna.db'}"
    make_study(optuna_url)
    return ReportStore(db, folder / "art", folder / "truth.csv", frozenset(ids), failed, optuna_url)


@pytest.fixture(name="report_store")
def report_store_fixture(
    report_template: ReportStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> ReportStore:
    """This test's own copy of the runs, set as the tracking store; cwd is ``tmp_path``."""
    db = tmp_path / "mlflow.db"
    shutil.copy(report_template.db, db)
    uri = f"sqlite:///{db}"
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_RUN_ID", raising=False)
    monkeypatch.delenv("FEAR_BENCHMARK", raising=False)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    connect(uri)
    return ReportStore(
        db,
        report_template.artifacts,
        report_template.benchmark_csv,
        report_template.run_ids,
        report_template.failed_run_id,
        report_template.optuna_url,
    )
