#!/usr/bin/env bash
# Issue 8 on one GPU (docs/performance.md): the training-step benchmark, then the sampling one,
# each with its own wall-time budget, JSON lines and logs written into $OUT as rows finish.
# From the repository root on the GPU machine (device tool: carry .whl, which holds diffusers):
#     bash benchmarks/gpu_run.sh
# TRAIN_BUDGET + SAMPLE_BUDGET + start-up stay under 540 s; each script also stops itself 20 s
# after its budget and still prints its table; `timeout` is the last resort.
set -u
OUT=${OUT:-/tmp/perf-out}
mkdir -p "$OUT"
TRAIN_BUDGET=${TRAIN_BUDGET:-280}
SAMPLE_BUDGET=${SAMPLE_BUDGET:-160}
if [ -z "${NO_DEVICE_ENV:-}" ]; then  # NO_DEVICE_ENV=1: a dry run where diffusers is installed
    . scripts/device_env.sh || { echo "device_env.sh failed (is .whl carried?)"; exit 1; }
fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/gpu.txt"
python3 -c "import torch, diffusers, peft; print('torch', torch.__version__, 'diffusers', diffusers.__version__, 'peft', peft.__version__)" | tee -a "$OUT/gpu.txt"
timeout $((TRAIN_BUDGET + 40)) python3 benchmarks/gpu_train_step.py --budget-s "$TRAIN_BUDGET" \
    --out "$OUT/train.jsonl" ${TRAIN_ARGS:-} 2>&1 | tee "$OUT/train.log" | grep -v "^{" 
timeout $((SAMPLE_BUDGET + 40)) python3 benchmarks/gpu_sampling.py --budget-s "$SAMPLE_BUDGET" \
    --out "$OUT/sampling.jsonl" ${SAMPLE_ARGS:-} 2>&1 | tee "$OUT/sampling.log" | grep -v "^{"
