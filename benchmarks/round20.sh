#!/usr/bin/env bash
# The twentieth round (issue 15; docs/results.md, "Twentieth round"): the implicit gap. The nineteenth
# round found that the shipped recipe's residual implicit harm sits on held-out words that read, in the
# model's own text encoder, more like a safe word than like any harmful training word, so the edit
# never reaches them and the preservation terms keep them as they were. The lever tested here is the
# anchor's mixed conditionings (`--anchor-mix a_max`, docs/method.md (i)): on each anchor state the
# policy reads (1 - a) c_harm + a c_safe, a ~ U(0, a_max), against the same safe target, so the edit
# covers the texts between the harmful prompts and the safe words. Two strengths, fixed before any
# training from the text encoder alone (docs/results.md: at 0.15 the share of held-out words nearer a
# mixed text than any safe word goes from 65% to 88% while 15% of safe words are reached; 0.3: 96% and
# 39%): mix15 and mix30, 6 seeds each, on the shipped recipe (configs/emojiworld-gpu.yaml). The
# recipe's seeds 0-2 are carried (.carry/s3/r18-pick, seed 0 the shipped weights) and evaluated beside
# them. Every LoRA on the tuning draw 0 and on suite draws 12 and 13, never evaluated before.
# The tail: the paraphrase attack against seeds 0-2 of every arm (9 at once), then P4D (300 steps,
# checks on 4 seeds) against seed 0 of each mix arm, each packed into $OUT/tail.tar.gz as it ends.
#
#   . scripts/device_env.sh && bash benchmarks/detach.sh r20 bash benchmarks/round20.sh   # on the device:
#       carry .carry/s3 only (after .carry/s1 and .carry/s2); THE SAME command again, at once, until "ended"
#   TINY=1 R=/tmp/r20 bash benchmarks/round20.sh                                          # CPU dry run
set -u
B=$(dirname "$0")
export R=${R:-$PWD/runs/r20}
# A: the recipe whose seeds 0-2 are carried (PICK: the folder in .carry/s3 that holds them) and evaluated beside the arms
A=${RECIPE_ARM:-t700-hold20f4-r32a8}
PICK=${PICK:-r18-pick}
if [ "${TINY:-0}" != 1 ] && [ -d "${SEED_FROM-$PWD/.carry/s3/$PICK}" ]; then export SEED_FROM=${SEED_FROM-$PWD/.carry/s3/$PICK}; fi
MIX_SEEDS=${MIX_SEEDS:-0,1,2,3,4,5}
# ARMS: two runs of emojiworld_round4.sh's final stage, trained with MIX_SEEDS beside the recipe's
# carried seeds (benchmarks/round21.sh sets its own; tests/test_bench_scripts.py checks the names)
ARMS=${ARMS:-"mix15 mix30"}
ONLY="$A:0,1,2$(for a in $ARMS; do printf ' %s:%s' "$a" "$MIX_SEEDS"; done)"
# grids: the base and seed 0 of each arm, on the report draws only (16 MiB a file)
STAGE=final DRAW=${REPORT_DRAW:-"12 13"} ONLY="$ONLY" DRAW0_RUNS="$A $ARMS" \
    SHIP="$ARMS" SHIP_HALF=1 SHIP_CHUNK=4 GRID_SKIP='-s[1-9]-d|-d0/' LIMIT=${LIMIT:-150} PAR=${PAR:-18} \
    DEADLINE=${DEADLINE:-100000} bash "$B/emojiworld_round4.sh" || exit $?
[ "${TAIL:-1}" = 1 ] || exit 0
# ---- the tail (round16.sh's): packt adds GLOBS (inside $R) to one file, $OUT/tail.tar.gz
TAILGLOBS=""
# (no $OUT, as in a CPU dry run: nothing to pack, and not a failure of the round)
packt() { TAILGLOBS="$TAILGLOBS $1"; [ -n "${OUT:-}" ] || return 0
          (cd "$R" && tar czf "$OUT/.tail.tmp" $(ls -d $TAILGLOBS 2>/dev/null)) && mv "$OUT/.tail.tmp" "$OUT/tail.tar.gz"; }
PARA=$(for a in $A $ARMS; do for s in 0 1 2; do d=$R/lora-$a-s$s; [ -d "$d" ] && echo "$a-s$s=$d"; done; done | tr '\n' ' ')
LANES=p PARA="$PARA" R=$R/attacks bash "$B/round9_attacks_cpu.sh" > /dev/null
python3 "$B/round4_asr.py" "$R/attacks" > "$R/attacks/asr.md"; packt "attacks/asr.* attacks/attack-*/metrics.json attacks/logs"
for a in ${P4D_ARMS:-$ARMS}; do
    [ -d "$R/lora-$a-s0" ] || continue
    ITERS=300 CHECK_SEEDS=4 SHARDS=${P4D_SHARDS:-5} VICTIMS="$a-s0|--lora=$R/lora-$a-s0" R=$R/p4d-$a \
        bash "$B/round13_p4d.sh" > "$R/logs/p4d-$a.log" 2>&1 &
done
wait
packt "p4d-*/asr.* p4d-*/attack-*/metrics.json p4d-*/logs"
