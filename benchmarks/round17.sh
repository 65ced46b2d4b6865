#!/usr/bin/env bash
# The next device round after the sixteenth (issue 15; docs/results.md, "Sixteenth round", "Next").
# The sixteenth round found the clean-alignment loss on the requests the base model itself meets
# only narrowly (3-5x the drop rate of those it meets surely), and the hold's dose and the LoRA's
# rank and scale spent. So the hold's focus (`--anchor-clean-focus`, docs/method.md (g)), on the
# fifteenth round's pick (the 700-999 recipe, hold q_c = 20, LoRA rank 32 at alpha 8), 3 seeds each:
#   t700-hold20-r32a8       the pick, on the new draw (carried as its r15 LoRAs where runs/r15-pick
#                           exists; trained again, same seeds, where it does not)
#   t700-hold20f4-r32a8     the focus at gamma 4 (weights 1/3 to 5/3), the same mean dose
#   t700-hold20f16-r32a8    gamma 16 (weights 0.11 to 1.89)
#   t700-hold10f16-r32a8    half the hold, focused: can a focused hold keep alignment at less dose,
#                           giving back the implicit safe objects that more hold costs?
# Pick on draw 0 (round4_pick.py, the sixteenth round's draw-0 evaluations beside), report on suite
# draw 7, never evaluated before; the shipped LoRA's row on the CPU: `R=runs/r17 DRAW=7 bash
# benchmarks/cpu_evals.sh shipped`. The tail (benchmarks/round16.sh): the paraphrase attack against
# every LoRA, the compiled step, P4D against seed 0 of each new arm. The pick's weights come back
# afterwards by a tar call (a 6.6 MB rank-32 LoRA: two seeds a file of at most 16 MiB).
#
#   . scripts/device_env.sh && bash benchmarks/detach.sh r17 bash benchmarks/round17.sh   # on the device:
#       carry .carry/s3 only (after .carry/s1 and .carry/s2); the same command again, at once, until "ended"
#   TINY=1 R=/tmp/r17 bash benchmarks/round17.sh                                          # CPU dry run
set -u
R=${R:-$PWD/runs/r17} CANDIDATES=${CANDIDATES:-"t700-hold20-r32a8 t700-hold20f4-r32a8 t700-hold20f16-r32a8 t700-hold10f16-r32a8"} \
    REPORT_DRAW=${REPORT_DRAW:-7} P4D_ARMS=${P4D_ARMS:-"t700-hold20f4-r32a8 t700-hold20f16-r32a8 t700-hold10f16-r32a8"} \
    exec bash "$(dirname "$0")/round16.sh"
