#!/usr/bin/env bash
# Scale-out for real, on one machine: `mlflow server` on 127.0.0.1 with a PostgreSQL backend
# store and a local artifact root, then SHARDS sweep workers against it (as several machines
# would run them), then the same command again to show that everything is skipped.
#
#   bench/scaleout.sh                                  # tiny synthetic shortreg sweep, 2 shards
#   SHARDS=4 WORKERS=2 bench/scaleout.sh zerocost --archs-file ../shared/data/fear_paper_archs.txt \
#       --benchmark ../shared/data/natsbench/tss_test_accuracy_200ep.csv --dataset cifar10
#
# Environment: PG_URI (default postgresql+psycopg2://postgres@127.0.0.1:5432/fear_scaleout;
# a password in it stays out of `ps`, logs and runs), PORT (5000), SHARDS (2), WORKERS (1 per
# shard), OUT (working folder, default ./out/scaleout). Needs psycopg2 (`pip install -e .[postgres]`).
set -euo pipefail
cd "$(dirname "$0")/.."
BIN="${BIN:-.venv/bin}"
PORT="${PORT:-5000}"
SHARDS="${SHARDS:-2}"
WORKERS="${WORKERS:-1}"
OUT="${OUT:-out/scaleout}"
export MLFLOW_BACKEND_STORE_URI="${PG_URI:-postgresql+psycopg2://postgres@127.0.0.1:5432/fear_scaleout}"
export MLFLOW_DEFAULT_ARTIFACT_ROOT="$PWD/$OUT/artifacts"
export MLFLOW_TRACKING_URI="http://127.0.0.1:$PORT"
mkdir -p "$OUT/artifacts"

if [ $# -eq 0 ]; then  # a smoke sweep that takes about a minute on a laptop CPU
  set -- shortreg --dataset synthetic --channels 4 --cells-per-stage 1 --device cpu \
    --sample 12 --sample-seed 1 --grid epochs=1,2 --batch-size 128 --threads 1
fi

# 1. the database (created when missing; the URI's password is used, never printed)
"$BIN/python" - <<'PY'
import os, psycopg2
from sqlalchemy.engine import make_url
url = make_url(os.environ["MLFLOW_BACKEND_STORE_URI"])
conn = psycopg2.connect(host=url.host, port=url.port or 5432, user=url.username,
                        password=url.password, dbname="postgres")
conn.autocommit = True
with conn.cursor() as cur:
    cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (url.database,))
    if cur.fetchone() is None:
        cur.execute(f'CREATE DATABASE "{url.database}"')
        print(f"created database {url.database}")
PY

# 2. the tracking server (backend URI from the environment, so `ps` shows no password)
"$BIN/mlflow" server --host 127.0.0.1 --port "$PORT" --workers 2 > "$OUT/server.log" 2>&1 &
SERVER=$!
trap 'kill $SERVER 2>/dev/null; wait $SERVER 2>/dev/null || true' EXIT
for _ in $(seq 1 600); do
  curl -sf "$MLFLOW_TRACKING_URI/health" > /dev/null && break
  kill -0 $SERVER 2> /dev/null || { tail -20 "$OUT/server.log"; exit 1; }
  sleep 0.5
done
echo "mlflow server up at $MLFLOW_TRACKING_URI (log $OUT/server.log)"

# 3. one worker per shard, as separate machines would run them
start=$(date +%s)
pids=()
for ((i = 0; i < SHARDS; i++)); do
  "$BIN/fear-mlflow" sweep "$@" --experiment scaleout --shard "$i/$SHARDS" --workers "$WORKERS" \
    > "$OUT/shard$i.log" 2>&1 &
  pids+=($!)
done
rc=0
for i in "${!pids[@]}"; do
  wait "${pids[$i]}" || rc=$?
  tail -2 "$OUT/shard$i.log"
done
echo "all $SHARDS shards done in $(( $(date +%s) - start )) s (exit $rc)"

# 4. the same command again: every evaluation is FINISHED, so everything is skipped
start=$(date +%s)
for ((i = 0; i < SHARDS; i++)); do
  "$BIN/fear-mlflow" sweep "$@" --experiment scaleout --shard "$i/$SHARDS" --workers "$WORKERS" \
    2>&1 | tail -2
done
echo "re-run (all skipped) in $(( $(date +%s) - start )) s; browse: $BIN/mlflow ui --port $((PORT + 1))" \
  "--backend-store-uri \"\$MLFLOW_BACKEND_STORE_URI\""
exit $rc
