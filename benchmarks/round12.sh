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
#   mkdir -p runs/r12-ends && for s in 0 1 2; do cp -r runs/r10/lora-recipe-s$s runs/r11/lora-timestep700-s$s runs/r12-ends/; done
#   . scripts/device_env.sh && WAIT=0 bash benchmarks/detach.sh esd bash benchmarks/round13_esd.sh; \
#       bash benchmarks/detach.sh r13 bash benchmarks/round12.sh   # carry .carry/s3 and runs/r12-ends; then
#       the same command again, within 30 s, on the warm machine until r13 says "ended"
#       (benchmarks/detach.sh; ESD-u's seeds 1-2 ride beside it, issue 18)
#   TINY=1 R=/tmp/r12 bash benchmarks/round12.sh                                          # CPU dry run
# No LoRA comes back by default (SHIP=none): a rank-32 LoRA is 6.7 MB, so 3 seeds pass the device
# tool's 16 MiB a file; metrics, grids and the clean images do. A winner's weights: one more call on
# the warm machine, `cd runs/r12 && tar cf $OUT/w.tar lora-NAME-s0/{pytorch_lora_weights.safetensors,config.json}`.
# Fourteenth round: a fresh checkout has no runs/ (the rank-8 ends were never committed: weights of
# intermediate runs stay out of git), so without runs/r12-ends the ends are not reused: timestep700 at
# rank 8 is trained again beside the rank-32 candidates (12 trainings, one budget) and the hold at
# rank 64 waits on rank 32's answer; the recipe's rank-8 end on the report draw is the shipped LoRA,
# evaluated on the CPU (`R=runs/r12 DRAW=4 bash benchmarks/cpu_evals.sh shipped`).
if [ "${TINY:-0}" != 1 ] && [ -d "${SEED_FROM-$PWD/runs/r12-ends}" ]; then
    export SEED_FROM=${SEED_FROM-$PWD/runs/r12-ends}
    DEFAULT="recipe timestep700 t700-hold20-r32 t700-hold20-r64 timestep700-r32 recipe-r32"
else
    unset SEED_FROM; DEFAULT="timestep700 t700-hold20-r32 timestep700-r32 recipe-r32"
fi
R=${R:-$PWD/runs/r12} CANDIDATES=${CANDIDATES:-$DEFAULT} \
    REPORT_DRAW=4 SHIP=${SHIP:-none} DEADLINE=${DEADLINE:-100000} exec bash "$(dirname "$0")/round10.sh"
