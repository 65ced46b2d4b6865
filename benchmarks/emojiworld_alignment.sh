#!/usr/bin/env bash
# The full EmojiWorld comparison of docs/results.md: cost model -> SCP dataset -> every method of
# issue 7 (Diffusion-DPO, SafetyDPO, SC-DPO and its ablations) -> evaluation of each against the
# base model, the negative-prompt baselines and (stage "baselines") the field's baselines, ESD-x/u,
# UCE, SLD and SAFREE (benchmarks/emojiworld_baselines.sh, same R) -> one comparison table.
#
#   bash benchmarks/emojiworld_alignment.sh            # GPU scale (166 s on one H100, 196-199 s on another; BENCHMARKS.md, "Forty-second round")
#   TINY=1 R=/tmp/r bash benchmarks/emojiworld_alignment.sh   # seconds-scale dry run on a CPU
#
# Stages run in order and each is skipped when its output exists (STAGES="train eval" reruns two).
# WARM=1 (the default on Linux; benchmarks/jobs.sh) forks every command from one server that imported everything once;
# WARM=0 runs each in a fresh process (245-257 s against 209-225 s on one H100, the same tables).
# TOGETHER=1 (the default for the default METHODS) trains the methods in one process (`scdpo train --together`):
# on one H100 the six trainings took 107 s against 135 s as six processes, their tables equal within noise
# (BENCHMARKS.md, "Thirty-fifth round"); TOGETHER=0: one process each.
# TRAIN_FLAGS adds flags to every training (e.g. --no-cuda-graphs: on a GPU the trainings replay their UNet calls from CUDA graphs by default, BENCHMARKS.md "Thirty-second round").
# Trainings and evaluations of different methods are independent, so they run concurrently
# (PAR of them at once): on one GPU the tiny EmojiWorld UNet is launch-bound, not compute-bound.
# The three evaluations that need no training (the base model, the two negative prompts) start as soon as the
# cost model exists, beside the data build and the trainings (EARLY_EVALS=0: with the others, as before); they
# count against PAR.
# DTYPE (unset: each command's `auto`, TF32 for EmojiWorld on a CUDA GPU since 2026-12-06, fp32 before) passes `--dtype DTYPE` (tf32, bf16, ...) to the data build
# and every evaluation: the sampling commands' precision (docs/performance.md, "Sampling precision").
# EVAL_BATCH pins the evaluations' sampling batch (--batch-size; unset, the default since 2026-12-06: the command
# picks, 1,024 images a UNet call and a decoder call on a GPU for EmojiWorld; every round before pinned 256, with
# 8 images a decoder call). The batch changes the kernels' rounding, not what is drawn: at 1,024 every judge
# verdict of the throughput benchmark was the same as at 64 (docs/performance.md, "Sampling batches").
# EVAL_FLAGS adds flags to every evaluation (e.g. --fill-batches, measured in benchmarks/round43.sh's stage p).
# The cost model and the data build are the only commands of their stages, so they take SERIAL_THREADS CPU
# threads (default: every core; the device's environment pins one a process for the concurrent stages); the
# data build encodes its PNGs on them.
set -u
R=${R:-runs/emojiworld-alignment}
STAGES=${STAGES:-"cost data train eval baselines compare"}
PAR=${PAR:-8}
SERIAL_THREADS=${SERIAL_THREADS:-$(nproc 2>/dev/null || getconf _NPROCESSORS_ONLN 2>/dev/null || echo 1)}
early=
if [ "${TINY:-0}" = 1 ]; then
    COST="--pool 64 --eval-n 16 --steps 20"; NPROMPTS=6; CAND=2; TSTEPS=2; TBATCH=2; ELIMIT="--limit 4"; SSTEPS=2
    # a 20-step cost model calls every image unsafe, so every prompt was skipped and no training ran:
    # the dry run pairs on the reward instead, to exercise every stage
    DATA_TINY="--uniform-rule reward --cost-budget 1000"
else
    COST="--pool 8000 --eval-n 300"; NPROMPTS=2000; CAND=4; TSTEPS=1000; TBATCH=32; ELIMIT=""; SSTEPS=20; DATA_TINY=""
fi
. "$(dirname "$0")/negative_prompt.sh"  # NEG, the fixed negative prompt
SUITES=${SUITES:-"eval-harmful-explicit eval-harmful-implicit eval-clean eval-mixed"}
# method | trainer flags on top of configs/emojiworld.yaml (METHODS=... replaces the list: a sweep)
# the default methods differ in their loss settings alone, so they train in one process unless TOGETHER=0; a
# caller's METHODS (a sweep: any flag) train one process each unless TOGETHER=1
[ -n "${METHODS+x}" ] && TOGETHER=${TOGETHER:-0}
TOGETHER=${TOGETHER:-1}
METHODS=${METHODS:-"
dpo|--loss dpo
safetydpo|--loss safetydpo
sc-dpo|--loss sc-dpo
sc-dpo-no-dfm|--loss sc-dpo --focus-gamma 0
sc-dpo-no-constraint|--loss sc-dpo --no-constraint
sc-dpo-no-winner-term|--loss sc-dpo --winner-weight 0
"}
. "$(dirname "$0")/jobs.sh"

# ev NAME FLAGS...: one evaluation in the background, unless its metrics exist
ev() { local name=$1; shift
       [ -f "$R/eval-$name/metrics.json" ] || bg "eval-$name" scdpo eval --model emojiworld --suites $SUITES \
           $ELIMIT --steps $SSTEPS ${EVAL_BATCH:+--batch-size $EVAL_BATCH} ${DTYPE:+--dtype $DTYPE} \
           --cost-model "$R/cost" --name "$name" \
           --out "$R/eval-$name" ${EVAL_FLAGS:-} "$@"; }
untrained_evals() { [ "${BASELINES:-1}" = 1 ] || return 0
    ev base
    ev negative-prompt --negative-prompt "$NEG"
    ev negative-prompt-oracle --negative-from-concepts; }

# data_build FLAGS...: the SCP dataset's build (the candidates' run adds --candidates-only)
data_build() { scdpo data build --model emojiworld --cost-model "$R/cost" --reward emojiworld \
        --harmful align-harmful --clean align-clean --n-harmful $NPROMPTS --n-clean $NPROMPTS \
        --candidates $CAND --steps $SSTEPS --safe-prompt-winner $DATA_TINY ${DTYPE:+--dtype $DTYPE} \
        --out "$R/scp" "$@"; }
ahead=
if has data && [ "${CANDIDATES_FIRST:-1}" = 1 ] && [ ! -f "$R/scp/README.md" ] && has cost && [ ! -f "$R/cost/config.json" ]; then
    # the build's first pass (K candidates a prompt and their rewards) needs no cost model, so it samples while
    # the cost model trains; the build below reads it and scores the costs (docs/dataset-builder.md,
    # "Candidates first"). CANDIDATES_FIRST=0: the whole build after the cost model, as before 2026-12-06 (on one H100
    # the whole script 174 s against 166 s with it, back to back; BENCHMARKS.md, "Forty-second round")
    before=${!:-}; bg data-candidates data_build --candidates-only
    [ "${!:-}" = "$before" ] || ahead=$!  # (bg starts nothing past DEADLINE)
fi
if has cost && [ ! -f "$R/cost/config.json" ]; then
    stamp "cost${ahead:+, the candidates of the build beside it}"
    scdpo --threads "$SERIAL_THREADS" cost train --out "$R/cost" $COST --no-progress > "$R/logs/cost.log" 2>&1 \
        || { tail "$R/logs/cost.log"; kill $(jobs -rp) 2>/dev/null; exit 1; }
fi
if has eval && [ "${EARLY_EVALS:-1}" = 1 ] && [ -f "$R/cost/config.json" ]; then
    stamp "eval (base model, negative prompts: beside the data build and the trainings)"; untrained_evals; early=1
fi
if has data && [ ! -f "$R/scp/README.md" ]; then
    stamp data
    if [ -n "$ahead" ]; then
        wait "$ahead"
        [ "$(cat "$R/logs/data-candidates.rc" 2>/dev/null)" = 0 ] \
            || { echo "FAILED: the build's candidates"; tail "$R/logs/data-candidates.log"; kill $(jobs -rp) 2>/dev/null; exit 1; }
    fi
    # the sampler's batch and the chunk unset: on a GPU the build picks them (1,024 candidates a batch,
    # 256-prompt chunks at K = 4: 3.56x the 64/64 settings, BENCHMARKS.md "Twenty-seventh round"); this
    # script pinned 256 a batch and 500-prompt chunks until 2026-12-05
    data_build --threads "$SERIAL_THREADS" > "$R/logs/data.log" 2>&1 \
        || { tail "$R/logs/data.log"; kill $(jobs -rp) 2>/dev/null; exit 1; }
fi
if has train; then
    stamp train
    early_pids=" $(jobs -rp | tr '\n' ' ')"  # the untrained evaluations, if still running: not waited for here
    TRAIN="--config configs/emojiworld.yaml --dataset $R/scp --max-steps $TSTEPS --batch-size $TBATCH --warmup 50
           --validate-every 0 --checkpoint-every 100000 --log-every 50 ${TRAIN_FLAGS:-}"
    runs=()
    while IFS='|' read -r name flags; do
        [ -z "$name" ] || [ -f "$R/lora-$name/pytorch_lora_weights.safetensors" ] && continue
        if [ "${TOGETHER:-0}" = 1 ]; then runs+=(--run "$R/lora-$name=$flags"); continue; fi
        bg "train-$name" scdpo train $TRAIN --out "$R/lora-$name" $flags
    done <<< "$METHODS"
    # TOGETHER=1: every method in one process, one UNet call a step for all (scdpo train --together)
    [ ${#runs[@]} = 0 ] || bg train-together scdpo train $TRAIN --out "$R/lora-together" --together "${runs[@]}"
    wait_jobs $early_pids
fi
if has eval; then
    stamp eval
    [ -n "${early:-}" ] || untrained_evals
    while IFS='|' read -r name flags; do
        [ -n "$name" ] && [ -f "$R/lora-$name/pytorch_lora_weights.safetensors" ] && ev "$name" --lora "$R/lora-$name"
    done <<< "$METHODS"
    wait
fi
if has baselines && [ "${BASELINES:-1}" = 1 ]; then  # the same R: its cost model, suites and steps
    stamp baselines
    STAGES="baseline eval" R=$R PAR=$PAR SUITES=$SUITES bash "$(dirname "$0")/emojiworld_baselines.sh" \
        > "$R/logs/baselines.log" 2>&1 || { echo "FAILED: baselines"; tail -5 "$R/logs/baselines.log"; }
fi
if has compare; then
    stamp compare
    compare_runs
fi
report_failures
stamp done
