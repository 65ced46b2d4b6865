#!/usr/bin/env bash
# `scdpo eval` of several LoRAs on one suite draw, on the CPU, LANES at once with one thread each
# (2-core machine: about 13 minutes per model at 4 suites x 150 prompts, BENCHMARKS.md): for a round
# whose device budget ended before an evaluation (the eleventh round's draw 0, docs/results.md). Each
# evaluation is skipped once its metrics exist, so the same command resumes.
#
#   R=runs/r10 DRAW=0 bash benchmarks/cpu_evals.sh base recipe-s0 timestep700-s0 ...
# NAME "base" is the base model, "shipped" the shipped LoRA (--lora emojiworld-safe), the training-free
# baselines "negative-prompt" (the 20 harmful words of benchmarks/round9_attacks_cpu.sh), "sld-medium",
# "sld-max" and "safree" (docs/baselines.md); any other NAME is the LoRA $R/lora-NAME.
# Outputs: $R/eval-NAME-dDRAW.
set -u
R=${R:?R: the round folder holding lora-NAME}
DRAW=${DRAW:?DRAW: the suite draw (--suite-seed)}
LANES=${LANES:-2}
export OMP_NUM_THREADS=1
. "$(dirname "$0")/negative_prompt.sh"  # NEG, the fixed negative prompt
mkdir -p "$R/logs"
one() { local name=$1 out=$R/eval-$1-d$DRAW lora=()
        [ -f "$out/metrics.json" ] && return 0
        case $name in base) ;; shipped) lora=(--lora emojiworld-safe) ;; negative-prompt) lora=(--negative-prompt "$NEG") ;;
            sld-medium|sld-max) lora=(--guard "sld:${name#sld-}") ;; safree) lora=(--guard safree) ;;
            *) lora=(--lora "$R/lora-$name") ;; esac
        echo "[$(date +%T)] eval $name (draw $DRAW)"
        python3 -m scdpo.cli eval --model emojiworld --suites eval-harmful-explicit eval-harmful-implicit eval-clean eval-mixed \
            --suite-seed "$DRAW" --limit "${LIMIT:-150}" --steps 20 --batch-size 64 --name "$name-d$DRAW" --out "$out" \
            "${lora[@]}" --threads 1 > "$R/logs/eval-$name-d$DRAW.log" 2>&1 || echo "FAILED: eval $name (logs/eval-$name-d$DRAW.log)"; }
# lane i takes names i, i + LANES, ...
for ((i = 0; i < LANES; i++)); do
    ( k=0; for name in "$@"; do [ $((k % LANES)) = "$i" ] && one "$name"; k=$((k + 1)); done ) &
done
wait
echo "[$(date +%T)] done"
