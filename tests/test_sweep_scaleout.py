"""The issue's scale-out guarantees, end to end with real processes, PostgreSQL and `mlflow server`.

(a) SIGKILL mid-evaluation + restart: exactly one FINISHED run per evaluation, none left
RUNNING; (b) two shards against one server record every evaluation exactly once, and the
password in the tracking URL shows up nowhere; (c) the server stops and comes back during
a sweep: it finishes with nothing lost.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest
from mlflow.entities import Run
from mlflow.tracking import MlflowClient

from tests.fixtures_services import MlflowServer
from tests.helpers import CONV_CELL

pytestmark = [pytest.mark.service, pytest.mark.slow]

OTHER_CELL = "|nor_conv_1x1~0|+|skip_connect~0|nor_conv_3x3~1|+|avg_pool_3x3~0|skip_connect~1|nor_conv_1x1~2|"
TINY = [
    "--dataset", "synthetic", "--channels", "4", "--cells-per-stage", "1",
    "--device", "cpu", "--threads", "1", "--batch-size", "128",
]  # fmt: skip
PASSWORD = "s3cret-Pa55"
WAIT_S = 300.0


def _start(args: list[str], tracking_uri: str, log: Path, **env: str) -> subprocess.Popen[bytes]:
    command = [sys.executable, "-m", "fear_mlflow", "sweep", "shortreg", *TINY, *args]
    environ = {k: v for k, v in os.environ.items() if k != "MLFLOW_RUN_ID"}
    environ.update(MLFLOW_TRACKING_URI=tracking_uri, **env)
    with log.open("wb") as out:
        return subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=environ)


def _finish(proc: subprocess.Popen[bytes], log: Path) -> str:
    try:
        proc.wait(timeout=WAIT_S)
    except subprocess.TimeoutExpired:
        proc.kill()
        pytest.fail(f"sweep did not finish in {WAIT_S:.0f} s:\n{log.read_text()[-3000:]}")
    text = log.read_text()
    assert proc.returncode == 0, text[-3000:]
    return text


def _runs(client: MlflowClient, experiment: str) -> list[Run]:
    found = client.get_experiment_by_name(experiment)
    assert found is not None
    return client.search_runs([found.experiment_id], max_results=1000)


def _evaluations(runs: list[Run]) -> list[Run]:
    return [r for r in runs if "fear.method" in r.data.tags]


def _wait_for(what: str, check: Callable[[], object], proc: subprocess.Popen[bytes]) -> object:
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        if proc.poll() is not None:
            pytest.fail(f"sweep ended (rc {proc.returncode}) before {what}")
        time.sleep(0.2)
    proc.kill()
    pytest.fail(f"timed out waiting for {what}")


def _assert_exactly_once(runs: list[Run], expected: int) -> None:
    evaluations = _evaluations(runs)
    finished = Counter(
        r.data.tags["fear.config_hash"] for r in evaluations if r.info.status == "FINISHED"
    )
    assert len(finished) == expected, finished
    assert set(finished.values()) == {1}, finished
    assert [r.info.run_id for r in runs if r.info.status == "RUNNING"] == []


def test_sigkill_mid_evaluation_then_restart(postgres_uri: str, tmp_path: Path) -> None:
    experiment = f"kill-{uuid.uuid4().hex[:6]}"
    args = ["--archs", f"{CONV_CELL},{OTHER_CELL}", "--epochs", "3", "--experiment", experiment]
    client = MlflowClient(postgres_uri)
    proc = _start(args, postgres_uri, tmp_path / "first.log")

    def training_run() -> str | None:
        if client.get_experiment_by_name(experiment) is None:
            return None
        for run in _evaluations(_runs(client, experiment)):
            if run.info.status == "RUNNING" and run.data.metrics:  # an epoch is logged
                return run.info.run_id
        return None

    victim = _wait_for("an evaluation that has logged an epoch", training_run, proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert client.get_run(str(victim)).info.status == "RUNNING"  # really killed mid-run

    out = _finish(_start(args, postgres_uri, tmp_path / "second.log"), tmp_path / "second.log")
    assert "2/2 done" in out
    runs = _runs(client, experiment)
    _assert_exactly_once(runs, expected=2)
    killed = client.get_run(str(victim))
    assert killed.info.status == "KILLED"
    assert "is gone" in killed.data.tags["fear.superseded"]
    parents = [r for r in runs if r.data.tags.get("fear.sweep_role") == "parent"]
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"  # reused on restart


def test_two_shards_against_one_server(mlflow_server: MlflowServer, tmp_path: Path) -> None:
    experiment = f"shards-{uuid.uuid4().hex[:6]}"
    secret_uri = mlflow_server.url.replace("http://", f"http://sweeper:{PASSWORD}@")
    args = ["--sample", "4", "--sample-seed", "7", "--epochs", "1", "--experiment", experiment]
    logs = [tmp_path / "shard0.log", tmp_path / "shard1.log"]
    procs = [
        _start([*args, "--shard", f"{i}/2", "--tracking-uri", secret_uri], secret_uri, logs[i])
        for i in range(2)
    ]
    outputs = [_finish(proc, log) for proc, log in zip(procs, logs)]
    runs = _runs(MlflowClient(mlflow_server.url), experiment)
    _assert_exactly_once(runs, expected=4)
    evaluations = _evaluations(runs)
    assert len(evaluations) == 4  # not just one FINISHED each: one run each, full stop
    assert Counter(r.data.tags["fear.sweep_shard"] for r in evaluations) == {"0/2": 2, "1/2": 2}
    assert len({r.data.tags["fear.sweep"] for r in runs}) == 1  # both shards: one sweep
    # the password is nowhere: output, params, tags, metrics names, artifacts, server log
    for text in outputs:
        assert PASSWORD not in text and "sweeper:***@127.0.0.1" in text
    for run in runs:
        values = [*run.data.params.values(), *run.data.tags.values(), *run.data.metrics]
        assert not [v for v in values if PASSWORD in v], run.info.run_id
    for path in mlflow_server.artifacts.rglob("*"):
        assert not path.is_file() or PASSWORD.encode() not in path.read_bytes()
    assert PASSWORD not in mlflow_server.log.read_text(errors="replace")


def test_server_stops_and_returns_during_a_sweep(
    mlflow_server: MlflowServer, tmp_path: Path
) -> None:
    experiment = f"outage-{uuid.uuid4().hex[:6]}"
    args = ["--archs", f"{CONV_CELL},{OTHER_CELL}", "--grid", "epochs=1,4"]
    args += ["--experiment", experiment]
    client = MlflowClient(mlflow_server.url)
    log = tmp_path / "sweep.log"
    proc = _start(
        args, mlflow_server.url, log, FEAR_TRACKING_RETRIES="9", FEAR_TRACKING_BACKOFF="0.5"
    )

    def one_finished() -> bool:
        if client.get_experiment_by_name(experiment) is None:
            return False
        return any(r.info.status == "FINISHED" for r in _evaluations(_runs(client, experiment)))

    _wait_for("the first finished evaluation", one_finished, proc)
    mlflow_server.stop()
    time.sleep(3)  # the sweep keeps training and hits the dead server
    mlflow_server.start()
    out = _finish(proc, log)
    assert "retrying in" in out  # the outage really hit the sweep
    assert "4/4 done" in out
    _assert_exactly_once(_runs(client, experiment), expected=4)
