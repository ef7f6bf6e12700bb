"""Sweep planning without any store: archs, grid, shards, identity, hashes."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from fear_mlflow.benchmark import Benchmark
from fear_mlflow.errors import UserError
from fear_mlflow.space.arch import NUM_CELLS, arch_from_enumeration
from fear_mlflow.sweep_archs import select_archs
from fear_mlflow.sweep_grid import expand_grid, parse_grid
from fear_mlflow.sweep_plan import Shard, build_items, parse_shard, sweep_id
from fear_mlflow.tracking import EvaluationRun
from tests.helpers import CONV_CELL, DEGENERATE_CELL, tiny_context

SHORTREG_KW = {
    "batch_size": 64,
    "epochs": 1,
    "eval_test": False,
    "max_seconds": None,
    "lr": 0.1,
    "momentum": 0.9,
    "nesterov": True,
    "weight_decay": 5e-4,
    "grad_clip": 5.0,
}


def _table() -> Benchmark:
    archs = [str(arch_from_enumeration(i)) for i in range(0, 500, 5)]
    return Benchmark.from_frame(
        pd.DataFrame({"index": range(len(archs)), "arch": archs, "cifar10": 50.0})
    )


def _select(**kw: object) -> list:
    args = {"archs": None, "archs_file": None, "sample": None, "sample_seed": 0, "benchmark": None}
    return select_archs(**{**args, **kw})  # type: ignore[arg-type]


def test_shards_are_disjoint_and_cover_the_plan() -> None:
    items = list(range(23))
    shards = [Shard(i, 4) for i in range(4)]
    taken = [x for s in shards for x in s.take(items)]
    assert sorted(taken) == items
    assert len(set(taken)) == len(items)
    # --workers K refines a shard: the sub-shards split exactly that shard's items
    sub = Shard(1, 4).split(3)
    assert sorted(x for s in sub for x in s.take(items)) == Shard(1, 4).take(items)


@pytest.mark.parametrize("text", ["2/2", "-1/3", "1", "a/b", "0/0"])
def test_bad_shard_is_a_user_error(text: str) -> None:
    with pytest.raises(UserError, match="--shard"):
        parse_shard(text)


def test_grid_keys_accept_dashes_and_convert_values() -> None:
    axes = parse_grid(["batch-size=256,512", "epochs=10,20,30"], "shortreg")
    assert axes == [("batch_size", [256, 512]), ("epochs", [10, 20, 30])]
    points = expand_grid(axes)
    assert len(points) == 6 and points[0] == {"batch_size": 256, "epochs": 10}
    assert expand_grid([]) == [{}]
    assert parse_grid(["measures=synflow;snip,grasp"], "zerocost") == [
        ("measures", ["synflow", "snip,grasp"])
    ]


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("batchsize=1,2", "has no option 'batchsize'"),
        ("epochs=ten", "epochs=ten"),
        ("epochs", "expected KEY=V1,V2"),
        ("epochs=", "no values"),
    ],
)
def test_bad_grid_is_a_user_error(spec: str, message: str) -> None:
    with pytest.raises(UserError, match=message):
        parse_grid([spec], "shortreg")


def test_sample_is_seeded_uniform_without_replacement() -> None:
    first = _select(sample=50, sample_seed=3)
    assert first == _select(sample=50, sample_seed=3)
    assert first != _select(sample=50, sample_seed=4)
    assert len({str(a) for a, _ in first}) == 50
    assert all(index is None for _, index in first)  # enumeration cells, not benchmark indices
    table = _table()
    picked = _select(sample=100, sample_seed=1, benchmark=table)
    assert sorted(i for _, i in picked) == table.indices()  # all of them, each once
    assert all(table.arch(i) == a for a, i in picked)
    with pytest.raises(UserError, match="--sample must be in 1..15625"):
        _select(sample=NUM_CELLS + 1)


def test_archs_file_and_list(tmp_path: Path) -> None:
    path = tmp_path / "archs.txt"
    path.write_text(f"# paper cells\n3\n\n{CONV_CELL}  # a conv cell\n7\n3\n")
    items = _select(archs_file=str(path), benchmark=_table())
    assert [i for _, i in items] == [3, None, 7]  # duplicates dropped, order kept
    assert str(items[1][0]) == CONV_CELL
    with pytest.raises(UserError, match=r"--archs entry 2 \('5'\): arch index 5 needs a benchmark"):
        _select(archs=f"{CONV_CELL},5")
    with pytest.raises(UserError, match="exactly one of"):
        _select(archs="1", sample=3)
    with pytest.raises(UserError, match="exactly one of"):
        _select()
    with pytest.raises(UserError, match="--archs-file .*missing.txt"):
        _select(archs_file=str(tmp_path / "missing.txt"))


def test_item_hash_is_the_one_the_run_will_carry(mlflow_store: object) -> None:
    """Resume matches plan to store by fear.config_hash: both sides must compute the same."""
    archs = _select(archs=f"{CONV_CELL},{DEGENERATE_CELL}")
    grid = expand_grid(parse_grid(["epochs=1,2"], "shortreg"))
    items = build_items("shortreg", dict(SHORTREG_KW), tiny_context(), grid, archs, "fp32")
    assert len(items) == 4 and len({i.config_hash for i in items}) == 4
    for item in items:
        e = item.evaluation
        run = EvaluationRun(
            method=e.method,
            arch=str(e.arch),
            arch_index=e.arch_index,
            dataset=e.context.dataset,
            seed=e.context.seed,
            params=e.params(),
        )
        assert run.hash == item.config_hash
    assert sweep_id("shortreg", items, None) == sweep_id("shortreg", items, None)
    assert sweep_id("shortreg", items, None) != sweep_id("shortreg", items[:3], None)
    assert sweep_id("shortreg", items, "my-sweep.1") == "my-sweep.1"
    with pytest.raises(UserError, match="--sweep-name"):
        sweep_id("shortreg", items, "bad name'")


def test_grid_points_are_validated_like_the_single_command() -> None:
    archs = _select(archs=CONV_CELL)
    grid = expand_grid(parse_grid(["epochs=1,0"], "shortreg"))
    with pytest.raises(UserError, match="--epochs must be > 0"):
        build_items("shortreg", dict(SHORTREG_KW), tiny_context(), grid, archs, "fp32")
