#!/usr/bin/env bash
# Tenth round (issue 15; prepared in the ninth, docs/results.md "Ninth round", "Next"): clean
# alignment with the implicit reach. The ninth round found timesteps 700-999 (timestep700) meeting 8
# of 9 goals and missing clean alignment, and preservation trading alignment for reach; so the
# candidates are the shipped recipe, timestep700 and timestep700 at p = 35 and 50, 3 seeds each,
# every seed on the tuning draw 0 (the pick: `python benchmarks/round4_pick.py R --draw 0 --rule
# shortfall --seeds all`) and on suite draw 2, never used before, for the report. One device budget,
# resumable: the same command reruns on the warm machine.
#
#   . scripts/device_env.sh && OUT=$OUT bash benchmarks/round10.sh    # on the device, 2-3 calls
#   TINY=1 R=/tmp/r10 bash benchmarks/round10.sh                      # seconds-scale CPU dry run
set -u
export R=${R:-$PWD/runs/r10}
CANDIDATES="recipe timestep700 t700-p35 t700-p50"
ONLY=${ONLY:-$CANDIDATES}
python3 -c "import scdpo" || { echo "scdpo is not importable here: run the same command again"; exit 3; }
mkdir -p "$R/logs"
[ "${TINY:-0}" = 1 ] && DL=${DEADLINE:-100000} || DL=${DEADLINE:-540}
STAGE=final DRAW=2 ONLY="$ONLY" DRAW0_RUNS="$CANDIDATES" SHIP=${SHIP:-"$CANDIDATES"} \
    LIMIT=${LIMIT:-150} PAR=${PAR:-18} DEADLINE=$DL bash benchmarks/emojiworld_round4.sh
