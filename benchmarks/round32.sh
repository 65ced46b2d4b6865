#!/usr/bin/env bash
# The thirty-second round (issue 16): --cuda-graphs again, now that a recorded call empties autocast's
# weight-cast cache (scdpo.models.graphs.run_static; BENCHMARKS.md, "Thirtieth and thirty-first rounds").
# Files land flat in $OUT:
#   1. benchmarks/graph_probe.py --only-update: record at the LoRA's start, move the weights in place, replay;
#      with the reference's graphed call between forward and backward; through autograd. Every row should
#      read 0 where the thirty-first round's trainings read B's cast of the recording -> $OUT/update.txt;
#   2. round30.sh, all three stages: the plain step eager vs graphed (step.txt), the whole pipeline with
#      TRAIN_FLAGS=--cuda-graphs (pipeline.txt: each LoRA's cuda_graphs_on should now be True), the anchored
#      step eager vs graphed (anchor.txt: its illegal memory access, if the stale cast was its cause, gone);
#   3. the sampler's loop from CUDA graphs (SamplerConfig.cuda_graphs): EmojiWorld's images/s at 64 and 1024 a
#      batch, eager vs graphed, the same prompts and seeds (emojiworld_throughput.py) -> tp-table.md; and SD
#      1.5-shaped sampling, whose ladder now has a "CUDA graphs" row (gpu_sampling.py) -> sampling.log.
#
#   . scripts/device_env.sh && bash benchmarks/detach.sh r32 bash benchmarks/round32.sh   # device: carry
#       .carry/s3 after .carry/s1 and .carry/s2, every call in ONE message, the detach command repeated
#   TINY=1 R=/tmp/r32 OUT=/tmp/r32/out bash benchmarks/round32.sh                        # CPU dry run
set -u
R=${R:-/tmp/r32}
OUT=${OUT:-$R/out}
mkdir -p "$R" "$OUT"
B=$(dirname "$0")
echo "[$(date +%T)] 1. the trainer's order, replayed after in-place updates"
if [ "${TINY:-0}" = 1 ]; then PROBE="--device cpu --rows 4"; else PROBE="--device cuda"; fi
python3 "$B/graph_probe.py" $PROBE --only-update > "$OUT/update.txt" 2>&1
grep "^{" "$OUT/update.txt" || tail -5 "$OUT/update.txt"
R=$R OUT=$OUT bash "$B/round30.sh"
echo "[$(date +%T)] 3. the sampler's loop from CUDA graphs"
if [ "${TINY:-0}" = 1 ]; then TP="--device cpu --images 8 --steps 2"; SAMPLE="--tiny --steps 2 --batches 2"
else TP="--device cuda"; SAMPLE=""; fi
python3 "$B/emojiworld_throughput.py" $TP --rows today b64-graphs:batch=64,vae=8,graphs=1 b1024:batch=1024,vae=1024 \
    b1024-graphs:batch=1024,vae=1024,graphs=1 --out "$R/tp" > "$OUT/tp.log" 2>&1 && cp "$R/tp/table.md" "$OUT/tp-table.md" \
    && cp "$R/tp/rows.jsonl" "$OUT/tp-rows.jsonl"   # a graphed row that fell back to eager says graphs_fell_back
tail -8 "$OUT/tp.log"
timeout $((${SAMPLE_BUDGET:-240} + 40)) python3 "$B/gpu_sampling.py" --budget-s "${SAMPLE_BUDGET:-240}" \
    --out "$OUT/sampling.jsonl" $SAMPLE > "$OUT/sampling.log" 2>&1; tail -16 "$OUT/sampling.log"
echo "[$(date +%T)] done"
