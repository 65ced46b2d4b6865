#!/usr/bin/env bash
# The twenty-sixth round (issue 16), one device budget, one measurement after another so that none
# times another's load (BENCHMARKS.md, "Twenty-sixth round"):
#   1. EmojiWorld: `scdpo eval` with the eval's overlap, timed on the GPU beside today's settings
#      (round24.sh stage 1 with --rows today --eval --profile) -> $OUT/tp-*;
#   2. SD 1.5 scale: the training step's ladder, the micro-batch search and regional compile, at the base
#      batch (the loss check) and at the eager variant's best micro-batch (issue 16's goal: >= 1.5x full,
#      >= 1.4x LoRA, against the plain step's best) -> $OUT/train.*, gpu.txt;
#   3. SD 1.5 scale sampling with its compile row, while the budget lasts -> $OUT/sampling.* (flat: detach.sh copies files, not folders)
#
#   . scripts/device_env.sh && bash benchmarks/detach.sh r26 bash benchmarks/round26.sh   # device: carry
#       .carry/s3 after .carry/s1 and .carry/s2, every call in ONE message, the detach command repeated
#   TINY=1 R=/tmp/r26 OUT=/tmp/r26/out bash benchmarks/round26.sh                        # CPU dry run
set -u
R=${R:-/tmp/r26}
OUT=${OUT:-$R/out}
mkdir -p "$R" "$OUT"
B=$(dirname "$0")
echo "[$(date +%T)] 1. EmojiWorld eval throughput"
R=$R OUT=$OUT STAGES=1 TP_FLAGS="--rows today --eval --profile" bash "$B/round24.sh"
echo "[$(date +%T)] 2-3. SD 1.5-shaped training step and sampling"
if [ "${TINY:-0}" = 1 ]; then
    TRAIN="--tiny --shapes tiny --phases ladder,search --warmup 1 --steps 2"; SAMPLE="--tiny --no-compile --steps 2 --batches 2"
else
    TRAIN="--shapes sd15 --phases ladder,search,compile"; SAMPLE=""
fi
NO_DEVICE_ENV=1 OUT=$OUT TRAIN_BUDGET=${TRAIN_BUDGET:-950} SAMPLE_BUDGET=${SAMPLE_BUDGET:-220} \
    TRAIN_ARGS="$TRAIN" SAMPLE_ARGS="$SAMPLE" bash "$B/gpu_run.sh"
echo "[$(date +%T)] done"
