#!/usr/bin/env bash
# The next device budget for issue 16 (not run yet), one measurement after another so that none times
# another's load; each stage's files land flat in $OUT (detach.sh copies files, not folders):
#   1. the whole EmojiWorld `scdpo eval`, twice, with the conv layout that follows the device (channels-last
#      on the CPU only since the twenty-sixth round) and the overlap off on the GPU by default
#      (docs/performance.md, "The eval's overlap"), the defaults' rows first with an empty cache of the
#      references' features, then reading it (docs/evaluation.md, "The Frechet reference's cache")
#      -> $OUT/eval-run{1,2}.jsonl, tp-table.md;
#   1b. the whole `scdpo data build` (never timed as a command against today's settings): a cost model with
#      the rounds' settings, then 500 + 500 prompts built three ways (emojiworld_throughput.py --build)
#      -> $OUT/build.jsonl, build-table.md;
#   2. SD 1.5-shaped sampling: regional compile of the UNet, then of the VAE's blocks too (issue 16: 1.5x
#      diffusers' pipeline; the UNet alone gave 1.34x) -> $OUT/sampling.*;
#   3. the compile cache on a fresh machine (round24.sh stage 4), while the budget lasts -> $OUT/cc.tar.gz.
#
#   . scripts/device_env.sh && bash benchmarks/detach.sh r27 bash benchmarks/round27.sh   # device: carry
#       .carry/s3 after .carry/s1 and .carry/s2, every call in ONE message, the detach command repeated
#   TINY=1 R=/tmp/r27 OUT=/tmp/r27/out bash benchmarks/round27.sh                        # CPU dry run
# Issue 19 ranks above issue 16: a budget that holds only one round runs benchmarks/round28.sh first.
set -u
R=${R:-/tmp/r27}
OUT=${OUT:-$R/out}
mkdir -p "$R" "$OUT"
B=$(dirname "$0")
if [ "${TINY:-0}" = 1 ]; then
    TP="--device cpu --images 8 --steps 2 --rows today --eval --eval-limit 4"; SAMPLE="--tiny --steps 2 --batches 2"
    COST="--pool 64 --eval-n 16 --steps 20"; BUILD="--device cpu --images 8 --steps 2 --build-prompts 6"
else
    TP="--device cuda --rows today --eval"; SAMPLE=""
    COST="--pool 8000 --eval-n 300"; BUILD="--device cuda --images 64 --build-prompts 500"
fi
for i in 1 2; do
    echo "[$(date +%T)] 1. EmojiWorld eval, run $i"
    python3 "$B/emojiworld_throughput.py" $TP --out "$R/tp$i" && cp "$R/tp$i/eval.jsonl" "$OUT/eval-run$i.jsonl" \
        && cp "$R/tp$i/table.md" "$OUT/tp-table$i.md"
done
echo "[$(date +%T)] 1b. the whole data build"
python3 -m scdpo.cli cost train --out "$R/cost" $COST --no-progress > "$R/cost.log" 2>&1 \
    && python3 "$B/emojiworld_throughput.py" $BUILD --rows today --build "$R/cost" --out "$R/build" \
    && cp "$R/build/build.jsonl" "$OUT/build.jsonl" && cp "$R/build/table.md" "$OUT/build-table.md"
echo "[$(date +%T)] 2. SD 1.5-shaped sampling with compile"
timeout $((${SAMPLE_BUDGET:-300} + 40)) python3 "$B/gpu_sampling.py" --budget-s "${SAMPLE_BUDGET:-300}" \
    --out "$OUT/sampling.jsonl" $SAMPLE > "$OUT/sampling.log" 2>&1; tail -16 "$OUT/sampling.log"
echo "[$(date +%T)] 3. the compile cache"
R=$R OUT=$OUT STAGES=4 TINY=${TINY:-0} bash "$B/round24.sh"
echo "[$(date +%T)] done"
