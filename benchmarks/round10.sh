#!/usr/bin/env bash
# Tenth round (issue 15; docs/results.md, "Tenth round", "Next"): clean alignment with the implicit
# reach. Its first device run was lost with the machine mid-training; round10b.sh then found the
# clean-alignment loss to be the anchor's target (sunflower) drawn in place of look-alike clean
# objects (donut, egg, honey pot, duck), and that with timesteps 700-999 nothing preserves the clean
# prompts below 700, where the anchor still acts. So the candidates are the shipped recipe,
# timestep700, and timestep700 with the clean pairs trained and preserved at every timestep
# (--clean-min-timestep 0) at p = 20 and 35, 3 seeds each, every seed on the tuning draw 0 (the
# pick: `python benchmarks/round4_pick.py R --draw 0 --rule shortfall --seeds all`) and on suite
# draw 2, never used before, for the report. One device budget, resumable: the same command reruns
# on the warm machine.
#
#   . scripts/device_env.sh && OUT=$OUT bash benchmarks/round10.sh    # on the device, 2-3 calls
#   TINY=1 R=/tmp/r10 bash benchmarks/round10.sh                      # seconds-scale CPU dry run
set -u
export R=${R:-$PWD/runs/r10}
CANDIDATES="recipe timestep700 t700-clean0 t700-clean0-p35"
ONLY=${ONLY:-$CANDIDATES}
python3 -c "import scdpo" || { echo "scdpo is not importable here: run the same command again"; exit 3; }
mkdir -p "$R/logs"
[ "${TINY:-0}" = 1 ] && DL=${DEADLINE:-100000} || DL=${DEADLINE:-540}
STAGE=final DRAW=2 ONLY="$ONLY" DRAW0_RUNS="$CANDIDATES" SHIP=${SHIP:-"$CANDIDATES"} \
    LIMIT=${LIMIT:-150} PAR=${PAR:-18} DEADLINE=$DL bash benchmarks/emojiworld_round4.sh
# where clean alignment goes on the report draw (benchmarks/clean_misses.py; docs/results.md, "Tenth
# round"), and the clean images themselves, to count sunflowers again elsewhere
if [ "${TINY:-0}" != 1 ] && [ -f "$R/eval-base-d2/metrics.json" ]; then
    CLEAN=$(ls -d "$R"/eval-*-d2 | grep -v base-d2)
    python3 benchmarks/clean_misses.py "$R/eval-base-d2" $CLEAN --top 15 > "$R/logs/clean_misses-d2.md" 2>&1
    if [ -n "${OUT:-}" ]; then
        cp "$R/logs/clean_misses-d2.md" "$OUT/"
        (cd "$R" && tar cf "$OUT/.clean.tmp" eval-*-d2/suites/eval-clean/images.parquet) && mv "$OUT/.clean.tmp" "$OUT/clean-d2.tar"
    fi
fi
