"""`fear-mlflow sweep` in-process on a real SQLite store: runs, parent, resume, errors, help."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
from mlflow.tracking import MlflowClient

from fear_mlflow.cli import cli, main
from tests.helpers import CONV_CELL, DEGENERATE_CELL

TINY = ["--dataset", "synthetic", "--channels", "4", "--cells-per-stage", "1", "--device", "cpu"]


def _sweep(*args: str) -> None:
    main(["sweep", "shortreg", *TINY, "--batch-size", "128", "--experiment", "sw", *args])


@pytest.fixture()
def one_thread() -> Iterator[None]:
    """``--threads 1`` sets torch's global thread count: give it back to later tests."""
    import torch

    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def test_sweep_logs_nested_runs_and_resumes(
    mlflow_store: MlflowClient, capsys: pytest.CaptureFixture[str], one_thread: object
) -> None:
    args = ("--archs", f"{CONV_CELL},{DEGENERATE_CELL}", "--grid", "epochs=1,2", "--threads", "1")
    _sweep(*args)
    out = capsys.readouterr().out
    assert "4/4 done, 0 skipped" in out
    exp = mlflow_store.get_experiment_by_name("sw").experiment_id
    runs = mlflow_store.search_runs([exp])
    parents = [r for r in runs if r.data.tags.get("fear.sweep_role") == "parent"]
    evals = [r for r in runs if "fear.method" in r.data.tags]
    assert len(parents) == 1 and len(evals) == 4
    parent = parents[0]
    sweep = parent.data.tags["fear.sweep"]
    assert parent.info.status == "FINISHED"
    assert parent.data.metrics["sweep/done"] == 4 and parent.data.metrics["sweep/total"] == 4
    assert parent.data.metrics["sweep/failed"] == 0
    assert parent.data.params["grid"] == "epochs=1,2"
    assert len({r.data.tags["fear.config_hash"] for r in evals}) == 4
    for run in evals:
        assert run.info.status == "FINISHED"
        assert run.data.tags["mlflow.parentRunId"] == parent.info.run_id
        assert run.data.tags["fear.sweep"] == sweep
        assert run.data.tags["fear.torch_threads"] == "1"  # --threads 1, said by the run
        assert run.data.params["epochs"] in ("1", "2")
    # the same command again: everything is skipped, nothing new is logged
    _sweep(*args)
    assert "4/4 done, 4 skipped" in capsys.readouterr().out
    again = mlflow_store.search_runs([exp])
    assert len(again) == 5  # same 4 evaluations + the same (reused) parent
    # another grid point only runs what is new, under the same sweep identity rules
    _sweep("--archs", CONV_CELL, "--grid", "epochs=2,3", "--threads", "1")
    assert "2/2 done, 1 skipped" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--archs", "1", "--sample", "3"], "give exactly one of --archs"),
        (["--sample", "3", "--shard", "2/2"], "--shard 2/2: need 0 <= i < N"),
        (["--sample", "3", "--grid", "epoch=1,2"], "shortreg has no option 'epoch'"),
        (["--sample", "3", "--workers", "0"], "--workers must be >= 1"),
        (["--archs", "5"], "needs a benchmark"),
    ],
)
def test_user_errors_are_one_line(
    args: list[str], message: str, capsys: pytest.CaptureFixture[str], tmp_path: object
) -> None:
    with pytest.raises(SystemExit) as caught:
        _sweep("--tracking-uri", f"sqlite:///{tmp_path}/never.db", *args)
    assert caught.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and message in err[0]


@pytest.mark.parametrize("method", ["fear", "shortreg", "regular", "zerocost"])
def test_help_explains_every_option(method: str, capsys: pytest.CaptureFixture[str]) -> None:
    main(["sweep", method, "--help"])
    text = capsys.readouterr().out
    command = cli.commands["sweep"].commands[method]  # type: ignore[attr-defined]
    for param in command.params:
        if getattr(param, "hidden", False):
            continue
        assert param.opts[0] in text, param.opts[0]
    assert f"fear-mlflow sweep {method}" in text  # an example command line
    for opt in ("--archs", "--archs-file", "--sample", "--grid", "--shard", "--workers"):
        block = re.search(rf"\n  {opt} .*?(?=\n  -|\Z)", text, re.S)
        assert block and "e.g." in block.group(0), opt


def test_mlproject_sweep_entry_point_parses() -> None:
    """MLflow shell-quotes values itself; the command must still parse as meant."""
    import shlex

    from mlflow.projects._project_spec import load_project

    entry = load_project(".").get_entry_point("sweep")
    command = entry.compute_command(
        {"method": "shortreg", "sample": "3", "grid": "batch-size=64,128 epochs=1,2",
         "epochs": "4", "eval-test": "true"},
        "/tmp",
    )  # fmt: skip
    argv = shlex.split(command)
    assert argv[:4] == ["python", "-m", "fear_mlflow", "sweep"]
    group = cli.commands["sweep"]
    ctx = group.make_context("sweep", argv[4:5] + ["--help"], resilient_parsing=True)
    shortreg = group.commands["shortreg"]  # type: ignore[attr-defined]
    with shortreg.make_context("shortreg", argv[5:], parent=ctx) as sub:
        params = sub.params
    assert params["sample"] == 3 and params["archs"] is None and params["archs_file"] is None
    assert params["grid"] == ("batch-size=64,128 epochs=1,2",)
    assert params["epochs"] == 4 and params["eval_test"] is True
    assert params["dataroot"] is None and params["sweep_name"] is None


def test_workers_hand_children_the_same_options() -> None:
    """--workers K re-runs this command K times on finer shards: same options, minus its own."""
    from fear_mlflow.workers import child_args

    command = cli.commands["sweep"].commands["fear"]  # type: ignore[attr-defined]
    given = ["--sample", "5", "--grid", "freeze-epochs=1,2", "--grid", "lr=0.1,0.05",
             "--no-nesterov", "--no-freeze", "true", "--workers", "3", "--shard", "1/2",
             "--tracking-uri", "http://u:pw@127.0.0.1:1", "--threads", "2", "--seed", "7"]  # fmt: skip
    with command.make_context("fear", list(given)) as ctx:
        args = child_args(ctx)
        original = dict(ctx.params)
    for owned in ("--workers", "--shard", "--tracking-uri", "--threads"):
        assert owned not in args
    assert "pw" not in " ".join(args)
    with command.make_context("fear", list(args)) as again:
        for key, value in again.params.items():
            if key not in ("workers", "shard", "tracking_uri", "threads"):
                assert value == original[key], key
