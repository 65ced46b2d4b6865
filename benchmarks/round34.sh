#!/usr/bin/env bash
# The thirty-fourth round (issue 16): the whole EmojiWorld pipeline after the thirty-third round's profiles.
# That round's pipeline took 355 s on an H100 with the trainings graphed, and its cProfiles found every process
# compiling about 2,100 modules from source (6.7-8.7 s each; BENCHMARKS.md, "Thirty-third and thirty-fourth
# rounds"). Files land flat in $OUT:
#   1. imports.txt: the imports of an evaluation (diffusers, peft, transformers, scdpo.eval.run) timed in fresh
#      processes, twice without a bytecode cache (PYTHONDONTWRITEBYTECODE=1, as the processes ran before) and
#      twice with a new, empty PYTHONPYCACHEPREFIX (the first writes it, the second reads it);
#   2. pipeline.txt, pipeline-compare.md: emojiworld_alignment.sh (cost data train eval compare) with this
#      round's defaults: the bytecode cache of scripts/device_env.sh, the cost model and the data build on
#      every core, the three evaluations that need no training beside the data build and the trainings.
#
#   . scripts/device_env.sh && bash benchmarks/detach.sh r34 bash benchmarks/round34.sh   # device: carry
#       .carry/s3 after .carry/s1 and .carry/s2, every call in ONE message, the detach command repeated
#   TINY=1 R=/tmp/r34 OUT=/tmp/r34/out bash benchmarks/round34.sh                        # CPU dry run
set -u
R=${R:-/tmp/r34}
OUT=${OUT:-$R/out}
mkdir -p "$R" "$OUT"
B=$(dirname "$0")
. "$B/pipeline_report.sh"
IMPORTS="import diffusers, peft, transformers, scdpo.eval.run"

echo "[$(date +%T)] 1. an evaluation's imports, without and with a bytecode cache"
rm -rf "$R/pyc"
{ echo "python3 -c '$IMPORTS' in fresh processes ($(gpu_name)); seconds of wall time"
  for row in "no cache|env -u PYTHONPYCACHEPREFIX PYTHONDONTWRITEBYTECODE=1" \
             "no cache, again|env -u PYTHONPYCACHEPREFIX PYTHONDONTWRITEBYTECODE=1" \
             "cache, empty (writes it)|env -u PYTHONDONTWRITEBYTECODE PYTHONPYCACHEPREFIX=$R/pyc" \
             "cache, written (reads it)|env -u PYTHONDONTWRITEBYTECODE PYTHONPYCACHEPREFIX=$R/pyc"; do
      t0=$(date +%s.%N); ${row#*|} python3 -c "$IMPORTS" || echo "FAILED: ${row%%|*}"
      echo "${row%%|*}: $(python3 -c "import sys; print(round($(date +%s.%N) - float(sys.argv[1]), 2))" "$t0")"
  done; } > "$OUT/imports.txt" 2>&1
cat "$OUT/imports.txt"

echo "[$(date +%T)] 2. the whole EmojiWorld pipeline, this round's defaults"
time_pipeline
echo "[$(date +%T)] done"
