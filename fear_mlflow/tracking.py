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
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from types import TracebackType
from typing import TypeVar

import mlflow
from mlflow.entities import Metric, Param, RunStatus, RunTag
from mlflow.tracking import MlflowClient

from fear_mlflow.errors import UserError
from fear_mlflow.evaluators.result import EpochRecord, EvalResult
from fear_mlflow.store_init import first_contact

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
    # urllib takes ``user:pw@host`` for a host name; MLflow's client sends them as auth.
    url = re.sub(r"//[^/@]*@", "//", uri, count=1).rstrip("/") + "/health"
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
    if redact(resolved) != resolved:  # MLflow prints "View run at <uri>" on every run end
        os.environ["MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT"] = "true"
    if resolved.startswith(("http://", "https://")):
        _check_http_server(resolved, timeout)
    mlflow.set_tracking_uri(resolved)
    try:
        first_contact(lambda: MlflowClient(resolved).search_experiments(max_results=1))
    except Exception as exc:  # the store's own error types vary by backend
        message = redact(str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
        raise UserError(
            f"cannot use tracking store {redact(resolved)}: {message}; fix --tracking-uri "
            "/ MLFLOW_TRACKING_URI"
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


def run_experiment_name(run_id: str) -> str:
    """Where a run really is: `mlflow run` may have made it in another experiment."""
    client = MlflowClient()
    return client.get_experiment(client.get_run(run_id).info.experiment_id).name


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


# ----------------------------------------------------------------------------- sweeps
# Retries, resume lookup and stale-run marking: what a long sweep needs from the store.

#: Tries of one tracking call before a sweep gives up (env ``FEAR_TRACKING_RETRIES``).
RETRIES_ENV = "FEAR_TRACKING_RETRIES"
#: First back-off delay in seconds, doubled per try (env ``FEAR_TRACKING_BACKOFF``).
BACKOFF_ENV = "FEAR_TRACKING_BACKOFF"
DEFAULT_RETRIES = 6
DEFAULT_BACKOFF_S = 1.0
#: MLflow's own HTTP retries would multiply ours (7 tries, minutes); bounded for sweeps.
#: Its "View run at <url>" line costs a request per run and would repeat a URL's password.
HTTP_ENV_DEFAULTS = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "30",
    "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT": "true",
}
HEARTBEAT_TAG = "fear.heartbeat"
WORKER_TAG = "fear.worker"
ATTEMPT_TAG = "fear.attempt"
SUPERSEDED_TAG = "fear.superseded"


T = TypeVar("T")


class TrackingUnavailable(UserError):
    """The tracking store stayed unreachable through every retry."""


def bound_http_retries() -> None:
    """Sweep settings of MLflow's client (our bounded retries only), unless the user set them."""
    for key, value in HTTP_ENV_DEFAULTS.items():
        os.environ.setdefault(key, value)


def _env_number(name: str, default: float, cast: type) -> float:
    text = os.environ.get(name, "").strip()
    if not text:
        return default
    try:
        value = cast(text)
    except ValueError:
        raise UserError(f"{name} must be a number, got {text!r}") from None
    if value < 0 or (cast is int and value < 1):
        raise UserError(f"{name} must be {'>= 1' if cast is int else '>= 0'}, got {text!r}")
    return value


def retry_policy() -> tuple[int, float]:
    """(tries, first delay in seconds) from the environment: 6 tries over ~31 s by default."""
    tries = int(_env_number(RETRIES_ENV, DEFAULT_RETRIES, int))
    return tries, float(_env_number(BACKOFF_ENV, DEFAULT_BACKOFF_S, float))


_TRANSIENT_TEXT = (
    "API request to",  # MLflow's REST client: connection refused/reset, timeouts, 5xx
    "Connection refused",
    "connection to server",  # psycopg2
    "server closed the connection",
    "database is locked",  # SQLite with several writers
    "could not connect",
)


def is_transient(exc: BaseException) -> bool:
    """Would the same call succeed once the store is back (network, 5xx, locked/down DB)?"""
    from mlflow.exceptions import MlflowException, RestException

    if isinstance(exc, (ConnectionError, TimeoutError)):
        return True
    if isinstance(exc, RestException):
        return exc.error_code in ("TEMPORARILY_UNAVAILABLE", "INTERNAL_ERROR")
    if isinstance(exc, MlflowException):
        if exc.error_code == "TEMPORARILY_UNAVAILABLE":
            return True
        return any(text in str(exc) for text in _TRANSIENT_TEXT)
    name = type(exc).__name__
    return name in ("OperationalError", "ConnectionError", "Timeout", "ReadTimeout")


class RetryingClient:
    """An `MlflowClient` whose calls survive a tracking store that goes away for a while.

    Transient failures are retried with exponential back-off (``FEAR_TRACKING_RETRIES``
    tries, first delay ``FEAR_TRACKING_BACKOFF`` s); then `TrackingUnavailable` names the
    store (redacted). After that the client fails fast, so clean-up calls do not wait again.
    ``create_run`` with a ``fear.attempt`` tag is idempotent: a retry first looks for the
    run an earlier, unanswered try may have created.
    """

    def __init__(self, uri: str | None = None) -> None:
        self.uri = uri or mlflow.get_tracking_uri()
        self.client = MlflowClient(self.uri)
        self.tries, self.first_delay = retry_policy()
        self.broken = False

    def call(self, name: str, *args: object, **kwargs: object) -> object:
        """``MlflowClient.<name>(*args, **kwargs)`` with retries."""
        recover = self._created_by_earlier_try if name == "create_run" else None
        return self.retry(getattr(self.client, name), name, *args, recover=recover, **kwargs)

    def retry(
        self,
        func: Callable[..., T],
        what: str,
        *args: object,
        recover: Callable[..., object] | None = None,
        **kwargs: object,
    ) -> T:
        """``func(*args, **kwargs)``, retried on transient failures; ``recover`` may short-cut."""
        tries = 1 if self.broken else self.tries
        delay, waited = self.first_delay, 0.0
        for attempt in range(1, tries + 1):
            try:
                return func(*args, **kwargs)
            except Exception as exc:
                if not is_transient(exc):
                    raise
                if attempt == tries:
                    self.broken = True
                    first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
                    raise TrackingUnavailable(
                        f"tracking store {redact(self.uri)} did not answer {what} after "
                        f"{tries} tries over {waited:.0f} s ({redact(first)[:300]}); nothing "
                        "finished is lost: once the store is back, re-run the same command "
                        "to resume"
                    ) from None
            print(
                f"tracking store {redact(self.uri)} did not answer {what} "
                f"(try {attempt}/{tries}); retrying in {delay:g} s",
                file=sys.stderr,
                flush=True,
            )
            time.sleep(delay)
            waited += delay
            delay *= 2
            if recover is not None:
                found = recover(*args, **kwargs)
                if found is not None:
                    return found  # type: ignore[return-value]
        raise AssertionError("unreachable")

    def wait_until_back(self) -> None:
        """Block (bounded, with back-off) until the store answers again."""
        self.call("search_experiments", max_results=1)

    def _created_by_earlier_try(self, experiment: str, *_: object, **kw: object) -> object:
        attempt = dict(kw.get("tags") or {}).get(ATTEMPT_TAG)  # type: ignore[call-overload]
        if not attempt:
            return None
        try:
            runs = self.client.search_runs([experiment], f"tags.`{ATTEMPT_TAG}` = '{attempt}'")
        except Exception:
            return None
        return runs[0] if runs else None

    def __getattr__(self, name: str) -> object:
        if not callable(getattr(self.client, name)):
            return getattr(self.client, name)
        return lambda *args, **kwargs: self.call(name, *args, **kwargs)


def worker_id() -> str:
    """``host:pid`` of this process: lets a restart on the same host spot a dead worker."""
    import socket

    return f"{socket.gethostname()}:{os.getpid()}"


def heartbeat_tags() -> dict[str, str]:
    """Tags saying "this worker is alive now"; refreshed while a run makes progress."""
    return {HEARTBEAT_TAG: str(int(time.time())), WORKER_TAG: worker_id()}


def search_all_runs(
    client: RetryingClient | MlflowClient, experiment_ids: list[str], filter_string: str
) -> list[mlflow.entities.Run]:
    """Every run matching ``filter_string`` in any status, in pages of 5,000 (one query each)."""
    from mlflow.entities import ViewType

    runs: list[mlflow.entities.Run] = []
    token = None
    while True:
        page = client.search_runs(
            experiment_ids,
            filter_string,
            run_view_type=ViewType.ACTIVE_ONLY,
            max_results=5000,
            page_token=token,
        )
        runs.extend(page)  # type: ignore[arg-type]
        token = page.token  # type: ignore[attr-defined]
        if not token:
            return runs


def runs_by_config_hash(
    client: RetryingClient | MlflowClient, experiment_id_: str, method: str, dataset: str
) -> dict[str, list[mlflow.entities.Run]]:
    """Resume lookup: every evaluation run of ``method`` on ``dataset``, grouped by hash.

    One paged search for a whole sweep, so re-checking 1,000 finished evaluations costs
    seconds, not 1,000 round trips.
    """
    found = search_all_runs(
        client,
        [experiment_id_],
        f"tags.`fear.method` = '{method}' and tags.`fear.dataset` = '{dataset}'",
    )
    grouped: dict[str, list[mlflow.entities.Run]] = {}
    for run in found:
        key = run.data.tags.get("fear.config_hash")
        if key:
            grouped.setdefault(key, []).append(run)
    return grouped


def last_sign_of_life(run: mlflow.entities.Run) -> float:
    """Seconds since the epoch of the run's latest heartbeat (its start when it has none)."""
    beat = run.data.tags.get(HEARTBEAT_TAG, "")
    started = (run.info.start_time or 0) / 1000
    return max(float(beat), started) if beat.isdigit() else started


def mark_superseded(
    client: RetryingClient | MlflowClient, run: mlflow.entities.Run, why: str
) -> None:
    """Say on a dead or failed run that a new run redoes it; a RUNNING one becomes KILLED."""
    tags = {SUPERSEDED_TAG: why[:500]}
    if run.info.status == "RUNNING":
        tags["fear.status"] = "failed"
        tags["fear.error"] = why[:500]
    client.log_batch(run.info.run_id, tags=[RunTag(k, v) for k, v in tags.items()])
    if run.info.status == "RUNNING":
        client.set_terminated(run.info.run_id, status="KILLED")
