#!/usr/bin/env bash
# The thirty-seventh round's second call (issue 16): the whole EmojiWorld `scdpo eval` with the code before this
# session's eval changes (BEFORE=DIR: c1674c8's src/scdpo, carried in) and with today's, in one call on one
# machine: what the Frechet distance's nuclear-norm algebra and the text encoder's larger batch bought on a GPU
# (round37.sh's stage e ran only today's code). Files land flat in $OUT: eval-before.txt, eval-now.txt.
#
#   . scripts/device_env.sh && BEFORE=runs/before-src bash benchmarks/detach.sh r37b bash benchmarks/round37b.sh
#   TINY=1 R=/tmp/r37b OUT=/tmp/r37b/out BEFORE=runs/before-src bash benchmarks/round37b.sh   # CPU dry run
. "$(dirname "$0")/round_env.sh" r37b
if [ "${TINY:-0}" = 1 ]; then TP="--images 8 --steps 2 --eval-limit 4"; else TP="--images 64"; fi
for which in before now; do
    echo "[$(date +%T)] the eval's rows, $which"
    if [ "$which" = before ]; then
        [ -n "${BEFORE:-}" ] && [ -d "$BEFORE/scdpo" ] || { echo "no BEFORE"; continue; }
        [ -e "$BEFORE/scdpo/assets" ] || ln -s "$(cd src/scdpo/assets && pwd)" "$BEFORE/scdpo/assets"
        PP=$BEFORE${PYTHONPATH:+:$PYTHONPATH}
    else PP=${PYTHONPATH:-}; fi
    { echo "python3 benchmarks/emojiworld_throughput.py $TP --rows today --eval ($which; $(gpu_name))"
      PYTHONPATH=$PP python3 "$B/emojiworld_throughput.py" $TP --rows today --eval --out "$R/tp-$which" 2>&1 \
          | grep -vE "it/s\]" | grep -E "^\| [s]cdpo eval|^\| whole" ; } > "$OUT/eval-$which.txt"
    cat "$OUT/eval-$which.txt"
done
echo "[$(date +%T)] done"
