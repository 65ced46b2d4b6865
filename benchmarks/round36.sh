#!/usr/bin/env bash
# The thirty-sixth round (issue 16): where the host's and the device's time go in what is still slow, and the
# stages the thirty-fifth round left. Files land flat in $OUT:
#   p1. busy.txt: the pipeline's six methods in one process (`scdpo train --together`, CUDA graphs) and one graphed
#       training, each with its device time by kernel (--top) and its host's Python functions by own time
#       (--host-top, cProfile): the together step took 83.7 ms against the 192-pair step's 66.7 ms, and which
#       per-run work (losses, clipping, the stacked adapters' copies) the difference is made of is not known;
#       BEFORE=DIR (an earlier src/, carried in) runs both rows with it first: busy-before.txt;
#   c.  the cost model the precision stage builds pairs with (as the pipeline trains it: cost.log);
#   2.  dtype.txt: benchmarks/round35.sh's stage 2, unprofiled: the precision of `scdpo generate`, and the whole
#       EmojiWorld `scdpo eval` and `scdpo data build` with today's settings, the defaults and --dtype bf16;
#   p2. profiles.tar.gz: the same eval and build rows under cProfile (their main thread): what their seconds beside
#       sampling are (the eval's 4.3-4.8 s need 3.64 s for 5x; the pipeline's data stage takes 72 s);
#   5.  cc.txt: round35.sh's stage 5, the compile cache on a GPU, never measured there.
#
#   . scripts/device_env.sh && bash benchmarks/detach.sh r36 bash benchmarks/round36.sh   # device: carry
#       .carry/s3 after .carry/s1 and .carry/s2, every call in ONE message, the detach command repeated
#   TINY=1 R=/tmp/r36 OUT=/tmp/r36/out bash benchmarks/round36.sh                        # CPU dry run
# Ran on 2026-12-06 (one H100) with BEFORE=runs/before-src (2fb9a90's src) and ORDER="p1 c 2 p2" (BENCHMARKS.md,
# "Thirty-sixth round"); stage 5 was left for a later budget.
. "$(dirname "$0")/round_env.sh" r36

stagep1() {
echo "[$(date +%T)] p1. the together step's and one graphed step's device and host time"
if [ "${TINY:-0}" = 1 ]; then BUSY="--device cpu --steps 6 --warmup 1 --window 2 --batch-size 2"
else BUSY="--device cuda --steps 80 --warmup 20 --window 20 --batch-size 32"; fi
# BEFORE: an earlier src/ (its scdpo/ without assets, carried in), timed first, as a row of the same call
if [ -n "${BEFORE:-}" ] && [ -d "$BEFORE/scdpo" ]; then
    [ -e "$BEFORE/scdpo/assets" ] || ln -s "$(cd src/scdpo/assets && pwd)" "$BEFORE/scdpo/assets"
    { echo "BEFORE ($BEFORE): python3 benchmarks/step_busy.py $BUSY --rows together graphs --top 30 --host-top 30"
      PYTHONPATH=$BEFORE${PYTHONPATH:+:$PYTHONPATH} python3 "$B/step_busy.py" $BUSY --rows together graphs --top 30 \
          --host-top 30 2>&1 | grep -v "it/s\]" | tail -150; } > "$OUT/busy-before.txt"
    grep -E "^\| (together|graphs)" "$OUT/busy-before.txt" | head -2
fi
{ echo "python3 benchmarks/step_busy.py $BUSY --rows together graphs --top 30 --host-top 30 ($(gpu_name))"
  python3 "$B/step_busy.py" $BUSY --rows together graphs --top 30 --host-top 30 2>&1 | grep -v "it/s\]" | tail -150
} > "$OUT/busy.txt"
grep -E "^\| (together|graphs)" "$OUT/busy.txt" | head -2
}

stagec() {
echo "[$(date +%T)] c. the cost model (the pipeline's)"
if [ "${TINY:-0}" = 1 ]; then CO="--pool 64 --eval-n 16 --steps 20"; else CO="--pool 8000 --eval-n 300"; fi
mkdir -p "$R/align"
[ -f "$R/align/cost/config.json" ] || python3 -m scdpo.cli cost train --out "$R/align/cost" $CO --no-progress \
    > "$OUT/cost.log" 2>&1 || { echo "FAILED: cost"; tail -3 "$OUT/cost.log"; }
}

stagep2() {
echo "[$(date +%T)] p2. the eval's and the build's rows under cProfile"
if [ "${TINY:-0}" = 1 ]; then TP="--images 8 --steps 2 --eval-limit 4 --build-prompts 4"
else TP="--images 64 --build-prompts 250"; fi
python3 "$B/emojiworld_throughput.py" $TP --rows today --eval --build "$R/align/cost" --dtypes bf16 --profile \
    --out "$R/tp-prof" > "$OUT/p2.log" 2>&1 || echo "FAILED: p2"
grep -vE "it/s\]" "$OUT/p2.log" | tail -20
# one archive: the device tool brings back a bounded number of files a call (the first run of this round lost
# three of its seven profiles to that bound)
(cd "$R/tp-prof" && tar czf "$OUT/profiles.tar.gz" eval/profile-*.txt build/profile-*.txt 2>/dev/null)
}

stage2() { ORDER=2 R=$R OUT=$OUT bash "$B/round35.sh"; }
stage5() { ORDER=5 R=$R OUT=$OUT bash "$B/round35.sh"; }

for k in ${ORDER:-p1 c 2 p2 5}; do "stage$k"; done
echo "[$(date +%T)] done"
