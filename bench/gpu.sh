#!/usr/bin/env bash
# GPU checks and benchmarks on a single-GPU machine with no network (issues 7 and 16), about 9
# minutes on one H200, every part under its own time limit:
#   1. installs the Python packages the machine lacks from a folder of wheels ($WHEELS),
#   2. trains EDSR-baseline x2 for 2 minutes on $DATA's B100 images as configured (bf16,
#      channels_last), then 2 minutes in fp32, and prints for each the images/s, model TFLOP/s,
#      that rate as a fraction of a matmul's measured rate (frac_of_matmul_peak) and the Set5 x2
#      PSNR it reached (fp32 evaluation) next to bicubic,
#   3. answers the precision questions (python -m sr_lightning.bench.precision): the step time
#      under bf16 with and without the network's fp32 output, 32-true with TF32 on and off, and
#      torch.compile with an EMA of the weights (default and reduce-overhead modes),
#   4. runs the benchmark table (python -m sr_lightning.cli.bench): the training step of EDSR-baseline
#      and EDSR x2, plain vs ours as configured, with each speed-up off and alone (bf16,
#      channels_last, fused Adam, the torch.compile modes, data.on_device), with peak memory;
#      the loader's patches/s (workers, data.on_device); inference ms/MP, fp32 and bf16,
#   5. appends the table, the training and the precision lines to $BENCHMARKS, printed last.
# The two trainings are one seed each (fp32 vs bf16 with the fp32 output): a per-seed difference,
# not a verdict (that needs 3 or more seeds; the CPU comparison is in BENCHMARKS.md).
# Prepare it on a machine with pip access: `make gpu-payload` (wheels into .whl/, images into
# gpu_payload/), then carry both, e.g. with the device tool:
#   run(command="bash bench/gpu.sh", carry=[".whl", "gpu_payload"])
# Try it on a CPU with tiny sizes (tests/test_bench.py does): TRAIN_ARGS="trainer=cpu ..."
# BENCH_ARGS="--device cpu --n-resblocks 1 ..." DATA=../shared/datasets BENCHMARKS=/tmp/B.md
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
WHEELS=${WHEELS:-.whl}
DATA=${DATA:-gpu_payload/datasets}
LOGS=${LOGS:-${OUT:-outputs/gpu}}
BENCHMARKS=${BENCHMARKS:-BENCHMARKS.md}  # where the block is appended
TRAIN_ARGS=${TRAIN_ARGS:-}               # extra train.py overrides (both runs)
BENCH_ARGS=${BENCH_ARGS:-}               # extra sr-bench options
PRECISION_ARGS=${PRECISION_ARGS:-}       # extra options of sr_lightning.bench.precision
TRAIN_LIMIT=${TRAIN_LIMIT:-165}          # s per training run: 2 min of updates + start + test
PRECISION_LIMIT=${PRECISION_LIMIT:-75}   # s for the precision questions
BENCH_LIMIT=${BENCH_LIMIT:-150}          # s for the table; no new row in its last 40 s
mkdir -p "$LOGS"
# one decoded-image cache for the training runs and the table (data.cache_dir=null reads it)
export SR_LIGHTNING_CACHE=${SR_LIGHTNING_CACHE:-$LOGS/cache}
export PYTHONUNBUFFERED=1 WANDB_MODE=disabled PROJECT_ROOT=$PWD
script_start=$(date +%s)

if ! $PY -c "import hydra, omegaconf" 2>/dev/null; then
  echo "== installing missing packages from $WHEELS"
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site "$WHEELS"/*.whl || { echo "no usable wheels in $WHEELS"; exit 1; }
  export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
export PYTHONPATH=$PWD/src${PYTHONPATH:+:$PYTHONPATH}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || true
$PY -c "import torch, lightning; print('torch', torch.__version__, 'lightning', lightning.__version__)"

summarize() {  # run folder, name: one line for BENCHMARKS.md
  $PY - "$1" "$2" <<'PYEOF'
import csv, json, statistics, sys
from sr_lightning.runs.folder import RunFolder
run, name = RunFolder(sys.argv[1]), sys.argv[2]
try:
    rows = list(csv.DictReader(open(run.path / "csv" / "metrics.csv")))  # logger=csv's file
    ips = [float(r["train/images_per_sec"]) for r in rows if r.get("train/images_per_sec")]
    summary = run.read_summary() or {}
    speed = summary.get("throughput") or {}
    results = json.loads(run.results.read_text())
    ours = next(r for r in results if r["model"] != "bicubic")
    bic = next(r for r in results if r["model"] == "bicubic")
    frac = (
        f"{speed['tflops']:.3g} TFLOP/s, {100 * speed['frac_of_matmul_peak']:.3g}% of a "
        f"{speed['peak_dtype']} matmul measured here ({speed['peak_tflops']:.3g} TFLOP/s)"
        if speed.get("frac_of_matmul_peak") else "no throughput record"
    )
    print(f"- 2-minute EDSR-baseline x2 training, {name}: {summary['steps']} updates, median "
          f"{statistics.median(ips):,.0f} images/s (LR patches), {frac}; Set5 x2 PSNR "
          f"{ours['psnr']:.2f} dB (bicubic {bic['psnr']:.2f} dB; fp32 evaluation), "
          f"status {summary['status']}")
except (OSError, KeyError, StopIteration, ValueError, statistics.StatisticsError) as e:
    print(f"- 2-minute EDSR-baseline x2 training, {name}: no result ({type(e).__name__}: {e}; "
          f"see {run.path}.log)")
PYEOF
}

: >"$LOGS/train-summary.md"
for run in "default:" "fp32:trainer.precision=32-true"; do
  name=${run%%:*} extra=${run#*:}
  echo "== 2-minute EDSR-baseline x2 training, $name (batch 16, 48x48, limit $TRAIN_LIMIT s)"
  start=$(date +%s)
  # shellcheck disable=SC2086  # TRAIN_ARGS holds several overrides
  timeout -k 10 "$TRAIN_LIMIT" $PY train.py experiment=gpu_2min data.root="$DATA" \
    hydra.run.dir="$LOGS/train-$name" data.cache_dir="$SR_LIGHTNING_CACHE" $TRAIN_ARGS $extra \
    >"$LOGS/train-$name.log" 2>&1
  echo "train.py exit code $? after $(( $(date +%s) - start )) s (log: $LOGS/train-$name.log)"
  summarize "$LOGS/train-$name" "$name" | tee -a "$LOGS/train-summary.md"
done

echo "== precision questions (limit $PRECISION_LIMIT s)"
# shellcheck disable=SC2086  # PRECISION_ARGS holds several options
timeout -k 10 "$PRECISION_LIMIT" $PY -m sr_lightning.bench.precision $PRECISION_ARGS \
  >"$LOGS/precision.log" 2>&1
echo "precision exit code $?"
{ echo; grep -E '^(Precision|- )' "$LOGS/precision.log" || echo "- precision questions: no result (see $LOGS/precision.log)"; } \
  >>"$LOGS/train-summary.md"

echo "== benchmark table (limit $BENCH_LIMIT s)"
rm -f "$LOGS/BENCHMARKS.append.md"
# shellcheck disable=SC2086  # BENCH_ARGS holds several options
timeout -k 10 "$BENCH_LIMIT" $PY -m sr_lightning.cli.bench --device cuda --data-root "$DATA" \
  --budget-s $(( BENCH_LIMIT > 60 ? BENCH_LIMIT - 40 : BENCH_LIMIT / 2 )) \
  --out "$LOGS/BENCHMARKS.append.md" $BENCH_ARGS >"$LOGS/bench.log" 2>&1
echo "bench exit code $?; the whole script took $(( $(date +%s) - script_start )) s"
if [ ! -s "$LOGS/BENCHMARKS.append.md" ]; then  # killed before it wrote: keep what it printed
  { echo; echo "### bench did not finish; its log:"; echo; grep '^|\|^#' "$LOGS/bench.log"; } \
    >"$LOGS/BENCHMARKS.append.md"
fi
{ echo; cat "$LOGS/train-summary.md"; } >>"$LOGS/BENCHMARKS.append.md"
cat "$LOGS/BENCHMARKS.append.md" >>"$BENCHMARKS"
echo "appended to $BENCHMARKS"
echo
cat "$LOGS/BENCHMARKS.append.md"
