#!/usr/bin/env bash
# The twenty-fourth round: three measurements in one device budget, one after another so that none
# times another's load (BENCHMARKS.md, "Twenty-fourth round"):
#   1. issue 16: EmojiWorld images/s of `scdpo eval` / `scdpo data build`'s work, today's settings
#      beside the levers (benchmarks/emojiworld_throughput.py) -> $OUT/tp-rows.jsonl, tp-table.md;
#   2. issue 19: ring-a-bell at the paper's budget (3,000 generations of 200; the twelfth round reached
#      412-667), searched once in SHARDS shards with a SECS cap a target, scored on the base, the shipped
#      LoRA, the training-free baselines and the carried seeds of the shipped recipe (round12_rab.sh)
#      -> $OUT/rab.tar.gz;
#   3. issue 16: a training with CUDA graphs (torch.compile mode reduce-overhead), never measured, beside
#      eager, while the budget lasts (benchmarks/concurrent_train.py) -> $OUT/ct.tar.gz;
#   4. issue 16 (not in the default STAGES; about 10 min, estimated from the sixteenth round's 164 s first
#      step): `scdpo train --compile-cache` on a fresh machine, the compiled recipe step filling a cache
#      folder and then reading it, each process with an empty inductor folder (benchmarks/compile_cache.sh)
#      -> $OUT/cc.tar.gz (its two tables and the folder's size, not the kernels).
#
#   . scripts/device_env.sh && bash benchmarks/detach.sh r24 bash benchmarks/round24.sh   # device: carry
#       .carry/s3 after .carry/s1 and .carry/s2, every call in ONE message, the detach command repeated
#   TINY=1 R=/tmp/r24 OUT=/tmp/r24/out bash benchmarks/round24.sh                        # CPU dry run
#   STAGES picks stages (default "1 2 3"), TP_FLAGS adds to stage 1's throughput flags: the twenty-sixth
#       round ran stage 1 with --rows today --eval --profile (benchmarks/round26.sh), and the next budget's
#       benchmarks/round27.sh runs stage 4. Stage 2 with RAB_FLAGS="--tokens 30" SHARDS=8 SECS=150 ran in the twenty-fifth
#       round, beside benchmarks/round25.sh (docs/attacks.md, "Twenty-fifth round, on the device")
set -u
R=${R:-/tmp/r24}
OUT=${OUT:-$R/out}
mkdir -p "$R" "$OUT"
B=$(dirname "$0")
PICK=${STAGE:-/tmp/stage}/${PICK:-r23b-pick}
if [ "${TINY:-0}" = 1 ]; then TP="--device cpu --images 8 --steps 2 --rows today b8:batch=8,vae=8 ${TP_FLAGS:-}"; CT="--device cpu --rows eager:1 --steps 3 --warmup 1 --batch-size 2"
else TP="--device cuda ${TP_FLAGS:-}"; CT="--device cuda --rows eager:1 compile-reduce-overhead:1 --budget ${CT_BUDGET:-500}"; fi

STAGES=" ${STAGES:-1 2 3} "
if [[ $STAGES == *" 1 "* ]]; then
echo "[$(date +%T)] 1. throughput"
python3 "$B/emojiworld_throughput.py" $TP --out "$R/tp" && cp "$R/tp/rows.jsonl" "$OUT/tp-rows.jsonl" \
    && cp "$R/tp/table.md" "$OUT/tp-table.md"
for f in eval.jsonl eval/profile.txt; do [ -f "$R/tp/$f" ] && cp "$R/tp/$f" "$OUT/tp-${f//\//-}"; done
fi

if [[ $STAGES == *" 2 "* ]]; then
echo "[$(date +%T)] 2. ring-a-bell at the paper's budget"
extra=""
for s in 0 1 2; do [ -d "$PICK/lora-loop50-s$s" ] && extra="$extra loop50-s$s=$PICK/lora-loop50-s$s"; done
[ -d "$PICK/lora-uhold-s0" ] && extra="$extra uhold-s0=$PICK/lora-uhold-s0"
[ "${TINY:-0}" = 1 ] && SHARDS=${SHARDS:-2}
R=$R/rab SHARDS=${SHARDS:-13} SECS=${SECS:-170} GENS=3000 EXTRA="$extra" OUT=$OUT bash "$B/round12_rab.sh"
fi

if [[ $STAGES == *" 3 "* ]]; then
echo "[$(date +%T)] 3. a training with CUDA graphs"
# its table, rebuilt after each row, is copied as it grows: the budget's end may cut this stage
( while sleep 20; do [ -f "$R/ct/table.md" ] && cp "$R/ct/table.md" "$OUT/.ct-table.tmp" && mv "$OUT/.ct-table.tmp" "$OUT/ct-table.md"; done ) &
copier=$!
python3 "$B/concurrent_train.py" $CT --out "$R/ct"
kill "$copier"
tar czf "$OUT/.ct.tmp" -C "$R" ct && mv "$OUT/.ct.tmp" "$OUT/ct.tar.gz"
fi
if [[ $STAGES == *" 4 "* ]]; then
echo "[$(date +%T)] 4. the compile cache on a fresh machine"
# not named CC: the device exports CC (the C compiler), so assigning it there handed triton's build
# "DEVICE=cuda BATCH=32 ..." as its compiler (the twenty-ninth round's stage failed so)
if [ "${TINY:-0}" = 1 ]; then cc_env="DEVICE=cpu BATCH=2 STEPS=2 WARMUP=1"; else cc_env="DEVICE=cuda BATCH=32 STEPS=${CC_STEPS:-30} WARMUP=10"; fi
env $cc_env OUT="$R/cc" bash "$B/compile_cache.sh" > "$R/cc.log" 2>&1
grep -v "it/s\]" "$R/cc.log" | tail -40 > "$R/cc-summary.txt"
# whatever exists: the twenty-seventh round's stage failed in 38 s and packed nothing, its log included
(cd "$R" && shopt -s nullglob && tar czf "$OUT/.cc.tmp" cc.log cc-summary.txt cc/*.txt) && mv "$OUT/.cc.tmp" "$OUT/cc.tar.gz"
fi
echo "[$(date +%T)] done"
