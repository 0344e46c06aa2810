#!/usr/bin/env bash
# One prepared GPU run of the benchmark suite (under 9 minutes: stage limits 270+60+60+120 s).
#
# For an H100/H200 machine with Python 3.12, CUDA builds of torch and JAX, no
# TensorFlow and no network. Keras and its small dependencies (namex, optree)
# and nibabel must already be importable (e.g. wheels installed with
# `pip install --target /tmp/site` and PYTHONPATH=/tmp/site). nilearn is
# optional: without it the pipeline benchmark prepares simple generated cases
# instead of the course's synthetic ones.
#
# Usage (from the repository root):   OUT=/some/folder bash benchmarks/gpu_check.sh
# Writes at most 8 files into $OUT:
#   env.txt            GPU, driver, versions
#   train_step.md      full 192x192x160 Table 1 step, bf16 and fp32, Keras on JAX and on
#                      torch vs the PyTorch reference (channels-last): ms/step, TFLOP/s,
#                      peak GPU memory, projected epoch time for 240 volumes
#   train_step.json    the same rows, machine-readable
#   inference.md       full volume vs sliding window, bf16
#   pipeline.md        cache reads vs the step
#   train_loop.md      chapter 03's training loop at full size: s/step, peak memory, projected gpu run
#   summary.md         all tables together, for benchmarks/RESULTS.md
# Every stage has its own time limit, so one slow path cannot eat the budget;
# a stage that runs out is reported as such and the next one starts.
set -u
OUT="${OUT:?set OUT to a folder for the results}"
mkdir -p "$OUT"
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 TF_CPP_MIN_LOG_LEVEL=2
PY="${PYTHON:-python3}"
STEPS="${STEPS:-10}"
SIZE="${SIZE:-192 192 160}"     # override only to dry-run the script on a CPU, e.g. SIZE="32 32 32"
PATCH="${PATCH:-96 96 80}"

stage() {  # stage NAME SECONDS LOGFILE COMMAND... : run with a limit, log, note the outcome
  local name=$1 limit=$2 log=$3; shift 3
  echo "== $name (limit ${limit}s): $*" | tee -a "$log"
  local start=$SECONDS
  timeout --kill-after=10 "$limit" "$@" >>"$log" 2>&1
  local status=$?
  if [ $status -eq 124 ] || [ $status -eq 137 ]; then
    echo "!! $name stopped at its ${limit}s limit" | tee -a "$log"
  elif [ $status -ne 0 ]; then
    echo "!! $name failed with status $status (see $log)" | tee -a "$log"
  fi
  echo "== $name took $((SECONDS - start)) s" | tee -a "$log"
}

{
  date -u +%Y-%m-%dT%H:%M:%SZ
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
  "$PY" - <<'EOF'
import importlib.metadata as m, platform
print("python", platform.python_version())
for name in ("keras", "jax", "jaxlib", "torch", "numpy", "nibabel", "nilearn", "tensorflow"):
    try:
        print(name, m.version(name))
    except m.PackageNotFoundError:
        print(name, "-")
import torch
print("torch cuda", torch.version.cuda, "cudnn", torch.backends.cudnn.version())
EOF
} >"$OUT/env.txt" 2>&1
cat "$OUT/env.txt"

# 1. Training step at full size: bf16 first (the target), then fp32. Each measurement runs in
#    its own process with its own limit (--timeout); the stage limit bounds the whole table.
stage "train step" 270 "$OUT/train_step.md" \
  "$PY" benchmarks/bench_train_step.py --size $SIZE --precisions bfloat16,float32 \
  --backends jax,torch --steps "$STEPS" --warmup 3 --timeout 90 --json "$OUT/train_step.json"

# 2. Inference, bf16, on the Keras torch backend (no per-shape compilation to wait for).
stage "inference" 60 "$OUT/inference.md" \
  env KERAS_BACKEND="${INFER_BACKEND:-torch}" "$PY" benchmarks/bench_inference.py \
  --size $SIZE --patch $PATCH --precision bfloat16 --steps 3 --window-batch 4

# 3. Input pipeline at the full 192x192x160 grid vs a bf16 step on the Keras torch backend.
stage "pipeline" 60 "$OUT/pipeline.md" \
  env KERAS_BACKEND="${PIPELINE_BACKEND:-torch}" "$PY" benchmarks/bench_pipeline.py \
  --downsample 1 --cases 8 --workers 8 --precision bfloat16 --steps 3

# 4. Chapter 03's own training loop (cache reader, training.train, checkpoints) at full size,
#    bf16, the gpu profile's filters, on the backend the machine has (JAX by default).
stage "train loop" 120 "$OUT/train_loop.md" \
  env KERAS_BACKEND="${LOOP_BACKEND:-jax}" "$PY" benchmarks/bench_train_loop.py --precision bfloat16

{
  cat "$OUT/env.txt"
  for part in train_step inference pipeline train_loop; do
    echo; echo "## $part"; grep -E '^(###|\||Fastest|!!|\(wrote)' "$OUT/$part.md" || echo "(no table)"
  done
} >"$OUT/summary.md"
cat "$OUT/summary.md"
