"""`report` against a real `mlflow server`: it must find exactly the evaluation runs, per REST.

The server runs on 127.0.0.1 (free port) with a sqlite backend and proxied artifacts; runs are
written with the tool over HTTP. Outside CI a server that cannot start skips with the reason;
under ``CI=true`` it fails.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from fear_mlflow.benchmark import Benchmark
from fear_mlflow.cli import main
from fear_mlflow.config import ShortregSettings, ZerocostSettings
from fear_mlflow.data.datasets import load_dataset
from fear_mlflow.device import resolve_device
from fear_mlflow.runner import Evaluation, run_tracked
from fear_mlflow.tracking import connect
from tests.report_fixtures import CONTEXT, INDICES, TRAIN_SUBSET, truth_table

START_S = 120.0
EXPERIMENT = "server-report"
OTHER_EXPERIMENT = "server-other"


def missing(reason: str) -> None:
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"CI=true and mlflow server is unusable: {reason}")
    pytest.skip(reason)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`mlflow server` with a sqlite backend store and served artifacts; yields its URL."""
    root = tmp_path_factory.mktemp("report-server")
    port = free_port()
    log = (root / "server.log").open("wb")
    command = [
        str(Path(sys.executable).with_name("mlflow")), "server",
        "--backend-store-uri", f"sqlite:///{root / 'mlflow.db'}",
        "--artifacts-destination", str(root / "artifacts"),
        "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
    ]  # fmt: skip
    proc = subprocess.Popen(
        command, cwd=root, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + START_S
        while not healthy(url):
            if proc.poll() is not None:
                missing(f"mlflow server exited: {(root / 'server.log').read_text()[-1500:]}")
            if time.monotonic() > deadline:
                missing(f"mlflow server did not answer /health within {START_S:.0f} s")
            time.sleep(0.3)
        yield url
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, 15)
            proc.wait(timeout=30)
        log.close()


def healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(url + "/health", timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


def rest(url: str, endpoint: str, body: dict[str, object] | None = None) -> dict:
    """One MLflow REST call (GET with query, or POST with a JSON body)."""
    if body is None:
        request = urllib.request.Request(f"{url}/api/2.0/mlflow/{endpoint}")
    else:
        request = urllib.request.Request(
            f"{url}/api/2.0/mlflow/{endpoint}",
            data=json.dumps(body).encode(),
            headers={"Content-Type": "application/json"},
        )
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


def search(url: str, experiment_id: str, filter_string: str) -> list[dict]:
    runs, token = [], None
    while True:
        body: dict[str, object] = {
            "experiment_ids": [experiment_id],
            "filter": filter_string,
            "max_results": 100,
        }
        if token:
            body["page_token"] = token
        page = rest(url, "runs/search", body)
        runs.extend(page.get("runs", []))
        token = page.get("next_page_token")
        if not token:
            return runs


def write_runs(benchmark: Benchmark, experiment: str, count: int) -> set[str]:
    """Zero-cost and shortreg evaluations with the tool, over HTTP."""
    data = load_dataset("synthetic", train_subset=TRAIN_SUBSET, seed=CONTEXT.seed)
    device = resolve_device("cpu")
    ids = set()
    settings = [
        ("zerocost", ZerocostSettings(batch_size=32, measures=("synflow", "params"))),
        ("shortreg", ShortregSettings(batch_size=64, epochs=1)),
    ]
    for method, setting in settings:
        for index in INDICES[:count]:
            cell = benchmark.arch(index)
            evaluation = Evaluation(method, setting, CONTEXT, cell, index)
            run_id, _ = run_tracked(
                evaluation, data, device, benchmark=benchmark, experiment=experiment
            )
            ids.add(run_id)
    return ids


def test_report_finds_exactly_the_evaluation_runs(
    server: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import torch

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_RUN_ID", raising=False)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", server)
    connect(server)
    benchmark = truth_table(tmp_path / "truth.csv")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        ours = write_runs(benchmark, EXPERIMENT, 3)
        write_runs(benchmark, OTHER_EXPERIMENT, 1)  # must not be found
    finally:
        torch.set_num_threads(threads)
    out = tmp_path / "report"
    main(["report", "--experiment", EXPERIMENT, "--out", str(out), "--no-figures"])

    experiment_id = rest(
        server, "experiments/get-by-name?experiment_name=" + urllib.parse.quote(EXPERIMENT)
    )["experiment"]["experiment_id"]
    evaluations = search(server, experiment_id, "tags.`fear.method` != ''")
    by_rest = {run["info"]["run_id"] for run in evaluations}
    assert by_rest == ours

    (report_run,) = search(server, experiment_id, "tags.`fear.report` = 'report'")
    run_id = report_run["info"]["run_id"]
    metrics = {m["key"]: m["value"] for m in report_run["data"]["metrics"]}
    assert metrics["n_runs"] == len(ours)
    assert metrics["n_configurations"] == 3  # synflow, params, shortreg
    listed = rest(server, f"artifacts/list?run_id={run_id}")
    assert {"report.json", "summary.csv", "evaluations.csv"} <= {f["path"] for f in listed["files"]}
    query = urllib.parse.urlencode({"path": "report.json", "run_uuid": run_id})
    with urllib.request.urlopen(f"{server}/get-artifact?{query}", timeout=30) as response:
        logged = json.loads(response.read())
    assert set(logged["runs"]) == ours
