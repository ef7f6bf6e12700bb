"""The CLI: what users see for good input, and one clear line for each kind of bad input."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from fear_mlflow.cli import main
from tests.helpers import CONV_CELL, TINY, write_cifar10

BEST = "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_1x1~1|nor_conv_3x3~2|"
TINY_ARGS = ["--channels", str(TINY["channels"]), "--cells-per-stage", str(TINY["cells_per_stage"])]


@pytest.fixture()
def benchmark_csv(tmp_path: Path) -> Path:
    path = tmp_path / "tss.csv"
    path.write_text(
        "index,arch,cifar10,cifar100,ImageNet16-120\n"
        f"0,{CONV_CELL},85.86,52.91,26.63\n"
        f"1,{BEST},94.37,73.51,47.31\n"
    )
    return path


def run_cli(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    try:
        main(args)
        code = 0
    except SystemExit as exc:
        code = int(exc.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_line_error(code: int, err: str, *fragments: str) -> None:
    assert code != 0
    lines = [line for line in err.splitlines() if line.strip() and "INFO" not in line]
    assert len(lines) == 1, err
    assert lines[0].startswith("error: ")
    assert "Traceback" not in err
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def test_arch_show_prints_everything(
    benchmark_csv: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run_cli(["arch", "show", "1", "--benchmark", str(benchmark_csv)], capsys)
    assert code == 0
    assert BEST in out
    assert "index       1" in out
    assert "94.37" in out and "73.51" in out
    assert "degenerate  no" in out
    code, out, _ = run_cli(
        ["arch", "show", "|none~0|+|none~0|none~1|+|none~0|none~1|none~2|"], capsys
    )
    assert "73306" in out and "degenerate  yes" in out


def test_data_check_reports_split_sizes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write_cifar10(tmp_path)
    code, out, _ = run_cli(
        ["data", "check", "--dataset", "cifar10", "--dataroot", str(tmp_path)], capsys
    )
    assert code == 0
    assert "20" in out and "3" in out and "10" in out


def test_fear_command_runs_and_records(
    tmp_path: Path, mlflow_store: MlflowClient, capsys: pytest.CaptureFixture[str]
) -> None:
    uri = mlflow_store.tracking_uri
    code, out, err = run_cli(
        [
            "fear",
            "--dataset",
            "synthetic",
            "--arch",
            CONV_CELL,
            *TINY_ARGS,
            "--threshold",
            "0.3",
            "--batch-size",
            "64",
            "--stage1-epochs",
            "5",
            "--freeze-epochs",
            "1",
            "--tracking-uri",
            uri,
            "--experiment",
            "cli",
        ],
        capsys,
    )
    assert code == 0, err
    assert "status ok" in out
    runs = mlflow_store.search_runs([mlflow_store.get_experiment_by_name("cli").experiment_id])
    assert len(runs) == 1 and runs[0].info.status == "FINISHED"


@pytest.mark.parametrize(
    ("args", "fragments"),
    [
        (
            ["fear", "--arch", "|conv_9x9~0|+|none~0|none~1|+|none~0|none~1|none~2|"],
            ["unknown op 'conv_9x9'", "nor_conv_3x3"],
        ),
        (["fear", "--arch", "13714"], ["--benchmark", "FEAR_BENCHMARK"]),
        (["fear", "--threshold", "0"], ["--threshold", "(0, 1]"]),
        (["fear", "--threshold", "1.5"], ["--threshold", "(0, 1]"]),
        (["fear", "--threshold", "high"], ["--threshold"]),
        (["fear", "--batch-size", "-8"], ["--batch-size", "> 0"]),
        (["fear", "--freeze-batch-size", "0"], ["--freeze-batch-size"]),
        (["fear", "--unfreeze", "cells.40"], ["cells.40"]),
        (["shortreg", "--epochs", "0"], ["--epochs"]),
        (["fear", "--train-subset", "-1"], ["--train-subset"]),
        (["fear", "--dataset", "mnist"], ["mnist", "cifar10"]),
        (["zerocost", "--measures", "synflow,magic"], ["magic", "grad_norm"]),
        (["fear", "--device", "tpu"], ["--device"]),
        (["fear", "--no-such-option"], ["no-such-option"]),
    ],
)
def test_bad_input_is_one_clear_line(
    args: list[str],
    fragments: list[str],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("FEAR_BENCHMARK", raising=False)
    code, _, err = run_cli([*args, "--tracking-uri", f"sqlite:///{tmp_path}/m.db"], capsys)
    assert_one_line_error(code, err, *fragments)
    assert not (tmp_path / "m.db").exists()  # nothing was opened or recorded


def test_index_out_of_range(benchmark_csv: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run_cli(["arch", "show", "99", "--benchmark", str(benchmark_csv)], capsys)
    assert_one_line_error(code, err, "99", "out of range")


def test_malformed_benchmark(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text("id,cell\n1,foo\n")
    code, _, err = run_cli(["arch", "show", "1", "--benchmark", str(bad)], capsys)
    assert_one_line_error(code, err, str(bad), "index, arch")


def test_missing_dataset_files(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run_cli(
        ["data", "check", "--dataset", "cifar10", "--dataroot", str(tmp_path)], capsys
    )
    assert_one_line_error(code, err, str(tmp_path / "cifar-10-batches-py"), "cifar10_from_jpeg.py")


def test_unreachable_tracking_server_before_training(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run_cli(
        [
            "fear",
            "--dataset",
            "synthetic",
            *TINY_ARGS,
            "--tracking-uri",
            "http://admin:hunter2@127.0.0.1:9",
        ],
        capsys,
    )
    assert_one_line_error(code, err, "unreachable", "127.0.0.1:9")
    assert "hunter2" not in err


def test_bad_input_leaves_existing_runs_intact(
    mlflow_store: MlflowClient, capsys: pytest.CaptureFixture[str]
) -> None:
    uri = mlflow_store.tracking_uri
    ok = [
        "fear",
        "--dataset",
        "synthetic",
        "--arch",
        CONV_CELL,
        *TINY_ARGS,
        "--threshold",
        "0.3",
        "--batch-size",
        "64",
        "--stage1-epochs",
        "3",
        "--freeze-epochs",
        "1",
        "--tracking-uri",
        uri,
        "--experiment",
        "keep",
    ]
    assert run_cli(ok, capsys)[0] == 0
    exp = mlflow_store.get_experiment_by_name("keep").experiment_id
    before = mlflow_store.search_runs([exp])[0]
    code, _, err = run_cli([*ok, "--threshold", "2"], capsys)
    assert_one_line_error(code, err, "--threshold")
    after = mlflow_store.search_runs([exp])
    assert len(after) == 1
    assert after[0].info.run_id == before.info.run_id
    assert after[0].data.metrics == before.data.metrics
    assert after[0].info.status == "FINISHED"


def test_console_script_help_and_error_exit_codes(tmp_path: Path) -> None:
    """As a user's shell sees it: a real process, exit codes, no traceback."""
    help_run = subprocess.run(
        [sys.executable, "-m", "fear_mlflow", "--help"], capture_output=True, text=True, check=False
    )
    assert help_run.returncode == 0
    for command in ("fear", "shortreg", "regular", "zerocost", "arch", "data", "benchmark"):
        assert command in help_run.stdout
    bad = subprocess.run(
        [sys.executable, "-m", "fear_mlflow", "arch", "show", "|x~0|"],
        capture_output=True,
        text=True,
        check=False,
        cwd=tmp_path,
    )
    assert bad.returncode == 2
    assert bad.stderr.startswith("error: ") and "Traceback" not in bad.stderr


@pytest.mark.parametrize("name", ["fear", "shortreg", "regular", "zerocost", "tune"])
def test_mlproject_entry_points_parse_with_their_defaults(name: str, tmp_path: Path) -> None:
    """`mlflow run . -e NAME` builds its command with MLflow's own quoting; it must parse."""
    import shlex

    from mlflow.projects._project_spec import load_project

    from fear_mlflow.cli import cli

    entry = load_project(str(Path(__file__).resolve().parents[1])).get_entry_point(name)
    required = {"study_name": "s"} if name == "tune" else {}
    argv = shlex.split(entry.compute_command(required, str(tmp_path)))
    assert argv[:4] == ["python", "-m", "fear_mlflow", name]
    command = cli.commands[name]
    with command.make_context(name, argv[4:]) as ctx:  # raises on any stray argument
        params = ctx.params
    if name != "tune":
        assert params["arch"] == BEST and params["dataset"] == "cifar10"
        assert params["dataroot"] in (None, "") and params["benchmark"] in (None, "")
    if name == "fear":
        assert params["freeze_batch_size"] == 512 and params["freeze_epochs"] == 5
        assert params["batch_size"] == 256 and params["stage1_epochs"] == 200


def test_attached_run_reports_the_experiment_it_is_in(
    mlflow_store: MlflowClient, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Under `mlflow run --experiment-name X` the run lives in X, whatever --experiment says."""
    created = mlflow_store.create_run(mlflow_store.create_experiment("made-by-mlflow-run"))
    monkeypatch.setenv("MLFLOW_RUN_ID", created.info.run_id)
    code, out, _ = run_cli(
        ["zerocost", "--dataset", "synthetic", "--arch", CONV_CELL, *TINY_ARGS,
         "--measures", "params", "--tracking-uri", mlflow_store.tracking_uri],
        capsys,
    )  # fmt: skip
    assert code == 0
    assert f"MLflow run {created.info.run_id} in experiment 'made-by-mlflow-run'" in out
    assert mlflow_store.get_run(created.info.run_id).info.status == "FINISHED"
