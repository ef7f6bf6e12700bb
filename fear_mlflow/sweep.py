"""Run one shard of a sweep in this process: resume, evaluate what is left, show progress.

Each evaluation is one run of DESIGN.md's schema nested under the shard's parent run and
tagged ``fear.sweep``. What is FINISHED in the store is skipped (one bulk query at
start), dead or failed runs are marked superseded and redone, data is loaded once, and
tracking calls retry with back-off, so killing and re-running the command just finishes
the rest. Several shards (``--shard i/N``) may run at once against one tracking server.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
import traceback
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import FrameType

import torch

from fear_mlflow.benchmark import Benchmark
from fear_mlflow.config import RunContext
from fear_mlflow.data.datasets import ImageData, load_dataset
from fear_mlflow.device import environment_tags
from fear_mlflow.errors import UserError
from fear_mlflow.evaluators.result import EpochRecord
from fear_mlflow.runner import evaluate, ground_truth
from fear_mlflow.sweep_parent import SweepParent
from fear_mlflow.sweep_plan import Shard, SweepItem
from fear_mlflow.sweep_progress import Progress
from fear_mlflow.sweep_resume import plan_resume
from fear_mlflow.tracking import (
    ATTEMPT_TAG,
    HEARTBEAT_TAG,
    EvaluationRun,
    RetryingClient,
    TrackingUnavailable,
    experiment_id,
    heartbeat_tags,
    is_transient,
    mark_superseded,
    redact,
    runs_by_config_hash,
)

#: How often one evaluation may hit a store outage (and be redone) before it counts as failed.
STORE_HICCUPS_PER_EVAL = 3


@dataclass
class SweepJob:
    """Everything one worker process needs, resolved and validated by the CLI."""

    method: str
    items: list[SweepItem]
    sweep: str
    shard: Shard
    benchmark: Benchmark | None
    device: torch.device
    experiment: str
    tracking_uri: str
    heartbeat_timeout: float = 1800.0
    max_failures: int = 0
    parent_params: Mapping[str, object] = field(default_factory=dict)
    parent_run_id: str | None = None
    report_json: bool = False

    @property
    def context(self) -> RunContext:
        """Dataset, seed and net size: shared by every item of one sweep."""
        return self.items[0].evaluation.context


class StoreHiccup(Exception):
    """An evaluation hit a transient tracking failure outside the retried calls."""

    def __init__(self, run_id: str) -> None:
        super().__init__(run_id)
        self.run_id = run_id


def emit(job: SweepJob, event: str, **values: object) -> None:
    """One JSON line on stdout for a launching process (``--workers``) to aggregate."""
    if job.report_json:
        print(json.dumps({"event": event, **values}), flush=True)


def _sigterm_as_interrupt(_signum: int, _frame: FrameType | None) -> None:
    raise KeyboardInterrupt  # the open run becomes KILLED, like on Ctrl-C


def evaluate_item(
    job: SweepJob, item: SweepItem, data: ImageData, client: RetryingClient, parent_id: str
) -> str:
    """One evaluation as one nested run; returns its ``fear.status``."""
    e = item.evaluation
    run = EvaluationRun(
        method=e.method,
        arch=str(e.arch),
        arch_index=e.arch_index,
        dataset=e.context.dataset,
        seed=e.context.seed,
        params=e.params(),
        experiment=job.experiment,
        tags={
            **environment_tags(job.device),
            "fear.sweep": job.sweep,
            "fear.sweep_shard": str(job.shard),
            ATTEMPT_TAG: uuid.uuid4().hex,
            **heartbeat_tags(),
        },
        parent_run_id=parent_id,
        attach=False,
    )
    run.client = client  # type: ignore[assignment]  # retries with back-off

    def on_epoch(record: EpochRecord) -> None:
        run.log_epoch(record)
        client.set_tag(run.run_id, HEARTBEAT_TAG, str(int(time.time())))

    try:
        with run:
            result = evaluate(e, data, job.device, on_epoch=on_epoch)
            run.log_result(result, ground_truth(job.benchmark, e))
    except TrackingUnavailable:
        raise
    except Exception as exc:
        if is_transient(exc):
            raise StoreHiccup(run.run_id) from exc
        raise
    return result.status


def _evaluate_with_recovery(
    job: SweepJob, item: SweepItem, data: ImageData, client: RetryingClient, parent_id: str
) -> str:
    """Evaluate; on a store outage wait for it (bounded) and redo, marking the broken run."""
    e = item.evaluation
    label = f"{e.method} {e.arch if e.arch_index is None else '#' + str(e.arch_index)}"
    for _ in range(STORE_HICCUPS_PER_EVAL):
        try:
            return evaluate_item(job, item, data, client, parent_id)
        except StoreHiccup as hiccup:
            print(f"{label}: tracking store hiccup, waiting for it", file=sys.stderr, flush=True)
            client.wait_until_back()
            if hiccup.run_id:
                old = client.get_run(hiccup.run_id)
                mark_superseded(client, old, f"tracking store outage; redone by {job.sweep}")
        except (KeyboardInterrupt, TrackingUnavailable, UserError):
            raise
        except Exception as exc:
            message = redact(f"{type(exc).__name__}: {exc}")
            print(f"{label}: failed: {message}", file=sys.stderr, flush=True)
            if os.environ.get("FEAR_SWEEP_TRACEBACKS"):
                traceback.print_exc()
            return "failed"
    return "failed"


def run_shard(job: SweepJob) -> Progress:
    """Resume and run ``job.shard``; returns the final progress (counts for the summary)."""
    previous = signal.signal(signal.SIGTERM, _sigterm_as_interrupt)
    try:
        return _run_shard(job)
    finally:
        signal.signal(signal.SIGTERM, previous)


def _run_shard(job: SweepJob) -> Progress:
    client = RetryingClient(job.tracking_uri)
    exp_id = client.retry(experiment_id, "an experiment lookup", job.experiment)
    items = job.shard.take(job.items)
    parent: SweepParent | None = None
    parent_id = job.parent_run_id
    if parent_id is None:
        parent = SweepParent(
            client,
            exp_id,
            sweep=job.sweep,
            shard=str(job.shard),
            heartbeat_timeout=job.heartbeat_timeout,
            params=job.parent_params,
        )
        parent_id = parent.open(attach_to=os.environ.get("MLFLOW_RUN_ID"))
    prior = runs_by_config_hash(client, exp_id, job.method, job.context.dataset)
    resume = plan_resume(
        items, prior, now=time.time(), heartbeat_timeout=job.heartbeat_timeout, sweep=job.sweep
    )
    for old, why in resume.supersede:
        mark_superseded(client, old, why)
    progress = Progress(f"sweep {job.sweep} shard {job.shard}", silent=job.report_json)
    progress.plan(len(items), len(resume.finished), len(resume.busy))
    emit(job, "plan", total=len(items), finished=len(resume.finished), busy=len(resume.busy))
    status = "FAILED"
    try:
        if parent is not None:
            parent.log_progress(progress.metrics(), progress.done, force=True)
        if resume.todo:
            _run_items(job, resume.todo, client, parent, parent_id, progress)
        status = "FINISHED" if progress.failed == 0 else "FAILED"
    except KeyboardInterrupt:
        status = "KILLED"
        raise
    finally:
        progress.close()
        if parent is not None:
            _close_parent(parent, progress, status)
    return progress


def _run_items(
    job: SweepJob,
    todo: list[SweepItem],
    client: RetryingClient,
    parent: SweepParent | None,
    parent_id: str,
    progress: Progress,
) -> None:
    context = job.context
    data = load_dataset(
        context.dataset, context.dataroot, train_subset=context.train_subset, seed=context.seed
    )
    for item in todo:
        started = time.monotonic()
        outcome = _evaluate_with_recovery(job, item, data, client, parent_id)
        wall = time.monotonic() - started
        progress.record(outcome, wall)
        emit(job, "eval", status=outcome, wall_s=round(wall, 3), hash=item.config_hash)
        if parent is not None:
            parent.log_progress(progress.metrics(), progress.done + progress.failed)
        if job.max_failures and progress.failed >= job.max_failures:
            raise UserError(
                f"stopped after {progress.failed} failed evaluations (--max-failures "
                f"{job.max_failures}); see the errors above, fix them and re-run the same "
                "command to resume"
            )


def _close_parent(parent: SweepParent, progress: Progress, status: str) -> None:
    """Final metrics and status; never hides the error that ended the sweep."""
    try:
        parent.log_progress(progress.metrics(), progress.done + progress.failed, force=True)
        parent.close(status)
    except Exception as exc:  # the store may be what failed
        print(f"could not close the sweep's parent run: {redact(str(exc))[:200]}", file=sys.stderr)
