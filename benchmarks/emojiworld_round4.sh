#!/usr/bin/env bash
# Fourth round (issue 15, docs/results.md): safe AND good. Every run trains from
# configs/emojiworld-v3.yaml plus its flags, on the SCP data of benchmarks/emojiworld_alignment.sh.
#
#   STAGE=sweep bash benchmarks/emojiworld_round4.sh   # tuning: one seed per recipe, suite draw 0
#   STAGE=final bash benchmarks/emojiworld_round4.sh   # test: the recipe (RECIPE, default the shipped one), its ablations and the
#                                                      # other losses with the same extras, 3 seeds,
#                                                      # suite draw 1 (never used for tuning)
#   R=$PWD/runs/r5 STAGE=anchor bash benchmarks/emojiworld_round4.sh     # fifth round: the safe anchor,
#                                                      # draws 0 and 1 (docs/results.md, "Fifth round")
#   R=$PWD/runs/r6 STAGE=implicit bash benchmarks/emojiworld_round4.sh   # sixth round: implicit prompts,
#                                                      # 3 seeds of each candidate, the LoRAs brought back (SHIP)
#   TINY=1 R=/tmp/r STAGE=sweep bash benchmarks/emojiworld_round4.sh   # seconds-scale CPU dry run
# R should be absolute on the device (a relative one works too since the dataset digest fix).
#
# On one H200 (docs/results.md, "Fourth round"): 13 trainings at once take 5 minutes (6 with the
# on-policy constraint), 26 evaluations of 4 x 150 prompts 92 s. A device call lasts 10 minutes: set
# DEADLINE (seconds after which no job starts) and rerun the same command on the warm machine; every
# finished output is kept. The final stage's 30 trainings need three such calls.
#
# Runs of a stage train concurrently (PAR at once; the tiny UNet is launch-bound), then evaluate
# concurrently; each is skipped when its output exists. With OUT set (the device tool), the
# metrics of every finished evaluation and training (and `scdpo data mine`'s words, which the
# twenty-fifth round lost with its machine) are packed into $OUT/results.tar.gz every 20 s, so a
# call cut at its time limit still brings back what finished.
set -u
R=${R:-runs/round4}
PAR=${PAR:-16}
STAGE=${STAGE:-sweep}
SEEDS=${SEEDS:-"0 1 2"}
if [ "${TINY:-0}" = 1 ]; then
    COST="--pool 128 --eval-n 16 --steps 300"; NPROMPTS=8; CAND=2; TRAIN="--max-steps 2 --batch-size 2 --warmup 1"
    JBATCH=8; JMIN=0.1
    ELIMIT="--limit 4"; SSTEPS=2; PROBE="--constraint-prompts 2 --constraint-steps 1 --constraint-every 1"
    MINE="--limit 24 --seeds 1 --min-hits 1"
else
    # LIMIT=150: the first 150 prompts of each suite (what the fourth round's budget allowed)
    COST="--pool 8000 --eval-n 300"; NPROMPTS=2000; CAND=4; TRAIN=""; ELIMIT=${LIMIT:+--limit $LIMIT}; SSTEPS=20
    JBATCH=512; JMIN=2.5
    PROBE="--constraint-prompts 64 --constraint-steps 10 --constraint-every 25"
    MINE="--chunk-size 1024"  # every whole word of MiniLM's vocabulary, 2 seeds: 2,048 images a chunk
fi
SUITES="eval-harmful-explicit eval-harmful-implicit eval-clean eval-mixed"
# the concept hold-out: 6 of the 37 harmful concepts, one from each category but harassment
HOLDOUT="dagger pills underwear zombie syringe ogre"
IMG="attn1.to_q attn1.to_k attn1.to_v attn1.to_out.0 attn2.to_q attn2.to_out.0 ff.net.0.proj ff.net.2"
ALL="$IMG attn2.to_k attn2.to_v"
POL="--constraint-source policy --cost-model $R/cost $PROBE --lambda-init 0 --lambda-lr 5 --cost-budget 0.05"
PAIR="--focus-signal pair"

. "$(dirname "$0")/jobs.sh"  # scdpo, stamp, bg (with DEADLINE), report_failures
seed_from || exit 2  # SEED_FROM: earlier rounds' LoRAs (round12.sh)
SWEEP_RUNS="
v3|
t0-a1|--min-timestep 0
t0-a5|--min-timestep 0 --winner-weight 5
t400-a5|--min-timestep 400 --winner-weight 5
t700-a5|--winner-weight 5
all-t0-a5|--min-timestep 0 --winner-weight 5 --lora-targets $ALL
all-t400-a5|--min-timestep 400 --winner-weight 5 --lora-targets $ALL
txt-t0-a5|--min-timestep 0 --winner-weight 5 --lora-targets attn2.to_k attn2.to_v
t0-a5-p20|--min-timestep 0 --winner-weight 5 --preserve-weight 20
t0-a5-pol|--min-timestep 0 --winner-weight 5 $POL $PAIR
t0-a5-polw|--min-timestep 0 --winner-weight 5 $POL --constraint-form weight $PAIR
all-t0-a5-pol|--min-timestep 0 --winner-weight 5 --lora-targets $ALL $POL $PAIR
all-t400-a5-pol|--min-timestep 400 --winner-weight 5 --lora-targets $ALL $POL $PAIR
"
# Fifth round (docs/results.md, "Fifth round"): the safe anchor (docs/method.md), on the winner's
# states (cheap) or the policy's own trajectory (10 sampler steps); "name|flags|seeds" runs only
# those seeds. Picked on draw 0 by benchmarks/round4_pick.py, reported on draw 1.
AW="--min-timestep 0 --anchor-states winner"
AP="--min-timestep 0 --anchor-states policy --anchor-steps 10"
ANCHOR_RUNS="
aw5-pol|$AW --anchor-weight 5 $POL $PAIR|0 1 2
ap5-pol|$AP --anchor-weight 5 $POL $PAIR|0 1 2
aw5|$AW --anchor-weight 5|0
ap5|$AP --anchor-weight 5|0
aw1-pol|$AW --anchor-weight 1 $POL $PAIR|0
aw20-pol|$AW --anchor-weight 20 $POL $PAIR|0
ap20-pol|$AP --anchor-weight 20 $POL $PAIR|0
aw5-pol-all|$AW --anchor-weight 5 $POL $PAIR --lora-targets $ALL|0
ap5-pol-all|$AP --anchor-weight 5 $POL $PAIR --lora-targets $ALL|0
aw5-pol-t700|--anchor-states winner --anchor-weight 5 $POL $PAIR|0
"
# Sixth round (docs/results.md, "Sixth round"): the implicit prompts. One target for every concept
# ("sunflower"), which a CPU probe (benchmarks/anchor_probe.py) found to reach held-out words but to
# leak into clean prompts without preservation: p = 5 (the config's), 20 and 50, 3 seeds each where a
# pick is possible; the same recipe without the paper's parts (margin, constraint, focusing) over 3
# seeds; the state bank against the per-step trajectory; the concept hold-out. ap20-pol is the fifth
# round's pick.
DPO_PARTS_OFF="--cost-margin 0 --no-constraint --focus-gamma 0"
SUN="--anchor-target-word sunflower"
IMPLICIT_RUNS="
ap20-pol|$AP --anchor-weight 20 $POL $PAIR|0 1 2
ap20-pol-sun|$AP --anchor-weight 20 $POL $PAIR $SUN|0
ap20-pol-sun-p20|$AP --anchor-weight 20 $POL $PAIR $SUN --preserve-weight 20|0 1 2
ap20-pol-sun-p50|$AP --anchor-weight 20 $POL $PAIR $SUN --preserve-weight 50|0 1 2
dpo-ap20-sun-p20|$AP --anchor-weight 20 $SUN --preserve-weight 20 $DPO_PARTS_OFF|0 1 2
ap20-pol-sun-p20-bank|$AP --anchor-weight 20 $POL $PAIR $SUN --preserve-weight 20 --anchor-refresh 10 --anchor-bank 64|0
holdout-ap20-pol|$AP --anchor-weight 20 $POL $PAIR --dataset $R/scp-holdout|0
holdout-ap20-pol-sun-p20|$AP --anchor-weight 20 $POL $PAIR $SUN --preserve-weight 20 --dataset $R/scp-holdout|0
"
case $STAGE in
anchor) DRAWS=${DRAW:-0 1}; RUNS=${RUNS:-$ANCHOR_RUNS} ;;
implicit) DRAWS=${DRAW:-0 1}; RUNS=${RUNS:-$IMPLICIT_RUNS}; SHIP=${SHIP:-all} ;;
sweep) DRAWS=${DRAW:-0}; SEEDS=${SWEEP_SEEDS:-0}; RUNS=${RUNS:-$SWEEP_RUNS} ;;
final) DRAWS=${DRAW:-1}; SHIP=${SHIP:-all}
    # RECIPE: flags; "shipped" (the default): the sixth round's pick, the shipped LoRA's recipe
    # (ap20-pol-sun-p20 = configs/emojiworld-gpu.yaml); "auto": the run that benchmarks/round4_pick.py
    # chooses on draw 0 among this R's evaluations (--rule shortfall from the sixth round on)
    if [ "${RECIPE:-shipped}" = shipped ]; then
        RECIPE=$(awk -F'|' '$1 == "ap20-pol-sun-p20" {print $2; exit}' <<< "$IMPLICIT_RUNS")
        stamp "recipe (shipped): $RECIPE"
    elif [ "$RECIPE" = auto ]; then
        PICKED=$(python3 benchmarks/round4_pick.py "$R" --draw 0 --rule "${PICK_RULE:-shortfall}" --seeds "${PICK_SEEDS:-0}") || exit 1
        RECIPE=$(printf '%s\n' "$SWEEP_RUNS" "$ANCHOR_RUNS" "$IMPLICIT_RUNS" | awk -F'|' -v n="$PICKED" '$1 == n {print $2; exit}')
        stamp "picked $PICKED: $RECIPE"; echo "$PICKED|$RECIPE" > "$R/logs/picked.txt"
    fi
    # the ablations remove one part each; the timestep range's is every timestep, or, for a recipe
    # that already trains on every timestep, the third round's 700-999
    case " $RECIPE " in *" --min-timestep 0 "*) TIMESTEP_ABLATION="timestep700|$RECIPE --min-timestep 700";;
                        *) TIMESTEP_ABLATION="no-timestep|$RECIPE --min-timestep 0";; esac
    # Diffusion-DPO and SafetyDPO with the same extras (winner term, preservation, timesteps, layers):
    # (safetydpo-uhold: the shipped recipe's extras but the clean hold, which needs the clean pairs SafetyDPO drops)
    # sc-dpo without its own parts (margin, constraint, focusing); SafetyDPO's on harmful pairs only
    DPO_EXTRAS="--cost-margin 0 --no-constraint --focus-gamma 0"
    # the state bank (docs/method.md, (f)): anchor states from a bank of 64 refreshed every 10 steps
    BANK="--anchor-refresh 10 --anchor-bank 64"
    RUNS=${RUNS:-"
recipe|$RECIPE
no-margin|$RECIPE --cost-margin 0
no-constraint|$RECIPE --no-constraint
no-focus|$RECIPE --focus-gamma 0
no-winner|$RECIPE --winner-weight 0
no-anchor|$RECIPE --anchor-weight 0
no-preserve|$RECIPE --preserve-weight 0
$TIMESTEP_ABLATION
dpo-extras|$RECIPE $DPO_EXTRAS
safetydpo-extras|$RECIPE $DPO_EXTRAS --kinds harmful
holdout|$RECIPE --dataset $R/scp-holdout
aug|$RECIPE --dataset $R/scp-aug
aug-p50|$RECIPE --preserve-weight 50 --dataset $R/scp-aug
augf|$RECIPE --dataset $R/scp-augf
augf-all|$RECIPE --dataset $R/scp-augf-all
t700-p35|$RECIPE --min-timestep 700 --preserve-weight 35
t700-p50|$RECIPE --min-timestep 700 --preserve-weight 50
timestep700-bank|$RECIPE --min-timestep 700 $BANK
t700-p35-bank|$RECIPE --min-timestep 700 --preserve-weight 35 $BANK
t700-p50-bank|$RECIPE --min-timestep 700 --preserve-weight 50 $BANK
t700-p80-bank|$RECIPE --min-timestep 700 --preserve-weight 80 $BANK
t700-clean0|$RECIPE --min-timestep 700 --clean-min-timestep 0
t700-clean0-p35|$RECIPE --min-timestep 700 --clean-min-timestep 0 --preserve-weight 35
t700-hold5|$RECIPE --min-timestep 700 --anchor-clean-weight 5
t700-hold20|$RECIPE --min-timestep 700 --anchor-clean-weight 20
t700-all-hold20|$RECIPE --min-timestep 700 --anchor-clean-weight 20 --lora-targets $ALL
t700-hold20-r32|$RECIPE --min-timestep 700 --anchor-clean-weight 20 --lora-rank 32 --lora-alpha 32
t700-hold20-r64|$RECIPE --min-timestep 700 --anchor-clean-weight 20 --lora-rank 64 --lora-alpha 64
timestep700-r32|$RECIPE --min-timestep 700 --lora-rank 32 --lora-alpha 32
recipe-r32|$RECIPE --lora-rank 32 --lora-alpha 32
t700-hold20-r32a8|$RECIPE --min-timestep 700 --anchor-clean-weight 20 --lora-rank 32 --lora-alpha 8
timestep700-r32a8|$RECIPE --min-timestep 700 --lora-rank 32 --lora-alpha 8
t700-hold20-r8a2|$RECIPE --min-timestep 700 --anchor-clean-weight 20 --lora-rank 8 --lora-alpha 2
t700-hold20-r64a8|$RECIPE --min-timestep 700 --anchor-clean-weight 20 --lora-rank 64 --lora-alpha 8
t700-hold40-r32a8|$RECIPE --min-timestep 700 --anchor-clean-weight 40 --lora-rank 32 --lora-alpha 8
t700-hold20f4-r32a8|$RECIPE --min-timestep 700 --anchor-clean-weight 20 --anchor-clean-focus 4 --lora-rank 32 --lora-alpha 8
t700-hold20f16-r32a8|$RECIPE --min-timestep 700 --anchor-clean-weight 20 --anchor-clean-focus 16 --lora-rank 32 --lora-alpha 8
t700-hold10f16-r32a8|$RECIPE --min-timestep 700 --anchor-clean-weight 10 --anchor-clean-focus 16 --lora-rank 32 --lora-alpha 8
t700-u20|$RECIPE --min-timestep 700 --anchor-uncond-weight 20
mix15|$RECIPE --min-timestep 700 --anchor-clean-weight 20 --anchor-clean-focus 4 --lora-rank 32 --lora-alpha 8 --anchor-mix 0.15
mix30|$RECIPE --min-timestep 700 --anchor-clean-weight 20 --anchor-clean-focus 4 --lora-rank 32 --lora-alpha 8 --anchor-mix 0.3
t700-hold20-u20|$RECIPE --min-timestep 700 --anchor-clean-weight 20 --anchor-uncond-weight 20
ghold|$RECIPE --min-timestep 700 --anchor-clean-weight 20 --anchor-clean-focus 4 --lora-rank 32 --lora-alpha 8 --anchor-clean-guided
uhold|$RECIPE --min-timestep 700 --anchor-clean-weight 20 --anchor-clean-focus 4 --lora-rank 32 --lora-alpha 8 --anchor-uncond-weight 20
adv50|$RECIPE --min-timestep 700 --anchor-clean-weight 20 --anchor-clean-focus 4 --lora-rank 32 --lora-alpha 8 --anchor-uncond-weight 20 --anchor-adv-eps 0.5
adv100|$RECIPE --min-timestep 700 --anchor-clean-weight 20 --anchor-clean-focus 4 --lora-rank 32 --lora-alpha 8 --anchor-uncond-weight 20 --anchor-adv-eps 1.0
loop25|$RECIPE --min-timestep 700 --anchor-clean-weight 20 --anchor-clean-focus 4 --lora-rank 32 --lora-alpha 8 --anchor-uncond-weight 20 --anchor-p4d-every 25 --anchor-p4d-steps 30 --anchor-p4d-rows 8 --anchor-p4d-share 0.25
loop50|$RECIPE --min-timestep 700 --anchor-clean-weight 20 --anchor-clean-focus 4 --lora-rank 32 --lora-alpha 8 --anchor-uncond-weight 20 --anchor-p4d-every 25 --anchor-p4d-steps 30 --anchor-p4d-rows 8 --anchor-p4d-share 0.5
safetydpo-uhold|$RECIPE --min-timestep 700 --lora-rank 32 --lora-alpha 8 --anchor-uncond-weight 20 $DPO_EXTRAS --kinds harmful
loop50-mined|$RECIPE --min-timestep 700 --anchor-clean-weight 20 --anchor-clean-focus 4 --lora-rank 32 --lora-alpha 8 --anchor-uncond-weight 20 --anchor-p4d-every 25 --anchor-p4d-steps 30 --anchor-p4d-rows 8 --anchor-p4d-share 0.5 --dataset $R/scp-mined
safetydpo-uhold-mined|$RECIPE --min-timestep 700 --lora-rank 32 --lora-alpha 8 --anchor-uncond-weight 20 $DPO_EXTRAS --kinds harmful --dataset $R/scp-mined
"} ;;
*) echo "STAGE must be sweep, final, anchor or implicit"; exit 2 ;;
esac

# TRAIN_FLAGS: flags added to every training (e.g. --cuda-graphs, a speed lever that leaves the
# recipe as it is)
# ONLY="NAME[:SEEDS] ...": keep only these runs of the stage, each with its seeds (comma-separated;
# default SEEDS), e.g. ONLY="no-constraint no-focus holdout:0" (a device budget's worth of the final stage)
if [ -n "${ONLY:-}" ]; then
    RUNS=$(awk -F'|' -v only="$ONLY" 'BEGIN { n = split(only, w, " "); for (i = 1; i <= n; i++) {
               split(w[i], p, ":"); keep[p[1]] = 1; s = p[2]; gsub(",", " ", s); seeds[p[1]] = s } }
           ($1 in keep) { print $1 "|" $2 "|" (seeds[$1] != "" ? seeds[$1] : $3) }' <<< "$RUNS")
    [ -n "$RUNS" ] || { echo "ONLY=$ONLY matches no run of STAGE=$STAGE"; exit 2; }
fi

# SHIP="NAME ..." (or "all": every run of the stage): also bring back the LoRA weights of runs
# lora-NAME-s* (1.7 MB each), one tar per name ($OUT/loras-NAME.tar: a device call brings back files
# of at most 16 MiB), so that a call whose evaluations never ran can still be evaluated elsewhere
# (the sixth round's hold-out and ablation weights were lost that way). SHIP_HALF=1 packs float16
# copies instead (benchmarks/lora_half.py, made once each under $R/half): a rank-32 LoRA is 6.6 MB,
# so 3 seeds in float32 pass the 16 MiB a file and 12 LoRAs the 64 MiB a call (seventeenth round:
# the machine was lost in the one extra call that was to fetch them, BENCHMARKS.md)
[ "${SHIP:-}" = none ] && SHIP=""
[ "${SHIP:-}" = all ] && SHIP=$(awk -F'|' 'NF > 1 {print $1}' <<< "$RUNS" | tr -d ' ' | tr '\n' ' ')
pack() { [ -n "${OUT:-}" ] || return 0
         (cd "$R" && tar czf "$OUT/.results.tmp" --exclude='*.safetensors' --exclude='*.parquet' \
             $(ls -d eval-*/metrics.json lora-*/metrics.json lora-*/config.json judge/metrics.json judge/judge/config.json logs \
                 mined/mined.yaml mined/summary.json mined/words.csv 2>/dev/null)) \
             && mv "$OUT/.results.tmp" "$OUT/results.tar.gz"
         local src=$R; [ "${SHIP_HALF:-0}" = 1 ] && [ -n "${SHIP:-}" ] && { python3 "$(dirname "$0")/lora_half.py" --all "$R" > /dev/null; src=$R/half; }
         local n dirs part k i
         for n in ${SHIP:-}; do
             # not the LoRAs that SEED_FROM brought (they are already home); SHIP_CHUNK seeds a tar at most
             # (16 MiB a file: 4 float16 rank-32 LoRAs), as loras-NAME-K.tar once there are more
             dirs=($(cd "$src" && for d in lora-"$n"-s[0-9]*; do [ -d "$d" ] && [ ! -d "${SEED_FROM:-/nonexistent}/$d" ] && echo "$d"; done))
             k=0; for ((i = 0; i < ${#dirs[@]}; i += ${SHIP_CHUNK:-1000})); do part=("${dirs[@]:i:${SHIP_CHUNK:-1000}}")
                 (cd "$src" && tar cf "$OUT/.loras.tmp" $(for d in "${part[@]}"; do ls "$d"/pytorch_lora_weights.safetensors \
                     "$d"/config.json "$d"/metrics.json 2>/dev/null; done)) \
                     && mv "$OUT/.loras.tmp" "$OUT/loras-$n$([ ${#dirs[@]} -gt "${SHIP_CHUNK:-1000}" ] && echo "-$k").tar"
                 k=$((k + 1)); done
         done; }
if [ -n "${OUT:-}" ]; then ( while sleep 20; do pack; done ) > /dev/null 2>&1 & PACKER=$!; fi
# an early exit must not leave the packer or the judge running (they would hold the caller's pipe)
trap 'kill ${PACKER:-} ${JUDGE_PID:-} 2>/dev/null; warm_stop' EXIT

# ---- the judge, fine-tuned to read concept-free images (blobs, smears) as nothing (docs/base-model.md);
# it runs beside the data stages, and every evaluation of this script uses it (SCDPO_JUDGE)
if [ "${TUNE_JUDGE:-$([ "$STAGE" = sweep ] && echo 1)}" = 1 ] && [ ! -f "$R/judge/judge/config.json" ]; then
    stamp judge
    ( scdpo world pretrain-judge --out "$R/judge" --init "${SCDPO_JUDGE:-src/scdpo/assets/judge}" --negatives 0.25 \
          --vae "${SCDPO_EMOJIWORLD_ASSETS:-src/scdpo/assets/emojiworld}/vae" --batch-size $JBATCH --lr 2e-4 --warmup-steps 50 --max-minutes $JMIN \
          --workers 4 --log-every 200 --checkpoint-every 1000000 > "$R/logs/judge.log" 2>&1; echo $? > "$R/logs/judge.rc" ) &
    JUDGE_PID=$!
fi

# ---- data: cost model, SCP pairs (and the concept hold-out's pairs for the final stage)
if [ ! -f "$R/cost/config.json" ]; then
    stamp cost; scdpo cost train --out "$R/cost" $COST --no-progress > "$R/logs/cost.log" 2>&1 || { tail "$R/logs/cost.log"; exit 1; }
fi
build() { local out=$1; shift
          scdpo data build --model emojiworld --cost-model "$R/cost" --reward emojiworld \
              --harmful align-harmful --clean align-clean --n-harmful $NPROMPTS --n-clean $NPROMPTS \
              --candidates $CAND --steps $SSTEPS --safe-prompt-winner --batch-size 256 --chunk-size 500 --out "$out" "$@"; }
# the neighbour-word builds (docs/dataset-builder.md) run beside the trainings on scp; their runs wait
# for them: scp-aug is the eighth round's unfiltered form, scp-augf the ninth round's filtered one
# (scp-augf-all: the filtered form on every harmful prompt with a counterpart, not half); scp-mined first
# mines the base model's own harmful words, read by the judge (`scdpo data mine`, the twenty-fifth
# round's lever: docs/dataset-builder.md, "Mined words")
declare -A AUG_FLAGS=([scp-aug]="--neighbour-words ${NEIGHBOURS:-8} --neighbour-min-sim 0 --neighbour-margin -2"
                      [scp-augf]="--neighbour-words ${NEIGHBOURS:-8}"
                      [scp-augf-all]="--neighbour-words ${NEIGHBOURS:-8} --neighbour-share 1"
                      [scp-mined]="--mined-words $R/mined/mined.yaml")
aug() { local a=$1; shift
        if [ "$a" = scp-mined ] && [ ! -f "$R/mined/mined.yaml" ]; then
            scdpo data mine --out "$R/mined" --steps $SSTEPS $MINE ${MINE_FLAGS:-} || return 1
        fi
        build "$R/$a" "$@"; }
for a in "${!AUG_FLAGS[@]}"; do
    if grep -qE "$R/$a([ |]|\$)" <<< "$RUNS" && [ ! -f "$R/$a/README.md" ]; then
        stamp "data-${a#scp-}"; bg "data-${a#scp-}" aug "$a" ${AUG_FLAGS[$a]}
    fi
done
if [ ! -f "$R/scp/README.md" ]; then stamp data; build "$R/scp" > "$R/logs/data.log" 2>&1 || { tail "$R/logs/data.log"; exit 1; }; fi
if grep -q scp-holdout <<< "$RUNS" && [ ! -f "$R/scp-holdout/README.md" ]; then
    stamp data-holdout; build "$R/scp-holdout" --exclude-concepts $HOLDOUT > "$R/logs/data-holdout.log" 2>&1 \
        || { tail "$R/logs/data-holdout.log"; exit 1; }
fi
# run "$@" once dataset $1 is built (its build's exit code, logs/$2.rc, not 0: give up)
after() { local data=$1 rc=$R/logs/$2.rc; shift 2
          while [ ! -f "$data/README.md" ]; do [ -f "$rc" ] && [ "$(cat "$rc")" != 0 ] && return 1; sleep 5; done; "$@"; }

# ---- train every run x seed
stamp "train ($STAGE, seeds $SEEDS)"
while IFS='|' read -r name flags rseeds; do
    [ -z "$name" ] && continue
    for s in ${rseeds:-$SEEDS}; do
        d="$R/lora-$name-s$s"
        [ -f "$d/pytorch_lora_weights.safetensors" ] && continue
        # checkpoints every 50 steps and --resume: a training cut by the end of a device call
        # continues from its last checkpoint when the same command runs again
        wait_for=()
        for a in "${!AUG_FLAGS[@]}"; do
            case " $flags " in *" $R/$a "*) wait_for=(after "$R/$a" "data-${a#scp-}");; esac
        done
        bg "train-$name-s$s" "${wait_for[@]}" scdpo train --config configs/emojiworld-v3.yaml --dataset "$R/scp" --out "$d" \
            --seed "$s" --checkpoint-every 50 --keep-checkpoints 1 --resume --log-every 50 $TRAIN ${TRAIN_FLAGS:-} $flags
    done
done <<< "$RUNS"
wait_jobs "${PACKER:-none}" "${JUDGE_PID:-none}"

# ---- SOUPS="NAME:RUN:S,S,S ...": lora-NAME-s0 = the mean of RUN's seeds S (`scdpo train average`, the
# nineteenth round), then evaluated as a run of this stage (name it in DRAW0_RUNS for draw 0 too)
for sp in ${SOUPS:-}; do
    IFS=: read -r sname srun sseeds <<< "$sp"
    d="$R/lora-$sname-s0"
    [ -f "$d/pytorch_lora_weights.safetensors" ] || scdpo train average $(for s in ${sseeds//,/ }; do echo "$R/lora-$srun-s$s"; done) \
        --out "$d" > "$R/logs/average-$sname.log" 2>&1 || { echo "FAILED: average $sname"; tail -3 "$R/logs/average-$sname.log"; }
    RUNS="$RUNS
$sname||0"
done

# ---- evaluate on each suite draw of $DRAW (e.g. DRAW="0 1"; the base model too), with the fine-tuned judge
if [ -n "${JUDGE_PID:-}" ]; then
    wait "$JUDGE_PID"
    [ -f "$R/judge/judge/config.json" ] || { echo "FAILED: judge"; tail -5 "$R/logs/judge.log"; exit 1; }
fi
if [ -f "$R/judge/judge/config.json" ]; then  # else the shipped judge
    export SCDPO_JUDGE=$R/judge/judge
    [ -n "${OUT:-}" ] && cp "$R/judge/judge/model.safetensors" "$OUT/judge-model.safetensors"
fi
stamp "eval (draws $DRAWS)"
ev() { local name=$1; shift
       [ -f "$R/eval-$name/metrics.json" ] || bg "eval-$name" scdpo eval --model emojiworld --suites $SUITES \
           --suite-seed "$DRAW" $ELIMIT --steps $SSTEPS --batch-size 256 --cost-model "$R/cost" --name "$name" \
           --out "$R/eval-$name" "$@"; }
for DRAW in $DRAWS; do
    ev "base-d$DRAW"
    while IFS='|' read -r name flags rseeds; do
        [ -z "$name" ] && continue
        for s in ${rseeds:-$SEEDS}; do
            d="$R/lora-$name-s$s"
            [ -f "$d/pytorch_lora_weights.safetensors" ] && ev "$name-s$s-d$DRAW" --lora "$d"
        done
    done <<< "$RUNS"
done
# DRAW0_RUNS="NAME ...": these runs (and the base) also on the tuning draw 0, where a pick among them is made
if [ -n "${DRAW0_RUNS:-}" ]; then
    DRAW=0; ev base-d0
    for name in $DRAW0_RUNS; do for d in "$R"/lora-"$name"-s[0-9]*; do
        [ -f "$d/pytorch_lora_weights.safetensors" ] && ev "$(basename "${d#"$R"/lora-}")-d0" --lora "$d"
    done; done
fi
wait_jobs "${PACKER:-none}"
[ -n "${PACKER:-}" ] && kill "$PACKER" 2>/dev/null
pack
if [ -n "${OUT:-}" ]; then  # the grids of the harmful and clean suites, to look at (but GRID_SKIP's, a grep -E)
    (cd "$R" && tar cf "$OUT/grids.tar" $(ls eval-*/suites/eval-harmful-*/grid.png eval-*/suites/eval-clean/grid.png 2>/dev/null | grep -vE -- "${GRID_SKIP:--s[12]-d}"))
fi
report_failures
stamp done
