"""Stage-1 reuse must give exactly what a fresh FEAR run gives, for any threshold order."""

from __future__ import annotations

import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from functools import partial
from pathlib import Path

import pytest
import torch

from fear_mlflow.config import FearSettings
from fear_mlflow.evaluators.fear import evaluate_fear
from fear_mlflow.evaluators.fear_stage1 import stage1_identity
from fear_mlflow.evaluators.result import EvalResult
from fear_mlflow.space.arch import parse_arch
from fear_mlflow.train.stage1_store import Stage1Store
from tests.helpers import CONV_CELL, synthetic, tiny_context

CPU = torch.device("cpu")


def _settings(threshold: float) -> FearSettings:
    return FearSettings(
        threshold=threshold, batch_size=64, stage1_epochs=5, freeze_batch_size=128, freeze_epochs=2
    )


def _run(threshold: float, store: Stage1Store | None = None) -> EvalResult:
    return evaluate_fear(
        parse_arch(CONV_CELL),
        synthetic(),
        _settings(threshold),
        tiny_context(),
        CPU,
        stage1_store=store,
    )


def _comparable(result: EvalResult) -> tuple:
    history = [
        (r.stage, r.epoch, r.metrics["train_top1"], r.metrics["train_loss"], r.metrics["lr"])
        for r in result.history
    ]
    return result.status, result.score, result.summary["stage1_epochs"], history


@pytest.fixture(scope="module")
def fresh() -> dict[float, EvalResult]:
    return {t: _run(t) for t in (0.15, 0.3, 1.0)}


def test_fresh_runs_cover_early_late_and_never(fresh: dict[float, EvalResult]) -> None:
    assert fresh[0.15].summary["stage1_epochs"] < fresh[0.3].summary["stage1_epochs"]
    assert fresh[1.0].status == "threshold_not_reached"


def test_reuse_equals_fresh_in_any_order(fresh: dict[float, EvalResult], tmp_path: Path) -> None:
    store = Stage1Store(tmp_path, level_step=0.5)  # coarse grid: forces resume-from-state paths
    for threshold in (0.3, 0.15, 1.0, 0.3, 0.15):
        assert _comparable(_run(threshold, store)) == _comparable(fresh[threshold]), threshold


def test_reused_stage1_reports_the_original_seconds(tmp_path: Path) -> None:
    store = Stage1Store(tmp_path)
    first = _run(0.3, store)
    again = _run(0.3, store)
    seconds = [
        [r.metrics["epoch_s"] for r in res.history if r.stage == "stage1"] for res in (first, again)
    ]
    assert seconds[0] == seconds[1]  # replayed, not re-measured: nothing was trained again
    assert again.summary["stage1_s"] == pytest.approx(first.summary["stage1_s"])
    assert again.duration_s == pytest.approx(again.summary["stage1_s"] + again.summary["stage2_s"])


def test_size_bound_evicts_states_but_keeps_results_exact(
    fresh: dict[float, EvalResult], tmp_path: Path
) -> None:
    store = Stage1Store(tmp_path, max_mb=0.0001)
    for threshold in (0.3, 0.15, 0.3):
        assert _comparable(_run(threshold, store)) == _comparable(fresh[threshold])
    assert list(tmp_path.glob("*/epoch_*.pt")) == []


def test_concurrent_workers_share_one_key_safely(
    fresh: dict[float, EvalResult], tmp_path: Path
) -> None:
    """Two worker processes (as a sweep's --workers starts them) on one key, at once."""
    store = Stage1Store(tmp_path)
    spawn = multiprocessing.get_context("spawn")  # torch's global RNG is per process
    with ProcessPoolExecutor(max_workers=2, mp_context=spawn) as pool:
        futures = {t: pool.submit(_run, t, store) for t in (0.3, 0.15)}
        results = {t: future.result(timeout=300) for t, future in futures.items()}
    for threshold, result in results.items():
        assert _comparable(result) == _comparable(fresh[threshold]), threshold
    assert len(list(tmp_path.glob("*/trajectory.json"))) == 1  # one key, shared


def test_a_different_cpu_thread_count_is_a_different_trajectory() -> None:
    """Threads change float reductions on a CPU, so a store never serves a 2-thread stage 1
    to a 1-thread process (the scores differ; see README on `fear.torch_threads`)."""
    before = torch.get_num_threads()
    key = partial(stage1_identity, parse_arch(CONV_CELL), _settings(0.3), tiny_context())
    try:
        torch.set_num_threads(1)
        one, one_cuda = key(CPU, "fp32"), key(torch.device("cuda"), "fp32")
        torch.set_num_threads(2)
        two, two_cuda = key(CPU, "fp32"), key(torch.device("cuda"), "fp32")
    finally:
        torch.set_num_threads(before)
    assert one != two
    assert one_cuda == two_cuda  # host threads do not change a GPU's arithmetic
