#!/usr/bin/env bash
# The forty-fourth round (issue 16): SD sampling's last levers, then what the forty-third round left. Each stage
# packs its files into one tar.gz in $OUT and prints its table:
#   a. levers.tar.gz: SD 1.5-shaped sampling against diffusers' StableDiffusionPipeline (`gpu_sampling.py
#      --only-best`, cuDNN's algorithm search on, as in the forty-third round's rows): the pipeline, its fp32
#      yardstick, scdpo's best eager row and the commands' defaults, then compile rows each compiled from nothing:
#      the whole UNet and decoder (the 1.42x row, again), the same with 1x1 convolutions as matmuls (the one
#      option of diffusers' guide that costs no tuning), `SamplerConfig(compile=True)` on the commands' defaults,
#      the same with inductor's freezing, and the whole compile autotuned (max_autotune, last: the longest warm-up);
#   p: round43.sh's stage p (the pipeline with --fill-batches, then with the defaults, back to back), which found no
#      budget in that round;
#   c. compile.tar.gz: round43.sh's stage c cut to the budget that was left (200 s): the pipeline, its yardstick, the
#      best eager row, the commands' defaults eager and with `SamplerConfig(compile=True)`, cuDNN's search off (as
#      the commands and diffusers' pipeline run by default). After stage a on the same machine, its compile finds
#      stage a's kernels in the on-disk caches: its warm-up is a warm machine's, not a cold one's.
#
#   . scripts/device_env.sh && ORDER="a p" BUDGET_A=540 WAIT=555 bash benchmarks/detach.sh r44 bash benchmarks/round44.sh
#   . scripts/device_env.sh && ORDER=c bash benchmarks/round44.sh                  # then, on the same machine
#       # device: carry .carry/s3 after .carry/s1 and .carry/s2, every call in ONE message, the detach call repeated
#   TINY=1 R=/tmp/r44 OUT=/tmp/r44/out bash benchmarks/round44.sh                    # CPU dry run
. "$(dirname "$0")/round_env.sh" r44

stagea() {
echo "[$(date +%T)] a. SD 1.5-shaped sampling: the compile's last levers"
sd_sampling levers "${BUDGET_A:-600}" --compile-variants whole,whole-1x1,sampler,sampler-freeze,whole-autotune
}

stagec() {
echo "[$(date +%T)] c. SD 1.5-shaped sampling: the commands' defaults compiled, cuDNN's search off"
sd_sampling compile 200 --compile-variants sampler --no-cudnn-benchmark
}

for k in ${ORDER:-a p c}; do
    # the forty-fourth round's run had R=/tmp/r43 here (BENCHMARKS.md quotes its paths)
    if [ "$k" = p ]; then R=$R/p OUT=$OUT ORDER=p bash "$B/round43.sh"; else "stage$k"; fi
done
echo "[$(date +%T)] done"
