#!/usr/bin/env bash
# The forty-first round (issue 16): warm starts. Each of the EmojiWorld pipeline's commands paid its imports again
# (8-15 s of set-up a command on an H100, against about 1 s inside a process that had imported everything:
# fortieth round); with WARM=1 they are forked from one server that imported torch, diffusers, transformers and
# scdpo once (scdpo.utils.warm). Files land flat in $OUT:
#   i. startup.txt: on this machine, the server's imports (seconds, what failed), whether they initialised the
#      CUDA driver (a forked command could not use the GPU then), and `scdpo --version` cold against warm;
#   w. pipeline-warm.txt, pipeline-warm-compare.md, seconds-warm.txt: emojiworld_alignment.sh with WARM=1;
#   c. pipeline.txt, pipeline-compare.md, seconds.txt: the same with WARM=0 (each command a fresh process, as
#      before), right after stage w on the same machine;
#   W, C: stages w and c again (pipeline-warm2.txt, pipeline-cold2.txt, ...): a second sample of each;
#   v. check.txt: the final code's warm start on this GPU: one `scdpo eval` (eval-clean, 64 prompts) warm and cold,
#      its metrics compared (the code reviewed after stages i-B: the server split out, signals, descriptors);
#   b, B: pipeline-warm-bf16.txt, pipeline-bf16.txt, ...: DTYPE=bf16 with WARM=1, then WARM=0: how far the two levers
#      go together (ORDER="b B", on another machine).
#
#   . scripts/device_env.sh && bash benchmarks/detach.sh r41 bash benchmarks/round41.sh
#       # device: carry .carry/s3 after .carry/s1 and .carry/s2, every call in ONE message, the detach command repeated
#   TINY=1 R=/tmp/r41 OUT=/tmp/r41/out ORDER="i w" bash benchmarks/round41.sh   # CPU dry run
. "$(dirname "$0")/round_env.sh" r41

# wall NAME COMMAND...: the command's wall seconds, one line
wall() { local name=$1 start rc; shift; start=$(date +%s.%N); "$@" > "$R/$name.log" 2>&1; rc=$?
    echo "$name: $(python3 -c "import sys; print(round($(date +%s.%N) - float(sys.argv[1]), 2))" "$start") s (rc $rc): $*"; }

stagei() {
echo "[$(date +%T)] i. the server's imports and a command cold against warm"
{ echo "start-up on $(gpu_name)"
  python3 - <<'PY'
import time
t = time.perf_counter()
from scdpo.utils import warm
failed = warm.preload()
print(f"preload: {time.perf_counter() - t:.2f} s in one process; failed: {failed or 'none'}")
print(f"the CUDA driver initialised by the imports: {warm.cuda_driver_initialised()}")
PY
  sock=$R/warm-i.sock
  wall start python3 -m scdpo.utils.warm start "$sock"
  for k in 1 2 3; do wall "cold$k" python3 -m scdpo.cli --version; wall "warm$k" python3 -m scdpo.utils.warm run "$sock" -- --version; done
  python3 -m scdpo.utils.warm stop "$sock"
} > "$OUT/startup.txt" 2>&1
cat "$OUT/startup.txt"
}

stagew() { echo "[$(date +%T)] w. the whole pipeline, WARM=1"; WARM=1 time_pipeline align-warm
           seconds_report "$R/align-warm" > "$OUT/seconds-warm.txt"; }
stagec() { echo "[$(date +%T)] c. the whole pipeline, WARM=0"; WARM=0 time_pipeline align
           seconds_report "$R/align" > "$OUT/seconds.txt"; }
stageW() { echo "[$(date +%T)] W. the whole pipeline, WARM=1, again"; WARM=1 time_pipeline align-warm2
           seconds_report "$R/align-warm2" > "$OUT/seconds-warm2.txt"; }
stageC() { echo "[$(date +%T)] C. the whole pipeline, WARM=0, again"; WARM=0 time_pipeline align-cold2
           seconds_report "$R/align-cold2" > "$OUT/seconds-cold2.txt"; }

stageb() { echo "[$(date +%T)] b. the whole pipeline, WARM=1 DTYPE=bf16"; WARM=1 DTYPE=bf16 time_pipeline align-warm-bf16
           seconds_report "$R/align-warm-bf16" > "$OUT/seconds-warm-bf16.txt"; }

stageB() { echo "[$(date +%T)] B. the whole pipeline, WARM=0 DTYPE=bf16"; WARM=0 DTYPE=bf16 time_pipeline align-bf16
           seconds_report "$R/align-bf16" > "$OUT/seconds-bf16.txt"; }

stagev() {
echo "[$(date +%T)] v. one evaluation warm and cold with the final code"
{ echo "check on $(gpu_name)"
  sock=$(mktemp -d /tmp/scdpo-warm-XXXXXX)/s.sock
  wall start python3 -m scdpo.utils.warm start "$sock"
  E="eval --model emojiworld --suites eval-clean --limit 64 --steps 20 --no-frechet"
  wall warm python3 -m scdpo.utils.warm run "$sock" -- $E --out "$R/v-warm"
  wall cold python3 -m scdpo.cli $E --out "$R/v-cold"
  python3 -m scdpo.utils.warm stop "$sock"
  python3 - "$R/v-warm/metrics.json" "$R/v-cold/metrics.json" <<'PY'
import json, sys
a, b = (json.load(open(p)) for p in sys.argv[1:])
def strip(m):  # every suite's metrics but its seconds
    return {k: strip(v) for k, v in m.items() if k != "seconds"} if isinstance(m, dict) else m
print("every suite's metrics equal but for seconds:", strip(a["suites"]) == strip(b["suites"]))
print("warm seconds:", a.get("seconds_by_phase"), "cold seconds:", b.get("seconds_by_phase"))
PY
} > "$OUT/check.txt" 2>&1
cat "$OUT/check.txt"
}

for k in ${ORDER:-i w c W C}; do "stage$k"; done
echo "[$(date +%T)] done"
