#!/usr/bin/env bash
# The thirty-third round (issue 16): the fixed CUDA graphs of the training step where the science runs them.
# The thirty-second round measured the plain step at 6.1x eager with the same loss, in one process alone, and
# turned the graphs on by default for EmojiWorld on CUDA without the safe anchor (BENCHMARKS.md,
# "Thirty-second round"). Files land flat in $OUT:
#   1. one training, longer: benchmarks/anchor_cost.py, the plain step at 32 pairs, eager then graphed, over
#      STEPS1 (300) steps, set-up and recording included in "s / step"; then how busy the GPU is in the eager
#      and the graphed step (benchmarks/step_busy.py: what a host-side lever could still buy) -> $OUT/step.txt;
#   2. N trainings at once (the pipeline runs six, `--seeds` up to twelve): concurrent_train.py --workload plain,
#      eager against graphed, 1, 6 and 12 processes -> $OUT/concurrent.md (+ concurrent.jsonl);
#   3. the whole pipeline, its trainings graphed by the new default (no TRAIN_FLAGS) -> $OUT/pipeline.txt,
#      pipeline-compare.md (each LoRA's cuda_graphs_on should be True, its replays 1,000);
#   4. the anchored step, eager and graphed: on an H200 this is the first run there since the fix (its two
#      earlier runs died with an illegal memory access at step 2), on an H100 a repeat; then, where it ran
#      through, how busy the GPU is in the anchored graphed step -> $OUT/anchor.txt;
#   5. where the other stages' time goes, alone on the GPU: the pipeline's cost model, one of its evaluations
#      (the base model, its four suites) and its data build, each under cProfile (the 50 costliest calls by
#      cumulative time; CUDA's waits land on the calls that synchronise) -> $OUT/profiles.txt.
#
#   . scripts/device_env.sh && bash benchmarks/detach.sh r33 bash benchmarks/round33.sh   # device: carry
#       .carry/s3 after .carry/s1 and .carry/s2, every call in ONE message, the detach command repeated
#   TINY=1 R=/tmp/r33 OUT=/tmp/r33/out bash benchmarks/round33.sh                        # CPU dry run
set -u
R=${R:-/tmp/r33}
OUT=${OUT:-$R/out}
mkdir -p "$R" "$OUT"
B=$(dirname "$0")
. "$B/pipeline_report.sh"
if [ "${TINY:-0}" = 1 ]; then
    AC="--device cpu --batch-size 2 --steps 3 --warmup 1"; CT="--device cpu --steps 3 --warmup 1 --batch-size 2"
    CROWS="eager:1 graphs:1"
else
    AC="--device cuda --batch-size 32 --steps ${STEPS1:-300} --warmup 20"
    CT="--device cuda --steps ${STEPS2:-200} --warmup 20 --batch-size 32 --budget 420"
    CROWS="eager:6 graphs:6 graphs:1 graphs:12"
fi

echo "[$(date +%T)] 1. one training, eager and graphed"
{ echo "python3 benchmarks/anchor_cost.py $AC --only 'no anchor' ($(gpu_name))"
  python3 "$B/anchor_cost.py" $AC --only "no anchor" 2>&1 | grep -v "it/s\]" | tail -8; } > "$OUT/step.txt"
if [ "${TINY:-0}" = 1 ]; then BUSY="--device cpu --batch-size 2 --steps 5 --warmup 1 --window 2 --rows eager graphs"
else BUSY="--device cuda --batch-size 32 --steps 80 --warmup 20 --window 20 --rows eager graphs"; fi
{ echo; echo "python3 benchmarks/step_busy.py $BUSY"
  python3 "$B/step_busy.py" $BUSY 2>&1 | grep -v "it/s\]" | tail -8; } >> "$OUT/step.txt"
cat "$OUT/step.txt"

echo "[$(date +%T)] 2. N trainings at once, eager and graphed"
python3 "$B/concurrent_train.py" $CT --workload plain --rows $CROWS --out "$R/ct" > "$R/ct.log" 2>&1
cp "$R/ct/table.md" "$OUT/concurrent.md" 2>/dev/null; cp "$R/ct/rows.jsonl" "$OUT/concurrent.jsonl" 2>/dev/null
tail -12 "$R/ct.log"

echo "[$(date +%T)] 3. the whole EmojiWorld pipeline, the trainings graphed by default"
time_pipeline

echo "[$(date +%T)] 4. the anchored step, eager and graphed"
AC4=${AC/--steps ${STEPS1:-300}/--steps 100}
{ echo "python3 benchmarks/anchor_cost.py $AC4 --only 'every step' --skip compiled ($(gpu_name))"
  python3 "$B/anchor_cost.py" $AC4 --only "every step" --skip compiled 2>&1 | grep -v "it/s\]" | tail -8; } > "$OUT/anchor.txt"
# the anchored graphed step's GPU time after stage 4 ran it without the profiler (on an H200 that run says
# whether it crashes); skipped where it did not run through
if grep -q "CUDA graphs |" "$OUT/anchor.txt"; then
    { echo; echo "python3 benchmarks/step_busy.py ${BUSY% --rows*} --rows 'anchored, graphs'"
      python3 "$B/step_busy.py" ${BUSY% --rows*} --rows "anchored, graphs" 2>&1 | grep -v "it/s\]" | tail -4; } >> "$OUT/anchor.txt"
fi
cat "$OUT/anchor.txt"
echo "[$(date +%T)] 5. the cost model, one evaluation and the data build, profiled"
# prof NAME ARGS...: `scdpo ARGS` under cProfile, its 50 costliest calls appended to $OUT/profiles.txt
prof() { local name=$1; shift
         python3 -m cProfile -o "$R/$name.prof" -m scdpo.cli "$@" > "$R/$name-prof.log" 2>&1 || tail -3 "$R/$name-prof.log"
         { echo "== $name: scdpo $*"; python3 -c 'import pstats, sys
pstats.Stats(sys.argv[1]).sort_stats("cumulative").print_stats(50)' "$R/$name.prof"; } >> "$OUT/profiles.txt"; }
if [ "${TINY:-0}" = 1 ]; then CO="--pool 64 --eval-n 16 --steps 20"; EV="--limit 4 --steps 2"
    DB="--n-harmful 6 --n-clean 6 --candidates 2 --steps 2 --uniform-rule reward --cost-budget 1000"
else CO="--pool 8000 --eval-n 300"; EV="--steps 20"; DB="--n-harmful 2000 --n-clean 2000 --candidates 4 --steps 20"; fi
rm -f "$OUT/profiles.txt"
prof cost cost train --out "$R/cost-prof" $CO --no-progress
prof eval eval --model emojiworld --suites eval-harmful-explicit eval-harmful-implicit eval-clean eval-mixed $EV \
    --batch-size 256 --cost-model "$R/align/cost" --name base --out "$R/eval-prof"
prof data data build --model emojiworld --cost-model "$R/align/cost" --reward emojiworld --harmful align-harmful \
    --clean align-clean $DB --safe-prompt-winner --out "$R/scp-prof"
grep -c "function calls" "$OUT/profiles.txt"
echo "[$(date +%T)] done"
