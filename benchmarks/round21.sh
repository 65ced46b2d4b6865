#!/usr/bin/env bash
# The twenty-first round (issue 15; docs/results.md, "Twenty-first round"): clean alignment. Over six
# test draws the shipped LoRA draws 4.7 points less clean alignment than the base (the goal allows 2;
# -2.7 +- 1.1 beyond the bound, twentieth round). Under classifier-free guidance what is drawn moves by
# dg = w dc - (w - 1) du, and on clean prompts the LoRA's unconditional change du is 1.1-2.2 times its
# change of the prompt's prediction dc (thirteenth round, benchmarks/uncond_shift.py); the recipe's
# on-policy hold holds dc alone. Two arms on the shipped recipe (configs/emojiworld-gpu.yaml), 5 seeds
# each (MIX_SEEDS), beside the recipe's seeds 0-2, carried from .carry/s3/r18-pick where it holds
# them and trained here where it does not (the round as run carried seed 0, then the shipped
# weights, and trained seeds 1 and 2: 12 trainings, one budget; docs/results.md, "Twenty-first round"):
#   ghold  the hold in its guided form, || w dc - (w - 1) du ||^2 / w^2 (--anchor-clean-guided,
#          docs/method.md (g), "The guided form"): what the sampler draws is held, du and dc may move
#          where guidance cancels them
#   uhold  the unconditional hold (h) added at q_u = 20 (--anchor-uncond-weight 20): du held on its
#          own, every anchor state; the control that says whether the guided form's gain, if any, is
#          more than holding du
# Every LoRA on the tuning draw 0 and on suite draws 14 and 15, never evaluated before; then the
# paraphrase attack against seeds 0-2 of each arm and P4D against seed 0 of each (round20.sh's tail).
#
#   . scripts/device_env.sh && bash benchmarks/detach.sh r21 bash benchmarks/round21.sh   # on the device:
#       carry .carry/s3 only (after .carry/s1 and .carry/s2); THE SAME command again, at once, until "ended"
#   TINY=1 R=/tmp/r21 bash benchmarks/round21.sh                                          # CPU dry run
ARMS=${ARMS:-"ghold uhold"} MIX_SEEDS=${MIX_SEEDS:-0,1,2,3,4} REPORT_DRAW=${REPORT_DRAW:-"14 15"} R=${R:-$PWD/runs/r21} \
    exec bash "$(dirname "$0")/round20.sh"
