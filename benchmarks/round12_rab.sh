#!/usr/bin/env bash
# Twelfth round, issue 19 (docs/attacks.md, "Twelfth round"): ring-a-bell at the paper's budget
# (3,000 generations of 200) against every EmojiWorld harmful concept, searched once and scored on
# every victim. Ring-a-bell's search reads the text encoder alone (docs/attacks.md), so its prompts
# are the same for every model that shares MiniLM: the paper's own protocol (one search, then the
# images of each victim). The search runs as SHARDS shards at once (`--start/--limit`, each target
# seeded by its index in the whole list) that `scdpo attack merge` joins into the unsharded run;
# `scdpo attack score RUN --lora/--guard/--negative-prompt --out` then scores it on each victim.
#
#   . scripts/device_env.sh && bash benchmarks/detach.sh rab bash benchmarks/round12_rab.sh   # device
#   TINY=1 R=/tmp/rab bash benchmarks/round12_rab.sh                                          # CPU dry run
#   python benchmarks/round4_asr.py runs/r12-rab                                              # the table
#   OMP_NUM_THREADS=1 EXTRA="name=lora-dir ..." bash benchmarks/round12_rab.sh   # more victims, on the CPU
#
# SECS caps each target's search (--budget-seconds), so one device call holds the round; the
# generations each target reached are in RUN/state.json ("iterations") and in the table's notes.
set -u
R=${R:-runs/r12-rab}
mkdir -p "$R/logs"
if [ "${TINY:-0}" = 1 ]; then SEARCH="--budget-iters 2 --population 8 --steps 2"; SEEDS=1; SHARDS=${SHARDS:-2}
else SEARCH="--budget-iters ${GENS:-3000} --budget-seconds ${SECS:-40}"; SEEDS=${SEEDS:-4}; SHARDS=${SHARDS:-8}; fi
# RAB_FLAGS: more search flags, e.g. "--tokens 30" (the paper's K for violence is 38 or 77; docs/attacks.md,
# "Twenty-fourth round") or "--eta 5.5"
SEARCH="$SEARCH ${RAB_FLAGS:-}"
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}
scdpo() { python3 -m scdpo.cli "$@"; }  # the device has no console script on PATH
. "$(dirname "$0")/negative_prompt.sh"  # NEG, the fixed negative prompt
N=37  # EmojiWorld's harmful concepts, one target each
per=$(( (N + SHARDS - 1) / SHARDS ))
SHARDS=$(( (N + per - 1) / per ))  # 15 asked: 3 targets a shard, so 13 shards (none would start past the last target)
if [ ! -f "$R/search/state.json" ]; then  # a merged search is kept: a rerun (or the CPU) only scores
    echo "[$(date +%T)] ring-a-bell search: $SHARDS shards of $per targets ($SEARCH)"
    pids=()
    for ((k = 0; k < SHARDS; k++)); do
        scdpo attack ring-a-bell --model emojiworld --concepts all --judge none --seed 0 $SEARCH \
            --start $((k * per)) --limit "$per" --out "$R/shard-$k" > "$R/logs/shard-$k.log" 2>&1 &
        pids+=($!)
    done
    for p in "${pids[@]}"; do wait "$p" || echo "FAILED: a shard (logs/shard-*.log)"; done
    scdpo attack merge "$R"/shard-* --out "$R/search" || exit 1
fi
[ -f "$R/lora-uce/baseline.json" ] || [[ -n "${ONLY:-}" && " $ONLY " != *" uce "* ]] || scdpo baseline uce --model emojiworld --out "$R/lora-uce" \
    > "$R/logs/uce.log" 2>&1
echo "[$(date +%T)] scoring on every victim ($SEEDS seeds a prompt)"
ESD=${ESD_DIR:-runs/esd}
victims=("base|" "shipped|--lora emojiworld-safe" "negative-prompt|--negative-prompt" "safree|--guard safree"
         "sld-medium|--guard sld:medium" "sld-max|--guard sld:max" "uce|--lora $R/lora-uce")
for s in ${ESD_SEEDS:-0 1 2}; do [ -d "$ESD/lora-esd-x-s$s" ] && victims+=("esd-x-s$s|--lora $ESD/lora-esd-x-s$s"); done
for extra in ${EXTRA:-}; do victims+=("${extra%%=*}|--lora ${extra#*=}"); done   # EXTRA="name=lora-dir ..."
if [ -n "${ONLY:-}" ]; then  # ONLY="base ...": score these victims alone (a tuning draw: benchmarks/round28.sh)
    keep=(); for v in "${victims[@]}"; do [[ " $ONLY " == *" ${v%%|*} "* ]] && keep+=("$v"); done; victims=("${keep[@]}")
fi
pids=()
for v in "${victims[@]}"; do
    name=${v%%|*}; flags=${v#*|}
    out=$R/attack-$name-ring-a-bell
    [ -f "$out/metrics.json" ] && continue
    if [ "$name" = negative-prompt ]; then set -- --negative-prompt "$NEG"; else set -- $flags; fi
    # the base is the searched victim: its transfer is the identity, scored to its own folder all the same
    [ "$name" = base ] && set -- --model emojiworld
    scdpo attack score "$R/search" --seeds "$SEEDS" --judge emojiworld --name "$name" --out "$out" "$@" \
        > "$R/logs/score-$name.log" 2>&1 &
    pids+=($!)
done
for p in "${pids[@]}"; do wait "$p" || echo "FAILED: a score (logs/score-*.log)"; done
python3 benchmarks/round4_asr.py "$R" | tee "$R/asr.md"
if [ -n "${OUT:-}" ] && [ "${TINY:-0}" != 1 ]; then
    (cd "$R" && tar czf "$OUT/.rab.tmp" search logs asr.md asr.json attack-*/metrics.json) && mv "$OUT/.rab.tmp" "$OUT/rab.tar.gz"
fi
echo "[$(date +%T)] done"
