"""``--workers K`` on one machine: own the shard's parent run, run K children, aggregate.

The children (see `workers`) do the resume lookup and the evaluations of their finer
shards; this process only shows one progress bar and logs the shard's progress metrics.
"""

from __future__ import annotations

import os
import time
from typing import Any

import click

from fear_mlflow.errors import UserError
from fear_mlflow.sweep_parent import SweepParent
from fear_mlflow.sweep_progress import Progress
from fear_mlflow.tracking import RetryingClient, experiment_id, redact
from fear_mlflow.workers import child_args, plan_children, run_children


def launch(
    ctx: click.Context,
    job: dict[str, Any],
    workers: int,
    device: str,
    threads: int | None = None,
) -> Progress:
    """Run ``job['shard']`` in ``workers`` processes per device; returns the merged progress."""
    client = RetryingClient(job["tracking_uri"])
    exp_id = client.retry(experiment_id, "an experiment lookup", job["experiment"])
    parent = SweepParent(
        client,
        exp_id,
        sweep=job["sweep"],
        shard=str(job["shard"]),
        heartbeat_timeout=job["heartbeat_timeout"],
        params={**job["parent_params"], "workers": workers},
    )
    parent_id = parent.open(attach_to=os.environ.get("MLFLOW_RUN_ID"))
    children = plan_children(job["shard"], workers, device, threads)
    progress = Progress(f"sweep {job['sweep']} shard {job['shard']}", parallel=len(children))
    args = child_args(ctx)

    def on_progress(force: bool) -> None:
        parent.log_progress(progress.metrics(), progress.done + progress.failed, force=force)

    status = "FAILED"
    started = time.monotonic()
    try:
        codes = run_children(
            job["method"], args, children, parent_id, job["tracking_uri"], progress, on_progress
        )
        bad = [(c, code) for c, code in zip(children, codes) if code not in (0, 1)]
        if bad:
            shards = ", ".join(f"{c.shard} (exit {code})" for c, code in bad)
            raise UserError(
                f"worker(s) for shard {shards} stopped early after {time.monotonic() - started:.0f} s "
                "(see their error above); re-run the same command to resume"
            )
        status = "FINISHED" if progress.failed == 0 else "FAILED"
    except KeyboardInterrupt:
        status = "KILLED"
        raise
    finally:
        progress.close()
        try:
            on_progress(True)
            parent.close(status)
        except Exception as exc:
            print(f"could not close the sweep's parent run: {redact(str(exc))[:200]}")
    return progress
