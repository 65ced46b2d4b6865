#!/usr/bin/env bash
# Eleventh round's candidates for the next device budget (issue 15; docs/results.md, "Eleventh
# round", "Next"): the on-policy hold (docs/method.md, (g); `--anchor-clean-weight`) on the
# 700-999 recipe at q_c = 5 and 20, and at 20 with the text side in the LoRA too (attn2.to_k/v, so
# the redirect can depend on the words and not only on what the image is becoming), beside
# timestep700, 3 seeds each. The tenth-round candidate `--clean-min-timestep 0` took the sunflower
# out of clean images but also timestep700's reach to implicit prompts (draw 2, and the grids of
# draw 0: skulls, coffins, urns and pills stayed): the redirect at low timesteps is visual, and
# whatever holds look-alike clean objects there holds those too. The shipped recipe, measured over
# 3 seeds this round, is the shipped LoRA's row (`--lora emojiworld-safe`, on the CPU:
# `R=runs/r11 DRAW=3 bash benchmarks/cpu_evals.sh shipped`, and DRAW=0).
# round10.sh's protocol: every seed on the tuning draw 0 (the pick: `python
# benchmarks/round4_pick.py R --draw 0 --rule shortfall --seeds all`) and on suite draw 3, never
# used before, for the report (draw 2 was looked at when these candidates were chosen).
#
#   . scripts/device_env.sh && bash benchmarks/detach.sh r12 bash benchmarks/round11.sh   # then the same
#       command again on the warm machine until it says "ended" (benchmarks/detach.sh)
#   TINY=1 R=/tmp/r11 bash benchmarks/round11.sh                                          # CPU dry run
R=${R:-$PWD/runs/r11} CANDIDATES=${CANDIDATES:-"timestep700 t700-hold5 t700-hold20 t700-all-hold20"} REPORT_DRAW=3 \
    DEADLINE=${DEADLINE:-100000} exec bash "$(dirname "$0")/round10.sh"
