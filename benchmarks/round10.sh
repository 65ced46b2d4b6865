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
#
# CANDIDATES, REPORT_DRAW and R make it another round of the same shape (benchmarks/round11.sh).
set -u
export R=${R:-$PWD/runs/r10}
CANDIDATES=${CANDIDATES:-"recipe timestep700 t700-clean0 t700-clean0-p35"}
REPORT_DRAW=${REPORT_DRAW:-2}
ONLY=${ONLY:-$CANDIDATES}
python3 -c "import scdpo" || { echo "scdpo is not importable here: run the same command again"; exit 3; }
mkdir -p "$R/logs"
[ "${TINY:-0}" = 1 ] && DL=${DEADLINE:-100000} || DL=${DEADLINE:-540}
STAGE=final DRAW=$REPORT_DRAW ONLY="$ONLY" DRAW0_RUNS="$CANDIDATES" SHIP=${SHIP:-"$CANDIDATES"} \
    LIMIT=${LIMIT:-150} PAR=${PAR:-18} DEADLINE=$DL bash benchmarks/emojiworld_round4.sh
# the clean images of the report draw (seed 0 of each candidate and the base), to count what is
# drawn in place of the requested objects on the CPU (benchmarks/clean_misses.py; on the device's
# CPU it did not finish within a minute, eleventh round)
# (one file for every report draw: REPORT_DRAW may name several, and a call brings back 8 files)
if [ -n "${OUT:-}" ] && [ "${TINY:-0}" != 1 ]; then
    (cd "$R" && tar cf "$OUT/.clean.tmp" $(for d in $REPORT_DRAW; do ls eval-*-s0-d"$d"/suites/eval-clean/images.parquet \
        eval-base-d"$d"/suites/eval-clean/images.parquet 2>/dev/null; done)) && mv "$OUT/.clean.tmp" "$OUT/clean-d${REPORT_DRAW// /-}.tar"
fi
