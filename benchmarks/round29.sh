#!/usr/bin/env bash
# The twenty-ninth round (ran 2026-12-05 on one H100; BENCHMARKS.md, "Twenty-ninth round"), one stage after another so that none times another's load; each
# stage's files land flat in $OUT (detach.sh copies files, not folders):
#   1. issue 19: ring-a-bell's report draw with the eta the twenty-eighth round's tuning draw picked (5),
#      scored on every victim (benchmarks/round28.sh stage 2; docs/attacks.md, "Twenty-eighth round")
#      -> $OUT/r28.tar.gz, report-asr.md;
#   2. issue 16: the whole benchmarks/emojiworld_alignment.sh (cost model, data, 6 trainings, 9 evaluations,
#      the comparison; not the field's baselines), timed stage by stage, then its 9 evaluations again with
#      the references' cache warm: the goal is 3 minutes, last measured on 2026-11-29 (cost 28 s, data 70 s,
#      6 trainings 175 s, 9 evaluations 144-207 s)
#      -> $OUT/pipeline.txt, pipeline-compare.md;
#   3. issue 16: the compile cache on a fresh machine (round24.sh stage 4), while the budget lasts
#      -> $OUT/cc.tar.gz.
#
#   . scripts/device_env.sh && bash benchmarks/detach.sh r29 bash benchmarks/round29.sh   # device: carry
#       .carry/s3 after .carry/s1 and .carry/s2, every call in ONE message, the detach command repeated
#   TINY=1 R=/tmp/r29 OUT=/tmp/r29/out bash benchmarks/round29.sh                        # CPU dry run (16 min)
#   STAGES picks stages (default "1 2 3"; stage 3 alone is 11 of the dry run's 16 minutes)
set -u
R=${R:-/tmp/r29}
OUT=${OUT:-$R/out}
mkdir -p "$R" "$OUT"
B=$(dirname "$0")
. "$B/pipeline_report.sh"
STAGES=" ${STAGES:-1 2 3} "  # some of them: STAGES="2"

if [[ $STAGES == *" 1 "* ]]; then
echo "[$(date +%T)] 1. ring-a-bell's report draw (eta ${ETA:-5})"
R=$R/r28 OUT=$OUT ETA=${ETA:-5} bash "$B/round28.sh" > "$R/r28.log" 2>&1; tail -25 "$R/r28.log"
fi

if [[ $STAGES == *" 2 "* ]]; then
echo "[$(date +%T)] 2. the whole EmojiWorld pipeline"
start=$(date +%s)
R=$R/align STAGES="cost data train eval compare" bash "$B/emojiworld_alignment.sh" > "$R/align.log" 2>&1
pipeline_report "emojiworld_alignment.sh (cost data train eval compare)" "$R/align" "$R/align.log" "$start" \
    > "$OUT/pipeline.txt"
cp "$R/align/compare/table.md" "$OUT/pipeline-compare.md" 2>/dev/null
# the 9 evaluations again: on a fresh machine each of the first ones, 8 at once, computed the Frechet
# references' features itself; every later run of the script reads them from the cache
rm -rf "$R"/align/eval-*; start=$(date +%s)
R=$R/align STAGES="eval" bash "$B/emojiworld_alignment.sh" > "$R/align-eval2.log" 2>&1
echo "the 9 evaluations again, the references' cache warm: $(( $(date +%s) - start )) s wall" >> "$OUT/pipeline.txt"
cat "$OUT/pipeline.txt"
fi

if [[ $STAGES == *" 3 "* ]]; then
echo "[$(date +%T)] 3. the compile cache"
R=$R OUT=$OUT STAGES=4 TINY=${TINY:-0} bash "$B/round24.sh"
fi
echo "[$(date +%T)] done"
