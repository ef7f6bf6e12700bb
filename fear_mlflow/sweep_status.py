"""Where running sweeps stand, read back from their parent runs (for the dashboard).

A sweep shard's parent run (tags ``fear.sweep``, ``fear.sweep_shard``,
``fear.sweep_role=parent``) logs ``sweep/done``, ``sweep/total``, ``sweep/failed`` and
``sweep/eta_s`` as it goes, and a ``fear.heartbeat`` tag. One row per shard; a sweep's
totals are the sum over its shards, its ETA the longest of its live shards'.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence

import pandas as pd
from mlflow.tracking import MlflowClient

from fear_mlflow.tracking import last_sign_of_life, search_all_runs

PARENT_FILTER = "tags.`fear.sweep_role` = 'parent'"
#: A RUNNING shard silent this long is shown as stalled (the sweep's own default timeout).
STALL_S = 1800.0
SHARD_COLUMNS = (
    "sweep",
    "shard",
    "state",
    "done",
    "total",
    "failed",
    "eta_s",
    "silent_s",
    "run_id",
)


def shard_table(experiment_ids: Sequence[str], sweeps: Sequence[str] = ()) -> pd.DataFrame:
    """One row per sweep shard (parent run) in the experiments, optionally only ``sweeps``."""
    client = MlflowClient()
    runs = search_all_runs(client, list(experiment_ids), PARENT_FILTER) if experiment_ids else []
    now = time.time()
    rows = []
    for run in runs:
        tags, metrics = run.data.tags, run.data.metrics
        sweep = tags.get("fear.sweep", "")
        if sweeps and sweep not in sweeps:
            continue
        state = run.info.status
        silent = now - last_sign_of_life(run)
        if state == "RUNNING" and silent > STALL_S:
            state = "STALLED"
        rows.append(
            {
                "sweep": sweep,
                "shard": tags.get("fear.sweep_shard", ""),
                "state": state,
                "done": metrics.get("sweep/done", math.nan),
                "total": metrics.get("sweep/total", math.nan),
                "failed": metrics.get("sweep/failed", math.nan),
                "eta_s": metrics.get("sweep/eta_s", math.nan) if state == "RUNNING" else math.nan,
                "silent_s": silent,
                "run_id": run.info.run_id,
            }
        )
    frame = pd.DataFrame(rows, columns=list(SHARD_COLUMNS))
    return frame.sort_values(["sweep", "shard"], kind="stable").reset_index(drop=True)


def sweep_totals(shards: pd.DataFrame) -> pd.DataFrame:
    """Per sweep: shards, running shards, done/total/failed, fraction done, ETA (s)."""
    if shards.empty:
        return pd.DataFrame(
            columns=["sweep", "shards", "running", "done", "total", "failed", "fraction", "eta_s"]
        )
    grouped = shards.groupby("sweep", sort=True)
    totals = pd.DataFrame(
        {
            "shards": grouped.size(),
            "running": grouped["state"].apply(lambda s: int((s == "RUNNING").sum())),
            "done": grouped["done"].sum(min_count=1),
            "total": grouped["total"].sum(min_count=1),
            "failed": grouped["failed"].sum(min_count=1),
            "eta_s": grouped["eta_s"].max(),
        }
    ).reset_index()
    totals["fraction"] = (totals["done"] / totals["total"]).where(totals["total"] > 0)
    return totals


def is_active(shards: pd.DataFrame) -> bool:
    """True while some shard is running with a fresh heartbeat."""
    return bool((shards["state"] == "RUNNING").any()) if len(shards) else False
