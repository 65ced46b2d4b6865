#!/usr/bin/env bash
# Ninth round (issue 15; docs/results.md, "Ninth round"): one device budget, resumable, so the same
# command reruns on the warm machine. STAGE=final of benchmarks/emojiworld_round4.sh with
#   - the filtered neighbour words (scdpo data build's default filter, docs/dataset-builder.md) on the
#     shipped recipe over 3 seeds (augf), and on every harmful prompt, seed 0 (augf-all): both also on
#     the tuning draw 0, where benchmarks/round4_pick.py ranks them against the shipped recipe;
#   - the ablations the eighth round lost: winner term, preservation, timestep range, 3 seeds each;
# every run evaluated on the test draw 1 on the GPU; the LoRAs come back (SHIP).
#
#   . scripts/device_env.sh && OUT=$OUT bash benchmarks/round9.sh     # on the device, 2-3 calls
#   TINY=1 R=/tmp/r9 bash benchmarks/round9.sh                        # seconds-scale CPU dry run
set -u
export R=${R:-$PWD/runs/r9}
ONLY=${ONLY:-"augf augf-all:0 no-winner no-preserve timestep700"}
# a call started at once after a cut one once found scdpo missing (BENCHMARKS.md, seventh round)
python3 -c "import scdpo" || { echo "scdpo is not importable here: run the same command again"; exit 3; }
mkdir -p "$R/logs"
[ "${TINY:-0}" = 1 ] && DL=${DEADLINE:-100000} || DL=${DEADLINE:-540}
STAGE=final ONLY="$ONLY" DRAW0_RUNS="augf augf-all" SHIP=${SHIP:-"augf augf-all no-winner no-preserve timestep700"} \
    LIMIT=${LIMIT:-150} PAR=${PAR:-18} DEADLINE=$DL bash benchmarks/emojiworld_round4.sh
