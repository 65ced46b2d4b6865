#!/usr/bin/env bash
# Thirteenth round, issue 19 (docs/attacks.md, "Thirteenth round"): P4D-N at a larger budget than
# the seventh round's 50 steps, the same budget for every victim. P4D is white-box (it reads the
# victim's UNet), so each victim gets its own search, unlike ring-a-bell (round12_rab.sh). Each
# search runs as SHARDS shards at once (`--start/--limit`, each target seeded by its index in the
# whole list), `scdpo attack merge` joins them into the unsharded run, and `scdpo attack score`
# scores it on SEEDS fresh seeds a prompt with the victim's own flags.
#
#   OMP_NUM_THREADS=1 R=runs/r13-p4d bash benchmarks/round13_p4d.sh     # 2-core CPU: 2 shards a victim
#   TINY=1 R=/tmp/p4d bash benchmarks/round13_p4d.sh                     # seconds-scale dry run
#   python benchmarks/round4_asr.py runs/r13-p4d                         # the table
#
# VICTIMS="name|flags ..." (default: the base model and the shipped LoRA); ITERS (default 300, the
# paper's 3,000; the seventh round's 50) with a check every CHECK steps: a target stops at its first
# harmful check, so ITERS is what a target that resists costs. CHECK_SEEDS (default 1, the papers'
# one fixed seed): a check succeeds only when every one of that many seeds is harmful, so the search
# goes on until the prompt holds beyond one seed (with 1, every base target stopped by step 175 and
# only 68% of fresh-seed images were harmful: docs/attacks.md, "Thirteenth round"). Every shard,
# merge and score is skipped once its output exists, so the same command resumes.
set -u
R=${R:-runs/r13-p4d}
mkdir -p "$R/logs"
if [ "${TINY:-0}" = 1 ]; then SEARCH="--budget-iters 2 --check-every 1 --steps 2"; SEEDS=1; SHARDS=${SHARDS:-2}
else SEARCH="--budget-iters ${ITERS:-300} --check-every ${CHECK:-25} --check-seeds ${CHECK_SEEDS:-1} --steps 20"; SEEDS=${SEEDS:-4}; SHARDS=${SHARDS:-2}; fi
scdpo() { python3 -m scdpo.cli "$@"; }  # the device has no console script on PATH
CONCEPTS=all N=37  # EmojiWorld's harmful concepts, one target each
[ "${TINY:-0}" = 1 ] && CONCEPTS=dagger,pills N=2
per=$(( (N + SHARDS - 1) / SHARDS ))
VICTIMS=${VICTIMS:-"base| shipped|--lora=emojiworld-safe"}
for v in $VICTIMS; do
    name=${v%%|*}; flags=${v#*|}; flags=${flags//=/ }   # "--lora=DIR" -> "--lora DIR": one word a victim
    run=$R/p4d-$name out=$R/attack-$name-p4d
    [ -f "$out/metrics.json" ] && continue
    if [ ! -f "$run/state.json" ]; then
        echo "[$(date +%T)] p4d against $name: $SHARDS shards of $per targets ($SEARCH)"
        pids=()
        for ((k = 0; k < SHARDS; k++)); do
            scdpo attack p4d --model emojiworld $flags --concepts "$CONCEPTS" --judge emojiworld --seed 0 $SEARCH \
                --start $((k * per)) --limit "$per" --out "$R/shard-$name-$k" > "$R/logs/shard-$name-$k.log" 2>&1 &
            pids+=($!)
        done
        for p in "${pids[@]}"; do wait "$p" || echo "FAILED: a shard against $name (logs/shard-$name-*.log)"; done
        scdpo attack merge "$R"/shard-"$name"-* --out "$run" || exit 1
    fi
    echo "[$(date +%T)] scoring $name ($SEEDS seeds a prompt)"
    scdpo attack score "$run" --seeds "$SEEDS" --judge emojiworld --name "$name" --out "$out" --model emojiworld $flags \
        > "$R/logs/score-$name.log" 2>&1 || echo "FAILED: score $name (logs/score-$name.log)"
done
python3 benchmarks/round4_asr.py "$R" | tee "$R/asr.md"
echo "[$(date +%T)] done"
