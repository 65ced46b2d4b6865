#!/usr/bin/env bash
# The thirty-seventh round (issue 16): the goals the thirty-sixth round left unmeasured. Files land flat in $OUT:
#   1. pipeline.txt, pipeline-compare.md: the whole emojiworld_alignment.sh with its defaults now (the six
#      trainings in one process, the step without host syncs: 3.67x the together step of before), against its
#      3-minute goal; the thirty-fifth round's 243 s were computed from two stages, never run whole;
#   e. tp.txt: the whole EmojiWorld `scdpo eval` and `scdpo data build`, today's settings against the defaults
#      (the Frechet distance's nuclear-norm algebra and 512 prompts a text-encoder call, both new) and against
#      --dtypes tf32 (fp32 with TF32 matmuls, never measured on these commands) and bf16;
#   5. cc.txt: round35.sh's stage 5, the compile cache on a GPU, never measured there.
#
#   . scripts/device_env.sh && bash benchmarks/detach.sh r37 bash benchmarks/round37.sh   # device: carry
#       .carry/s3 after .carry/s1 and .carry/s2, every call in ONE message, the detach command repeated
#   TINY=1 R=/tmp/r37 OUT=/tmp/r37/out bash benchmarks/round37.sh                        # CPU dry run
. "$(dirname "$0")/round_env.sh" r37

stage1() { ORDER=1 STAGE1_TOGETHER=1 R=$R OUT=$OUT bash "$B/round35.sh"; }

stagee() {
echo "[$(date +%T)] e. the eval's and the build's rows"
if [ "${TINY:-0}" = 1 ]; then TP="--images 8 --steps 2 --eval-limit 4 --build-prompts 4"
    [ -f "$R/align/cost/config.json" ] || python3 -m scdpo.cli cost train --out "$R/align/cost" --pool 64 \
        --eval-n 16 --steps 20 --no-progress > "$R/cost.log" 2>&1
else TP="--images 256 --build-prompts 250"; fi
{ echo "python3 benchmarks/emojiworld_throughput.py $TP --rows today --eval --build COST --dtypes tf32 bf16 ($(gpu_name))"
  python3 "$B/emojiworld_throughput.py" $TP --rows today --eval --build "$R/align/cost" --dtypes tf32 bf16 \
      --out "$R/tp" 2>&1 | grep -vE "it/s\]" | tail -30; } > "$OUT/tp.txt"
cat "$OUT/tp.txt"
}

stage5() { ORDER=5 R=$R OUT=$OUT bash "$B/round35.sh"; }

for k in ${ORDER:-1 e 5}; do "stage$k"; done
echo "[$(date +%T)] done"
