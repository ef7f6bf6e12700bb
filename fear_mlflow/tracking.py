"""MLflow side of an evaluation: the run schema of DESIGN.md, and nothing about training.

One evaluation = one run with tags ``fear.*``, the method's settings as params, per-epoch
metrics (``stage1/train_top1`` …, step = epoch) logged as they happen, and summary
metrics (``score``, ``duration_s``, ``wall_s``, ``gt_test_acc`` …) at the end.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from types import TracebackType

import mlflow
from mlflow.entities import Metric, Param, RunStatus, RunTag
from mlflow.tracking import MlflowClient

from fear_mlflow.errors import UserError
from fear_mlflow.evaluators.result import EpochRecord, EvalResult

DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"
DEFAULT_EXPERIMENT = "fear-mlflow"
TAG_PREFIX = "fear."
#: Suffix for a resolved value when `mlflow run` already logged the raw one (e.g. ``auto``).
RESOLVED_PREFIX = "resolved."

_PASSWORD_IN_URL = re.compile(
    r"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.\-]*://)(?P<user>[^:/@\s]*):(?P<pw>[^@/\s]+)@"
)


def redact(text: str) -> str:
    """Hide passwords in every URL of ``text`` (``postgresql://u:***@host``)."""
    return _PASSWORD_IN_URL.sub(lambda m: f"{m['scheme']}{m['user']}:***@", text)


def resolve_tracking_uri(uri: str | None) -> str:
    """``--tracking-uri``, else ``MLFLOW_TRACKING_URI``, else the local store in the cwd."""
    return uri or os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_TRACKING_URI


def _check_http_server(uri: str, timeout: float) -> None:
    url = uri.rstrip("/") + "/health"
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310
            response.read()
    except urllib.error.HTTPError:
        return  # the server answered; it may just lack /health (e.g. behind a proxy)
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise UserError(
            f"tracking server {redact(uri)} is unreachable ({reason}); start it "
            "(e.g. `mlflow server --host 127.0.0.1 --port 5000`) or fix --tracking-uri / "
            "MLFLOW_TRACKING_URI"
        ) from None


def connect(uri: str | None = None, *, timeout: float = 5.0) -> str:
    """Point MLflow at the store and prove it answers, before any training starts."""
    resolved = resolve_tracking_uri(uri)
    if resolved.startswith(("http://", "https://")):
        _check_http_server(resolved, timeout)
    mlflow.set_tracking_uri(resolved)
    try:
        MlflowClient(resolved).search_experiments(max_results=1)
    except Exception as exc:  # the store's own error types vary by backend
        message = redact(str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
        raise UserError(
            f"cannot use tracking store {redact(resolved)}: {message}; fix --tracking-uri / "
            "MLFLOW_TRACKING_URI"
        ) from None
    return resolved


def experiment_id(name: str) -> str:
    """Id of experiment ``name``, created when missing (race-safe for parallel workers)."""
    client = MlflowClient()
    found = client.get_experiment_by_name(name)
    if found is not None:
        if found.lifecycle_stage == "deleted":
            raise UserError(
                f"experiment {name!r} is deleted; restore it (`mlflow experiments restore`) "
                "or pick another --experiment"
            )
        return found.experiment_id
    try:
        return client.create_experiment(name)
    except Exception:
        found = client.get_experiment_by_name(name)
        if found is None:
            raise
        return found.experiment_id


def config_hash(
    method: str, params: Mapping[str, object], arch: str, dataset: str, seed: int
) -> str:
    """Identity of an evaluation: method + settings + arch + dataset + seed."""
    payload = json.dumps(
        {
            "method": method,
            "params": {k: str(v) for k, v in sorted(params.items())},
            "arch": arch,
            "dataset": dataset,
            "seed": seed,
        },
        sort_keys=True,
    )
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def run_param(params: Mapping[str, str], key: str) -> str | None:
    """A run's value for ``key``, preferring the resolved one over `mlflow run`'s raw one."""
    return params.get(RESOLVED_PREFIX + key, params.get(key))


def _as_param(value: object) -> str:
    return "" if value is None else str(value)


class EvaluationRun:
    """Context manager: one MLflow run for one evaluation.

    Attaches to the run that `mlflow run` created (``MLFLOW_RUN_ID``) unless a parent run
    is given or ``attach`` is false; otherwise creates a run in ``experiment``. An
    exception inside the block marks the run FAILED with ``fear.status=failed``.
    """

    def __init__(
        self,
        *,
        method: str,
        arch: str,
        arch_index: int | None,
        dataset: str,
        seed: int,
        params: Mapping[str, object],
        experiment: str = DEFAULT_EXPERIMENT,
        tags: Mapping[str, str] | None = None,
        parent_run_id: str | None = None,
        attach: bool = True,
        run_name: str | None = None,
    ) -> None:
        self.method = method
        self.params = {k: _as_param(v) for k, v in params.items()}
        self.hash = config_hash(method, params, arch, dataset, seed)
        self.tags = {
            "fear.method": method,
            "fear.dataset": dataset,
            "fear.arch": arch,
            "fear.config_hash": self.hash,
            "fear.status": "running",
            **({"fear.arch_index": str(arch_index)} if arch_index is not None else {}),
            **(tags or {}),
        }
        if parent_run_id is not None:
            self.tags["mlflow.parentRunId"] = parent_run_id
        self.experiment = experiment
        self.parent_run_id = parent_run_id
        self.attach = attach and parent_run_id is None
        short = f"#{arch_index}" if arch_index is not None else arch[:24]
        self.run_name = run_name or f"{method} {short} {dataset}"
        self.client = MlflowClient()
        self.run_id: str = ""
        self._started = 0.0

    def __enter__(self) -> EvaluationRun:
        self._started = time.time()
        existing = os.environ.get("MLFLOW_RUN_ID") if self.attach else None
        if existing:
            run = self.client.get_run(existing)
            self.run_id = run.info.run_id
            already = run.data.params
        else:
            run = self.client.create_run(
                experiment_id(self.experiment), run_name=self.run_name, tags=self.tags
            )
            self.run_id = run.info.run_id
            already = {}
        params = []
        for key, value in self.params.items():
            if key not in already:
                params.append(Param(key, value))
            elif already[key] != value:
                params.append(Param(RESOLVED_PREFIX + key, value))
        self.client.log_batch(
            self.run_id,
            params=params,
            tags=[RunTag(k, v) for k, v in self.tags.items()] if existing else [],
        )
        return self

    def log_epoch(self, record: EpochRecord) -> None:
        """Per-epoch metrics as they happen (step = epoch)."""
        now = int(time.time() * 1000)
        metrics = [
            Metric(f"{record.stage}/{key}", float(value), now, record.epoch)
            for key, value in record.metrics.items()
        ]
        self.client.log_batch(self.run_id, metrics=metrics)

    def log_result(self, result: EvalResult, gt_test_acc: float | None = None) -> None:
        """Summary metrics and the final status tag."""
        now = int(time.time() * 1000)
        summary = {"score": result.score, "duration_s": result.duration_s, "wall_s": result.wall_s}
        summary.update(result.summary)
        if gt_test_acc is not None:
            summary["gt_test_acc"] = gt_test_acc
        metrics = [Metric(k, float(v), now, 0) for k, v in summary.items()]
        self.client.log_batch(
            self.run_id, metrics=metrics, tags=[RunTag("fear.status", result.status)]
        )

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is None:
            status = RunStatus.to_string(RunStatus.FINISHED)
        elif issubclass(exc_type, KeyboardInterrupt):
            status = RunStatus.to_string(RunStatus.KILLED)
        else:
            status = RunStatus.to_string(RunStatus.FAILED)
        try:
            if exc_type is not None:
                self.client.set_tag(self.run_id, "fear.status", "failed")
                self.client.set_tag(self.run_id, "fear.error", redact(str(exc))[:500])
            self.client.set_terminated(self.run_id, status=status)
        except Exception:
            if exc_type is None:
                raise


def find_runs(
    experiments: list[str],
    *,
    method: str | None = None,
    dataset: str | None = None,
    statuses: tuple[str, ...] = ("FINISHED",),
    extra_filter: str = "",
) -> list[mlflow.entities.Run]:
    """Evaluation runs (those tagged ``fear.method``) of the named experiments."""
    client = MlflowClient()
    ids = []
    for name in experiments:
        found = client.get_experiment_by_name(name)
        if found is None:
            raise UserError(f"experiment {name!r} not found in {redact(mlflow.get_tracking_uri())}")
        ids.append(found.experiment_id)
    clauses = ["tags.`fear.method` != ''"]
    if method:
        clauses.append(f"tags.`fear.method` = '{method}'")
    if dataset:
        clauses.append(f"tags.`fear.dataset` = '{dataset}'")
    if extra_filter:
        clauses.append(extra_filter)
    runs: list[mlflow.entities.Run] = []
    token = None
    while True:
        page = client.search_runs(ids, " and ".join(clauses), max_results=5000, page_token=token)
        runs.extend(r for r in page if r.info.status in statuses)
        token = page.token
        if not token:
            return runs
