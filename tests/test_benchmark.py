"""Ground-truth tables: CSV/Parquet/NATS-archive loading, lookups, and every bad-file error.

Fixtures are written here in the exact on-disk formats (never read from ../shared), so
the suite runs anywhere; one optional test checks the real table when it is present.
"""

from __future__ import annotations

import bz2
import os
import pickle
import re
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from fear_mlflow import benchmark as bm
from fear_mlflow.benchmark import (
    DATASETS,
    Benchmark,
    load_benchmark,
    resolve_arch,
    write_benchmark_csv,
)
from fear_mlflow.errors import UserError
from fear_mlflow.space.arch import parse_arch

A0 = "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_1x1~1|+|skip_connect~0|nor_conv_3x3~1|none~2|"
A1 = "|avg_pool_3x3~0|+|skip_connect~0|nor_conv_1x1~1|+|none~0|skip_connect~1|avg_pool_3x3~2|"
A2 = "|none~0|+|none~0|none~1|+|none~0|none~1|none~2|"
A3 = "|nor_conv_1x1~0|+|nor_conv_3x3~0|skip_connect~1|+|nor_conv_3x3~0|avg_pool_3x3~1|none~2|"
NOT_LISTED = "|skip_connect~0|+|skip_connect~0|skip_connect~1|+|skip_connect~0|none~1|none~2|"

CSV_TEXT = (
    "index,arch,cifar10,cifar100,ImageNet16-120\n"
    f"0,{A0},93.1200,69.8467,41.5111\n"
    f"1,{A1},86.4033,57.2100,27.9333\n"
    f"2,{A2},10.0000,1.0000,0.8333\n"
    f"7,{A3},90.5567,64.0133,36.2000\n"
)
REAL_CSV = Path(__file__).resolve().parents[2] / "shared/data/natsbench/tss_test_accuracy_200ep.csv"


@pytest.fixture(autouse=True)
def _fresh_cache(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test sees an empty load cache and no FEAR_BENCHMARK from the caller's shell."""
    monkeypatch.setattr(bm, "_CACHE", {})
    monkeypatch.delenv("FEAR_BENCHMARK", raising=False)


@pytest.fixture
def csv_path(tmp_path: Path) -> Path:
    path = tmp_path / "gt.csv"
    path.write_text(CSV_TEXT)
    return path


def write(tmp_path: Path, text: str, name: str = "t.csv") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def load_error(path: os.PathLike[str] | str) -> str:
    with pytest.raises(UserError) as info:
        load_benchmark(path)
    return str(info.value)


# ----------------------------------------------------------------- CSV and Parquet


def test_csv_lookups(csv_path: Path) -> None:
    bench = load_benchmark(str(csv_path))
    assert bench is not None
    assert bench.source == str(csv_path)
    assert len(bench) == 4
    assert bench.datasets == DATASETS
    assert bench.indices() == [0, 1, 2, 7]
    assert str(bench.arch(7)) == A3
    assert bench.arch(7) == parse_arch(A3)
    assert bench.index(parse_arch(A1)) == 1
    assert bench.index(parse_arch(NOT_LISTED)) is None
    assert bench.accuracy(0, "cifar10") == pytest.approx(93.12)
    assert bench.accuracy(parse_arch(A1), "ImageNet16-120") == pytest.approx(27.9333)
    assert bench.accuracy(parse_arch(NOT_LISTED), "cifar10") is None


def test_parquet_matches_csv(tmp_path: Path, csv_path: Path) -> None:
    pytest.importorskip("pyarrow")
    path = tmp_path / "gt.parquet"
    pd.read_csv(csv_path).to_parquet(path, index=False)
    bench = load_benchmark(path)
    assert bench is not None
    assert bench.indices() == [0, 1, 2, 7]
    assert str(bench.arch(2)) == A2
    assert bench.accuracy(7, "cifar100") == pytest.approx(64.0133)
    # A frame saved with `index` as its row index still loads.
    other = tmp_path / "indexed.parquet"
    pd.read_csv(csv_path).set_index("index").to_parquet(other)
    assert load_benchmark(other).accuracy(1, "cifar10") == pytest.approx(86.4033)


def test_out_of_range_and_missing_index(csv_path: Path) -> None:
    bench = load_benchmark(csv_path)
    with pytest.raises(
        UserError, match=rf"index 99 is out of range 0\.\.7 of benchmark {csv_path}"
    ):
        bench.arch(99)
    with pytest.raises(UserError, match="out of range 0..7"):
        bench.accuracy(-1, "cifar10")
    with pytest.raises(UserError, match="index 5 is not listed"):
        bench.arch(5)


def test_unknown_dataset_lists_the_known_ones(csv_path: Path) -> None:
    bench = load_benchmark(csv_path)
    with pytest.raises(UserError) as info:
        bench.accuracy(0, "cifar-10")
    assert "'cifar-10'" in str(info.value)
    assert "cifar10, cifar100, ImageNet16-120" in str(info.value)


def test_extra_datasets_partial_columns_and_rows_without_index(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        f"index,arch,digits,cifar10\n3,{A0},97.5,\n,{A1},88.25,91.0\n",
    )
    bench = load_benchmark(path)
    assert bench.datasets == ("digits", "cifar10")
    assert bench.indices() == [3]
    assert bench.accuracy(3, "digits") == pytest.approx(97.5)
    assert bench.accuracy(3, "cifar10") is None  # empty cell = unknown
    a1 = parse_arch(A1)
    assert bench.index(a1) is None
    assert bench.accuracy(a1, "digits") == pytest.approx(88.25)
    frame = bench.to_frame()
    assert list(frame.columns) == ["index", "arch", "digits", "cifar10"]
    assert frame["index"].isna().tolist() == [False, True]
    no_index = Benchmark.from_frame(frame.iloc[1:])
    with pytest.raises(UserError, match="lists no indices"):
        no_index.arch(0)


def test_non_canonical_arch_strings_are_canonicalised(tmp_path: Path) -> None:
    path = write(tmp_path, f'index,arch,cifar10\n4,"{A0}  ",90.0\n')
    bench = load_benchmark(path)
    assert bench.index(parse_arch(A0)) == 4
    assert bench.to_frame()["arch"].tolist() == [A0]


def test_to_frame_is_a_copy(csv_path: Path) -> None:
    bench = load_benchmark(csv_path)
    frame = bench.to_frame()
    assert list(frame.columns) == ["index", "arch", *DATASETS]
    assert frame["index"].dtype == np.int64
    frame.loc[0, "cifar10"] = 0.0
    assert bench.accuracy(0, "cifar10") == pytest.approx(93.12)


def test_from_frame_accepts_arch_objects() -> None:
    frame = pd.DataFrame({"index": [5], "arch": [parse_arch(A3)], "digits": [80.0]})
    bench = Benchmark.from_frame(frame)
    assert str(bench.arch(5)) == A3


# ------------------------------------------------------------ env var and caching


def test_env_var_and_none(monkeypatch: pytest.MonkeyPatch, csv_path: Path) -> None:
    assert load_benchmark() is None
    monkeypatch.setenv("FEAR_BENCHMARK", str(csv_path))
    bench = load_benchmark()
    assert bench is not None and bench.source == str(csv_path)
    assert bench.accuracy(1, "cifar100") == pytest.approx(57.21)
    monkeypatch.setenv("FEAR_BENCHMARK", str(csv_path.parent / "nope.csv"))
    with pytest.raises(UserError, match="FEAR_BENCHMARK"):
        load_benchmark()


def test_cache_is_per_path_and_version(csv_path: Path) -> None:
    first = load_benchmark(csv_path)
    assert load_benchmark(str(csv_path)) is first
    csv_path.write_text(CSV_TEXT.replace("93.1200", "93.5"))
    second = load_benchmark(csv_path)
    assert second is not first
    assert second.accuracy(0, "cifar10") == pytest.approx(93.5)


# ------------------------------------------------------------------ resolve_arch


def test_resolve_arch(csv_path: Path) -> None:
    bench = load_benchmark(csv_path)
    assert resolve_arch(7, bench) == (parse_arch(A3), 7)
    assert resolve_arch(" 1 ", bench) == (parse_arch(A1), 1)
    assert resolve_arch(A0, bench) == (parse_arch(A0), 0)
    assert resolve_arch(A0, None) == (parse_arch(A0), None)
    assert resolve_arch(NOT_LISTED, bench) == (parse_arch(NOT_LISTED), None)
    with pytest.raises(UserError, match="out of range"):
        resolve_arch("100", bench)
    with pytest.raises(UserError, match="negative"):
        resolve_arch("-3", bench)
    with pytest.raises(UserError, match="unknown op"):
        resolve_arch("|conv~0|+|none~0|none~1|+|none~0|none~1|none~2|", bench)


def test_resolve_index_without_benchmark_says_how_to_get_one() -> None:
    with pytest.raises(UserError) as info:
        resolve_arch(13714, None)
    message = str(info.value)
    assert "--benchmark" in message and "FEAR_BENCHMARK" in message


# --------------------------------------------------------------- malformed files

BAD_TABLES = {
    "missing columns": (f"idx,arch_string,cifar10\n0,{A0},90\n", "missing column index and arch"),
    "arch does not parse": (
        f"index,arch,cifar10\n0,{A0},90\n1,|nor_conv_3x3~0|+|none~0|,80\n",
        "the arch of index 1 does not parse",
    ),
    "duplicate index": (
        f"index,arch,cifar10\n0,{A0},90\n0,{A1},80\n",
        r"index 0 appears twice \(rows 1 and 2\)",
    ),
    "duplicate arch": (f"index,arch,cifar10\n0,{A0},90\n1,{A0},80\n", "appears twice"),
    "no arch": ("index,arch,cifar10\n0,,90\n", "index 0 has no arch string"),
    "bad index": (f"index,arch,cifar10\nx1,{A0},90\n", "non-negative integers, row 1 has 'x1'"),
    "negative index": (f"index,arch,cifar10\n-1,{A0},90\n", "non-negative integers"),
    "no accuracy column": (f"index,arch\n0,{A0}\n", "no accuracy column"),
    "not numeric": (f"index,arch,cifar10\n0,{A0},high\n", "column 'cifar10' is not numeric"),
    "not percent": (f"index,arch,cifar10\n0,{A0},940.1\n", "percent in 0..100"),
    "unnamed column": (f",index,arch,cifar10\n0,0,{A0},90\n", "'Unnamed: 0' has no name"),
    "no rows": ("index,arch,cifar10\n", "no rows"),
    "empty file": ("", "empty"),
    "long first row": (f"index,arch,cifar10\n0,{A0},90,1,2\n", "more fields than the header"),
    "long later row": (f"index,arch,cifar10\n0,{A0},90\n1,{A1},80,5\n", "does not read as CSV"),
}


@pytest.mark.parametrize("case", sorted(BAD_TABLES))
def test_bad_tables(tmp_path: Path, case: str) -> None:
    text, pattern = BAD_TABLES[case]
    path = write(tmp_path, text)
    message = load_error(path)
    assert str(path) in message
    assert re.search(pattern, message), message
    assert "expected a CSV/Parquet table with columns index, arch" in message


def test_missing_columns_names_what_was_found(tmp_path: Path) -> None:
    message = load_error(write(tmp_path, f"idx,arch_string,cifar10\n0,{A0},90\n"))
    assert "found columns 'idx', 'arch_string', 'cifar10'" in message


def test_binary_and_non_utf8_files(tmp_path: Path) -> None:
    binary = tmp_path / "model.pt"
    binary.write_bytes(b"\x80\x04\x95\x00\x00\x00garbage\x00\x01")
    assert "binary file" in load_error(binary)
    latin = tmp_path / "latin.csv"
    latin.write_bytes(f"index,arch,caf\xe9\n0,{A0},90\n".encode("latin-1"))
    assert "not UTF-8" in load_error(latin)
    bad_parquet = tmp_path / "t.parquet"
    bad_parquet.write_bytes(b"PAR1 this is not really parquet")
    assert "does not read as Parquet" in load_error(bad_parquet)


def test_missing_path_and_plain_directory(tmp_path: Path) -> None:
    message = load_error(tmp_path / "nope.csv")
    assert "no such file or directory" in message and "--benchmark" in message
    (tmp_path / "NATS-tss-v1_0-3ffb9-simple").mkdir()
    (tmp_path / "NATS-tss-v1_0-3ffb9-simple" / "meta.pickle.pbz2").write_bytes(b"")
    message = load_error(tmp_path)
    assert "not a NATS-Bench archive" in message
    assert "did you mean" in message and "NATS-tss-v1_0-3ffb9-simple" in message


def test_unreadable_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write(tmp_path, CSV_TEXT)

    def denied(*args: object, **kwargs: object) -> None:
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(bm, "open", denied, raising=False)  # chmod does not stop root
    message = load_error(path)
    assert "cannot read it (Permission denied)" in message and "permissions" in message


# ---------------------------------------------------------- NATS-Bench tss archive


def _pbz2(path: Path, obj: object) -> None:
    """NATS-Bench's on-disk format: a pickle (protocol 4) inside bz2."""
    with bz2.BZ2File(path, "wb") as fh:
        pickle.dump(obj, fh, protocol=4)


def _trial(arch: str, dataset: str, seed: int, finals: dict[str, float], epochs: int) -> dict:
    """One `ResultsCount.state_dict()`: per-epoch train and eval curves of one seed."""
    last = epochs - 1

    def curve(final: float) -> dict[int, float]:
        return {e: (final if e == last else final * e / epochs) for e in range(epochs)}

    evals = {
        f"{name}@{e}": acc for name, final in finals.items() for e, acc in curve(final).items()
    }
    return {
        "name": dataset,
        "net_state_dict": None,
        "train_acc1es": curve(99.0),
        "train_acc5es": curve(99.9),
        "train_losses": {e: 1.0 / (e + 1) for e in range(epochs)},
        "train_times": {e: 7.5 for e in range(epochs)},
        "arch_config": {"channel": 16, "num_cells": 5, "arch_str": arch, "class_num": 10},
        "params": 0.5,
        "flop": 70.0,
        "seed": seed,
        "epochs": epochs,
        "latency": [0.01],
        "eval_names": list(finals),
        "eval_acc1es": evals,
        "eval_times": {key: 0.5 for key in evals},
        "eval_losses": {key: 0.3 for key in evals},
    }


def _arch_results(
    index: int, arch: str, per_dataset: dict[str, list[dict[str, float]]], epochs: int
) -> dict:
    """One `ArchResults.state_dict()`: every (dataset, seed) trial of one arch and schedule."""
    seeds = [777, 888, 999]
    all_results, dataset_seed = {}, {}
    for dataset, trials in per_dataset.items():
        dataset_seed[dataset] = seeds[: len(trials)]
        for seed, finals in zip(seeds, trials, strict=False):
            all_results[(dataset, seed)] = _trial(arch, dataset, seed, finals, epochs)
    return {
        "arch_index": index,
        "arch_str": arch,
        "all_results": all_results,
        "dataset_seed": dataset_seed,
        "clear_net_done": True,
    }


# Per arch: dataset -> one dict of final accuracies per seed. `cifar10-valid` and the
# `ori-test` of cifar100/ImageNet16-120 hold decoys, so picking the wrong key fails.
NATS_ARCHS = [
    (
        A0,
        {
            "cifar10-valid": [{"x-valid": 90.0, "ori-test": 92.0}] * 2,
            "cifar10": [{"ori-test": 94.36}, {"ori-test": 94.38}],
            "cifar100": [
                {"ori-test": 73.0, "x-valid": 72.5, "x-test": 73.4},
                {"ori-test": 73.0, "x-valid": 72.5, "x-test": 73.6},
            ],
            "ImageNet16-120": [{"ori-test": 46.0, "x-valid": 45.5, "x-test": 47.3}],
        },
    ),
    (
        A1,
        {
            "cifar10-valid": [{"x-valid": 80.0, "ori-test": 83.0}],
            "cifar10": [{"ori-test": 86.5}],
            "cifar100": [{"ori-test": 55.0, "x-valid": 56.0, "x-test": 57.25}],
        },
    ),
    (
        A2,
        {
            "cifar10": [{"ori-test": 10.0}],
            "cifar100": [{"ori-test": 1.0, "x-valid": 1.0, "x-test": 1.0}],
        },
    ),
]


def _infos(index: int, arch: str, per_dataset: dict, hps: tuple[str, ...] = ("12", "200")) -> dict:
    return {hp: _arch_results(index, arch, per_dataset, 12 if hp == "12" else 200) for hp in hps}


def make_nats_dir(
    root: Path, archs: list = NATS_ARCHS, hps: tuple[str, ...] = ("12", "200")
) -> Path:
    """A tiny `NATS-tss-v1_0-3ffb9-simple` directory (fast_mode layout)."""
    root.mkdir()
    strs = [arch for arch, _ in archs]
    _pbz2(
        root / "meta.pickle.pbz2",
        {"meta_archs": strs, "arch2infos": {}, "evaluated_indexes": set()},
    )
    for index, (arch, per_dataset) in enumerate(archs):
        _pbz2(root / f"{index:06d}.pickle.pbz2", _infos(index, arch, per_dataset, hps))
    return root


def check_nats(bench: Benchmark) -> None:
    assert len(bench) == 3
    assert bench.datasets == DATASETS
    assert bench.indices() == [0, 1, 2]
    assert str(bench.arch(1)) == A1
    assert bench.index(parse_arch(A2)) == 2
    # cifar10 = train+valid, CIFAR-10 test set (ori-test), mean over seeds.
    assert bench.accuracy(0, "cifar10") == pytest.approx(94.37)
    # cifar100 / ImageNet16-120 = x-test, mean over seeds.
    assert bench.accuracy(parse_arch(A0), "cifar100") == pytest.approx(73.5)
    assert bench.accuracy(0, "ImageNet16-120") == pytest.approx(47.3)
    assert bench.accuracy(1, "ImageNet16-120") is None  # never trained on it
    assert bench.accuracy(parse_arch(NOT_LISTED), "cifar10") is None
    with pytest.raises(UserError, match="out of range 0..2"):
        bench.arch(3)


def test_nats_simple_directory(tmp_path: Path) -> None:
    pytest.importorskip("nats_bench")
    bench = load_benchmark(make_nats_dir(tmp_path / "NATS-tss-v1_0-3ffb9-simple"))
    check_nats(bench)
    frame = bench.to_frame()
    assert frame["arch"].tolist() == [A0, A1, A2]
    assert frame["cifar100"].tolist() == pytest.approx([73.5, 57.25, 1.0])


def test_nats_full_file(tmp_path: Path) -> None:
    pytest.importorskip("nats_bench")
    path = tmp_path / "NATS-tss-v1_0-3ffb9-full.pickle.pbz2"
    _pbz2(
        path,
        {
            "meta_archs": [arch for arch, _ in NATS_ARCHS],
            "arch2infos": {i: _infos(i, a, d) for i, (a, d) in enumerate(NATS_ARCHS)},
            "evaluated_indexes": set(range(len(NATS_ARCHS))),
        },
    )
    check_nats(load_benchmark(path))


def test_nats_to_csv_round_trip(tmp_path: Path) -> None:
    pytest.importorskip("nats_bench")
    bench = load_benchmark(make_nats_dir(tmp_path / "simple"))
    out = tmp_path / "exported.csv"
    write_benchmark_csv(bench.to_frame(), out)
    again = load_benchmark(out)
    assert again.to_frame().equals(bench.to_frame())


def test_nats_without_package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = make_nats_dir(tmp_path / "simple", archs=NATS_ARCHS[:1])
    monkeypatch.setitem(sys.modules, "nats_bench", None)
    assert "pip install 'fear-mlflow[natsbench]'" in load_error(path)


def test_nats_broken_archives(tmp_path: Path) -> None:
    pytest.importorskip("nats_bench")
    garbage = tmp_path / "NATS-tss-v1_0-3ffb9-full.pickle.pbz2"
    garbage.write_bytes(b"BZh91AY&SY not really bz2")
    assert "nats_bench could not open it" in load_error(garbage)

    sss = tmp_path / "sss"
    sss.mkdir()
    _pbz2(sss / "meta.pickle.pbz2", {"meta_archs": ["8:16:24:32:40"]})
    assert "not topology cells" in load_error(sss)

    incomplete = make_nats_dir(tmp_path / "incomplete")
    (incomplete / "000001.pickle.pbz2").unlink()
    bench = load_benchmark(incomplete)
    assert bench.accuracy(0, "cifar10") == pytest.approx(94.37)
    with pytest.raises(UserError, match="could not read arch 1 .*download"):
        bench.accuracy(1, "cifar10")

    short = load_benchmark(make_nats_dir(tmp_path / "only12", hps=("12",)))
    with pytest.raises(UserError, match="no 200-epoch results"):
        short.accuracy(0, "cifar10")


# ------------------------------------------------------------------------ writing


def test_write_benchmark_csv_round_trip(tmp_path: Path) -> None:
    frame = pd.DataFrame(
        {
            "index": pd.array([12, None, 3], dtype="Int64"),
            "arch": [A0, A1, A2],
            "cifar10": [93.123456789, np.nan, 10.0],
            "digits": [97.0, 95.5, 10.0],
        }
    )
    path = tmp_path / "sub" / "from_runs.csv"
    write_benchmark_csv(frame, str(path))
    assert path.read_text().splitlines()[0] == "index,arch,cifar10,digits"
    bench = load_benchmark(path)
    assert bench.datasets == ("cifar10", "digits")
    assert bench.indices() == [3, 12]
    assert bench.accuracy(12, "cifar10") == 93.123456789  # full precision survives
    assert bench.accuracy(parse_arch(A1), "cifar10") is None
    assert bench.accuracy(parse_arch(A1), "digits") == 95.5
    assert bench.to_frame().equals(Benchmark.from_frame(frame).to_frame())
    assert [p.name for p in path.parent.iterdir()] == ["from_runs.csv"]  # no temp files left


def test_write_benchmark_csv_refuses_bad_frames(tmp_path: Path) -> None:
    path = tmp_path / "bad.csv"
    with pytest.raises(UserError, match="appears twice"):
        write_benchmark_csv(
            pd.DataFrame({"index": [1, 1], "arch": [A0, A1], "cifar10": [1.0, 2.0]}), path
        )
    with pytest.raises(UserError, match="missing column arch"):
        write_benchmark_csv(pd.DataFrame({"index": [1], "cifar10": [1.0]}), path)
    assert not path.exists()


# ----------------------------------------------------------------- the real table


@pytest.mark.skipif(not REAL_CSV.exists(), reason="../shared/data is not present")
def test_real_nats_table() -> None:
    bench = load_benchmark(REAL_CSV)
    assert len(bench) == 15625 and bench.indices()[-1] == 15624
    arch = bench.arch(13714)
    assert str(arch) == (
        "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|"
        "+|skip_connect~0|nor_conv_1x1~1|nor_conv_3x3~2|"
    )
    assert bench.index(arch) == 13714
    assert bench.accuracy(arch, "cifar10") == pytest.approx(94.37, abs=0.01)
