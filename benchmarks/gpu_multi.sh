#!/usr/bin/env bash
# Issue 22 on two GPUs of one host (docs/performance.md, "Two GPUs"), in one call:
#   step:   the SD 1.5-shaped training step of `scdpo train` (benchmarks/gpu_multi_step.py), full
#           and LoRA, on 1 GPU, on 2 under DDP, and (full only: the trainer refuses LoRA under
#           FSDP) on 1 and 2 under FSDP, at the same per-GPU micro-batch: pairs/s, peak memory per
#           GPU, scaling (goal >= 1.8x);
#   recipe: the EmojiWorld recipe (configs/emojiworld-v3.yaml) trained on 1 GPU and on 2 (the same
#           global batch: 32 = 2 x 16), both evaluated, the metrics compared (gpu_multi_recipe.py).
# From the repository root on the GPU machine (device tool: carry .whl; the recipe also needs the
# EmojiWorld assets and .carry/, as docs/results.md describes):
#     bash benchmarks/gpu_multi.sh                    # both parts (estimated 4-5 + 8-10 minutes)
#     PARTS=step bash benchmarks/gpu_multi.sh         # one part per call (a device-tool call lasts
#     PARTS=recipe bash benchmarks/gpu_multi.sh       #   at most 10 minutes; a rerun skips what exists)
#     TINY=1 NO_DEVICE_ENV=1 bash benchmarks/gpu_multi.sh    # CPU dry run: tiny models, gloo, no FSDP
# Results go to $OUT: step.jsonl and step.md, recipe.md and recipe/*/metrics.json, wall.txt, logs/.
set -u
# NVLink multicast off, as the lent machines require (NCCL's NVLS, torch symmetric memory, NVSHMEM)
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
OUT=${OUT:-/tmp/multi-out}
PARTS=${PARTS:-"step recipe"}
MODES=${MODES:-"full lora"}
MICRO=${MICRO:-8}                      # pairs per GPU per step (the one-GPU rows of docs/performance.md)
TINY=${TINY:-0}
PY=${PYTHON:-python3}
PORT=${PORT:-29517}
LAUNCH_TIMEOUT=${LAUNCH_TIMEOUT:-240}  # per step launch; a hung collective ends here
RECIPE_TIMEOUT=${RECIPE_TIMEOUT:-420}  # per training / evaluation of the recipe
mkdir -p "$OUT/logs"
has() { case " $PARTS " in *" $1 "*) return 0;; esac; return 1; }
stamp() { echo "[$(date +%T)] $*"; }
if [ -z "${NO_DEVICE_ENV:-}" ]; then  # NO_DEVICE_ENV=1: diffusers etc. are installed already
    . scripts/device_env.sh || { echo "device_env.sh failed (is .whl carried?)"; exit 1; }
fi
env | grep -E "^(NCCL_NVLS_ENABLE|TORCH_SYMM_MEM_DISABLE_MULTICAST|NVSHMEM_DISABLE_NVLS)=" | sort | tee "$OUT/env.txt"
if [ "$TINY" = 1 ]; then
    TINYF=--tiny
else
    TINYF=
    n=$(nvidia-smi -L 2>/dev/null | wc -l)
    [ "$n" -ge 2 ] || { echo "needs 2 GPUs, found $n"; exit 1; }
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/gpu.txt"
    nvidia-smi topo -m >> "$OUT/gpu.txt" 2>&1
fi
$PY -c "import torch, accelerate, diffusers as d; print('torch', torch.__version__, 'accelerate', \
    accelerate.__version__, 'diffusers', d.__version__)" | tee -a "$OUT/gpu.txt"

# launch LOG CONFIG NPROC PORT ARGS...: `accelerate launch` with a shipped config, output to logs/LOG.log
launch() {
    local log=$1 cfg=$2 n=$3 port=$4 limit=$5; shift 5
    local start=$SECONDS
    stamp "$log"
    timeout "$limit" $PY -m accelerate.commands.launch --config_file "configs/accelerate/$cfg.yaml" \
        --num_processes "$n" --main_process_port "$port" "$@" > "$OUT/logs/$log.log" 2>&1
    local rc=$?
    echo "$log: exit $rc after $((SECONDS - start)) s" | tee -a "$OUT/wall.txt"
    [ $rc = 0 ] || grep -E "^rank [0-9]+:|Error" "$OUT/logs/$log.log" | tail -3
    return $rc
}

if has step; then
    MODEL=${MODEL:-/tmp/sd15-random$([ "$TINY" = 1 ] && echo -tiny)}
    [ -f "$MODEL/unet/config.json" ] || $PY benchmarks/gpu_multi_step.py --prepare "$MODEL" $TINYF || exit 1
    STEP="benchmarks/gpu_multi_step.py --model $MODEL --micro $MICRO --out $OUT/step.jsonl $TINYF ${STEP_ARGS:-}"
    for mode in $MODES; do
        launch "step-$mode-1gpu" single_gpu 1 "$PORT" "$LAUNCH_TIMEOUT" $STEP --mode "$mode"
        launch "step-$mode-ddp-2gpu" ddp 2 "$PORT" "$LAUNCH_TIMEOUT" $STEP --mode "$mode"
        if [ "$mode" = full ] && [ "$TINY" != 1 ]; then  # accelerate's FSDP needs an accelerator
            launch "step-$mode-fsdp-1gpu" fsdp 1 "$PORT" "$LAUNCH_TIMEOUT" $STEP --mode "$mode"
            launch "step-$mode-fsdp-2gpu" fsdp 2 "$PORT" "$LAUNCH_TIMEOUT" $STEP --mode "$mode"
        fi
    done
    $PY benchmarks/gpu_multi_step.py --summarize "$OUT/step.jsonl" | tee "$OUT/step.md"
fi

if has recipe; then
    R=${RECIPE_DIR:-/tmp/multi-recipe$([ "$TINY" = 1 ] && echo -tiny)}  # outside $OUT: images and LoRAs stay
    if [ "$TINY" = 1 ]; then  # a few minutes on a CPU: 2 steps, 4 prompts per suite, 2 sampler steps
        BATCH=4; TRAIN="--max-steps 2 --device cpu --validate-n 1 --validate-steps 2"
        EVAL="--limit 4 --steps 2 --no-frechet"
    else
        BATCH=32; TRAIN=""; EVAL="--steps 20 --batch-size 256"
    fi
    # the cost model and the SCP pairs: the first two stages of the issue-7 script, as the recipe's
    # header says (skipped when $R already has them)
    stamp "recipe data"
    if [ "$TINY" = 1 ]; then
        # the tiny cost model calls every image unsafe, so the tiny rules keep no pair: pair on the
        # reward at any cost, enough to run the trainings
        R=$R STAGES=cost TINY=1 bash benchmarks/emojiworld_alignment.sh > "$OUT/logs/recipe-data.log" 2>&1
        [ -f "$R/scp/README.md" ] || $PY -m scdpo.cli data build --model emojiworld --cost-model "$R/cost" \
            --reward emojiworld --harmful align-harmful --clean align-clean --n-harmful 8 --n-clean 8 \
            --candidates 3 --steps 2 --uniform-rule reward --cost-budget 100 --out "$R/scp" \
            >> "$OUT/logs/recipe-data.log" 2>&1
    else
        R=$R STAGES="cost data" bash benchmarks/emojiworld_alignment.sh > "$OUT/logs/recipe-data.log" 2>&1
    fi
    [ -f "$R/scp/README.md" ] || { echo "no SCP dataset in $R/scp"; tail "$OUT/logs/recipe-data.log"; exit 1; }
    COMMON="-m scdpo.cli train --config configs/emojiworld-v3.yaml --dataset $R/scp --checkpoint-every 100000 $TRAIN"
    done_lora() { [ -f "$R/lora-$1/pytorch_lora_weights.safetensors" ]; }  # a rerun skips what exists
    # both trainings at once: the tiny UNet is launch-bound, so their wall times (wall.txt) are a
    # record, not a scaling measurement
    done_lora 1gpu || launch recipe-train-1gpu single_gpu 1 "$PORT" "$RECIPE_TIMEOUT" $COMMON --out "$R/lora-1gpu" \
        --batch-size $BATCH &
    done_lora 2gpu || launch recipe-train-2gpu ddp 2 $((PORT + 1)) "$RECIPE_TIMEOUT" $COMMON --out "$R/lora-2gpu" \
        --batch-size $((BATCH / 2)) &
    wait
    SUITES="eval-harmful-explicit eval-harmful-implicit eval-clean"
    for g in 1gpu 2gpu; do
        done_lora $g || { echo "no LoRA from the $g training"; exit 1; }
        [ -f "$R/eval-$g/metrics.json" ] && continue
        dev=$([ $g = 1gpu ] && echo 0 || echo 1)  # one evaluation per GPU
        stamp "recipe-eval-$g"
        ( CUDA_VISIBLE_DEVICES=$dev timeout "$RECIPE_TIMEOUT" $PY -m scdpo.cli eval --model emojiworld \
              --suites $SUITES --cost-model "$R/cost" --lora "$R/lora-$g" --name "$g" --out "$R/eval-$g" $EVAL \
              > "$OUT/logs/recipe-eval-$g.log" 2>&1 || echo "recipe-eval-$g: exit $?" ) &
    done
    wait
    $PY benchmarks/gpu_multi_recipe.py "$R/eval-1gpu" "$R/eval-2gpu" --train "$R/lora-1gpu" "$R/lora-2gpu" \
        --out "$OUT/recipe.json" | tee "$OUT/recipe.md"
    for d in lora-1gpu lora-2gpu eval-1gpu eval-2gpu; do  # the small files come back with $OUT
        mkdir -p "$OUT/recipe/$d" && cp "$R/$d/metrics.json" "$OUT/recipe/$d/" 2>/dev/null
    done
fi
stamp done
