#!/usr/bin/env bash
# The seventeenth round again, on new draws, with every LoRA coming back (issue 15; docs/results.md,
# "Seventeenth round", "Next"). The seventeenth round's 12 trainings and 26 evaluations ran, and the
# machine was released before the weights and most evaluations came back; what did come back (2
# seeds of three arms on draw 7, no draw-0 pick) says the hold's focus at gamma 16 costs clean
# alignment and gamma 4 does nothing measurable: indicative only. So the same four arms, 3 seeds each:
#   t700-hold20-r32a8       the fifteenth round's pick (trained again: its LoRAs are lost)
#   t700-hold20f4-r32a8     the hold's focus at gamma 4, the same mean dose
#   t700-hold20f16-r32a8    gamma 16
#   t700-hold10f16-r32a8    half the hold, focused
# picked on draw 0 (round4_pick.py, the sixteenth round's draw-0 evaluations beside) and reported on
# suite draws 8 and 9, never evaluated before, to be pooled with benchmarks/draws_pooled.py (one
# draw's 150 prompts a suite leave about 2 points of sampling error on a rate near 93%). Every LoRA
# comes back in float16 with each call (SHIP=all SHIP_HALF=1: benchmarks/lora_half.py; four tars of
# 10 MB), so a lost machine loses no weights that finished. The shipped LoRA's rows on draws 8 and 9
# ran on the CPU beforehand (`R=runs/r18-cpu DRAW=8 bash benchmarks/cpu_evals.sh shipped base`, and
# DRAW=9; metrics in docs/results/round17-metrics.tar.gz). The tail as in
# benchmarks/round16.sh: the compiled step first, then the paraphrase attack, then P4D.
#
#   . scripts/device_env.sh && bash benchmarks/detach.sh r18 bash benchmarks/round18.sh   # on the device:
#       carry .carry/s3 only (after .carry/s1 and .carry/s2); THE SAME command again, at once, until
#       "ended": the machine is released 30 s after a call returns (the seventeenth round's loss)
#   TINY=1 R=/tmp/r18 bash benchmarks/round18.sh                                          # CPU dry run
set -u
R=${R:-$PWD/runs/r18} REPORT_DRAW=${REPORT_DRAW:-"8 9"} SHIP=${SHIP:-all} SHIP_HALF=${SHIP_HALF:-1} \
    exec bash "$(dirname "$0")/round17.sh"
