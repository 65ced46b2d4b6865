#!/usr/bin/env bash
# Seventh round (issues 15, 17, 18, 19; docs/results.md, "Seventh round"): one device budget's worth,
# three jobs sharing one H200, each resumable, so the same command reruns on the warm machine:
#   1. issue 15: the shipped recipe's ablations of the paper's own parts (constraint, focusing, and
#      all three with the margin: Diffusion-DPO with the same extras) over 3 seeds, the margin and the
#      concept hold-out on seed 0 (STAGE=final of benchmarks/emojiworld_round4.sh, ONLY=...);
#   2. issue 17: the cost model from prompt pairs at full size (benchmarks/cost_from_pairs.py);
#   3. issues 18 and 19: the baselines and every attack against every victim
#      (benchmarks/round4_baselines_attacks.sh, the shipped LoRA as the SC-DPO victim), once the
#      cost model of 1 exists, niced below 1 (the trainings decide the call count).
#
#   . scripts/device_env.sh && OUT=$OUT bash benchmarks/round7.sh     # on the device, 3 calls
#   TINY=1 R=/tmp/r7 bash benchmarks/round7.sh                        # seconds-scale CPU dry run
set -u
export R=${R:-$PWD/runs/r7}
ONLY=${ONLY:-"no-constraint no-focus dpo-extras no-margin:0 holdout:0"}
LORA=${SCDPO_LORA:-src/scdpo/assets/loras/emojiworld-safe/pytorch_lora_weights.safetensors}
# a call started at once after a cut one once found scdpo missing and failed every job (BENCHMARKS.md)
python3 -c "import scdpo" || { echo "scdpo is not importable here: run the same command again"; exit 3; }
mkdir -p "$R/logs"
T0=$(date +%s)
# DEADLINE: seconds after which no job starts (a device call lasts 600); none for the CPU dry run
if [ "${TINY:-0}" = 1 ]; then PAIRS="--pairs 16 --steps 20 --generated-n 4 --clean-prompts none"; DEV=cpu; DL=${DEADLINE:-100000}
else PAIRS=""; DEV=cuda; DL=${DEADLINE:-540}; fi

out() { [ -n "${OUT:-}" ] && mkdir -p "$OUT/$1" && echo "$OUT/$1"; }
( nice -n 5 python3 benchmarks/cost_from_pairs.py --out "$R/cost-pairs" --device $DEV $PAIRS > "$R/logs/cost-pairs.log" 2>&1
  o=$(out pairs) && cp "$R/logs/cost-pairs.log" "$R"/cost-pairs/results.json "$o"/ 2>/dev/null ) &
( while [ ! -f "$R/cost/config.json" ]; do sleep 5; done
  left=$(( DL - ($(date +%s) - T0) ))
  SCDPO_LORA=$LORA OUT=$(out ba) DEADLINE=$(( left - 150 )) HARD=$(( left - 20 )) PAR=${BA_PAR:-6} \
      nice -n 10 bash benchmarks/round4_baselines_attacks.sh > "$R/logs/baselines-attacks.log" 2>&1
  o=$(out ba) && cp "$R/logs/baselines-attacks.log" "$o"/ ) &
STAGE=final ONLY="$ONLY" LIMIT=${LIMIT:-150} PAR=16 DEADLINE=$DL bash benchmarks/emojiworld_round4.sh
wait
