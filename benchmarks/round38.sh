#!/usr/bin/env bash
# The thirty-eighth round (issue 16): where the EmojiWorld commands' time goes, and the sampler's levers. Files
# land flat in $OUT:
#   s. levers.txt, kernels.tar.gz: the sampler alone at the GPU's default 1,024 images a batch (2,048 images a
#      row), fp32 (the defaults) against TF32 matmuls, bf16, channels-last memory with each, and TF32 with regional
#      compile; every row's first batch profiled once more (--kernels): the device's busy share and its kernels'
#      time by kind, so which lever can still pay (the thirty-sixth round found the UNet's calls compute-bound
#      at 59 ms, fp32 at 560 images/s on an H200 in the twenty-fourth round, bf16 861, bf16 compiled 1,090);
#   b. eval-before.txt, eval-now.txt: round37b.sh, the whole eval with c1674c8's code (BEFORE=DIR) and today's;
#   1. pipeline.txt, pipeline-compare.md, seconds.txt, logs.tar.gz: the whole emojiworld_alignment.sh with its
#      defaults, then every "seconds" the pipeline's commands recorded (the trainings' metrics.json, the data
#      build's and the evaluations' phases): where the 262 s of the thirty-seventh round went.
#   d. build.txt: the whole EmojiWorld `scdpo data build` (250 + 250 prompts, as the thirty-sixth and thirty-seventh
#      rounds) with today's settings, the chunk of before, the defaults without the overlap (the new worker
#      thread that PNG-encodes and writes a chunk while the next samples) and the defaults, and --dtype tf32, on
#      stage 1's cost model; every row's choices against today's.
# Ran whole (ORDER="s b 1") on 2026-12-06 (BENCHMARKS.md, "Thirty-eighth round"); then, after that round's changes
# (the build's overlap and scoring batch, the trainings' latents, the evaluations' batch), ORDER="1 d" again.
#
#   . scripts/device_env.sh && BEFORE=runs/before-src bash benchmarks/detach.sh r38 bash benchmarks/round38.sh
#       # device: carry .carry/s3 and runs/before-src after .carry/s1 and .carry/s2, every call in ONE message
#   TINY=1 R=/tmp/r38 OUT=/tmp/r38/out BEFORE=runs/before-src bash benchmarks/round38.sh   # CPU dry run
. "$(dirname "$0")/round_env.sh" r38

stages() {
echo "[$(date +%T)] s. the sampler's levers"
if [ "${TINY:-0}" = 1 ]; then TP="--device cpu --images 8 --steps 2"; b="batch=8,vae=8"
else TP="--images 2048"; b="batch=1024,vae=1024"; fi
{ echo "python3 benchmarks/emojiworld_throughput.py $TP --kernels 25 --rows ... ($(gpu_name))"
  python3 "$B/emojiworld_throughput.py" $TP --kernels 25 --out "$R/levers" --rows "fp32:$b" "tf32:$b,tf32=1" \
      "bf16:$b,dtype=bf16" "fp32-cl:$b,cl=1" "tf32-cl:$b,tf32=1,cl=1" "bf16-cl:$b,dtype=bf16,cl=1" \
      "tf32-compile:$b,tf32=1,compile=1" 2>&1 | grep -vE "it/s\]|profiler_st" | tail -30
  for f in "$R"/levers/kernels-*.txt; do echo "${f##*/}: $(head -2 "$f" | tr '\n' ' ')"; done
} > "$OUT/levers.txt"
tar czf "$OUT/kernels.tar.gz" -C "$R/levers" . 2>/dev/null
cat "$OUT/levers.txt"
}

stageb() { R=$R/37b OUT=$OUT bash "$B/round37b.sh"; }

stage1() {
echo "[$(date +%T)] 1. the whole pipeline with its defaults, and where its seconds go"
time_pipeline
seconds_report "$R/align" > "$OUT/seconds.txt"; cat "$OUT/seconds.txt"
tar czf "$OUT/logs.tar.gz" -C "$R/align" logs 2>/dev/null
}

staged() {
echo "[$(date +%T)] d. the data build's rows"
if [ "${TINY:-0}" = 1 ]; then TP="--device cpu --images 8 --steps 2 --build-prompts 4"
else TP="--images 256 --build-prompts 250"; fi
{ echo "python3 benchmarks/emojiworld_throughput.py $TP --rows today --build COST --dtypes tf32 ($(gpu_name))"
  python3 "$B/emojiworld_throughput.py" $TP --rows today --build "$R/align/cost" --dtypes tf32 --out "$R/build" 2>&1 \
      | grep -vE "it/s\]" | tail -12; } > "$OUT/build.txt"
cat "$OUT/build.txt"
}

for k in ${ORDER:-s b 1}; do "stage$k"; done
echo "[$(date +%T)] done"
