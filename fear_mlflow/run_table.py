"""Evaluation runs → one pandas row per evaluation, with the configuration it belongs to.

Reports and dashboards group evaluations by *method configuration*: the method, the dataset
and every logged setting except the arch (and except settings that cannot change a result:
paths, the device). A zero-cost run holds several measures; each measure ``zc/<m>`` is its
own configuration (score = the measure's value, duration = ``zc/<m>_s``), so one zero-cost
run becomes one row per measure.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence

import numpy as np
import pandas as pd
from mlflow.entities import Run

from fear_mlflow.benchmark import Benchmark
from fear_mlflow.errors import UserError
from fear_mlflow.space.arch import parse_arch
from fear_mlflow.tracking import RESOLVED_PREFIX, find_runs, last_sign_of_life, run_param

#: Params that say where or how a run ran, not what it computed: never split a configuration
#: (``compile`` only changes speed, and runs from before it existed lack it).
NON_IDENTITY_PARAMS = frozenset(
    {
        "arch",
        "arch_index",
        "dataroot",
        "benchmark",
        "device",
        "compile",
        "tracking_uri",
        "experiment",
    }
)
#: Zero-cost params that only choose which measures a run computed.
ZEROCOST_LIST_PARAMS = frozenset({"measures"})
#: MLflow run states the report reads; RUNNING ones are only counted (work in progress).
RUN_STATES = ("FINISHED", "FAILED", "KILLED", "RUNNING")
#: Columns of the evaluation table, in order.
COLUMNS = (
    "run_id",
    "experiment_id",
    "dataset",
    "method",
    "family",
    "measure",
    "config_key",
    "config",
    "arch",
    "arch_index",
    "status",
    "score",
    "duration_s",
    "gt",
    "start_time",
    "last_seen",
    "sweep",
    "study",
    "trial",
)


def _quoted(value: str, option: str) -> str:
    if "'" in value or "`" in value:
        raise UserError(f"{option} {value!r}: names with quotes cannot be searched for")
    return value


def fetch_runs(
    experiments: Sequence[str],
    *,
    datasets: Sequence[str] = (),
    methods: Sequence[str] = (),
    sweeps: Sequence[str] = (),
    studies: Sequence[str] = (),
) -> list[Run]:
    """Evaluation runs of ``experiments`` matching every given filter (each filter: any of).

    One search per combination of filter values, so each stays a single paged query on the
    server; a run found twice is kept once.
    """
    if not experiments:
        raise UserError("give at least one --experiment")
    combos: list[tuple[str | None, str | None, str]] = []
    tag_filters = [f"tags.`fear.sweep` = '{_quoted(s, '--sweep')}'" for s in sweeps] or [""]
    study_filters = [f"tags.`fear.study` = '{_quoted(s, '--study')}'" for s in studies] or [""]
    for dataset in datasets or [None]:
        for method in methods or [None]:
            for sweep_clause in tag_filters:
                for study_clause in study_filters:
                    extra = " and ".join(c for c in (sweep_clause, study_clause) if c)
                    combos.append((dataset, method, extra))
    seen: dict[str, Run] = {}
    for dataset, method, extra in combos:
        for run in find_runs(
            list(experiments),
            method=_quoted(method, "--method") if method else None,
            dataset=_quoted(dataset, "--dataset") if dataset else None,
            statuses=RUN_STATES,
            extra_filter=extra,
        ):
            if run.data.tags.get("fear.arch"):  # sweep parents carry no arch
                seen.setdefault(run.info.run_id, run)
    return list(seen.values())


def experiment_ids(names: Sequence[str]) -> list[str]:
    """Ids of existing experiments (a `UserError` names the first one missing)."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient()
    ids = []
    for name in names:
        found = client.get_experiment_by_name(name)
        if found is None:
            raise UserError(f"experiment {name!r} not found; check --experiment")
        ids.append(found.experiment_id)
    return ids


def identity_params(params: Mapping[str, str], method: str) -> dict[str, str]:
    """The settings that define a configuration (resolved values win over raw ones)."""
    skip = NON_IDENTITY_PARAMS | (ZEROCOST_LIST_PARAMS if method == "zerocost" else frozenset())
    keys = {k.removeprefix(RESOLVED_PREFIX) for k in params}
    return {k: run_param(params, k) or "" for k in sorted(keys) if k not in skip}


def _status(run: Run) -> str:
    """``fear.status``, except: RUNNING runs are ``running``; runs that ended without a
    result (FAILED, KILLED, or FINISHED while still tagged ``running``) are ``failed``."""
    state = run.info.status
    if state == "RUNNING":
        return "running"
    status = run.data.tags.get("fear.status", "ok")
    if state in ("FAILED", "KILLED") or status == "running":
        return "failed"
    return status


def _metric(metrics: Mapping[str, float], key: str) -> float:
    value = metrics.get(key)
    return float("nan") if value is None else float(value)


def _rows(run: Run) -> Iterable[dict[str, object]]:
    tags, metrics = run.data.tags, run.data.metrics
    method = tags.get("fear.method", "")
    params = identity_params(run.data.params, method)
    dataset = tags.get("fear.dataset") or params.get("dataset", "")
    index = tags.get("fear.arch_index", "")
    base = {
        "run_id": run.info.run_id,
        "experiment_id": run.info.experiment_id,
        "dataset": dataset,
        "method": method,
        "arch": tags.get("fear.arch", ""),
        "arch_index": int(index) if index.isdigit() else -1,
        "status": _status(run),
        "gt": _metric(metrics, "gt_test_acc"),
        "start_time": int(run.info.start_time or 0),
        "last_seen": last_sign_of_life(run),
        "sweep": tags.get("fear.sweep", ""),
        "study": tags.get("fear.study", ""),
        "trial": tags.get("fear.trial", ""),
        "superseded": bool(tags.get("fear.superseded")),
    }
    if method != "zerocost":
        config = json.dumps(params, sort_keys=True)
        yield {
            **base,
            "family": method,
            "measure": "",
            "config": config,
            "config_key": f"{method}|{config}",
            "score": _metric(metrics, "score"),
            "duration_s": _metric(metrics, "duration_s"),
        }
        return
    measures = sorted(
        key[3:] for key in metrics if key.startswith("zc/") and not key.endswith("_s")
    )
    if not measures:  # a failed zero-cost run: still counted, under its asked-for measures
        measures = [m for m in run.data.params.get("measures", "").split(",") if m]
    for measure in measures:
        config = json.dumps({**params, "measure": measure}, sort_keys=True)
        yield {
            **base,
            "family": "zerocost",
            "measure": measure,
            "config": config,
            "config_key": f"zerocost|{config}",
            "score": _metric(metrics, f"zc/{measure}"),
            "duration_s": _metric(metrics, f"zc/{measure}_s"),
        }


def runs_frame(runs: Iterable[Run], benchmark: Benchmark | None = None) -> pd.DataFrame:
    """One row per evaluation (per measure for zero-cost runs), columns `COLUMNS`.

    Ground truth ``gt`` (test accuracy in %) is the run's ``gt_test_acc``, or the
    benchmark's value when ``benchmark`` is given (NaN where the benchmark lacks the arch or
    dataset). Superseded runs (redone by a sweep) are dropped.
    """
    rows = [row for run in runs for row in _rows(run)]
    frame = pd.DataFrame(rows, columns=[*COLUMNS, "superseded"])
    frame = frame[~frame["superseded"].astype(bool)].drop(columns="superseded")
    frame = frame.reset_index(drop=True)
    if benchmark is not None and len(frame):
        frame["gt"] = benchmark_truth(frame, benchmark)
    for column in ("score", "duration_s", "gt"):
        frame[column] = frame[column].astype("float64")
    return frame


def benchmark_truth(frame: pd.DataFrame, benchmark: Benchmark) -> np.ndarray:
    """The benchmark's accuracy of every row's (arch, dataset); NaN where it has none."""
    pairs = frame[["arch", "dataset"]].drop_duplicates()
    truth = {}
    for arch, dataset in pairs.itertuples(index=False):
        value = None
        if dataset in benchmark.datasets:
            value = benchmark.accuracy(parse_arch(arch), dataset)
        truth[(arch, dataset)] = np.nan if value is None else value
    keys = zip(frame["arch"], frame["dataset"])
    return np.fromiter((truth[k] for k in keys), dtype="float64", count=len(frame))


#: Short names of settings in configuration labels (the summary table has full params).
SHORT_NAMES = {
    "batch_size": "batch",
    "epochs": "ep",
    "threshold": "thr",
    "stage1_epochs": "max ep",
    "freeze_batch_size": "freeze batch",
    "freeze_epochs": "freeze ep",
    "train_subset": "subset",
    "cells_per_stage": "N",
    "channels": "C",
}
FAMILY_NAMES = {"fear": "FEAR", "shortreg": "shortreg", "regular": "regular"}


def short_value(value: object) -> str:
    """A setting as a label shows it: 3 significant digits, ``last K`` for FEAR's unfreeze."""
    text = str(value)
    try:
        number = float(text)
    except ValueError:
        return _short_unfreeze(text)
    return text if number.is_integer() and "." not in text else f"{number:.3g}"


def _short_unfreeze(text: str) -> str:
    """``classifier,lastact,cells.16,cells.15`` → ``last 2``: the usual "last K cells" list."""
    parts = text.split(",")
    if set(parts[:2]) != {"classifier", "lastact"}:
        return text
    tail = parts[2:]
    if not all(p.startswith("cells.") and p[6:].isdigit() for p in tail):
        return text
    cells = [int(p[6:]) for p in tail]
    if not cells:
        return "head only"
    if cells != list(range(cells[0], cells[0] - len(cells), -1)):
        return text
    return f"last {len(cells)}"


def config_labels(frame: pd.DataFrame) -> dict[str, str]:
    """config_key → a short readable label naming only the settings that differ.

    ``FEAR thr=0.6``, ``shortreg batch=256 ep=10``, ``synflow``: within a method, settings
    shared by all its configurations are left out of the label.
    """
    configs = frame.drop_duplicates("config_key")[["config_key", "family", "measure", "config"]]
    labels: dict[str, str] = {}
    for family, group in configs.groupby("family", sort=True):
        settings = [json.loads(text) for text in group["config"]]
        for entry in settings:
            entry.pop("dataset", None)
            entry.pop("measure", None)
        keys = sorted({k for entry in settings for k in entry})
        varying = [k for k in keys if len({entry.get(k) for entry in settings}) > 1]
        for key, measure, entry in zip(group["config_key"], group["measure"], settings):
            parts = [
                f"{SHORT_NAMES.get(k, k)}={short_value(entry.get(k, 'unset'))}" for k in varying
            ]
            head = measure if family == "zerocost" else FAMILY_NAMES.get(family, str(family))
            labels[key] = " ".join([head, *parts])
    seen: dict[str, int] = {}
    for key, label in labels.items():  # same label, different config: make them distinct
        seen[label] = seen.get(label, 0) + 1
        if seen[label] > 1:
            labels[key] = f"{label} #{seen[label]}"
    return labels
