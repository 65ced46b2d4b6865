#!/usr/bin/env bash
# The thirty-fifth round (issue 16): what the thirty-fourth round left open. Files land flat in $OUT:
#   1. pipeline.txt, pipeline-compare.md: emojiworld_alignment.sh (cost data train eval compare) with the bytecode
#      cache written before the round (scripts/device_env.sh now writes it once a lease; the thirty-fourth
#      round's cost model, the first process, wrote it and took 58 s against the thirty-third round's 42 s) and
#      the cost model's renders on the GPU (`--render-device backbone`, the new default): its comparison table
#      should differ from the thirty-fourth round's by the renders' rounding only;
#   2. dtype.txt: the sampling commands' precision (`--dtype`, new on 2026-12-05): the whole `scdpo generate` of
#      an SD 1.5-shaped pipeline folder in fp32 (every command before), auto (bf16 on the GPU, their default
#      now) and fp16 (benchmarks/sampling_dtype.py); then the whole EmojiWorld `scdpo eval` and `scdpo data build`
#      with today's settings, the defaults (fp32) and --dtype bf16 (benchmarks/emojiworld_throughput.py --eval
#      --build --dtypes bf16): the 5x goals of both, which fp32 has not reached;
#   3. cost.txt: the cost model alone, on one CPU thread and on every core, its renders on the CPU (the thirty-
#      third and thirty-fourth rounds' code) and on the GPU (--render-device backbone, the default since this
#      round); the pipeline gives it every core since the thirty-fourth round, and whether that is what slowed
#      it there is not known. Held-out AUROCs beside each: the renders' device should change them by rounding
#      only;
#   4. step.txt: the graphed training step's device time by kernel (benchmarks/step_busy.py --top): what its
#      16.5 ms a step are made of, so which kernels a lever would have to remove. Six graphed trainings at once
#      already reach 86% of what one step's device time allows (51.9 steps/s in all against 60.6), so the
#      trainings themselves get faster only with less device work a step; then the step at 96 and 192 pairs
#      (three and six trainings' batches in one step): whether batching the runs in one process would pay;
#   6. together.txt, together-compare.md: the pipeline's trainings again, all six in one process (TOGETHER=1,
#      `scdpo train --together`), on stage 1's cost model and pairs, then their evaluations and comparison:
#      against stage 1's trainings (138 s in the thirty-fourth round), and the same table but for rounding;
#   5. cc.txt: the compile cache on a GPU (benchmarks/compile_cache.sh: the compiled step filling a
#      --compile-cache folder, then a fresh process reading it), never measured on a GPU.
#
#   . scripts/device_env.sh && bash benchmarks/detach.sh r35 bash benchmarks/round35.sh   # device: carry
#       .carry/s3 after .carry/s1 and .carry/s2, every call in ONE message, the detach command repeated
#   TINY=1 R=/tmp/r35 OUT=/tmp/r35/out bash benchmarks/round35.sh                        # CPU dry run
# Ran on 2026-12-05 with ORDER="4 1 6" (BENCHMARKS.md, "Thirty-fifth round"). What it left, for the next budget:
#   STAGE1_TOGETHER=1 ORDER="1 2 5 3" (the whole pipeline with its defaults now, then the precision, the compile
#   cache and the cost model's stages)
. "$(dirname "$0")/round_env.sh" r35

stage1() {
echo "[$(date +%T)] 1. the whole EmojiWorld pipeline, the bytecode cache written before it"
# six processes, as every round before (stage 6 trains them in one); STAGE1_TOGETHER=1: the pipeline's defaults
# since this round, its trainings in one process
TOGETHER=${STAGE1_TOGETHER:-0} time_pipeline
}

stage2() {
echo "[$(date +%T)] 2. the sampling commands' precision"
if [ "${TINY:-0}" = 1 ]; then DT="--tiny --images 8 --steps 2 --batch-size 8"; TP="--images 8 --steps 2 --eval-limit 4 --build-prompts 4"
else DT="--images 32"; TP="--images 256 --build-prompts 250"; fi  # about 4 minutes on an H100 (estimated)
{ echo "python3 benchmarks/sampling_dtype.py $DT ($(gpu_name))"
  python3 "$B/sampling_dtype.py" $DT --out "$R/dtype" 2>&1 | grep -vE "it/s\]|^wrote " | tail -8
  echo "python3 benchmarks/emojiworld_throughput.py $TP --rows today --eval --build COST --dtypes bf16"
  python3 "$B/emojiworld_throughput.py" $TP --rows today --eval --build "$R/align/cost" --dtypes bf16 \
      --out "$R/tp" 2>&1 | grep -vE "it/s\]" | tail -30; } > "$OUT/dtype.txt"
cat "$OUT/dtype.txt"
}

stage3() {
echo "[$(date +%T)] 3. the cost model alone, one thread and every core"
if [ "${TINY:-0}" = 1 ]; then CO="--pool 64 --eval-n 16 --steps 20"; else CO="--pool 8000 --eval-n 300"; fi
{ echo "scdpo --threads N cost train $CO --render-device D --no-progress ($(gpu_name)); seconds of wall time, the process's start included"
  for row in "1|cpu" "1|backbone" "$(nproc)|backbone" "$(nproc)|cpu"; do
      n=${row%|*}; rd=${row#*|}; t0=$(date +%s)
      python3 -m scdpo.cli --threads "$n" cost train --out "$R/cost-$n-$rd" $CO --render-device "$rd" --no-progress \
          > "$R/cost-$n-$rd.log" 2>&1 || { echo "FAILED: --threads $n --render-device $rd"; tail -3 "$R/cost-$n-$rd.log"; }
      echo "--threads $n --render-device $rd: $(( $(date +%s) - t0 )) s; $(python3 -c 'import json, sys
m = json.load(open(sys.argv[1]))
print({"feature_seconds": m["feature_seconds"], "total_seconds": m["total_seconds"],
       "auroc": round(m["heldout"]["auroc"], 4), "auroc_augmented": round(m["heldout_augmented"]["auroc"], 4)})' \
          "$R/cost-$n-$rd/metrics.json" 2>&1 | tail -1)"
  done; } > "$OUT/cost.txt"
cat "$OUT/cost.txt"
}

stage4() {
echo "[$(date +%T)] 4. the graphed step's device time by kernel"
if [ "${TINY:-0}" = 1 ]; then BUSY="--device cpu --steps 5 --warmup 1 --window 2"; BS=2; BIG=4
else BUSY="--device cuda --steps 60 --warmup 20 --window 20"; BS=32; BIG="96 192"; fi
{ echo "python3 benchmarks/step_busy.py $BUSY --batch-size $BS --rows graphs --top 30"
  python3 "$B/step_busy.py" $BUSY --batch-size $BS --rows graphs --top 30 2>&1 | grep -v "it/s\]" | tail -45
  # six trainings' pairs in one step (what one process batching the pipeline's six runs would pay at most, before
  # sharing their reference call): against six steps of 32, whether that lever is worth building
  for b in $BIG; do echo "python3 benchmarks/step_busy.py $BUSY --batch-size $b --rows graphs"
      python3 "$B/step_busy.py" $BUSY --batch-size $b --rows graphs 2>&1 | grep -v "it/s\]" | tail -4; done
} > "$OUT/step.txt"
cat "$OUT/step.txt"
}

stage5() {
echo "[$(date +%T)] 5. the compile cache on the GPU"
if [ "${TINY:-0}" = 1 ]; then CCE="DEVICE=cpu BATCH=2 STEPS=4 WARMUP=2"; else CCE="DEVICE=cuda BATCH=32 STEPS=30 WARMUP=10"; fi
env $CCE OUT="$R/cc" bash "$B/compile_cache.sh" > "$R/cc.log" 2>&1 || echo "FAILED: compile_cache.sh"
tr "\r" "\n" < "$R/cc.log" | grep -vE "/s\]|s/it\]|^\[transformers\]|^ *$" | tail -20 > "$OUT/cc.txt"
cat "$OUT/cc.txt"
}

stage6() {
echo "[$(date +%T)] 6. the pipeline's six trainings in one process (TOGETHER=1), on stage 1's cost model and pairs"
mkdir -p "$R/alignT" && ln -sfn "$R/align/cost" "$R/alignT/cost" && ln -sfn "$R/align/scp" "$R/alignT/scp"
local start=$(date +%s)
TOGETHER=1 BASELINES=0 R=$R/alignT STAGES="train eval compare" bash "$B/emojiworld_alignment.sh" > "$R/alignT.log" 2>&1
pipeline_report "emojiworld_alignment.sh (train eval compare), TOGETHER=1" "$R/alignT" "$R/alignT.log" "$start" \
    > "$OUT/together.txt"
cp "$R/alignT/compare/table.md" "$OUT/together-compare.md" 2>/dev/null
cat "$OUT/together.txt"
}

# the order of a budget too short for all five (three tries of 2026-12-05 got no machine, 511 s of the session's
# 1,800): what decides a lever first (4), then what stages 6 and 2 need (1: its cost model and pairs), then
# 6 (the trainings in one process, new on 2026-12-05), 2, 5, 3
for k in ${ORDER:-4 1 6 2 5 3}; do "stage$k"; done
echo "[$(date +%T)] done"
