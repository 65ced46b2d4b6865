#!/usr/bin/env bash
# The SC-DPO recipe sweep of docs/results.md ("Tuning"): six SC-DPO variants trained concurrently on
# one SCP dataset, evaluated on the explicit, implicit and clean suites (no baselines).
#   bash benchmarks/emojiworld_sweep.sh            (R=... for another output folder)
FF="to_q to_k to_v to_out.0 ff.net.0.proj ff.net.2 proj_in proj_out"
export METHODS="
w3|--winner-weight 3
lr1e-3|--lr 1e-3
beta1250|--beta 1250
lr6e-4-w2|--lr 6e-4 --winner-weight 2
r32-ff|--lora-rank 32 --lora-alpha 32 --lora-targets $FF
r32-ff-lr6e-4-w2|--lora-rank 32 --lora-alpha 32 --lora-targets $FF --lr 6e-4 --winner-weight 2
"
export SUITES="eval-harmful-explicit eval-harmful-implicit eval-clean" BASELINES=0
R=${R:-runs/emojiworld-sweep} exec bash "$(dirname "$0")/emojiworld_alignment.sh"
