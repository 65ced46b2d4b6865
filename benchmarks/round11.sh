#!/usr/bin/env bash
# Eleventh round's candidates for the next device budget (issue 15; docs/results.md, "Eleventh
# round", "Next"): the on-policy hold (docs/method.md, (g); `--anchor-clean-weight`) on the
# 700-999 recipe, at q_c = 5 and 20, beside the shipped recipe and timestep700, 3 seeds each. The
# tenth-round candidate `--clean-min-timestep 0` gave back 3.7 points of clean alignment but lost
# timestep700's reach to implicit prompts (draw 2); the hold measures the drift where the leak
# happens, on the policy's own clean trajectories. round10.sh's protocol: every seed on the tuning
# draw 0 (the pick: `python benchmarks/round4_pick.py R --draw 0 --rule shortfall --seeds all`) and
# on suite draw 3, never used before, for the report (draw 2 was looked at when the hold was chosen).
#
#   . scripts/device_env.sh && bash benchmarks/detach.sh r12 bash benchmarks/round11.sh   # then the same
#       command again on the warm machine until it says "ended" (benchmarks/detach.sh)
#   TINY=1 R=/tmp/r11 bash benchmarks/round11.sh                                          # CPU dry run
R=${R:-$PWD/runs/r11} CANDIDATES=${CANDIDATES:-"recipe timestep700 t700-hold5 t700-hold20"} REPORT_DRAW=3 \
    DEADLINE=${DEADLINE:-100000} exec bash "$(dirname "$0")/round10.sh"
