"""The sweep's parent run: one per (sweep, shard), found again on restart, showing progress.

Evaluation runs nest under it (``mlflow.parentRunId``); it carries no ``fear.method`` tag,
so analyses that look for evaluation runs never mistake it for one.
"""

from __future__ import annotations

import time
from collections.abc import Mapping

from mlflow.entities import Metric, Param, Run, RunTag

from fear_mlflow.errors import UserError
from fear_mlflow.sweep_resume import stale_reason
from fear_mlflow.tracking import RetryingClient, heartbeat_tags, search_all_runs

ROLE_TAG = "fear.sweep_role"


class SweepParent:
    """Find-or-create the parent run of ``sweep`` shard ``shard``; log progress; close it."""

    def __init__(
        self,
        client: RetryingClient,
        experiment_id: str,
        *,
        sweep: str,
        shard: str,
        heartbeat_timeout: float,
        params: Mapping[str, object],
        min_interval_s: float = 2.0,
    ) -> None:
        self.client = client
        self.experiment_id = experiment_id
        self.sweep = sweep
        self.shard = shard
        self.heartbeat_timeout = heartbeat_timeout
        self.params = {k: str(v) for k, v in params.items()}
        self.min_interval_s = min_interval_s
        self.run_id = ""
        self._last_log = 0.0

    def open(self, attach_to: str | None = None) -> str:
        """Reuse this shard's earlier parent (unless alive elsewhere), else create one."""
        tags = {
            "fear.sweep": self.sweep,
            "fear.sweep_shard": self.shard,
            ROLE_TAG: "parent",
            **heartbeat_tags(),
        }
        if attach_to:  # `mlflow run -e sweep` already made a run for us
            self.run_id = attach_to
            self._log_params(self.client.get_run(attach_to).data.params)
        else:
            existing = search_all_runs(
                self.client,
                [self.experiment_id],
                f"tags.`fear.sweep` = '{self.sweep}' and tags.`{ROLE_TAG}` = 'parent' "
                f"and tags.`fear.sweep_shard` = '{self.shard}'",
            )
            if existing:
                run = max(existing, key=lambda r: r.info.start_time or 0)
                self._refuse_if_alive(run)
                self.run_id = run.info.run_id
                self.client.update_run(self.run_id, status="RUNNING")
            else:
                run = self.client.create_run(
                    self.experiment_id,
                    run_name=f"sweep {self.sweep} shard {self.shard}",
                    tags=tags,
                )
                self.run_id = run.info.run_id
                self._log_params({})
        self.client.log_batch(self.run_id, tags=[RunTag(k, v) for k, v in tags.items()])
        return self.run_id

    def _refuse_if_alive(self, run: Run) -> None:
        if run.info.status != "RUNNING":
            return
        if stale_reason(run, time.time(), self.heartbeat_timeout) is None:
            worker = run.data.tags.get("fear.worker", "another worker")
            raise UserError(
                f"shard {self.shard} of sweep {self.sweep} is already running in {worker} "
                f"(parent run {run.info.run_id}); wait for it, run another --shard, or, if that "
                "worker is dead, re-run with a smaller --heartbeat-timeout"
            )

    def _log_params(self, already: Mapping[str, str]) -> None:
        params = [Param(k, v) for k, v in self.params.items() if k not in already]
        if params:
            self.client.log_batch(self.run_id, params=params)

    def log_progress(self, metrics: Mapping[str, float], step: int, force: bool = False) -> None:
        """Progress metrics + heartbeat, at most every ``min_interval_s`` unless forced."""
        now = time.time()
        if not force and now - self._last_log < self.min_interval_s:
            return
        self._last_log = now
        stamp = int(now * 1000)
        self.client.log_batch(
            self.run_id,
            metrics=[Metric(k, v, stamp, step) for k, v in metrics.items()],
            tags=[RunTag(k, v) for k, v in heartbeat_tags().items()],
        )

    def close(self, status: str) -> None:
        """FINISHED / FAILED / KILLED; best effort when the store is already gone."""
        if self.run_id:
            self.client.set_terminated(self.run_id, status=status)
