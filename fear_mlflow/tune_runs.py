"""MLflow side of tuning: one parent run per Optuna trial, the study summary run."""

from __future__ import annotations

import time
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType

from mlflow.entities import Metric, Param, RunStatus, RunTag
from mlflow.tracking import MlflowClient

from fear_mlflow.tracking import experiment_id, redact


class TrialRun:
    """Context manager: the parent run of one trial; arch evaluations nest under it.

    Carries ``fear.study`` / ``fear.trial`` and the trial's params, and no ``fear.method``
    tag, so analyses of evaluation runs never count it as one.
    """

    def __init__(
        self, experiment: str, study: str, number: int, params: Mapping[str, object]
    ) -> None:
        self.client = MlflowClient()
        self.experiment = experiment
        self.tags = {"fear.study": study, "fear.trial": str(number), "fear.role": "trial"}
        self.params = {k: str(v) for k, v in params.items()}
        self.name = f"{study} trial {number}"
        self.run_id = ""
        self.status = "FINISHED"

    def __enter__(self) -> TrialRun:
        run = self.client.create_run(
            experiment_id(self.experiment), run_name=self.name, tags=self.tags
        )
        self.run_id = run.info.run_id
        self.client.log_batch(self.run_id, params=[Param(k, v) for k, v in self.params.items()])
        return self

    def log_metrics(self, metrics: Mapping[str, float], step: int = 0) -> None:
        now = int(time.time() * 1000)
        self.client.log_batch(
            self.run_id, metrics=[Metric(k, float(v), now, step) for k, v in metrics.items()]
        )

    def set_tag(self, key: str, value: str) -> None:
        self.client.set_tag(self.run_id, key, value)

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is None:
            status = self.status
        elif exc_type.__name__ == "TrialPruned":
            status = RunStatus.to_string(RunStatus.KILLED)
            self.client.set_tag(self.run_id, "fear.trial_state", "pruned")
        else:
            status = RunStatus.to_string(RunStatus.FAILED)
            self.client.set_tag(self.run_id, "fear.trial_state", "failed")
            self.client.set_tag(self.run_id, "fear.error", redact(str(exc))[:500])
        self.client.set_terminated(self.run_id, status=status)


def log_study_summary(
    experiment: str, study: str, metrics: Mapping[str, float], artifacts: list[Path]
) -> str:
    """A finished run holding the study's best values and its Pareto-front figure."""
    client = MlflowClient()
    run = client.create_run(
        experiment_id(experiment),
        run_name=f"{study} summary",
        tags={"fear.study": study, "fear.role": "study-summary"},
    )
    now = int(time.time() * 1000)
    client.log_batch(
        run.info.run_id,
        metrics=[Metric(k, float(v), now, 0) for k, v in metrics.items()],
        tags=[RunTag("fear.study", study)],
    )
    for path in artifacts:
        client.log_artifact(run.info.run_id, str(path))
    client.set_terminated(run.info.run_id)
    return run.info.run_id
