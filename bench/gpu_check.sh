#!/usr/bin/env bash
# One prepared GPU check, under 8 minutes in all, printing every number it measures:
#   1. bench/throughput.py on CUDA, all five cells (ours with bf16 autocast, ablations: NCHW, fp32)
#   2. the same bench for the heaviest cell with --compile next to eager (stage 1 and stage 2)
#   3. a FEAR sweep of three cells on a CIFAR-10 subset with --workers 1, then --workers 3
#      (several evaluations sharing the one GPU), with the sweep's wall time and each run's numbers.
# Every step runs under its own `timeout`, so the whole stays below 8 minutes even when one hangs.
#
# Usage (from the repository root):  bash bench/gpu_check.sh
# Python: the project's .venv when there is one; else the machine's python3 when it has torch
# (a GPU image without a package index), with this checkout on PYTHONPATH and MLflow/Optuna
# installed from .whl/ (made here by `bash bench/gpu_wheels.sh`, carried along); without them
# steps 1-2 still run and step 3 says why it is skipped.
# Results (logs, bench JSON) go to $OUT when set (the device runner's output folder), else
# /tmp/gpu_check. The dataset comes from $FEAR_DATAROOT or ~/dataroot; without CIFAR-10 there
# the bench uses its synthetic 32x32 stand-in and the sweep `--dataset synthetic` (said so).
# GPU_CHECK_DRY_RUN=1 runs the same steps on the CPU, shortened, to check the script itself;
# GPU_CHECK_PYTHON=/path/python uses that interpreter the way a bare image's python3 is used.
set -uo pipefail
cd "$(dirname "$0")/.."
START=$(date +%s)
RESULTS=${OUT:-/tmp/gpu_check}
WORK=$(mktemp -d)
mkdir -p "$RESULTS"
DRY=${GPU_CHECK_DRY_RUN:-0}
if [ -n "${GPU_CHECK_PYTHON:-}" ]; then  # a given interpreter, used as a bare image's python3
    PY=$GPU_CHECK_PYTHON
elif [ -x .venv/bin/python ]; then
    PY=.venv/bin/python
elif python3 -c "import torch" 2>/dev/null; then
    PY=python3
else
    echo "no .venv and no python3 with torch: running make venv" && make venv >/dev/null || exit 1
    PY=.venv/bin/python
fi
if [ "$PY" != .venv/bin/python ]; then  # the checkout itself, and MLflow/Optuna from .whl/
    export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
    if ! $PY -c "import mlflow, optuna" 2>/dev/null && ls .whl/*.whl >/dev/null 2>&1; then
        # only what the interpreter lacks, --no-deps: the image's own packages stay as they are
        # (a resolver would refuse, say, a newer pyarrow than MLflow's range, which tracking
        # never imports)
        missing=$($PY - <<'EOF'
import pathlib
import re
from importlib.metadata import distributions


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


have = {canonical(d.metadata["Name"]) for d in distributions()}
for wheel in sorted(pathlib.Path(".whl").glob("*.whl")):
    if canonical(wheel.name.split("-")[0]) not in have:
        print(wheel)
EOF
)
        echo "installing $(echo "$missing" | wc -w) wheels from .whl/ (what $PY lacks)"
        # shellcheck disable=SC2086
        $PY -m pip install -q --no-index --no-deps $missing 2>&1 | tail -5
    fi
fi
FM="$PY -m fear_mlflow"
DATAROOT=${FEAR_DATAROOT:-$HOME/dataroot}
elapsed() { echo "[$(($(date +%s) - START)) s elapsed]"; }

echo "== GPU check: $(date -u +%FT%TZ), $(uname -n)"
nvidia-smi --query-gpu=name,memory.total,driver_version,utilization.gpu --format=csv || true
$PY -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, \
'available', torch.cuda.is_available(), torch.cuda.get_device_name(0) if torch.cuda.is_available() else '')"
DEVICE=cuda
STEPS=30
ALL_CELLS=()
HEAVY_CELL=(--cells E)
if [ "$DRY" = 1 ]; then
    echo "DRY RUN on the CPU (GPU_CHECK_DRY_RUN=1): the script's plumbing, not GPU numbers"
    DEVICE=cpu
    STEPS=1
    ALL_CELLS=(--cells A --rounds 1 --sections stage1,stage2)
    HEAVY_CELL=(--cells A)
else
    $PY -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" \
        || { echo "no CUDA GPU visible: nothing to check"; exit 1; }
fi

echo
echo "== 1. throughput bench, $DEVICE, all cells, bf16 autocast on CUDA (ours), ablations on"
timeout -k 10 200 $PY bench/throughput.py --device $DEVICE --steps $STEPS "${ALL_CELLS[@]}" \
    --json "$RESULTS/throughput_$DEVICE.json" 2>&1 | tee "$RESULTS/throughput_$DEVICE.log"
elapsed

echo
echo "== 2. throughput bench, $DEVICE, ${HEAVY_CELL[*]}, torch.compile next to eager"
timeout -k 10 130 $PY bench/throughput.py --device $DEVICE "${HEAVY_CELL[@]}" \
    --sections stage1,stage2 --compile --no-ablations --rounds 2 --steps $STEPS \
    --json "$RESULTS/throughput_${DEVICE}_compile.json" 2>&1 |
    tee "$RESULTS/throughput_${DEVICE}_compile.log"
elapsed

echo
echo "== 3. FEAR sweep of three cells: --workers 1, then --workers 3 on one $DEVICE"
if ! $PY -c "import mlflow, optuna, fear_mlflow.cli" 2>/dev/null; then
    echo "SKIPPED: MLflow/Optuna are not importable by $PY (no .venv here; make .whl/ with"
    echo "         bash bench/gpu_wheels.sh where a package index is reachable, and carry it)"
else
    B='|nor_conv_1x1~0|+|skip_connect~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_1x1~1|avg_pool_3x3~2|'
    D='|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_3x3~1|nor_conv_3x3~2|'
    E='|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|nor_conv_3x3~0|nor_conv_3x3~1|nor_conv_3x3~2|'
    if [ "$DRY" != 1 ] && [ -f "$DATAROOT/cifar-10-batches-py/data_batch_1" ]; then
        DATA=(--dataset cifar10 --dataroot "$DATAROOT" --train-subset 10000)
    else
        echo "NOTE: dry run or no CIFAR-10 under $DATAROOT: the sweep runs on --dataset synthetic"
        DATA=(--dataset synthetic)
    fi
    TRACK="sqlite:///$WORK/mlflow.db"
    for K in 1 3; do
        T0=$(date +%s%N)
        timeout -k 10 55 $FM sweep fear --archs "$B,$D,$E" "${DATA[@]}" --threshold 0.3 \
            --stage1-epochs 8 --freeze-epochs 2 --check-every 10 --workers "$K" \
            --device $DEVICE --tracking-uri "$TRACK" --experiment "gpu-check-w$K" 2>&1 | tail -3
        T1=$(date +%s%N)
        echo "sweep --workers $K: wall $(((T1 - T0) / 1000000)) ms for 3 evaluations"
    done
    MLFLOW_TRACKING_URI="$TRACK" $PY - <<'EOF' 2>&1 | tee "$RESULTS/sweep.log"
import mlflow

cols = ["tags.fear.status", "tags.fear.torch_threads", "metrics.score", "metrics.stage1_epochs",
        "metrics.stage1_s", "metrics.stage2_s", "metrics.wall_s"]
for k in (1, 3):
    runs = mlflow.search_runs(experiment_names=[f"gpu-check-w{k}"])
    runs = runs[runs.get("tags.fear.method", "") == "fear"] if len(runs) else runs
    if not len(runs):
        print(f"--workers {k}: no finished runs")
        continue
    runs = runs.assign(cell=runs["tags.fear.arch"].str.count("conv_3x3").map(
        {0: "B", 5: "D", 6: "E"}))
    print(f"--workers {k}: per-run numbers (seconds)")
    print(runs[["cell", *[c for c in cols if c in runs]]].sort_values("cell").to_string(
        index=False, float_format=lambda v: f"{v:.3f}"))
EOF
fi
rm -rf "$WORK"
echo
elapsed
echo "== done; logs and JSON in $RESULTS"
