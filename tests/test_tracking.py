"""The MLflow run schema, written into a real local tracking mlflow_store."""

from __future__ import annotations

import mlflow
import pandas as pd
import pytest
import torch
from mlflow.tracking import MlflowClient

from fear_mlflow.benchmark import Benchmark
from fear_mlflow.config import FearSettings, ZerocostSettings
from fear_mlflow.errors import UserError
from fear_mlflow.runner import Evaluation, run_tracked
from fear_mlflow.space.arch import parse_arch
from fear_mlflow.tracking import (
    RESOLVED_PREFIX,
    EvaluationRun,
    config_hash,
    connect,
    find_runs,
    redact,
)
from tests.helpers import CONV_CELL, synthetic, tiny_context

CPU = torch.device("cpu")


def _fear_evaluation(**overrides: object) -> Evaluation:
    settings = FearSettings(
        threshold=0.3,
        batch_size=64,
        stage1_epochs=6,
        freeze_batch_size=128,
        freeze_epochs=2,
        **overrides,
    )
    return Evaluation("fear", settings, tiny_context(), parse_arch(CONV_CELL), arch_index=7)


def test_fear_run_follows_the_schema(mlflow_store: MlflowClient) -> None:
    table = Benchmark.from_frame(
        pd.DataFrame({"index": [7], "arch": [CONV_CELL], "synthetic": [81.5]})
    )
    run_id, result = run_tracked(
        _fear_evaluation(), synthetic(), CPU, benchmark=table, experiment="schema"
    )
    run = mlflow_store.get_run(run_id)
    assert run.info.status == "FINISHED"
    tags = run.data.tags
    assert tags["fear.method"] == "fear"
    assert tags["fear.dataset"] == "synthetic"
    assert tags["fear.arch"] == CONV_CELL
    assert tags["fear.arch_index"] == "7"
    assert tags["fear.status"] == "ok"
    assert tags["fear.config_hash"] == config_hash(
        "fear", _fear_evaluation().params(), CONV_CELL, "synthetic", 36
    )
    # where it ran, as tags (the hash above is the same on every machine)
    assert tags["fear.device"] == "cpu"
    assert tags["fear.torch_threads"] == str(torch.get_num_threads())
    assert tags["fear.torch"] == torch.__version__
    assert not {"device", "torch_threads"} & set(run.data.params)
    params = run.data.params
    for key, value in {
        "threshold": "0.3",
        "freeze_batch_size": "128",
        "freeze_epochs": "2",
        "batch_size": "64",
        "seed": "36",
        "lr": "0.1",
        "nesterov": "True",
    }.items():
        assert params[key] == value
    metrics = run.data.metrics
    assert metrics["score"] == result.score
    assert metrics["gt_test_acc"] == 81.5
    for key in ("duration_s", "stage1_s", "stage2_s", "stage1_epochs", "wall_s", "params", "flops"):
        assert key in metrics
    stage1 = mlflow_store.get_metric_history(run_id, "stage1/train_top1")
    assert [m.step for m in stage1] == list(range(int(metrics["stage1_epochs"])))
    assert len(mlflow_store.get_metric_history(run_id, "stage2/train_loss")) == 2
    for name in ("stage1/lr", "stage1/epoch_s", "stage2/train_top1"):
        assert mlflow_store.get_metric_history(run_id, name)


def test_zerocost_run_logs_each_measure(mlflow_store: MlflowClient) -> None:
    evaluation = Evaluation(
        "zerocost",
        ZerocostSettings(batch_size=16, measures=("synflow", "params")),
        tiny_context(42),
        parse_arch(CONV_CELL),
    )
    run_id, result = run_tracked(evaluation, synthetic(), CPU, experiment="zc")
    metrics = mlflow_store.get_run(run_id).data.metrics
    assert metrics["zc/synflow"] == result.score
    assert "zc/synflow_s" in metrics and "zc/params" in metrics
    assert "fear.arch_index" not in mlflow_store.get_run(run_id).data.tags


def test_a_crash_marks_the_run_failed(mlflow_store: MlflowClient) -> None:
    with pytest.raises(RuntimeError):
        with EvaluationRun(
            method="fear",
            arch=CONV_CELL,
            arch_index=None,
            dataset="synthetic",
            seed=1,
            params={"a": 1},
            experiment="crash",
        ) as run:
            raise RuntimeError("boom")
    finished = mlflow_store.get_run(run.run_id)
    assert finished.info.status == "FAILED"
    assert finished.data.tags["fear.status"] == "failed"
    assert "boom" in finished.data.tags["fear.error"]


def test_attaching_to_an_mlflow_run_keeps_raw_params_and_adds_resolved(
    mlflow_store: MlflowClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`mlflow run` logs its -P values first (e.g. threshold=auto); ours must not clash."""
    exp = mlflow_store.create_experiment("attach")
    created = mlflow_store.create_run(exp)
    mlflow_store.log_param(created.info.run_id, "threshold", "auto")
    mlflow_store.log_param(created.info.run_id, "batch_size", "64")
    monkeypatch.setenv("MLFLOW_RUN_ID", created.info.run_id)
    with EvaluationRun(
        method="fear",
        arch=CONV_CELL,
        arch_index=None,
        dataset="synthetic",
        seed=1,
        params={"threshold": 0.6, "batch_size": 64},
        experiment="attach",
    ) as run:
        pass
    assert run.run_id == created.info.run_id
    params = mlflow_store.get_run(run.run_id).data.params
    assert params["threshold"] == "auto"
    assert params[RESOLVED_PREFIX + "threshold"] == "0.6"
    assert RESOLVED_PREFIX + "batch_size" not in params
    assert mlflow_store.get_run(run.run_id).data.tags["fear.method"] == "fear"


def test_find_runs_filters_by_method(mlflow_store: MlflowClient) -> None:
    run_tracked(_fear_evaluation(), synthetic(), CPU, experiment="find")
    assert len(find_runs(["find"], method="fear")) == 1
    assert find_runs(["find"], method="shortreg") == []
    with pytest.raises(UserError, match="not found"):
        find_runs(["nope"])


def test_config_hash_separates_settings_seed_and_arch() -> None:
    base = config_hash("fear", {"threshold": 0.6}, CONV_CELL, "cifar10", 36)
    assert base == config_hash("fear", {"threshold": 0.6}, CONV_CELL, "cifar10", 36)
    assert base != config_hash("fear", {"threshold": 0.5}, CONV_CELL, "cifar10", 36)
    assert base != config_hash("fear", {"threshold": 0.6}, CONV_CELL, "cifar10", 37)
    assert base != config_hash("shortreg", {"threshold": 0.6}, CONV_CELL, "cifar10", 36)


def test_redact_hides_passwords() -> None:
    text = "postgresql://alice:s3cret@db:5432/x and http://bob:pw@h/ and sqlite:///a.db"
    out = redact(text)
    assert "s3cret" not in out and "pw@" not in out
    assert "postgresql://alice:***@db:5432/x" in out and "sqlite:///a.db" in out


def test_unreachable_server_is_one_clear_error() -> None:
    with pytest.raises(UserError, match="unreachable") as info:
        connect("http://user:secret@127.0.0.1:9", timeout=2)
    assert "secret" not in str(info.value)
    mlflow.set_tracking_uri("")
