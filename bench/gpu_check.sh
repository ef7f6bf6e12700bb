#!/usr/bin/env bash
# One prepared GPU check, under 8 minutes in all, printing every number it measures:
#   1. bench/throughput.py on CUDA, all five cells (ours with bf16 autocast, ablations: NCHW, fp32)
#   2. the same bench for the heaviest cell with --compile next to eager (stage 1 and stage 2)
#   3. a FEAR sweep of three cells on a CIFAR-10 subset with --workers 1, then --workers 3
#      (several evaluations sharing the one GPU), with the sweep's wall time and each run's numbers.
# Every step runs under its own `timeout`, so the whole stays below 8 minutes even when one hangs.
#
# Usage (from the repository root, `make venv` done):  bash bench/gpu_check.sh
# Results (logs, bench JSON) go to $OUT when set (the device runner's output folder), else
# /tmp/gpu_check. The dataset comes from $FEAR_DATAROOT or ~/dataroot; without CIFAR-10 there
# the bench uses its synthetic 32x32 stand-in and the sweep `--dataset synthetic` (said so).
set -uo pipefail
cd "$(dirname "$0")/.."
START=$(date +%s)
RESULTS=${OUT:-/tmp/gpu_check}
WORK=$(mktemp -d)
mkdir -p "$RESULTS"
if [ ! -x .venv/bin/python ]; then
    echo "no .venv: running make venv" && make venv >/dev/null || exit 1
fi
PY=.venv/bin/python
FM=.venv/bin/fear-mlflow
DATAROOT=${FEAR_DATAROOT:-$HOME/dataroot}

elapsed() { echo "[$(($(date +%s) - START)) s elapsed]"; }

echo "== GPU check: $(date -u +%FT%TZ), $(uname -n)"
nvidia-smi --query-gpu=name,memory.total,driver_version,utilization.gpu --format=csv || true
$PY -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, \
'available', torch.cuda.is_available(), torch.cuda.get_device_name(0) if torch.cuda.is_available() else '')"
$PY -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" \
    || { echo "no CUDA GPU visible: nothing to check"; exit 1; }

echo
echo "== 1. throughput bench, CUDA, all cells, bf16 autocast (ours), ablations on"
timeout -k 10 200 $PY bench/throughput.py --device cuda --steps 30 \
    --json "$RESULTS/throughput_cuda.json" 2>&1 | tee "$RESULTS/throughput_cuda.log"
elapsed

echo
echo "== 2. throughput bench, CUDA, cell E, torch.compile next to eager"
timeout -k 10 130 $PY bench/throughput.py --device cuda --cells E --sections stage1,stage2 \
    --compile --no-ablations --rounds 2 --steps 30 \
    --json "$RESULTS/throughput_cuda_compile.json" 2>&1 | tee "$RESULTS/throughput_cuda_compile.log"
elapsed

echo
echo "== 3. FEAR sweep of three cells: --workers 1, then --workers 3 on one GPU"
B='|nor_conv_1x1~0|+|skip_connect~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_1x1~1|avg_pool_3x3~2|'
D='|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_3x3~1|nor_conv_3x3~2|'
E='|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|nor_conv_3x3~0|nor_conv_3x3~1|nor_conv_3x3~2|'
if [ -f "$DATAROOT/cifar-10-batches-py/data_batch_1" ]; then
    DATA=(--dataset cifar10 --dataroot "$DATAROOT" --train-subset 10000)
else
    echo "NOTE: no CIFAR-10 under $DATAROOT: the sweep runs on --dataset synthetic"
    DATA=(--dataset synthetic)
fi
TRACK="sqlite:///$WORK/mlflow.db"
for K in 1 3; do
    T0=$(date +%s%N)
    timeout -k 10 55 $FM sweep fear --archs "$B,$D,$E" "${DATA[@]}" --threshold 0.3 \
        --stage1-epochs 8 --freeze-epochs 2 --check-every 10 --workers "$K" \
        --tracking-uri "$TRACK" --experiment "gpu-check-w$K" 2>&1 | tail -3
    T1=$(date +%s%N)
    echo "sweep --workers $K: wall $(((T1 - T0) / 1000000)) ms for 3 evaluations"
done
MLFLOW_TRACKING_URI="$TRACK" $PY - <<'EOF' 2>&1 | tee "$RESULTS/sweep.log"
import mlflow

cols = ["tags.fear.status", "metrics.score", "metrics.stage1_epochs", "metrics.stage1_s",
        "metrics.stage2_s", "metrics.wall_s"]
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
rm -rf "$WORK"
echo
elapsed
echo "== done; logs and JSON in $RESULTS"
