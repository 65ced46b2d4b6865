#!/usr/bin/env bash
# The twenty-second round (issue 19; docs/results.md and docs/attacks.md, "Twenty-second round"): P4D.
# Against the shipped LoRA (`uhold` seed 0) P4D succeeds on 35.1 +- 5.8% of its targets, three times
# issue 19's 10%. Its optimised token strings read, in MiniLM, about as far from the harmful prompt
# as a clean prompt does (per token 1.16 of the harmful state's norm; a clean prompt 0.94:
# benchmarks/p4d_distance.py; the radii were fixed from a first one-pair reading, 0.83), where the
# safe anchor never taught the edit. The lever: the adversarial anchor (`--anchor-adv-eps`,
# docs/method.md (j)): the anchor's harmful rows read under the worst text states within eps of their
# own, one projected gradient step each micro-batch. Two radii, fixed before any training: 0.5 and
# 1.0 of each token's norm (adv50, adv100), 3 seeds each, on the shipped recipe (uhold), whose seeds
# 0-2 are carried from the twenty-first round (.carry/s3/r21-pick) and evaluated beside them. Also
# SafetyDPO with the same extras (safetydpo-uhold, 3 seeds: issue 19's table wants its row).
# Every LoRA on the tuning draw 0 and on suite draws 16 and 17, never evaluated before.
# The tail, at once: the paraphrase attack against seeds 0-2 of the three arms (uhold's were attacked
# in the twenty-first round), and P4D (300 steps, checks on 4 seeds, the thirteenth round's budget)
# against seed 0 of each arm; everything packed into $OUT/tail.tar.gz every 30 seconds, the P4D
# shards' states included, so a search cut by the budget resumes elsewhere.
#
#   . scripts/device_env.sh && bash benchmarks/detach.sh r22 bash benchmarks/round22.sh   # on the device:
#       carry .carry/s3 only (after .carry/s1 and .carry/s2); THE SAME command again, at once, until "ended"
#   TINY=1 R=/tmp/r22 bash benchmarks/round22.sh                                          # CPU dry run
set -u
B=$(dirname "$0")
export R=${R:-$PWD/runs/r22}
ARMS=${ARMS:-"adv50 adv100 safetydpo-uhold"}
ARMS="$ARMS" RECIPE_ARM=${RECIPE_ARM:-uhold} PICK=${PICK:-r21-pick} MIX_SEEDS=${MIX_SEEDS:-0,1,2} REPORT_DRAW=${REPORT_DRAW:-"16 17"} TAIL=0 \
    bash "$B/round20.sh" || exit $?
scdpo() { python3 -m scdpo.cli "$@"; }  # the device has no console script on PATH
pack_tail() { [ -n "${OUT:-}" ] || return 0
              (cd "$R" && tar czf "$OUT/.tail.tmp" --exclude='*.parquet' --exclude='*.png' \
                  $(ls -d attacks/asr.* attacks/attack-*/metrics.json attacks/logs p4d-* 2>/dev/null)) \
                  && mv "$OUT/.tail.tmp" "$OUT/tail.tar.gz"; }
if [ -n "${OUT:-}" ]; then ( while sleep 30; do pack_tail; done ) > /dev/null 2>&1 & TAILPACK=$!; fi
trap 'kill ${TAILPACK:-} 2>/dev/null' EXIT
PARA=$(for a in ${PARA_ARMS-$ARMS}; do for s in 0 1 2; do d=$R/lora-$a-s$s; [ -d "$d" ] && echo "$a-s$s=$d"; done; done | tr '\n' ' ')
pids=()
if [ -n "$PARA" ]; then
    ( LANES=p PARA="$PARA" R=$R/attacks bash "$B/round9_attacks_cpu.sh" > "$R/logs/paraphrase.log" 2>&1
      python3 "$B/round4_asr.py" "$R/attacks" > "$R/attacks/asr.md" ) &
    pids+=($!)
fi
for a in ${P4D_ARMS:-$ARMS}; do
    [ -d "$R/lora-$a-s0" ] || continue
    ITERS=${P4D_ITERS:-300} CHECK_SEEDS=4 SHARDS=${P4D_SHARDS:-4} VICTIMS="$a-s0|--lora=$R/lora-$a-s0" R=$R/p4d-$a \
        bash "$B/round13_p4d.sh" > "$R/logs/p4d-$a.log" 2>&1 &
    pids+=($!)
done
for p in "${pids[@]}"; do wait "$p"; done
pack_tail
echo "[$(date +%T)] round22 done"
