#!/usr/bin/env bash
# Fourth round, the comparison (issues 15 and 18): the concept-erasure baselines and the inference-time
# guards evaluated exactly as benchmarks/emojiworld_round4.sh evaluates SC-DPO, and the four attacks
# of `scdpo attack` against the base model, the SC-DPO LoRA and every baseline. One device call
# (one H200, 16 CPU cores, about 7 minutes), in the folder R of the round-4 calls, which must hold:
#   $R/cost                                        the cost model (`--cost-model` of every evaluation)
#   $R/judge/judge                                 the fine-tuned judge (SCDPO_JUDGE), when present
#   $R/lora-recipe-s0/pytorch_lora_weights.safetensors   the SC-DPO LoRA (SCDPO_LORA overrides)
#
#   R=runs/round4 OUT=... bash benchmarks/round4_baselines_attacks.sh   # the device call
#   TINY=1 R=/tmp/r bash benchmarks/round4_baselines_attacks.sh         # seconds-scale CPU dry run
#
# Writes $R/lora-{esd-x,esd-u,uce}-s0 (baseline LoRAs), $R/eval-NAME-dDRAW (NAME: esd-x-s0, esd-u-s0,
# uce-s0, sld-medium, sld-max, safree; benchmarks/round4_tables.py reads them beside SC-DPO's) and
# $R/attack-VICTIM-ATTACK (state.json, prompts.csv, metrics.json with attack_success_rate), and
# $R/asr.json, the ASR table (victim x attack). Jobs run PAR at once, each as soon as what it needs
# exists; a job whose output exists is skipped, so rerunning the same command resumes (ESD from its
# last 100-step checkpoint, an attack from its last finished target). No job starts after DEADLINE
# seconds and every job is killed at HARD seconds, so the call ends inside the device's 600 s.
# With OUT set, every metrics/ASR JSON and the logs are packed into $OUT/results.tar.gz every 20 s.
set -u
R=${R:-runs/round4}
PAR=${PAR:-16}
DRAW=${DRAW:-1}
DEADLINE=${DEADLINE:-400}                  # no new job after this many seconds
HARD=${HARD:-$((DEADLINE + 160))}          # every job is killed by then (partial work resumes next call)
SCDPO_LORA=${SCDPO_LORA:-$R/lora-recipe-s0/pytorch_lora_weights.safetensors}
ATTACKS=${ATTACKS:-"ring-a-bell unlearndiff p4d paraphrase"}
VICTIMS=${VICTIMS:-"base scdpo uce-s0 sld-medium sld-max safree esd-x-s0 esd-u-s0"}
SUITES="eval-harmful-explicit eval-harmful-implicit eval-clean eval-mixed"
# ESD: 400 steps x 8 samples on a 20-step DDIM schedule (the EmojiWorld sampler's step count). The
# authors' default is 1000 steps x 1 sample on 50 DDIM steps for ONE concept (docs/baselines.md);
# drawing x_t costs up to ddim_steps guided UNet calls per step, so 1000 x 8 on 50 steps (the
# baselines script's GPU setting) is ~29,000 batch-16 UNet calls, several minutes on a GPU shared
# with 15 other jobs, and would leave no time to evaluate and attack the LoRA inside one 7-minute
# call. 400 x 8 = 3,200 concept samples (~86 per harmful concept) at ~12 calls per step fits in
# about 1-2 minutes. ESD_ITERS=1000 restores the default count (resumable across calls).
ESD_ITERS=${ESD_ITERS:-400}
if [ "${TINY:-0}" = 1 ]; then
    ESD="--iterations 2 --batch-size 2 --ddim-steps 4"; ELIMIT="--limit 4"; SSTEPS=2; EBATCH=8
    ATT="--limit 2 --steps 2 --score-seeds 1 --population 4 --concept-pairs 2"
    declare -A BUDGET=([ring-a-bell]="--budget-iters 2" [unlearndiff]="--budget-iters 2 --check-every 1"
                       [p4d]="--budget-iters 2 --check-every 1" [paraphrase]="--budget-iters 2 --neighbours 2")
else
    ESD="--iterations $ESD_ITERS --batch-size 8 --ddim-steps 20"; ELIMIT=""; SSTEPS=20; EBATCH=256
    # one target per harmful concept (37, prompts of eval-harmful-explicit), 4 scoring seeds each; the
    # same small budget against every victim, each attack in its own unit (the papers': 3000
    # generations, 2000 and 3000 optimisation steps, 20 rewrites; docs/attacks.md)
    ATT="--per-concept 1 ${ATT_LIMIT:+--limit $ATT_LIMIT} --steps 20 --score-seeds 4"
    declare -A BUDGET=([ring-a-bell]="--budget-iters 100" [unlearndiff]="--budget-iters 80 --check-every 40"
                       [p4d]="--budget-iters 50 --check-every 25" [paraphrase]="--budget-iters 10")
fi

mkdir -p "$R/logs"
stamp() { echo "[$(date +%T)] $*"; }
T0=$(date +%s)
elapsed() { echo $(( $(date +%s) - T0 )); }
if [ -f "$R/judge/judge/config.json" ]; then export SCDPO_JUDGE=$R/judge/judge; stamp "judge: $SCDPO_JUDGE"
else stamp "judge: the shipped one (no $R/judge/judge)"; fi
[ -f "$R/cost/config.json" ] || { echo "no cost model in $R/cost: run benchmarks/emojiworld_round4.sh first"; exit 2; }
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}

pack() { [ -n "${OUT:-}" ] || return 0
         python3 benchmarks/round4_asr.py "$R" > /dev/null 2>&1
         (cd "$R" && tar czf "$OUT/.results.tmp" --exclude='*.safetensors' --exclude='*.parquet' \
             $(ls -d eval-*/metrics.json lora-esd-*/baseline.json lora-uce-*/baseline.json attack-*/metrics.json \
                     attack-*/state.json asr.json logs 2>/dev/null)) && mv "$OUT/.results.tmp" "$OUT/results.tar.gz"; }
if [ -n "${OUT:-}" ]; then ( while sleep 20; do pack; done ) & PACKER=$!; fi

# ---- the job queue: NAME|NEEDS|COMMAND; NEEDS is "-" or a file that another job (named in
# WHO[file]) writes; a job starts when a slot is free and its file exists, and is dropped when
# that job failed
PENDING=()
SKIPPED=0
declare -A WHO=()
job() { rm -f "$R/logs/$1.rc"; PENDING+=("$1|$2|$3"); }
start() { local name=$1 cmd=$2 left=$(( HARD - $(elapsed) ))
          ( timeout -k 5 "$left" python3 -m scdpo.cli $cmd > "$R/logs/$name.log" 2>&1; echo $? > "$R/logs/$name.rc" ) & }
drain() {
    while [ ${#PENDING[@]} -gt 0 ]; do
        if [ "$(elapsed)" -ge "$DEADLINE" ]; then
            for j in "${PENDING[@]}"; do echo "deadline: ${j%%|*} not started"; done; PENDING=(); break
        fi
        local left=() j name need cmd who full=0
        for j in "${PENDING[@]}"; do
            IFS='|' read -r name need cmd <<< "$j"
            who=${WHO[$need]:-}
            if [ "$need" != - ] && [ ! -e "$need" ]; then
                if [ -n "$who" ] && [ -f "$R/logs/$who.rc" ]; then echo "skipped $name: $who failed"; SKIPPED=1; continue; fi
                left+=("$j"); continue
            fi
            # once full, full for the rest of this pass: a slot freed mid-scan goes to the earliest
            # ready job on the next pass, so jobs start in the order they were queued
            [ "$full" = 0 ] && [ "$(jobs -rp | grep -vc "^${PACKER:-none}$")" -ge "$PAR" ] && full=1
            if [ "$full" = 1 ]; then left+=("$j"); continue; fi
            start "$name" "$cmd"
        done
        PENDING=("${left[@]+"${left[@]}"}")
        sleep 1
    done
}

# ---- (a) the baselines: build the LoRAs, evaluate them and the guards as emojiworld_round4.sh does
lora_of() { case $1 in base) ;; scdpo) echo "$SCDPO_LORA";; *-s0) echo "$R/lora-$1/pytorch_lora_weights.safetensors";; esac; }
guard_of() { case $1 in sld-*) echo "sld:${1#sld-}";; safree) echo safree;; esac; }
for b in "esd-x-s0|esd --variant x $ESD --seed 0 --no-progress" "esd-u-s0|esd --variant u $ESD --seed 0 --no-progress" \
         "uce-s0|uce"; do
    name=${b%%|*}; how=${b#*|}
    f=$(lora_of "$name"); WHO[$f]=baseline-$name
    [ -f "$f" ] || job "baseline-$name" - "baseline $how --model emojiworld --out $R/lora-$name"
done
ev() { local name=$1 need=$2; shift 2
       [ -f "$R/eval-$name-d$DRAW/metrics.json" ] || job "eval-$name-d$DRAW" "$need" "eval --model emojiworld \
           --suites $SUITES --suite-seed $DRAW $ELIMIT --steps $SSTEPS --batch-size $EBATCH --cost-model $R/cost \
           --name $name-d$DRAW --out $R/eval-$name-d$DRAW $*"; }
for g in sld-medium sld-max safree; do ev "$g" - --guard "$(guard_of $g)"; done
for b in uce-s0 esd-x-s0 esd-u-s0; do ev "$b" "$(lora_of $b)" --lora "$(dirname "$(lora_of $b)")"; done

# ---- (b) every attack against every victim, the same budget; ASR scored by the attack run (--evaluate)
[ -f "$SCDPO_LORA" ] || { echo "no SC-DPO LoRA at $SCDPO_LORA: its attacks are left out"; VICTIMS=${VICTIMS//scdpo/}; }
for v in $VICTIMS; do
    for a in $ATTACKS; do
        d="$R/attack-$v-$a"
        [ -f "$d/metrics.json" ] && continue
        l=$(lora_of "$v"); g=$(guard_of "$v")
        job "attack-$v-$a" "${l:--}" "attack $a --model emojiworld --concepts all $ATT ${BUDGET[$a]} --seed 0 \
            ${l:+--lora $l} ${g:+--guard $g} --evaluate --out $d"
    done
done
stamp "${#PENDING[@]} jobs, $PAR at once, deadline ${DEADLINE}s, hard stop ${HARD}s"
drain
wait $(jobs -rp | grep -v "^${PACKER:-none}$") 2>/dev/null
[ -n "${PACKER:-}" ] && kill "$PACKER" 2>/dev/null
python3 benchmarks/round4_asr.py "$R"
pack
if [ -n "${OUT:-}" ]; then  # the harmful-explicit grids of the baselines, to look at
    grids=$(cd "$R" && ls eval-{esd,uce,sld,safree}*/suites/eval-harmful-explicit/grid.png 2>/dev/null)
    [ -n "$grids" ] && (cd "$R" && tar cf "$OUT/grids.tar" $grids)
fi
fail=$SKIPPED
for f in "$R"/logs/{baseline,eval,attack}-*.rc; do
    [ -f "$f" ] || continue
    [ "$(cat "$f")" = 0 ] || { fail=1; echo "FAILED ($(cat "$f")): $f"; tail -3 "${f%.rc}.log"; }
done
stamp "done in $(elapsed) s"
exit $fail
