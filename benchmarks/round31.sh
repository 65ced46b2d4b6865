#!/usr/bin/env bash
# The thirty-first round (issue 16): why the thirtieth round's replayed backward "differed from the
# eager gradients" (every run turned --cuda-graphs off at its first checks), the plain step again with
# the checks that allow for eager's own run-to-run spread, and the cost stage without host syncs.
# Files land flat in $OUT:
#   1. benchmarks/graph_probe.py: per trainable tensor, eager vs eager and replay vs eager, at B = 0 and
#      with B moved, under the trainer's attention kernel, the math kernel and deterministic algorithms;
#      and one call's forward and backward, eager vs replayed, in ms -> $OUT/probe.txt;
#   2. round30.sh's stage 1: the plain step at 32 pairs, eager then graphed (last losses) -> $OUT/step.txt;
#   3. `scdpo cost train` at the pipeline's settings (--pool 8000 --eval-n 300): its feature and adapter
#      seconds (the adapter loop no longer reads a loss per step) -> $OUT/cost.txt.
#
#   . scripts/device_env.sh && bash benchmarks/round31.sh     # device: after .carry/s1, .carry/s2, with .carry/s3
set -u
R=${R:-/tmp/r31}
OUT=${OUT:-$R/out}
mkdir -p "$R" "$OUT"
B=$(dirname "$0")
scdpo() { python3 -m scdpo.cli "$@"; }  # the device has no console script on PATH
echo "[$(date +%T)] 1. graph_probe.py"
python3 "$B/graph_probe.py" --device cuda > "$OUT/probe.txt" 2>&1
grep "^{" "$OUT/probe.txt"
grep -A9 "^==" "$OUT/probe.txt" | head -45
echo "[$(date +%T)] 2. the plain step"
STAGES=1 R=$R OUT=$OUT bash "$B/round30.sh" 2>&1 | grep -v "it/s\]" | tail -6
echo "[$(date +%T)] 3. the cost stage"
scdpo cost train --out "$R/cost" --pool 8000 --eval-n 300 --no-progress > "$R/cost.log" 2>&1 || tail -5 "$R/cost.log"
python3 -c "import json, sys; m = json.load(open(sys.argv[1])); print({k: m.get(k) for k in ('feature_seconds', 'adapter_seconds', 'total_seconds', 'train_images')})" \
    "$R/cost/metrics.json" | tee "$OUT/cost.txt"
echo "[$(date +%T)] done"
