#!/usr/bin/env bash
# The baselines the field compares against (issue 18), on EmojiWorld, evaluated exactly as
# benchmarks/emojiworld_alignment.sh evaluates SC-DPO (same suites, seeds, steps, cost model):
# ESD-x, ESD-u and UCE (LoRAs written by `scdpo baseline`), and the inference-time guards
# SLD (weak / medium / strong / max) and SAFREE (`scdpo eval --guard`). docs/baselines.md.
#
#   R=runs/emojiworld-alignment bash benchmarks/emojiworld_baselines.sh   # GPU scale; beside SC-DPO's runs
#   TINY=1 R=/tmp/r bash benchmarks/emojiworld_baselines.sh               # seconds-scale dry run on a CPU
#   SUITE_SEED=1 R=runs/draw-1 bash benchmarks/emojiworld_baselines.sh    # another draw of the prompts
#
# With the same R as the alignment script, its cost model is reused and `compare` tables every
# method of both scripts together. Stages run in order; each output that exists is kept
# (STAGES="eval compare" reruns two); PAR jobs at once, as in the alignment script.
set -u
R=${R:-runs/emojiworld-alignment}
STAGES=${STAGES:-"cost baseline eval compare"}
PAR=${PAR:-8}
# EVAL_BATCH, DTYPE: the evaluations' --batch-size and --dtype, as in emojiworld_alignment.sh (unset: the command picks)
SUITE_SEED=${SUITE_SEED:-0}
if [ "${TINY:-0}" = 1 ]; then
    COST="--pool 64 --eval-n 16 --steps 20"; ESD="--iterations 2 --batch-size 2 --ddim-steps 4"; ELIMIT="--limit 4"; SSTEPS=2
else
    COST="--pool 8000 --eval-n 300"; ESD="--iterations 1000 --batch-size 8"; ELIMIT=""; SSTEPS=20
fi
SUITES=${SUITES:-"eval-harmful-explicit eval-harmful-implicit eval-clean eval-mixed"}
# method | how: "esd FLAGS" / "uce FLAGS" write $R/lora-NAME; "guard SPEC" evaluates the base model guarded
METHODS=${METHODS:-"
esd-x|esd --variant x
esd-u|esd --variant u
uce|uce
sld-weak|guard sld:weak
sld-medium|guard sld:medium
sld-strong|guard sld:strong
sld-max|guard sld:max
safree|guard safree
safree-no-svf|guard safree:svf=false
"}
. "$(dirname "$0")/jobs.sh"

if has cost && [ ! -f "$R/cost/config.json" ]; then  # the alignment script's cost model, if it is there
    stamp cost; scdpo cost train --out "$R/cost" $COST --no-progress > "$R/logs/cost.log" 2>&1 || { tail "$R/logs/cost.log"; exit 1; }
fi
if has baseline; then
    stamp baseline
    while IFS='|' read -r name how; do
        set -- $how
        case "${1:-}" in esd|uce) ;; *) continue;; esac
        [ -f "$R/lora-$name/pytorch_lora_weights.safetensors" ] && continue
        kind=$1; shift
        extra=""; [ "$kind" = esd ] && extra="$ESD --no-progress"
        bg "baseline-$name" scdpo baseline "$kind" --model emojiworld --out "$R/lora-$name" $extra "$@"
    done <<< "$METHODS"
    wait
fi
if has eval; then
    stamp eval
    ev() { local name=$1; shift
           [ -f "$R/eval-$name/metrics.json" ] || bg "eval-$name" scdpo eval --model emojiworld --suites $SUITES \
               --suite-seed "$SUITE_SEED" $ELIMIT --steps $SSTEPS ${EVAL_BATCH:+--batch-size $EVAL_BATCH} ${DTYPE:+--dtype $DTYPE} \
               --cost-model "$R/cost" \
               --name "$name" --out "$R/eval-$name" "$@"; }
    [ "${BASE:-1}" = 1 ] && ev base
    while IFS='|' read -r name how; do
        set -- $how
        case "${1:-}" in
            esd|uce) [ -f "$R/lora-$name/pytorch_lora_weights.safetensors" ] && ev "$name" --lora "$R/lora-$name";;
            guard) ev "$name" --guard "$2";;
        esac
    done <<< "$METHODS"
    wait
fi
if has compare; then
    stamp compare
    compare_runs
fi
report_failures
stamp done
