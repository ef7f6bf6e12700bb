#!/usr/bin/env bash
# Wheels that let bench/gpu_check.sh run its sweep on a GPU machine that reaches no package
# index: the GPU image has its own Python with torch, numpy, pandas, scipy ... but not MLflow
# or Optuna. This downloads MLflow and Optuna (this venv's versions) with everything they need,
# for that Python, into .whl/ (git-ignored), and leaves out the large packages such an image
# already has, so the folder travels (the device tool carries at most 64 MiB: name `.whl` in
# `carry`). gpu_check.sh installs, --no-deps, only the wheels of distributions its Python
# lacks, so every package the image already has stays as it is.
#
# Usage (from the repository root, `make venv` done; needs a package index, i.e. run it here):
#   bash bench/gpu_wheels.sh              # wheels for CPython 3.12 on x86-64 Linux
#   GPU_PYTHON=3.11 bash bench/gpu_wheels.sh
set -euo pipefail
cd "$(dirname "$0")/.."
PY_VERSION=${GPU_PYTHON:-3.12}
DEST=.whl
LIMIT_MB=56
PY=.venv/bin/python
[ -x "$PY" ] || { echo "no .venv: run make venv first" >&2; exit 1; }

# Large wheels a GPU image ships anyway (the device's package list, 2026-11).
ON_THE_IMAGE=(numpy pandas scipy pyarrow scikit_learn matplotlib pillow fonttools aiohttp
    kiwisolver contourpy)

versions=$($PY - <<'EOF'
from importlib.metadata import version
print(" ".join(f"{name}=={version(name)}" for name in ("mlflow", "optuna")))
EOF
)
rm -rf "$DEST"
mkdir -p "$DEST"
echo "downloading $versions and what they need, for CPython $PY_VERSION on x86-64 Linux"
$PY -m pip download -q --only-binary=:all: --python-version "$PY_VERSION" --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
    --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    --platform manylinux1_x86_64 --platform any -d "$DEST" $versions
for name in "${ON_THE_IMAGE[@]}"; do
    rm -f "$DEST/$name"-[0-9]*.whl
done
size_mb=$(du -sm "$DEST" | cut -f1)
echo "$DEST: $(ls "$DEST"/*.whl | wc -l) wheels, ${size_mb} MB"
if [ "$size_mb" -gt "$LIMIT_MB" ]; then
    echo "$DEST is over ${LIMIT_MB} MB: it would not travel with the working tree" >&2
    exit 1
fi
