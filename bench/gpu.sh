#!/usr/bin/env bash
# GPU checks and benchmarks on a single-GPU machine with no network (issue 7), < 10 minutes:
#   1. installs the Python packages the machine lacks from a folder of wheels ($WHEELS),
#   2. trains EDSR-baseline x2 for 2 minutes (bf16, channels_last) on $DATA's B100 images and
#      prints the images/s and the Set5 PSNR it reached,
#   3. runs the benchmark table (python -m sr_lightning.bench) in bf16 and fp32 and prints it last.
# Prepare it on a machine with pip access: `make gpu-payload` (wheels into .whl/, images into
# gpu_payload/), then carry both, e.g. with the device tool:
#   run(command="bash bench/gpu.sh", carry=[".whl", "gpu_payload"])
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
WHEELS=${WHEELS:-.whl}
DATA=${DATA:-gpu_payload/datasets}
LOGS=${LOGS:-${OUT:-outputs/gpu}}
# extra arguments, e.g. to try the script on a CPU: TRAIN_ARGS="trainer=cpu ..." BENCH_ARGS="--device cpu ..."
TRAIN_ARGS=${TRAIN_ARGS:-}
BENCH_ARGS=${BENCH_ARGS:-}
mkdir -p "$LOGS"
export PYTHONUNBUFFERED=1 WANDB_MODE=disabled PROJECT_ROOT=$PWD

if ! $PY -c "import hydra, omegaconf" 2>/dev/null; then
  echo "== installing missing packages from $WHEELS"
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site "$WHEELS"/*.whl || { echo "no usable wheels in $WHEELS"; exit 1; }
  export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
export PYTHONPATH=$PWD/src${PYTHONPATH:+:$PYTHONPATH}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
$PY -c "import torch, lightning; print('torch', torch.__version__, 'lightning', lightning.__version__)"

echo "== 2-minute EDSR-baseline x2 training (bf16, channels_last, batch 16, 48x48)"
start=$(date +%s)
timeout 270 $PY train.py experiment=gpu_2min data.root="$DATA" hydra.run.dir="$LOGS/train" \
  data.cache_dir="$LOGS/cache" $TRAIN_ARGS >"$LOGS/train.log" 2>&1
echo "train.py exit code $? after $(( $(date +%s) - start )) s (log: $LOGS/train.log)"
TRAIN_SUMMARY=$($PY - "$LOGS/train" <<'PYEOF'
import csv, json, statistics, sys
from pathlib import Path
run = Path(sys.argv[1])
rows = list(csv.DictReader(open(run / "csv" / "metrics.csv")))
ips = [float(r["train/images_per_sec"]) for r in rows if r.get("train/images_per_sec")]
summary = json.loads((run / "summary.json").read_text())
results = json.loads((run / "results.json").read_text())
ours = next(r for r in results if r["model"] != "bicubic")
bic = next(r for r in results if r["model"] == "bicubic")
print(f"2-minute training: {summary['steps']} updates, median {statistics.median(ips):,.0f} "
      f"images/s (LR 48x48 patches), Set5 x2 PSNR {ours['psnr']:.2f} dB "
      f"(bicubic {bic['psnr']:.2f} dB), status {summary['status']}")
PYEOF
)
echo "$TRAIN_SUMMARY"

echo "== benchmark table"
timeout 300 $PY -m sr_lightning.bench --device cuda --data-root "$DATA" \
  --out "$LOGS/BENCHMARKS.append.md" $BENCH_ARGS >"$LOGS/bench.log" 2>&1
echo "bench exit code $?"
echo
echo "$TRAIN_SUMMARY"
cat "$LOGS/BENCHMARKS.append.md" 2>/dev/null || tail -40 "$LOGS/bench.log"
