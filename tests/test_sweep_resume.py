"""Resume decisions and retries against real MLflow stores (SQLite here; PostgreSQL in scale-out)."""

from __future__ import annotations

import subprocess
import time

import pytest
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from fear_mlflow.sweep_archs import select_archs
from fear_mlflow.sweep_grid import expand_grid, parse_grid
from fear_mlflow.sweep_plan import build_items
from fear_mlflow.sweep_resume import plan_resume
from fear_mlflow.tracking import (
    RetryingClient,
    TrackingUnavailable,
    bound_http_retries,
    mark_superseded,
    runs_by_config_hash,
)
from tests.fixtures_services import free_port
from tests.helpers import CONV_CELL, tiny_context
from tests.test_sweep_plan import SHORTREG_KW


def _items(n: int) -> list:
    archs = select_archs(
        archs=CONV_CELL, archs_file=None, sample=None, sample_seed=0, benchmark=None
    )
    grid = expand_grid(
        parse_grid([f"epochs={','.join(str(e) for e in range(1, n + 1))}"], "shortreg")
    )
    return build_items("shortreg", dict(SHORTREG_KW), tiny_context(), grid, archs, "fp32")


def _dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def test_resume_sorts_runs_and_marks_the_dead(mlflow_store: MlflowClient) -> None:
    import socket

    client = mlflow_store
    exp = client.create_experiment("resume")
    items = _items(6)
    now = int(time.time())
    here = socket.gethostname()

    def run(item: object, status: str, started: int = now, **tags: str) -> str:
        created = client.create_run(
            exp,
            start_time=started * 1000,
            tags={
                "fear.method": "shortreg",
                "fear.dataset": "synthetic",
                "fear.config_hash": item.config_hash,  # type: ignore[attr-defined]
                **tags,
            },
        )
        if status != "RUNNING":
            client.set_terminated(created.info.run_id, status=status)
        return created.info.run_id

    finished = run(items[0], "FINISHED")
    run(items[0], "FAILED")  # an old failure next to a success: still skipped
    dead_here = run(items[1], "RUNNING", **{"fear.worker": f"{here}:{_dead_pid()}"})
    alive_elsewhere = run(
        items[2], "RUNNING", **{"fear.worker": "other-host:1", "fear.heartbeat": str(now)}
    )
    silent_elsewhere = run(
        items[3],
        "RUNNING",
        started=now - 2000,
        **{"fear.worker": "other-host:2", "fear.heartbeat": str(now - 999)},
    )
    failed = run(items[4], "FAILED")
    prior = runs_by_config_hash(client, exp, "shortreg", "synthetic")
    plan = plan_resume(items, prior, now=time.time(), heartbeat_timeout=100, sweep="s1")
    assert plan.finished == [items[0]]
    assert plan.busy == [items[2]]
    assert plan.todo == [items[1], items[3], items[4], items[5]]
    for old, why in plan.supersede:
        mark_superseded(client, old, why)
    assert client.get_run(dead_here).info.status == "KILLED"
    assert "is gone" in client.get_run(dead_here).data.tags["fear.superseded"]
    assert client.get_run(silent_elsewhere).info.status == "KILLED"
    assert "no heartbeat" in client.get_run(silent_elsewhere).data.tags["fear.superseded"]
    assert client.get_run(silent_elsewhere).data.tags["fear.status"] == "failed"
    assert client.get_run(alive_elsewhere).info.status == "RUNNING"
    assert client.get_run(failed).info.status == "FAILED"
    assert "redone by sweep s1" in client.get_run(failed).data.tags["fear.superseded"]
    assert client.get_run(finished).info.status == "FINISHED"
    # once marked, a failed run is not marked again on the next start
    prior = runs_by_config_hash(client, exp, "shortreg", "synthetic")
    again = plan_resume(items, prior, now=time.time(), heartbeat_timeout=100, sweep="s2")
    assert [r.info.run_id for r, _ in again.supersede if r.info.run_id == failed] == []


def test_unreachable_server_retries_then_one_redacted_error(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("FEAR_TRACKING_RETRIES", "3")
    monkeypatch.setenv("FEAR_TRACKING_BACKOFF", "0.05")
    monkeypatch.delenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", raising=False)
    bound_http_retries()
    uri = f"http://sweeper:s3cret@127.0.0.1:{free_port()}"
    client = RetryingClient(uri)
    started = time.monotonic()
    with pytest.raises(TrackingUnavailable) as caught:
        client.search_experiments(max_results=1)
    assert time.monotonic() - started < 20  # bounded: MLflow's own retries are off
    message = str(caught.value)
    assert "s3cret" not in message and "sweeper:***@127.0.0.1" in message
    assert "after 3 tries" in message and "re-run the same command" in message
    err = capsys.readouterr().err
    assert err.count("retrying in") == 2 and "s3cret" not in err
    # after giving up, clean-up calls fail fast instead of waiting again
    started = time.monotonic()
    with pytest.raises(TrackingUnavailable):
        client.search_experiments(max_results=1)
    assert time.monotonic() - started < 5


def test_non_transient_errors_are_not_retried(
    mlflow_store: MlflowClient, capsys: pytest.CaptureFixture[str]
) -> None:
    client = RetryingClient()
    with pytest.raises(MlflowException):
        client.get_run("0" * 32)
    assert "retrying" not in capsys.readouterr().err
