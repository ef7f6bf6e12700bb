"""Ground-truth tables from `regular` runs, for datasets NATS-Bench does not cover."""

from __future__ import annotations

import pandas as pd

from fear_mlflow.errors import UserError
from fear_mlflow.space.arch import parse_arch
from fear_mlflow.tracking import find_runs


def table_from_regular_runs(experiments: list[str]) -> pd.DataFrame:
    """One row per arch: ``index, arch, <dataset>...`` with the mean test top-1 in percent.

    ``index`` is the run's ``fear.arch_index`` when known, else the cell's position in the
    enumeration of the space (so strings without a benchmark index still get one).
    """
    rows = []
    for run in find_runs(experiments, method="regular"):
        if run.data.tags.get("fear.status") != "ok" or "score" not in run.data.metrics:
            continue
        arch = run.data.tags["fear.arch"]
        index = run.data.tags.get("fear.arch_index")
        rows.append(
            {
                "index": int(index) if index else parse_arch(arch).to_index_in_enumeration(),
                "arch": arch,
                "dataset": run.data.tags["fear.dataset"],
                "acc": 100.0 * run.data.metrics["score"],
            }
        )
    if not rows:
        raise UserError(
            f"no finished `regular` runs with status ok in {', '.join(experiments)}; run "
            "`fear-mlflow regular --experiment NAME ...` first"
        )
    frame = pd.DataFrame(rows)
    table = frame.pivot_table(
        index=["index", "arch"], columns="dataset", values="acc", aggfunc="mean"
    )
    table.columns.name = None
    return table.reset_index()
