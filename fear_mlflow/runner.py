"""Run one evaluation end to end: evaluator + tracking, the unit sweeps and tuning repeat.

Sits above `evaluators` (training, no MLflow) and `tracking` (MLflow, no training).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch

from fear_mlflow.benchmark import Benchmark
from fear_mlflow.config import (
    FearSettings,
    RegularSettings,
    RunContext,
    ShortregSettings,
    ZerocostSettings,
)
from fear_mlflow.data.datasets import ImageData
from fear_mlflow.device import environment_tags
from fear_mlflow.evaluators.fear import evaluate_fear
from fear_mlflow.evaluators.regular import evaluate_regular
from fear_mlflow.evaluators.result import EvalResult
from fear_mlflow.evaluators.shortreg import evaluate_shortreg
from fear_mlflow.space.arch import Arch
from fear_mlflow.tracking import EvaluationRun
from fear_mlflow.train.stage1_store import Stage1Store
from fear_mlflow.train.trainer import EpochCallback

MethodSettings = FearSettings | ShortregSettings | RegularSettings | ZerocostSettings


@dataclass(frozen=True)
class Evaluation:
    """One (method, settings, arch, data context) to evaluate."""

    method: str
    settings: MethodSettings
    context: RunContext
    arch: Arch
    arch_index: int | None = None
    precision: str = "fp32"
    compile: bool = False

    def params(self) -> dict[str, object]:
        """Flattened settings logged as MLflow params (and hashed into ``fear.config_hash``)."""
        return {
            **self.context.params(),
            **self.settings.params(),
            "precision": self.precision,
            "compile": self.compile,
        }


def evaluate(
    evaluation: Evaluation,
    data: ImageData,
    device: torch.device,
    *,
    on_epoch: EpochCallback | None = None,
    progress: bool = False,
    stage1_store: Stage1Store | None = None,
) -> EvalResult:
    """Dispatch to the method's evaluator (``stage1_store`` only matters to FEAR)."""
    e = evaluation
    if isinstance(e.settings, ZerocostSettings):
        from fear_mlflow.evaluators.zerocost import evaluate_zerocost

        return evaluate_zerocost(e.arch, data, e.settings, e.context, device)
    if isinstance(e.settings, FearSettings):
        return evaluate_fear(
            e.arch,
            data,
            e.settings,
            e.context,
            device,
            precision=e.precision,
            compile_model=e.compile,
            on_epoch=on_epoch,
            progress=progress,
            stage1_store=stage1_store,
        )
    evaluator = {
        ShortregSettings: evaluate_shortreg,
        RegularSettings: evaluate_regular,
    }[type(e.settings)]
    return evaluator(
        e.arch,
        data,
        e.settings,
        e.context,
        device,  # type: ignore[arg-type]
        precision=e.precision,
        compile_model=e.compile,
        on_epoch=on_epoch,
        progress=progress,
    )


def ground_truth(benchmark: Benchmark | None, evaluation: Evaluation) -> float | None:
    """The benchmark's test accuracy (%) of this arch on this dataset, when it knows it."""
    if benchmark is None or evaluation.context.dataset not in benchmark.datasets:
        return None
    return benchmark.accuracy(evaluation.arch, evaluation.context.dataset)


def run_tracked(
    evaluation: Evaluation,
    data: ImageData,
    device: torch.device,
    *,
    benchmark: Benchmark | None = None,
    experiment: str,
    tags: Mapping[str, str] | None = None,
    parent_run_id: str | None = None,
    attach: bool = True,
    progress: bool = False,
    stage1_store: Stage1Store | None = None,
) -> tuple[str, EvalResult]:
    """Evaluate inside one MLflow run; returns (run id, result)."""
    with EvaluationRun(
        method=evaluation.method,
        arch=str(evaluation.arch),
        arch_index=evaluation.arch_index,
        dataset=evaluation.context.dataset,
        seed=evaluation.context.seed,
        params=evaluation.params(),
        experiment=experiment,
        tags={**environment_tags(device), **(tags or {})},
        parent_run_id=parent_run_id,
        attach=attach,
    ) as run:
        result = evaluate(
            evaluation,
            data,
            device,
            on_epoch=run.log_epoch,
            progress=progress,
            stage1_store=stage1_store,
        )
        run.log_result(result, ground_truth(benchmark, evaluation))
    return run.run_id, result
