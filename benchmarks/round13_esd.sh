#!/usr/bin/env bash
# Thirteenth round, issue 18 (docs/baselines.md, "Thirteenth round"): ESD-u over training seeds,
# the twelfth round's seed 0 setting (the authors' defaults: 1,000 steps, batch 1, 50 DDIM steps,
# lr 1e-4, all 37 concepts at once), which took 61 minutes on the 2-core CPU and is a minute-scale
# job on a GPU. Then each is evaluated on suite draw DRAW with SC-DPO's protocol (cpu_evals.sh,
# which runs on the GPU when there is one). Runs beside a device round in its own detach session:
#
#   . scripts/device_env.sh && WAIT=0 bash benchmarks/detach.sh esd bash benchmarks/round13_esd.sh
#   TINY=1 R=/tmp/esd bash benchmarks/round13_esd.sh                       # seconds-scale CPU dry run
#
# Outputs: $R/lora-esd-u-sK, $R/eval-esd-u-sK-dDRAW; with OUT, their metrics in $OUT/esd.tar.gz.
set -u
R=${R:-$PWD/runs/r13-esd}
SEEDS=${SEEDS:-"1 2"}
DRAW=${DRAW:-3}
mkdir -p "$R/logs"
if [ "${TINY:-0}" = 1 ]; then ESD="--iterations 2 --ddim-steps 4"; export LIMIT=2
else ESD="--iterations 1000 --ddim-steps 50"; fi
pids=()
for s in $SEEDS; do
    [ -f "$R/lora-esd-u-s$s/pytorch_lora_weights.safetensors" ] && continue
    echo "[$(date +%T)] ESD-u seed $s"
    python3 -m scdpo.cli baseline esd --variant u --model emojiworld $ESD --batch-size 1 --lr 1e-4 --seed "$s" \
        --no-progress --out "$R/lora-esd-u-s$s" > "$R/logs/esd-u-s$s.log" 2>&1 &
    pids+=($!)
done
for p in "${pids[@]+"${pids[@]}"}"; do wait "$p" || echo "FAILED: an ESD-u training (logs/esd-u-s*.log)"; done
names=(); for s in $SEEDS; do names+=("esd-u-s$s"); done
R=$R DRAW=$DRAW LANES=${#names[@]} bash "$(dirname "$0")/cpu_evals.sh" "${names[@]}"
if [ -n "${OUT:-}" ] && [ "${TINY:-0}" != 1 ]; then
    (cd "$R" && tar czf "$OUT/.esd.tmp" logs lora-esd-u-*/baseline.json eval-*/metrics.json) && mv "$OUT/.esd.tmp" "$OUT/esd.tar.gz"
fi
echo "[$(date +%T)] done"
