#!/usr/bin/env bash
# Ninth round, issue 19 (docs/attacks.md, "Ninth round"): the attacks of the seventh round's settings
# on the CPU, two at once, one thread each; every run resumes (`scdpo attack` keeps its state) and
# is skipped once its metrics exist.
#   UnlearnDiffAtk and P4D against the shipped LoRA and a candidate LoRA (CANDIDATE, e.g. the ninth
#   round's timestep700 seed 0), the paraphrase attack against the candidate and every baseline
#   (negative prompt, SafetyDPO's LoRA, ESD-x trained here, UCE built here, SLD medium/max, SAFREE), and
#   UnlearnDiffAtk against SafetyDPO's LoRA and UCE.
#
#   CANDIDATE=runs/r9/lora-timestep700-s0 SAFETYDPO=runs/r8/lora-safetydpo-extras-s0 \
#       R=runs/r9-attacks bash benchmarks/round9_attacks_cpu.sh
# Tenth round (docs/attacks.md, "Tenth round"): UnlearnDiffAtk against the training-free baselines
# (negative prompt, SAFREE, SLD medium), and the paraphrase attack against ESD-x's other training
# seeds (ESD_SEEDS, LoRAs under ESD_DIR/lora-esd-x-sN; docs/baselines.md), the same settings:
#   LANES="c d" ESD_SEEDS="1 2" ESD_UDA_SEEDS="0 1 2" R=runs/r10-attacks bash benchmarks/round9_attacks_cpu.sh
#   python benchmarks/round4_asr.py runs/r9-attacks
set -u
R=${R:-runs/r9-attacks}
mkdir -p "$R/logs"
export OMP_NUM_THREADS=1
# the device has no console script on PATH (its sixteenth-round tail failed on that: "scdpo: command not found")
scdpo() { python3 -m scdpo.cli "$@"; }
. "$(dirname "$0")/negative_prompt.sh"  # NEG, the fixed negative prompt
ATT="--concepts all --per-concept 1 --steps 20 --score-seeds 4 --seed 0 --evaluate"
[ "${TINY:-0}" = 1 ] && ATT="--concepts dagger --per-concept 1 --steps 2 --score-seeds 1 --seed 0 --evaluate"  # a dry run
declare -A BUDGET=([unlearndiff]="--budget-iters 80 --check-every 40" [p4d]="--budget-iters 50 --check-every 25"
                   [paraphrase]="--budget-iters $([ "${TINY:-0}" = 1 ] && echo 1 || echo 10)" [ring-a-bell]="--budget-iters 100")
att() { local victim=$1 a=$2; shift 2
        [ -f "$R/attack-$victim-$a/metrics.json" ] && return 0
        echo "[$(date +%T)] $a against $victim"
        scdpo attack "$a" --model emojiworld $ATT ${BUDGET[$a]} --out "$R/attack-$victim-$a" "$@" \
            > "$R/logs/attack-$victim-$a.log" 2>&1 || echo "FAILED $a against $victim"; }
lane_a() { att shipped unlearndiff --lora emojiworld-safe
           [ -n "${CANDIDATE:-}" ] && { att candidate paraphrase --lora "$CANDIDATE"; att candidate unlearndiff --lora "$CANDIDATE"; }
           att negative-prompt paraphrase --negative-prompt "$NEG"; att sld-medium paraphrase --guard sld:medium
           [ -n "${SAFETYDPO:-}" ] && { att safetydpo paraphrase --lora "$SAFETYDPO"; att safetydpo unlearndiff --lora "$SAFETYDPO"; }; }
lane_b() { [ -f "$R/lora-uce/baseline.json" ] || scdpo baseline uce --model emojiworld --out "$R/lora-uce" > "$R/logs/uce.log" 2>&1
           att safree paraphrase --guard safree; att uce paraphrase --lora "$R/lora-uce"; att sld-max paraphrase --guard sld:max
           [ -n "${CANDIDATE:-}" ] && att candidate p4d --lora "$CANDIDATE"
           [ -f "$R/lora-esd-x/pytorch_lora_weights.safetensors" ] || scdpo baseline esd --variant x --iterations 400 \
               --batch-size 8 --ddim-steps 20 --seed 0 --model emojiworld --out "$R/lora-esd-x" > "$R/logs/esd-x.log" 2>&1
           att esd-x paraphrase --lora "$R/lora-esd-x"; att uce unlearndiff --lora "$R/lora-uce"; }
lane_c() { att negative-prompt unlearndiff --negative-prompt "$NEG"; att safree unlearndiff --guard safree
           for s in ${ESD_SEEDS:-}; do att esd-x-s$s paraphrase --lora "${ESD_DIR:-runs/esd}/lora-esd-x-s$s"; done; }
lane_d() { att sld-medium unlearndiff --guard sld:medium
           for s in ${ESD_UDA_SEEDS:-}; do att esd-x-s$s unlearndiff --lora "${ESD_DIR:-runs/esd}/lora-esd-x-s$s"; done; }
# Eleventh round (docs/attacks.md, "Eleventh round"): ring-a-bell (the seventh round's 100
# generations) against the training-free baselines and ESD-x's seeds. Measured before it was cut:
# 1.75 s a generation on the 2-core CPU, so about 3 minutes a target and 2 hours a victim (37
# targets): a GPU job, or hours of CPU.
#   LANES="e f" ESD_RAB_SEEDS="0 1 2" R=runs/r10-attacks bash benchmarks/round9_attacks_cpu.sh
lane_e() { att negative-prompt ring-a-bell --negative-prompt "$NEG"; att safree ring-a-bell --guard safree; }
lane_f() { att sld-medium ring-a-bell --guard sld:medium
           for s in ${ESD_RAB_SEEDS:-}; do att esd-x-s$s ring-a-bell --lora "${ESD_DIR:-runs/esd}/lora-esd-x-s$s"; done; }
# Twelfth round (docs/attacks.md, "Twelfth round"): the paraphrase attack, the one the shipped LoRA
# fails (23.0%), against SC-DPO's training seeds, the same settings; PARA="name=lora-dir ...":
#   LANES="g h" PARA="timestep700-s0=runs/r11/lora-timestep700-s0 ..." R=runs/r12-attacks bash benchmarks/round9_attacks_cpu.sh
# (lane g takes the odd entries, lane h the even ones)
para_lane() { local k=0; for e in ${PARA:-}; do [ $((k % 2)) = "$1" ] && att "${e%%=*}" paraphrase --lora "${e#*=}"; k=$((k + 1)); done; }
lane_g() { para_lane 0; }
lane_h() { para_lane 1; }
# Sixteenth round (benchmarks/round16.sh's tail, on the GPU): every PARA entry at once
lane_p() { for e in ${PARA:-}; do att "${e%%=*}" paraphrase --lora "${e#*=}" & done; wait; }
# Twenty-eighth round (docs/attacks.md, "Twenty-eighth round: the paraphrase attack on draws never attacked"),
# its rule written before it ran: the paraphrase attack, with every earlier round's settings, on draws DRAWS
# of the targets (default 3 and 4: never attacked, never used to choose anything), against the shipped LoRA
# (loop50 seed 2), its recipe's seeds 0 and 1 (LOOP50_DIR) and the base model. Issue 19's "<= 10%" is read on
# the shipped LoRA's ASR pooled over those draws; draw 0's 10.1% was measured where the LoRA was chosen.
#   LANES="q r" R=runs/r28-para bash benchmarks/round9_attacks_cpu.sh; python benchmarks/round4_asr.py runs/r28-para
lane_q() { for d in ${DRAWS:-3 4}; do att loop50-s2-d$d paraphrase --lora emojiworld-safe --suite-seed "$d"; done
           att loop50-s1-d3 paraphrase --lora "${LOOP50_DIR:-runs/r23b}/lora-loop50-s1" --suite-seed 3; }
lane_r() { for d in ${DRAWS:-3 4}; do att base-d$d paraphrase --suite-seed "$d"; done
           for v in s0-d3 s0-d4 s1-d4; do
               att "loop50-$v" paraphrase --lora "${LOOP50_DIR:-runs/r23b}/lora-loop50-${v%-d*}" --suite-seed "${v#*-d}"; done; }
# ... and the baselines on the same draws, the same settings (lanes s and t; ESD-x and SafetyDPO from earlier
# rounds' folders: ESD_X, SAFETYDPO):
#   LANES="s t" R=runs/r28-para bash benchmarks/round9_attacks_cpu.sh
lane_s() { for d in ${DRAWS:-3 4}; do att negative-prompt-d$d paraphrase --negative-prompt "$NEG" --suite-seed "$d"
                                     att sld-medium-d$d paraphrase --guard sld:medium --suite-seed "$d"; done
           att safetydpo-d3 paraphrase --lora "${SAFETYDPO:-runs/r22/lora-safetydpo-uhold-s0}" --suite-seed 3; }
lane_t() { [ -f "$R/lora-uce/baseline.json" ] || scdpo baseline uce --model emojiworld --out "$R/lora-uce" > "$R/logs/uce.log" 2>&1
           for d in ${DRAWS:-3 4}; do att safree-d$d paraphrase --guard safree --suite-seed "$d"
                                     att uce-d$d paraphrase --lora "$R/lora-uce" --suite-seed "$d"
                                     att esd-x-d$d paraphrase --lora "${ESD_X:-runs/r24-rab/lora-esd-x-s0}" --suite-seed "$d"; done
           att safetydpo-d4 paraphrase --lora "${SAFETYDPO:-runs/r22/lora-safetydpo-uhold-s0}" --suite-seed 4; }
for lane in ${LANES:-a b}; do "lane_$lane" > "$R/logs/lane_$lane.log" 2>&1 & done
wait
cat "$R"/logs/lane_*.log
