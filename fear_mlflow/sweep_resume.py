"""Resume: decide per planned evaluation whether to skip, redo, or leave it to another worker.

Rules (per ``fear.config_hash``): a FINISHED run means skip. A RUNNING run whose worker
is alive (fresh heartbeat, and not a dead process on this very host) belongs to someone
else: leave it. A RUNNING run that stopped beating, or a FAILED/KILLED one, is redone and
marked superseded, so no dead run stays RUNNING.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Sequence
from dataclasses import dataclass, field

from mlflow.entities import Run

from fear_mlflow.sweep_plan import SweepItem
from fear_mlflow.tracking import WORKER_TAG, last_sign_of_life


@dataclass
class ResumePlan:
    """What to do with a shard's items, and which old runs to mark superseded first."""

    todo: list[SweepItem] = field(default_factory=list)
    finished: list[SweepItem] = field(default_factory=list)
    busy: list[SweepItem] = field(default_factory=list)
    supersede: list[tuple[Run, str]] = field(default_factory=list)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def worker_is_dead(worker: str) -> bool:
    """True when ``host:pid`` names a process on this host that no longer exists (or us)."""
    host, _, pid_text = worker.rpartition(":")
    if host != socket.gethostname() or not pid_text.isdigit():
        return False
    pid = int(pid_text)
    return pid == os.getpid() or not _pid_alive(pid)


def stale_reason(run: Run, now: float, heartbeat_timeout: float) -> str | None:
    """Why a RUNNING run is dead, or None while its worker may still be at it."""
    worker = run.data.tags.get(WORKER_TAG, "")
    if worker and worker_is_dead(worker):
        return f"worker {worker} is gone"
    silent = now - last_sign_of_life(run)
    if silent > heartbeat_timeout:
        return f"no heartbeat for {silent:.0f} s (> --heartbeat-timeout {heartbeat_timeout:g})"
    return None


def plan_resume(
    items: Sequence[SweepItem],
    prior: dict[str, list[Run]],
    *,
    now: float,
    heartbeat_timeout: float,
    sweep: str,
) -> ResumePlan:
    """Sort ``items`` into finished / busy elsewhere / to do, given the store's runs by hash."""
    plan = ResumePlan()
    for item in items:
        runs = prior.get(item.config_hash, [])
        if any(r.info.status == "FINISHED" for r in runs):
            plan.finished.append(item)
            continue
        alive = False
        for run in runs:
            if run.info.status == "RUNNING":
                reason = stale_reason(run, now, heartbeat_timeout)
                if reason is None:
                    alive = True
                else:
                    plan.supersede.append((run, f"{reason}; redone by sweep {sweep}"))
            elif run.info.status in ("FAILED", "KILLED") and "fear.superseded" not in run.data.tags:
                plan.supersede.append((run, f"{run.info.status.lower()}; redone by sweep {sweep}"))
        (plan.busy if alive else plan.todo).append(item)
    return plan
