#!/usr/bin/env bash
# Twelfth round's candidates for the next device budget (issue 15; docs/results.md, "Twelfth round",
# "Next"): is the recipe-timestep700 trade-off line a capacity limit? The on-policy hold at rank 8
# sits on the line (+0.1 ± 1.7 points of alignment above it, draw 3): the anchor asks the LoRA to
# finish harmful-looking states as a sunflower and the hold asks it to finish look-alike clean states
# as the reference does, and a rank-8 LoRA may not separate the two. So: the hold at ranks 32 and
# 64 (alpha = rank, the same scale as the recipe's 8/8), and rank 32 alone at both ends of the line,
# 3 seeds each (12 trainings, one budget). The unconditional hold (`t700-u20`, docs/method.md (h)) is
# not among them: its inference-time limit moved clean alignment the wrong way (thirteenth round). The line's ends on the report draw are the recipe's and
# timestep700's rank-8 LoRAs of the tenth and twelfth rounds, evaluated, not trained again: copy
# runs/r10/lora-recipe-sK and runs/r11/lora-timestep700-sK into runs/r12-ends and carry that folder
# (SEED_FROM: the round copies it into $R once; a training whose weights exist is skipped). Never
# carry $R itself: the device tool replaces a carried path on every call, so the second call's
# carry deleted the running round's outputs (thirteenth round, BENCHMARKS.md).
# round10.sh's protocol: the pick on the tuning draw 0 (`python benchmarks/round4_pick.py R --draw 0
# --rule shortfall --seeds all`), the report on suite draw 4, never used before; the line:
# `python benchmarks/round4_tables.py R --draw 4 --line recipe timestep700`.
#
#   . scripts/device_env.sh && bash benchmarks/detach.sh r15 bash benchmarks/round12.sh   # the fifteenth round
#       (fresh checkout: the 2 x 2 below); carry .carry/s3 only; the same command again, at once, on
#       the warm machine until r15 says "ended" (12 trainings at once ran at 1.02-1.11 steps/s: 15-16.5 minutes for 1,000 steps, BENCHMARKS.md)
#   With runs/r12-ends present (copy runs/r10/lora-recipe-sK and runs/r11/lora-timestep700-sK there and
#       carry it too), the twelfth round's plan above instead, in runs/r12, reported on draw 4.
#   TINY=1 R=/tmp/r12 bash benchmarks/round12.sh                                          # CPU dry run
# No LoRA comes back by default (SHIP=none): a rank-32 LoRA is 6.7 MB, so 3 seeds pass the device
# tool's 16 MiB a file; metrics, grids and the clean images do. A winner's weights: one more call on
# the warm machine, `cd runs/r12 && tar cf $OUT/w.tar lora-NAME-s0/{pytorch_lora_weights.safetensors,config.json}`.
# Fourteenth round: a fresh checkout has no runs/ (the rank-8 ends were never committed: weights of
# intermediate runs stay out of git). Rank 32 at alpha = rank was then measured (`t700-hold20-r32`,
# docs/results.md "Fourteenth round"): a larger change, 6.4 +- 1.6 points below the line. Without
# runs/r12-ends the default is the next question, a 2 x 2 in one round with its own rank-8 references
# (12 trainings, one budget, in runs/r15): the hold (off, q_c = 20) x the rank (8; 32 at alpha 8: scale
# alpha / rank = 1/4, which offsets the four-fold sum of rank-one updates). Report draw 5, never
# evaluated (draw 4 was the fourteenth round's report); the recipe's rank-8 end there is the shipped
# LoRA, evaluated on the CPU (`R=runs/r15 DRAW=5 bash benchmarks/cpu_evals.sh shipped`).
# Fifteenth round: that 2 x 2 ran (docs/results.md, "Fifteenth round"); the next round is
# benchmarks/round16.sh.
if [ "${TINY:-0}" != 1 ] && [ -d "${SEED_FROM-$PWD/runs/r12-ends}" ]; then
    export SEED_FROM=${SEED_FROM-$PWD/runs/r12-ends}
    DEFAULT="recipe timestep700 t700-hold20-r32 t700-hold20-r64 timestep700-r32 recipe-r32"; DRAW=4; RUN=r12
else
    unset SEED_FROM; DEFAULT="timestep700 t700-hold20 timestep700-r32a8 t700-hold20-r32a8"; DRAW=5; RUN=r15
fi
R=${R:-$PWD/runs/$RUN} CANDIDATES=${CANDIDATES:-$DEFAULT} \
    REPORT_DRAW=${REPORT_DRAW:-$DRAW} SHIP=${SHIP:-none} DEADLINE=${DEADLINE:-100000} exec bash "$(dirname "$0")/round10.sh"
