#!/usr/bin/env bash
# What `scdpo train --compile-cache` saves a fresh machine (issue 16; BENCHMARKS.md, "The compile
# cache"): the recipe's compiled step (benchmarks/anchor_cost.py's compiled row) run twice, each in a
# fresh process with an empty inductor folder of its own, as a fresh machine has, both pointed at one
# --compile-cache folder. The first run fills it; the second reads it. Their first-step and per-step
# seconds side by side are the measurement; the steady column shows the kernels are the same speed.
#
#   DEVICE=cuda BATCH=32 STEPS=30 WARMUP=10 bash benchmarks/compile_cache.sh      # a GPU
#   DEVICE=cpu BATCH=2 STEPS=6 WARMUP=3 bash benchmarks/compile_cache.sh          # the 2-core CPU
set -euo pipefail
OUT=${OUT:-outputs/compile-cache}
DEVICE=${DEVICE:-cuda}; BATCH=${BATCH:-32}; STEPS=${STEPS:-30}; WARMUP=${WARMUP:-10}
rm -rf "$OUT"
mkdir -p "$OUT"
for run in fill read; do
  echo "== $run: $(date -u '+%F %T UTC')"
  start=$(date +%s)
  TORCHINDUCTOR_CACHE_DIR="$OUT/inductor-$run" python3 benchmarks/anchor_cost.py --device "$DEVICE" \
    --batch-size "$BATCH" --steps "$STEPS" --warmup "$WARMUP" --compile --only compiled \
    --compile-cache "$OUT/kernels" | tee "$OUT/$run.txt"
  echo "$run: $(( $(date +%s) - start )) s wall, the process's start and imports included"
done
echo "cache folder: $(du -sh "$OUT/kernels" | cut -f1) in $(ls "$OUT/kernels" | wc -l) file(s)"
