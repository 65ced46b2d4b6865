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
R=${R:-$PWD/runs/r16} CANDIDATES=${CANDIDATES:-"t700-hold20-r32a8 t700-hold20-r8a2 t700-hold20-r64a8 t700-hold40-r32a8"} \
    REPORT_DRAW=${REPORT_DRAW:-6} SHIP=${SHIP:-none} DEADLINE=${DEADLINE:-100000} exec bash "$(dirname "$0")/round10.sh"
