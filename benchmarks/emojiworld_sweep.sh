#!/usr/bin/env bash
# SC-DPO recipe sweeps of docs/results.md ("Tuning"): six SC-DPO variants trained concurrently on
# one SCP dataset, evaluated on the explicit, implicit and clean suites (no baselines).
#   bash benchmarks/emojiworld_sweep.sh                 the recipe sweep (learning rate, beta, winner weight)
#   SWEEP=targets bash benchmarks/emojiworld_sweep.sh   which UNet layers the LoRA adapts
#   SWEEP=image bash benchmarks/emojiworld_sweep.sh     the image-side LoRA: rate, batch, rank, layers
#   SWEEP=preserve bash benchmarks/emojiworld_sweep.sh  the preservation term on clean pairs
#   SWEEP=concept bash benchmarks/emojiworld_sweep.sh   concept-level layers, high timesteps only
#   SWEEP=timestep bash benchmarks/emojiworld_sweep.sh  image-side LoRA on high timesteps, with preservation
#   SWEEP=final bash benchmarks/emojiworld_sweep.sh     rate 3e-3, timesteps 600/700 and up, preservation 5-10
# (R=... for another output folder; the stages and their skipping are emojiworld_alignment.sh's)
FF="to_q to_k to_v to_out.0 ff.net.0.proj ff.net.2 proj_in proj_out"
# every layer that sees image features only: self-attention, the cross-attention's query and
# output (not to_k/to_v, the projections of the text), the feed-forward layers, and (UC) the
# ResNet convolutions. ESD-u (Gandikota et al. 2023) erases through such layers.
U="attn1.to_q attn1.to_k attn1.to_v attn1.to_out.0 attn2.to_q attn2.to_out.0 ff.net.0.proj ff.net.2"
UC="$U conv1 conv2"
case ${SWEEP:-recipes} in
recipes) export METHODS="
w3|--winner-weight 3
lr1e-3|--lr 1e-3
beta1250|--beta 1250
lr6e-4-w2|--lr 6e-4 --winner-weight 2
r32-ff|--lora-rank 32 --lora-alpha 32 --lora-targets $FF
r32-ff-lr6e-4-w2|--lora-rank 32 --lora-alpha 32 --lora-targets $FF --lr 6e-4 --winner-weight 2
" ;;
targets) export METHODS="
lr1e-3|--lr 1e-3
text-kv-lr1e-3|--lr 1e-3 --lora-targets attn2.to_k attn2.to_v
image-lr1e-3|--lr 1e-3 --lora-targets $U
image-conv-lr1e-3|--lr 1e-3 --lora-targets $UC
image-conv-lr3e-4|--lr 3e-4 --lora-targets $UC
image-conv-lr1e-3-r32|--lr 1e-3 --lora-rank 32 --lora-alpha 32 --lora-targets $UC
" ;;
image) export METHODS="
image-lr2e-3|--lr 2e-3 --lora-targets $U
image-b64|--lr 1e-3 --batch-size 64 --lora-targets $U
image-b64-lr2e-3|--lr 2e-3 --batch-size 64 --lora-targets $U
image-r32|--lr 1e-3 --lora-rank 32 --lora-alpha 32 --lora-targets $U
image-proj|--lr 1e-3 --lora-targets $U proj_in proj_out
self-ff|--lr 1e-3 --lora-targets attn1.to_q attn1.to_k attn1.to_v attn1.to_out.0 ff.net.0.proj ff.net.2
" ;;
preserve) export METHODS="
lr1e-3-p10|--lr 1e-3 --preserve-weight 10
lr1e-3-p100|--lr 1e-3 --preserve-weight 100
image-b64-lr2e-3-p10|--lr 2e-3 --batch-size 64 --lora-targets $U --preserve-weight 10
image-b64-lr2e-3-p100|--lr 2e-3 --batch-size 64 --lora-targets $U --preserve-weight 100
" ;;
# the cross-attention's output projection reads the text's values as mixed at each pixel: what is
# drawn there, whichever word asked for it (held-out keywords included)
concept) export METHODS="
xout-lr2e-3|--lr 2e-3 --lora-targets attn2.to_out.0
xout-lr5e-3|--lr 5e-3 --lora-targets attn2.to_out.0
xout-ff-lr2e-3|--lr 2e-3 --lora-targets attn2.to_out.0 ff.net.0.proj ff.net.2
image-lr2e-3-t400|--lr 2e-3 --lora-targets $U --min-timestep 400
image-lr2e-3-p30|--lr 2e-3 --lora-targets $U --preserve-weight 30
lr1e-3-p10-t400|--lr 1e-3 --preserve-weight 10 --min-timestep 400
" ;;
timestep) export METHODS="
image-lr2e-3-t400-p3|--lr 2e-3 --lora-targets $U --min-timestep 400 --preserve-weight 3
image-lr2e-3-t400-p10|--lr 2e-3 --lora-targets $U --min-timestep 400 --preserve-weight 10
image-lr2e-3-t600|--lr 2e-3 --lora-targets $U --min-timestep 600
image-lr2e-3-t600-p3|--lr 2e-3 --lora-targets $U --min-timestep 600 --preserve-weight 3
image-lr3e-3-t400-p10|--lr 3e-3 --lora-targets $U --min-timestep 400 --preserve-weight 10
image-r32-lr1e-3-t400-p10|--lr 1e-3 --lora-rank 32 --lora-alpha 32 --lora-targets $U --min-timestep 400 --preserve-weight 10
" ;;
final) export METHODS="
image-lr3e-3-t600-p10|--lr 3e-3 --lora-targets $U --min-timestep 600 --preserve-weight 10
image-lr3e-3-t600-p5|--lr 3e-3 --lora-targets $U --min-timestep 600 --preserve-weight 5
image-lr3e-3-t700-p5|--lr 3e-3 --lora-targets $U --min-timestep 700 --preserve-weight 5
" ;;
*) echo "unknown SWEEP=$SWEEP (recipes, targets, image, preserve, concept, timestep or final)"; exit 2 ;;
esac
export SUITES="eval-harmful-explicit eval-harmful-implicit eval-clean" BASELINES=0
R=${R:-runs/emojiworld-sweep} exec bash "$(dirname "$0")/emojiworld_alignment.sh"
