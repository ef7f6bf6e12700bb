"""What exact stage-1 reuse saves an Optuna study, and that it changes no result.

Runs the same `fear-mlflow tune` study twice in one go, on real data with real ground truth:
once with ``--no-stage1-reuse`` (every trial trains stage 1 from scratch) and once with the
stage-1 store (starting empty, so its own filling is paid for). Both use the Spearman
objective and the same sampler seed, so identical results mean identical suggestions: the
script then checks, trial by trial, the params, ρ and every arch's status, score and
stage-1 epochs (read back from the MLflow runs), and prints the wall times and their ratio.
``duration_s`` (what a fresh run costs) is compared too, within timing noise.

    .venv/bin/python bench/stage1_reuse.py       # real CIFAR-10 subset, reduced net, ~15 min
    .venv/bin/python bench/stage1_reuse.py --trials 4 --sample 4 --train-subset 300   # smoke
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import optuna
from mlflow.tracking import MlflowClient

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
FEAR_MLFLOW = Path(sys.executable).with_name("fear-mlflow")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--dataset", default="cifar10")
    p.add_argument("--dataroot", default=os.environ.get("FEAR_DATAROOT", "~/dataroot"))
    p.add_argument("--benchmark", default=str(SHARED / "natsbench/tss_test_accuracy_200ep.csv"))
    p.add_argument("--train-subset", type=int, default=300, help="class-balanced images")
    p.add_argument("--sample", type=int, default=6, help="archs (benchmark indices)")
    p.add_argument("--sample-seed", type=int, default=3)
    p.add_argument("--trials", type=int, default=10)
    p.add_argument("--stage1-epochs", type=int, default=15, help="nominal schedule and cap")
    p.add_argument("--threshold-range", default="0.25,0.5")
    p.add_argument("--freeze-epochs-range", default="1,2")
    p.add_argument("--freeze-batch-sizes", default="256,512")
    p.add_argument(
        "--extra",
        default="--channels 8 --cells-per-stage 2",
        help="more `tune` options (default: a reduced net, so the fresh study fits a CPU)",
    )
    p.add_argument("--workdir", default=None, help="keep stores here (default: a temp dir)")
    return p.parse_args(argv)


def run_study(args: argparse.Namespace, work: Path, name: str, reuse: bool) -> float:
    """One `tune` process; returns its wall seconds."""
    command = [
        str(FEAR_MLFLOW), "tune", "--study-name", name,
        "--storage", f"sqlite:///{work / 'optuna.db'}",
        "--tracking-uri", f"sqlite:///{work / 'mlflow.db'}", "--experiment", name,
        "--objective", "spearman", "--n-trials", str(args.trials),
        "--dataset", args.dataset, "--dataroot", args.dataroot,
        "--train-subset", str(args.train_subset), "--benchmark", args.benchmark,
        "--sample", str(args.sample), "--sample-seed", str(args.sample_seed),
        "--stage1-epochs", str(args.stage1_epochs), "--threshold-range", args.threshold_range,
        "--freeze-epochs-range", args.freeze_epochs_range,
        "--freeze-batch-sizes", args.freeze_batch_sizes, "--device", "cpu",
        "--stage1-cache", str(work / f"stage1-{name}"),
        "--stage1-reuse" if reuse else "--no-stage1-reuse", *args.extra.split(),
    ]  # fmt: skip
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        sys.exit(f"{name}: tune failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return seconds


def evaluations(work: Path, name: str) -> dict[tuple[int, str], dict[str, float | str]]:
    """(trial, arch) -> status, score, stage1_epochs, duration_s of every nested FEAR run."""
    client = MlflowClient(f"sqlite:///{work / 'mlflow.db'}")
    experiment = client.get_experiment_by_name(name).experiment_id
    found = {}
    for run in client.search_runs([experiment], "tags.`fear.method` = 'fear'", max_results=5000):
        key = (int(run.data.tags["fear.trial"]), run.data.tags["fear.arch"])
        metrics = run.data.metrics
        found[key] = {
            "status": run.data.tags["fear.status"],
            "score": metrics["score"],
            "stage1_epochs": metrics.get("stage1_epochs", 0.0),
            "duration_s": metrics["duration_s"],
            "wall_s": metrics["wall_s"],
        }
    return found


def trials(work: Path, name: str) -> list[tuple[int, str, dict, float | None]]:
    study = optuna.load_study(study_name=name, storage=f"sqlite:///{work / 'optuna.db'}")
    return [(t.number, t.state.name, t.params, t.value) for t in study.trials]


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    work = Path(args.workdir or tempfile.mkdtemp(prefix="stage1-reuse-"))
    work.mkdir(parents=True, exist_ok=True)
    print(f"study: {args.trials} trials x {args.sample} archs on {args.dataset} "
          f"(train subset {args.train_subset}), stage-1 cap {args.stage1_epochs} epochs, "
          f"threshold {args.threshold_range}; work dir {work}", flush=True)  # fmt: skip
    fresh_s = run_study(args, work, "fresh", reuse=False)
    print(f"without reuse: {fresh_s:8.1f} s wall", flush=True)
    reuse_s = run_study(args, work, "reuse", reuse=True)
    print(f"with reuse:    {reuse_s:8.1f} s wall", flush=True)

    same_trials = trials(work, "fresh") == trials(work, "reuse")
    fresh, reused = evaluations(work, "fresh"), evaluations(work, "reuse")
    fields = ("status", "score", "stage1_epochs")
    mismatched = [
        key for key in fresh if key not in reused
        or any(fresh[key][f] != reused[key][f] for f in fields)
    ]  # fmt: skip
    total_fresh = sum(float(v["duration_s"]) for v in fresh.values())
    total_reused = sum(float(v["duration_s"]) for v in reused.values())
    wall_reused = sum(float(v["wall_s"]) for v in reused.values())
    print(f"\nspeed-up (wall, whole study): {fresh_s / reuse_s:.2f}x")
    print(f"evaluations: {len(fresh)} fresh, {len(reused)} with reuse; "
          f"identical status/score/stage-1 epochs: {len(fresh) - len(mismatched)}/{len(fresh)}")  # fmt: skip
    print(f"trials identical (params, state, rho): {same_trials}")
    print(f"sum of recorded duration_s: fresh {total_fresh:.1f} s, with reuse {total_reused:.1f} s "
          f"(reported as a fresh run's cost); evaluations' actual wall with reuse "
          f"{wall_reused:.1f} s")  # fmt: skip
    for number, state, params, value in trials(work, "reuse"):
        shown = ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}"
                          for k, v in params.items())  # fmt: skip
        print(f"  trial {number:2d} {state.lower():8s} rho={value if value is None else round(value, 4)}  {shown}")  # fmt: skip
    if mismatched or not same_trials:
        for key in mismatched[:10]:
            print(f"MISMATCH {key}: fresh {fresh[key]} reuse {reused.get(key)}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
