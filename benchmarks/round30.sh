#!/usr/bin/env bash
# The thirtieth round (issue 16): the training step replayed from CUDA graphs (`--cuda-graphs`: the
# policy's forward and backward, the reference's forward; scdpo.models.graphs_train), measured against
# today's eager step, then the whole EmojiWorld pipeline with it. Each stage's files land flat in $OUT:
#   1. benchmarks/anchor_cost.py, the plain sc-dpo step at 32 pairs, eager then graphed, in one process
#      (equal data and seeds: the last loss of each row is the check) -> $OUT/step.txt;
#   2. benchmarks/emojiworld_alignment.sh (cost, data, 6 trainings, 9 evaluations, the comparison) with
#      TRAIN_FLAGS=--cuda-graphs, timed stage by stage (the twenty-ninth round ran it eager: 430 s, its
#      trainings 203 s at 5.7-5.9 steps/s each; its data build has since 2026-12-05 taken the build's picked
#      batch and chunk instead of 256 / 500, so compare stage by stage, not the whole)
#      -> $OUT/pipeline.txt (each LoRA's cuda_graph_replays says the graphs ran), pipeline-compare.md;
#   3. the anchored recipe's step ("every step"), eager then graphed: the eighth round's anchor
#      trajectory graphs died at step 2, so it runs last, in a process of its own -> $OUT/anchor.txt.
#
#   . scripts/device_env.sh && bash benchmarks/detach.sh r30 bash benchmarks/round30.sh   # device: carry
#       .carry/s3 after .carry/s1 and .carry/s2, every call in ONE message, the detach command repeated
#   TINY=1 R=/tmp/r30 OUT=/tmp/r30/out bash benchmarks/round30.sh                        # CPU dry run
set -u
R=${R:-/tmp/r30}
OUT=${OUT:-$R/out}
mkdir -p "$R" "$OUT"
B=$(dirname "$0")
. "$B/pipeline_report.sh"
STAGES=" ${STAGES:-1 2 3} "
# on the CPU there is no graphed row: the dry run times the eager one and checks the plumbing
if [ "${TINY:-0}" = 1 ]; then AC="--device cpu --batch-size 2 --steps 3 --warmup 1"; else AC="--device cuda --batch-size 32 --steps ${STEPS:-100} --warmup 20"; fi

if [[ $STAGES == *" 1 "* ]]; then
echo "[$(date +%T)] 1. the plain step, eager and graphed"
{ echo "python3 benchmarks/anchor_cost.py $AC --only 'no anchor' ($(gpu_name))"
  python3 "$B/anchor_cost.py" $AC --only "no anchor" 2>&1 | grep -v "it/s\]" | tail -12; } > "$OUT/step.txt"
cat "$OUT/step.txt"
fi

if [[ $STAGES == *" 2 "* ]]; then
echo "[$(date +%T)] 2. the whole EmojiWorld pipeline with --cuda-graphs"
start=$(date +%s)
R=$R/align STAGES="cost data train eval compare" TRAIN_FLAGS=--cuda-graphs bash "$B/emojiworld_alignment.sh" \
    > "$R/align.log" 2>&1
pipeline_report "emojiworld_alignment.sh (cost data train eval compare), TRAIN_FLAGS=--cuda-graphs" "$R/align" \
    "$R/align.log" "$start" > "$OUT/pipeline.txt"
cp "$R/align/compare/table.md" "$OUT/pipeline-compare.md" 2>/dev/null
cat "$OUT/pipeline.txt"
fi

if [[ $STAGES == *" 3 "* ]]; then
echo "[$(date +%T)] 3. the anchored step, eager and graphed"
{ echo "python3 benchmarks/anchor_cost.py $AC --only 'every step' --skip compiled ($(gpu_name))"
  python3 "$B/anchor_cost.py" $AC --only "every step" --skip compiled 2>&1 | grep -v "it/s\]" | tail -12; } > "$OUT/anchor.txt"
cat "$OUT/anchor.txt"
fi
echo "[$(date +%T)] done"
