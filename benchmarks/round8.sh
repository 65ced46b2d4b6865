#!/usr/bin/env bash
# Eighth round (issues 15 and 16; docs/results.md, "Eighth round"): one device budget, resumable, so
# the same command reruns on the warm machine:
#   1. issue 16: the CUDA-graphs lever of the anchor trajectory, measured alone on the GPU
#      (benchmarks/anchor_cost.py --device cuda); the trainings below use it when it pays (>= 1.2x
#      at equal work), else run eagerly; the choice is logged in logs/train-flags.txt;
#   2. issue 15: the shipped recipe's ablations left (winner term, preservation, timestep range over
#      3 seeds; SafetyDPO with the same extras) and the neighbour-word augmentation (docs/dataset-builder.md)
#      at p = 50 over 3 seeds and at the recipe's p = 20 on seed 0, the augmented runs also on the
#      tuning draw 0 (the pick) and every run on the test draw 1 (STAGE=final of
#      benchmarks/emojiworld_round4.sh).
#
#   . scripts/device_env.sh && OUT=$OUT bash benchmarks/round8.sh     # on the device, 2-3 calls
#   TINY=1 R=/tmp/r8 bash benchmarks/round8.sh                        # seconds-scale CPU dry run
set -u
export R=${R:-$PWD/runs/r8}
ONLY=${ONLY:-"aug:0 aug-p50 no-winner no-preserve timestep700 safetydpo-extras"}
# a call started at once after a cut one once found scdpo missing (BENCHMARKS.md, seventh round)
python3 -c "import scdpo" || { echo "scdpo is not importable here: run the same command again"; exit 3; }
mkdir -p "$R/logs"
if [ "${TINY:-0}" = 1 ]; then DEV=cpu; MEASURE="--steps 2 --batch-size 2"; DL=${DEADLINE:-100000}
else DEV=cuda; MEASURE="--steps 50 --batch-size 32"; DL=${DEADLINE:-540}; fi

if [ ! -f "$R/logs/train-flags.txt" ]; then
    echo "[$(date +%T)] anchor cost ($DEV)"
    python3 benchmarks/anchor_cost.py --device $DEV $MEASURE > "$R/logs/anchor-cost.log" 2>&1 \
        || { tail "$R/logs/anchor-cost.log"; exit 1; }
    # the last line is the rows as JSON; graphs pay when their trajectory step is >= 1.2x faster
    tail -1 "$R/logs/anchor-cost.log" | python3 -c '
import json, sys
rows = {r["run"]: r["seconds_per_step"] for r in json.load(sys.stdin)}
eager = rows["anchor, policy trajectory every step"]
graphs = rows.get("anchor, policy trajectory every step, CUDA graphs")
print("--cuda-graphs" if graphs and eager / graphs >= 1.2 else "")' > "$R/logs/train-flags.txt"
    grep -v '^{\|^\[' "$R/logs/anchor-cost.log" | grep '^|'
fi
echo "[$(date +%T)] train flags: '$(cat "$R/logs/train-flags.txt")'"
STAGE=final ONLY="$ONLY" DRAW0_RUNS="aug aug-p50" TRAIN_FLAGS="$(cat "$R/logs/train-flags.txt")" \
    SHIP=${SHIP:-"aug aug-p50 no-winner no-preserve timestep700 safetydpo-extras"} \
    LIMIT=${LIMIT:-150} PAR=${PAR:-18} DEADLINE=$DL bash benchmarks/emojiworld_round4.sh
