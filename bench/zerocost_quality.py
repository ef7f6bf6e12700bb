"""How good and how fast our zero-cost proxies are, on real CIFAR-10 against NATS-Bench.

(a) The first ``--cells`` (≤ 300) cells of the FEAR paper's list: our |Spearman ρ| with the
    200-epoch test accuracy next to the authors' reference implementation's on the same cells
    (``zerocost_reference_cifar10.csv``), the difference (must be ≤ 0.06), and the per-cell rank
    agreement Spearman(ours, reference) (synflow must be ≥ 0.9); seconds per cell against the
    reference's; with ``--reference-way``, the speed of our shared passes against the
    reference's procedure (fresh copy + own passes per measure) on ``--speed-cells`` cells.
(b) ``--sample`` other cells drawn uniformly (``--sample-seed``): our |ρ| next to the published
    CIFAR-10 row of Abdelfattah et al. (over all 15,625 cells).

Every cell is one `evaluate_zerocost` (seed 42, one augmented minibatch of 64). ``--out`` writes
one CSV row per cell as it goes; ``--resume`` skips the cells already in it.

    .venv/bin/python bench/zerocost_quality.py --out /tmp/zc_quality.csv --resume --reference-way
    # part (a) from the runs of a 1,000-cell sweep instead of computing the cells again
    .venv/bin/python bench/zerocost_quality.py --from-runs sqlite:///mlflow.db --experiment zc-cifar10
"""

from __future__ import annotations

import argparse
import csv
import math
import os
import shlex
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from scipy.stats import spearmanr

from fear_mlflow.benchmark import Benchmark, load_benchmark
from fear_mlflow.config import (
    ZEROCOST_MEASURES,
    ZEROCOST_NETWORKS,
    ZEROCOST_SEED,
    RunContext,
    ZerocostSettings,
)
from fear_mlflow.data.datasets import ImageData, load_dataset
from fear_mlflow.evaluators.common import seeded_model
from fear_mlflow.evaluators.zerocost import compute_measures, evaluate_zerocost, random_minibatch

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
SIX = ("grad_norm", "snip", "grasp", "fisher", "synflow", "jacob_cov")
EXTRA = ("naswot", "params", "flops")
#: Abdelfattah et al.'s CIFAR-10 |ρ| over all 15,625 NATS-Bench cells (DESIGN.md).
PUBLISHED = {
    "grad_norm": 0.594,
    "snip": 0.596,
    "grasp": 0.514,
    "fisher": 0.360,
    "synflow": 0.737,
    "jacob_cov": 0.731,
}
MAX_RHO_GAP = 0.06
MIN_SYNFLOW_AGREEMENT = 0.9
MIN_SPEEDUP = 1.5


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "--dataroot",
        default=os.environ.get("FEAR_DATAROOT", "~/dataroot"),
        help="folder holding cifar-10-batches-py (default ~/dataroot)",
    )
    p.add_argument(
        "--benchmark",
        default=str(SHARED / "natsbench/tss_test_accuracy_200ep.csv"),
        help="ground-truth table (index, arch, cifar10 accuracy)",
    )
    p.add_argument(
        "--archs",
        default=str(SHARED / "fear_paper_archs.txt"),
        help="the FEAR paper's cell indices, one a line",
    )
    p.add_argument(
        "--reference",
        default=str(SHARED / "zerocost_reference_cifar10.csv"),
        help="the reference implementation's values for the first 300 cells",
    )
    p.add_argument("--cells", type=int, default=300, help="cells of part (a), at most 300")
    p.add_argument("--sample", type=int, default=300, help="random other cells of part (b)")
    p.add_argument("--sample-seed", type=int, default=2021, help="seed of part (b)'s sample")
    p.add_argument("--seed", type=int, default=ZEROCOST_SEED, help="weights and minibatch seed")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument(
        "--network",
        choices=ZEROCOST_NETWORKS,
        default=ZerocostSettings.network,
        help="network the measures run on (see `fear-mlflow zerocost --help`)",
    )
    p.add_argument("--out", help="CSV of per-cell values, appended as cells finish")
    p.add_argument("--resume", action="store_true", help="skip cells already in --out")
    p.add_argument(
        "--reference-way",
        action="store_true",
        help="also time the reference's procedure against our shared passes",
    )
    p.add_argument("--speed-cells", type=int, default=5, help="cells timed by --reference-way")
    p.add_argument("--speed-repeats", type=int, default=3, help="alternating timings per cell")
    p.add_argument(
        "--from-runs",
        metavar="URI",
        help="take per-cell values from the zerocost runs of --experiment in this tracking "
        "store (e.g. a `fear-mlflow sweep zerocost` over fear_paper_archs.txt) instead of "
        "computing them; cells without a finished run are computed",
    )
    p.add_argument("--experiment", default="zc-cifar10", help="experiment of --from-runs")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: default)")
    args = p.parse_args(argv)
    if not 0 <= args.cells <= 300:
        p.error("--cells must be in 0..300 (the reference covers the first 300 cells)")
    if args.resume and not args.out:
        p.error("--resume needs --out")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    print("command:", shlex.join([sys.executable, *sys.argv]), flush=True)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    data = load_cifar10(args.dataroot)
    bench = load_benchmark(args.benchmark)
    assert bench is not None
    paper = [int(line) for line in Path(args.archs).read_text().split()]
    reference = pd.read_csv(args.reference).set_index("index")
    part_a = paper[: args.cells]
    part_b = sample_other_cells(
        bench, exclude=set(paper[:300]), n=args.sample, seed=args.sample_seed
    )
    rows = load_rows(args.out) if args.resume else []
    if args.from_runs:
        parts = {"a": part_a, "b": part_b}
        rows += rows_from_runs(args.from_runs, args.experiment, args.network, bench, parts)
    writer = RowWriter(args.out, fresh=not args.resume)
    settings = ZerocostSettings(
        batch_size=args.batch_size, measures=ZEROCOST_MEASURES, network=args.network
    )
    context = RunContext(dataset="cifar10", seed=args.seed, device=str(device))
    for part, cells in (("a", part_a), ("b", part_b)):
        rows += measure_cells(part, cells, rows, bench, data, settings, context, device, writer)
    frame = pd.DataFrame(rows)
    if part_a:
        report_reference(frame[frame["part"] == "a"], reference)
    if args.reference_way and part_a:
        report_speed(
            part_a[: args.speed_cells], bench, data, settings, context, device, args.speed_repeats
        )
    if part_b:
        report_published(frame[frame["part"] == "b"])
    return 0


def load_cifar10(dataroot: str) -> ImageData:
    folder = Path(dataroot).expanduser() / "cifar-10-batches-py"
    if not folder.is_dir():
        sys.exit(
            f"{folder} is missing; create it with: .venv/bin/python "
            f"../shared/tools/cifar10_from_jpeg.py --dataroot {dataroot}"
        )
    return load_dataset("cifar10", dataroot)


def sample_other_cells(bench: Benchmark, exclude: set[int], n: int, seed: int) -> list[int]:
    """``n`` benchmark indices drawn uniformly without replacement, none of ``exclude``."""
    pool = sorted(set(bench.indices()) - exclude)
    rng = np.random.default_rng(seed)
    return [int(i) for i in rng.choice(pool, size=min(n, len(pool)), replace=False)]


def rows_from_runs(
    uri: str, experiment: str, network: str, bench: Benchmark, parts: dict[str, list[int]]
) -> list[dict[str, object]]:
    """Rows of the cells that already have a FINISHED zerocost run (seed 42, batch 64)."""
    from mlflow.tracking import MlflowClient

    from fear_mlflow.tracking import search_all_runs

    client = MlflowClient(uri)
    found = client.get_experiment_by_name(experiment)
    if found is None:
        sys.exit(f"no experiment {experiment!r} in {uri}")
    query = "tags.`fear.method` = 'zerocost' and tags.`fear.dataset` = 'cifar10'"
    by_index: dict[int, object] = {}
    for run in search_all_runs(client, [found.experiment_id], query):
        params = run.data.params
        if run.info.status != "FINISHED" or params.get("seed") != "42":
            continue
        if params.get("batch_size") != "64" or "fear.arch_index" not in run.data.tags:
            continue
        if params.get("network", "natsbench") != network:  # runs before --network: natsbench
            continue
        by_index[int(run.data.tags["fear.arch_index"])] = run
    rows: list[dict[str, object]] = []
    for part, cells in parts.items():
        for index in cells:
            run = by_index.get(index)
            if run is None:
                continue
            m = run.data.metrics  # type: ignore[attr-defined]
            row: dict[str, object] = {
                "part": part, "index": index, "arch": str(bench.arch(index)),
                "gt": bench.accuracy(index, "cifar10"),
                "status": run.data.tags["fear.status"],  # type: ignore[attr-defined]
                "total_s": m["duration_s"], "wall_s": m["wall_s"],
            }  # fmt: skip
            for name in ZEROCOST_MEASURES:
                row[name] = m.get(f"zc/{name}", math.nan)
                row[f"{name}_s"] = m.get(f"zc/{name}_s", math.nan)
            rows.append(row)
    print(f"{len(rows)} cells taken from the runs of {experiment!r} in {uri}", flush=True)
    return rows


# ----------------------------------------------------------------------------- measuring


class RowWriter:
    """Appends one CSV row per finished cell, so a killed run loses at most one cell."""

    def __init__(self, path: str | None, fresh: bool) -> None:
        self.path = Path(path) if path else None
        self.fields = [
            "part",
            "index",
            "arch",
            "gt",
            "status",
            "total_s",
            "wall_s",
            *ZEROCOST_MEASURES,
            *(f"{m}_s" for m in ZEROCOST_MEASURES),
        ]
        if self.path and (fresh or not self.path.exists()):
            with self.path.open("w", newline="") as f:
                csv.DictWriter(f, self.fields).writeheader()

    def write(self, row: dict[str, object]) -> None:
        if self.path:
            with self.path.open("a", newline="") as f:
                csv.DictWriter(f, self.fields).writerow(row)


def load_rows(path: str) -> list[dict[str, object]]:
    if not Path(path).exists():
        return []
    return pd.read_csv(path).to_dict("records")


def measure_cells(
    part: str,
    cells: list[int],
    done_rows: list[dict[str, object]],
    bench: Benchmark,
    data: ImageData,
    settings: ZerocostSettings,
    context: RunContext,
    device: torch.device,
    writer: RowWriter,
) -> list[dict[str, object]]:
    done = {int(r["index"]) for r in done_rows if r["part"] == part}
    todo = [i for i in cells if i not in done]
    rows: list[dict[str, object]] = []
    start = time.perf_counter()
    for k, index in enumerate(todo, 1):
        arch = bench.arch(index)
        result = evaluate_zerocost(arch, data, settings, context, device)
        row: dict[str, object] = {
            "part": part,
            "index": index,
            "arch": str(arch),
            "gt": bench.accuracy(index, "cifar10"),
            "status": result.status,
            "total_s": result.duration_s,
            "wall_s": result.wall_s,
        }
        for m in ZEROCOST_MEASURES:
            row[m] = result.summary[f"zc/{m}"]
            row[f"{m}_s"] = result.summary[f"zc/{m}_s"]
        writer.write(row)
        rows.append(row)
        rate = (time.perf_counter() - start) / k
        print(
            f"[{part}] {k}/{len(todo)} cell {index}: synflow={row['synflow']:.3g} "
            f"{result.duration_s:.2f} s ({rate:.2f} s/cell, ETA {rate * (len(todo) - k) / 60:.1f} min)",
            flush=True,
        )
    return rows


# ----------------------------------------------------------------------------- reports


def rho(a: pd.Series, b: pd.Series) -> float:
    """Spearman ρ over the pairs where both are finite (NaN dropped pairwise)."""
    x, y = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    keep = np.isfinite(x) & np.isfinite(y)
    if keep.sum() < 3:
        return math.nan
    return float(spearmanr(x[keep], y[keep])[0])


def report_reference(ours: pd.DataFrame, reference: pd.DataFrame) -> None:
    ref = reference.loc[ours["index"].astype(int)]
    print(f"\n(a) first {len(ours)} cells of fear_paper_archs.txt vs the reference implementation")
    print(
        f"{'measure':10s} {'ours |ρ|':>9s} {'ref |ρ|':>8s} {'diff':>7s} {'ok':>4s} "
        f"{'ρ(ours,ref)':>12s} {'ok':>4s}"
    )
    failures = 0
    for m in SIX:
        mine, theirs = abs(rho(ours["gt"], ours[m])), abs(rho(ref["gt"], ref[m]))
        agree = rho(ours[m].to_numpy(), ref[m].to_numpy())
        gap_ok = abs(mine - theirs) <= MAX_RHO_GAP
        agree_ok = m != "synflow" or agree >= MIN_SYNFLOW_AGREEMENT
        failures += (not gap_ok) + (not agree_ok)
        print(
            f"{m:10s} {mine:9.3f} {theirs:8.3f} {mine - theirs:+7.3f} {mark(gap_ok):>4s} "
            f"{agree:12.3f} {mark(agree_ok) if m == 'synflow' else '':>4s}"
        )
    for m in EXTRA:
        print(f"{m:10s} {abs(rho(ours['gt'], ours[m])):9.3f} {'-':>8s}")
    six_s = ours[[f"{m}_s" for m in SIX]].sum(axis=1)
    print(
        f"seconds per cell: ours {six_s.mean():.2f} (six measures), "
        f"{ours['total_s'].mean():.2f} (all {len(ZEROCOST_MEASURES)}), "
        f"{ours['wall_s'].mean():.2f} wall incl. build + batch; "
        f"reference {ref['secs'].mean():.2f} (six, its own CPU run)"
    )
    print("(a) checks:", "all passed" if failures == 0 else f"{failures} FAILED")


def report_published(ours: pd.DataFrame) -> None:
    print(f"\n(b) {len(ours)} other cells sampled uniformly vs the published CIFAR-10 row")
    print(f"{'measure':10s} {'ours |ρ|':>9s} {'paper':>6s} {'diff':>7s}")
    for m in SIX:
        mine = abs(rho(ours["gt"], ours[m]))
        print(f"{m:10s} {mine:9.3f} {PUBLISHED[m]:6.3f} {mine - PUBLISHED[m]:+7.3f}")
    for m in EXTRA:
        print(f"{m:10s} {abs(rho(ours['gt'], ours[m])):9.3f} {'-':>6s}")


def report_speed(
    cells: list[int],
    bench: Benchmark,
    data: ImageData,
    settings: ZerocostSettings,
    context: RunContext,
    device: torch.device,
    repeats: int,
) -> None:
    """Shared passes vs the reference's procedure on the same nets and batch, alternated."""
    inputs, targets = random_minibatch(data, settings.batch_size, seed=context.seed, device=device)
    ours: list[float] = []
    theirs: list[float] = []
    per_measure: dict[bool, dict[str, list[float]]] = {False: {}, True: {}}
    for index in cells:
        model = seeded_model(bench.arch(index), data, context, device)
        times: dict[bool, list[float]] = {False: [], True: []}
        for _ in range(repeats):
            for ref_way in (False, True):
                values = compute_measures(
                    model,
                    inputs,
                    targets,
                    settings.measures,
                    num_classes=data.num_classes,
                    reference_way=ref_way,
                )
                times[ref_way].append(sum(s for _, s in values.values()))
                for m, (_, s) in values.items():
                    per_measure[ref_way].setdefault(m, []).append(s)
        ours.append(statistics.median(times[False]))
        theirs.append(statistics.median(times[True]))
        print(
            f"speed cell {index}: ours {ours[-1]:.2f} s, reference way {theirs[-1]:.2f} s "
            f"(×{theirs[-1] / ours[-1]:.2f})",
            flush=True,
        )
    ratio = sum(theirs) / sum(ours)
    print(
        f"\nspeed over {len(cells)} cells (median of {repeats} alternating runs each, "
        f"all {len(settings.measures)} measures): ours {statistics.mean(ours):.2f} s/cell, "
        f"reference way {statistics.mean(theirs):.2f} s/cell, ratio ×{ratio:.2f} "
        f"{mark(ratio >= MIN_SPEEDUP)} (needs ≥ {MIN_SPEEDUP})"
    )
    print(
        "mean seconds per measure (ours / reference way): "
        + ", ".join(
            f"{m} {statistics.mean(per_measure[False][m]):.3f}/{statistics.mean(per_measure[True][m]):.3f}"
            for m in settings.measures
        )
    )


def mark(ok: bool) -> str:
    return "ok" if ok else "FAIL"


if __name__ == "__main__":
    sys.exit(main())
