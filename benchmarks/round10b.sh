#!/usr/bin/env bash
# Tenth round, part b (issues 15 and 16; docs/results.md, "Tenth round"): what fits one device budget
# after round10.sh's machine was lost mid-training. The state bank (--anchor-refresh 10 --anchor-bank
# 64) in place of the per-step anchor trajectory: timestep700 with it over 3 seeds (against the ninth
# round's per-step timestep700 on draw 1: does the bank reproduce the trajectory's numbers?), and the
# preservation weight under timesteps 700-999 at p = 35, 50 and 80 with it (seed 0, the tuning
# sweep). Draws 0 and 1 only: draw 2 stays unseen for round10.sh's report.
#
#   . scripts/device_env.sh && OUT=$OUT bash benchmarks/round10b.sh    # on the device, 1-2 calls
#   TINY=1 R=/tmp/r10b bash benchmarks/round10b.sh                     # CPU dry run
set -u
export R=${R:-$PWD/runs/r10b}
python3 -c "import scdpo" || { echo "scdpo is not importable here: run the same command again"; exit 3; }
mkdir -p "$R/logs"
[ "${TINY:-0}" = 1 ] && DL=${DEADLINE:-100000} || DL=${DEADLINE:-540}
STAGE=final DRAW="0 1" ONLY=${ONLY:-"timestep700-bank t700-p35-bank:0 t700-p50-bank:0 t700-p80-bank:0"} SHIP=all \
    LIMIT=${LIMIT:-150} PAR=${PAR:-8} DEADLINE=$DL bash benchmarks/emojiworld_round4.sh
