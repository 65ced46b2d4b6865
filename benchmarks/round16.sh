#!/usr/bin/env bash
# The next device round after the fifteenth (issue 15; docs/results.md, "Fifteenth round", "Next").
# The fifteenth round found the hold at rank 32 with alpha 8 (`t700-hold20-r32a8`) the pick of draw 0,
# +3.0 +- 0.8 points of clean alignment over rank 8 at the same harm there, +1.7 +- 2.1 (inside its
# SE) on the test draw 5. Rank 32 at alpha 8 changes two things at once: the rank, and peft's scale
# alpha / r (1 -> 1/4: a smaller step for the same learning rate). So, 3 seeds each, one budget:
#   t700-hold20-r32a8   the pick again, as the reference of this round's draws
#   t700-hold20-r8a2    rank 8 at the same scale 1/4: the step-size control (is it the rank?)
#   t700-hold20-r64a8   rank 64 at alpha 8 (scale 1/8): more rank, the same alpha
#   t700-hold40-r32a8   the pick with twice the hold: does the lift let the hold buy alignment
#                       at less harm than the rank-8 line charged?
# Pick on draw 0 (`python benchmarks/round4_pick.py runs/r16 --draw 0 --rule shortfall --seeds all`,
# with the recipe's and the fifteenth round's draw-0 evaluations beside them), report on suite draw 6,
# never evaluated before (draws 1-5 were earlier rounds' reports); the shipped LoRA's row on draw 6
# on the CPU: `R=runs/r16 DRAW=6 bash benchmarks/cpu_evals.sh shipped`.
#
#   . scripts/device_env.sh && bash benchmarks/detach.sh r16 bash benchmarks/round16.sh   # on the device:
#       carry .carry/s3 only (after .carry/s1 and .carry/s2); the same command again, at once, until
#       it says "ended" (the fifteenth round's 12 trainings took 15 min 23 s, BENCHMARKS.md)
#   TINY=1 R=/tmp/r16 bash benchmarks/round16.sh                                          # CPU dry run
set -u
# The pick's three r15 LoRAs travel instead of being trained again (SEED_FROM, benchmarks/jobs.sh):
# the same recipe and seeds; it frees a quarter of the GPU's concurrent trainings. Local folder
# runs/r15-pick, carried as .carry/s3/r15-pick (benchmarks/round16.sh's caller copies it there).
if [ "${TINY:-0}" != 1 ] && [ -d "${SEED_FROM-$PWD/.carry/s3/r15-pick}" ]; then export SEED_FROM=${SEED_FROM-$PWD/.carry/s3/r15-pick}; fi
export R=${R:-$PWD/runs/r16}
CANDIDATES=${CANDIDATES:-"t700-hold20-r32a8 t700-hold20-r8a2 t700-hold20-r64a8 t700-hold40-r32a8"} \
    REPORT_DRAW=${REPORT_DRAW:-6} SHIP=${SHIP:-none} DEADLINE=${DEADLINE:-100000} bash "$(dirname "$0")/round10.sh" || exit $?
[ "${TAIL:-$([ "${TINY:-0}" = 1 ] && echo 0 || echo 1)}" = 1 ] || exit 0
# ---- the tail, on the same machine once the round's evaluations are in (issues 19 and 16), each
# step packed into $OUT as it ends, so that a budget that runs out keeps what finished:
# 1. anchor_cost.py's compiled step (docs/performance.md), alone on the GPU so that its times are its
#    own; first since the seventeenth round (the sixteenth's budget ended in it, and the attacks can
#    run on the CPU once the weights are back)
# 2. the paraphrase attack (round9_attacks_cpu.sh's settings) against every LoRA of the round, all at once
# 3. P4D (round13_p4d.sh, 300 steps, 4 check seeds) against seed 0 of each new arm, the three at once
B=$(dirname "$0")
# packt "GLOBS": the files of GLOBS (quoted: matched inside $R) added to what the tail packed so far,
# all in one file, $OUT/tail.tar.gz: the device brings back at most 8 files a call, and the round's
# own (results, grids, clean images, one LoRA tar per arm) take up to 7 of them
TAILGLOBS=""
packt() { TAILGLOBS="$TAILGLOBS $1"; [ -n "${OUT:-}" ] && (cd "$R" && tar czf "$OUT/.tail.tmp" $(ls -d $TAILGLOBS 2>/dev/null)) \
              && mv "$OUT/.tail.tmp" "$OUT/tail.tar.gz"; }
[ -n "${OUT:-}" ] && [ "${TINY:-0}" != 1 ] && PYTHONUNBUFFERED=1 python3 "$B/anchor_cost.py" --device cuda --batch-size 32 --steps ${COMPILE_STEPS:-40} --warmup 10 --compile \
    --only "every step" --skip "CUDA graphs" > "$R/anchor_cost.txt" 2>&1
packt anchor_cost.txt
PARA=$(for d in "$R"/lora-*-s[0-9]; do echo "${d#"$R"/lora-}=$d"; done | tr '\n' ' ')
LANES=p PARA="$PARA" R=$R/attacks bash "$B/round9_attacks_cpu.sh"
python3 "$B/round4_asr.py" "$R/attacks" > "$R/attacks/asr.md"; packt "attacks/asr.* attacks/attack-*/metrics.json attacks/logs"
for a in ${P4D_ARMS:-t700-hold20-r8a2 t700-hold20-r64a8 t700-hold40-r32a8}; do
    [ -d "$R/lora-$a-s0" ] || continue
    ITERS=300 CHECK_SEEDS=4 SHARDS=${P4D_SHARDS:-5} VICTIMS="$a-s0|--lora=$R/lora-$a-s0" R=$R/p4d-$a \
        bash "$B/round13_p4d.sh" > "$R/logs/p4d-$a.log" 2>&1 &
done
wait
packt "p4d-*/asr.* p4d-*/attack-*/metrics.json p4d-*/logs"
