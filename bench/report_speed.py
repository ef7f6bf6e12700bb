"""How long `fear-mlflow report` takes, and that its cost grows linearly with the evaluations.

Times the report's stages (analysis with a 1,000-resample bootstrap, CSV tables, figures as
PNG + SVG) on evaluation tables of growing size, up to the paper's scale: 1,000 archs x 20
configurations (20,000 evaluations, 9 zero-cost measures + 8 shortreg + 3 FEAR
configurations) must take under 30 s. The tables are generated (real NATS-Bench CIFAR-10
accuracies as ground truth, scores = accuracy + noise), since timing needs no training.

With ``--store URI --experiment NAME`` it also times reading real runs from a tracking store
(runs → table), the one stage that talks to MLflow, and reports seconds per run.

    .venv/bin/python bench/report_speed.py
    .venv/bin/python bench/report_speed.py --store sqlite:////root/fear-runs/mlflow.db \\
        --experiment zc-cifar10
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from fear_mlflow.analysis import AnalysisOptions, analyse
from fear_mlflow.report import write_figures, write_tables

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
ZC = ("grad_norm", "snip", "grasp", "fisher", "jacob_cov", "synflow", "naswot", "params", "flops")
SHORTREG = [(b, e) for b in (256, 512, 1024, 2048) for e in (10, 20)]
FEAR = (0.5, 0.6, 0.7)
LIMIT_S = 30.0


def ground_truth(n: int, rng: np.random.Generator) -> np.ndarray:
    table = SHARED / "natsbench" / "tss_test_accuracy_200ep.csv"
    if table.exists():
        acc = pd.read_csv(table)["cifar10"].to_numpy()
        return rng.choice(acc[np.isfinite(acc)], size=n, replace=False)
    return np.clip(rng.normal(88, 8, size=n), 10, 95)


def evaluations(n_archs: int, n_configs: int, seed: int = 0) -> pd.DataFrame:
    """``n_configs`` configurations (zero-cost first, then shortreg, FEAR) over ``n_archs``."""
    rng = np.random.default_rng(seed)
    gt = ground_truth(n_archs, rng)
    configs = (
        [("zerocost", m, 0.01) for m in ZC]
        + [("shortreg", f"batch={b} ep={e}", 10.0 * e / (b / 256)) for b, e in SHORTREG]
        + [("fear", f"thr={t}", 60.0 * t) for t in FEAR]
    )[:n_configs]
    frames = []
    for i, (family, label, cost) in enumerate(configs):
        noise = rng.uniform(2, 12)
        score = gt + rng.normal(0, noise, size=n_archs)
        status = np.full(n_archs, "ok", dtype=object)
        if family == "fear":
            low = gt < np.quantile(gt, 0.05)
            status[low] = "threshold_not_reached"
            score[low] -= 100
        status[rng.random(n_archs) < 0.005] = "failed"
        config = json.dumps({"label": label})
        frames.append(
            pd.DataFrame(
                {
                    "run_id": [f"{i}-{a}" for a in range(n_archs)],
                    "dataset": "cifar10",
                    "method": family,
                    "family": family,
                    "measure": label if family == "zerocost" else "",
                    "config_key": f"{family}|{config}",
                    "config": config,
                    "config_label": label if family == "zerocost" else f"{family} {label}",
                    "arch": [f"arch{a}" for a in range(n_archs)],
                    "status": status,
                    "score": score,
                    "duration_s": rng.lognormal(np.log(cost), 0.3, size=n_archs),
                    "gt": gt,
                    "start_time": np.arange(n_archs),
                }
            )
        )
    return pd.concat(frames, ignore_index=True)


def time_report(frame: pd.DataFrame, out: Path, resamples: int) -> dict[str, float]:
    """Wall seconds per stage of one report over ``frame``, and CPU seconds of all of it.

    CPU seconds say what the report costs when the machine is not shared with other work.
    """
    times = {}
    cpu = time.process_time()
    start = time.perf_counter()
    analysis = analyse(frame, AnalysisOptions(resamples=resamples))
    times["analysis"] = time.perf_counter() - start
    start = time.perf_counter()
    write_tables(frame, analysis, out)
    times["tables"] = time.perf_counter() - start
    start = time.perf_counter()
    write_figures(analysis, out)
    times["figures"] = time.perf_counter() - start
    times["total"] = sum(times.values())
    times["cpu"] = time.process_time() - cpu
    return times


def time_store(uri: str, experiment: str) -> None:
    from fear_mlflow.report import RunFilter, collect
    from fear_mlflow.tracking import connect

    connect(uri)
    start = time.perf_counter()
    frame, _ = collect(RunFilter((experiment,)), None)
    seconds = time.perf_counter() - start
    runs = frame["run_id"].nunique()
    print(
        f"\nreading {runs} runs ({len(frame)} evaluations) from {experiment}: {seconds:.1f} s "
        f"= {1000 * seconds / max(runs, 1):.1f} ms per run"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--resamples", type=int, default=1000)
    parser.add_argument("--store", help="tracking URI to time reading runs from")
    parser.add_argument("--experiment", help="experiment in --store")
    args = parser.parse_args()
    sizes = [(250, 20), (500, 20), (1000, 5), (1000, 10), (1000, 20)]
    print(
        f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs; wall seconds "
        "per stage, then CPU seconds of the whole report"
    )
    print(f"{'archs':>6} {'configs':>7} {'evals':>6} {'analysis':>9} {'tables':>7} "
          f"{'figures':>8} {'total s':>8} {'cpu s':>6} {'cpu ms/eval':>11}")  # fmt: skip
    results = []
    with tempfile.TemporaryDirectory() as folder:
        for n_archs, n_configs in sizes:
            frame = evaluations(n_archs, n_configs)
            t = time_report(frame, Path(folder) / f"{n_archs}x{n_configs}", args.resamples)
            per_eval = 1000 * t["cpu"] / len(frame)
            results.append((n_archs, n_configs, t))
            print(
                f"{n_archs:>6} {n_configs:>7} {len(frame):>6} {t['analysis']:>9.2f} "
                f"{t['tables']:>7.2f} {t['figures']:>8.2f} {t['total']:>8.2f} {t['cpu']:>6.1f} "
                f"{per_eval:>11.3f}"
            )
    full = results[-1][2]
    verdict = "OK" if full["total"] < LIMIT_S else "TOO SLOW"
    print(
        f"\n1,000 archs x 20 configurations: {full['total']:.1f} s wall, {full['cpu']:.1f} s CPU "
        f"(limit {LIMIT_S:.0f} s): {verdict}"
    )
    if args.store and args.experiment:
        time_store(args.store, args.experiment)


if __name__ == "__main__":
    main()
