#!/usr/bin/env bash
# The forty-third round (issue 16): the two goals a step short. Each stage packs its files into one tar.gz in $OUT
# (the device brings back a few files a call) and prints its table:
#   e. eval1.tar.gz, eval2.tar.gz: the whole `scdpo eval` against today's settings (the 5x goal's yardstick), the
#      defaults, the defaults with `--fill-batches` (every suite's images in the sampler's full batches, across
#      suites) and the defaults again right after (`emojiworld_throughput.py --eval --fill`), twice;
#   s. sampling.tar.gz: SD 1.5-shaped sampling against diffusers' StableDiffusionPipeline (`gpu_sampling.py
#      --only-best`): the pipeline, its fp32 yardstick, scdpo's best eager row, then compile rows each compiled from
#      nothing: the blocks (today's `SamplerConfig.compile`), the blocks with channels-last weights, the whole UNet
#      and VAE decoder, the same channels-last, the same with inductor's options from diffusers' guide.
# After a review (the 1.42x row ran on the best eager row, not on what `--compile` samples with), a second call on a
# new machine (ORDER=c) ran:
#   c. compile.tar.gz: the pipeline, its yardstick, the best eager row, the commands' defaults (no fused QKV, torch's
#      attention kernel, 8 images a decoder call) eager, then with `SamplerConfig(compile=True)` (first, so its warm-up
#      meets empty compile caches), then the best row with it ("whole"); with cuDNN's algorithm search off
#      (`--no-cudnn-benchmark`), as the commands and diffusers' pipeline run by default (every earlier row had it on).
#   p. fill.tar.gz, plain.tar.gz: the whole emojiworld_alignment.sh with EVAL_FLAGS=--fill-batches, then with the
#      defaults, back to back: whether full batches help where nine evaluations share the GPU (the whole eval alone
#      moved within its noise).
#
#   . scripts/device_env.sh && WAIT=555 bash benchmarks/detach.sh r43 bash benchmarks/round43.sh
#       # device: carry .carry/s3 after .carry/s1 and .carry/s2, every call in ONE message, the detach call repeated
#   TINY=1 R=/tmp/r43 OUT=/tmp/r43/out bash benchmarks/round43.sh                    # CPU dry run
. "$(dirname "$0")/round_env.sh" r43

evalrows() { local k=$1 TP
echo "[$(date +%T)] e$k. the whole eval: today's settings, the defaults, --fill-batches, the defaults again"
if [ "${TINY:-0}" = 1 ]; then TP="--device cpu --images 8 --steps 2 --eval-limit 4"; else TP="--images 256"; fi
{ echo "python3 benchmarks/emojiworld_throughput.py $TP --rows today --eval --fill ($(gpu_name))"
  python3 "$B/emojiworld_throughput.py" $TP --rows today --eval --fill --out "$R/rows-e$k" 2>&1 \
      | grep -vE "it/s\]" | grep -E "^\| [s]cdpo|^\| whole|^\| row|^\| today" ; } > "$R/rows-e$k.txt"
tar czf "$OUT/eval$k.tar.gz" -C "$R" "rows-e$k.txt" -C "$R/rows-e$k" eval.jsonl 2>/dev/null
cat "$R/rows-e$k.txt"
}
stagee() { evalrows 1; evalrows 2; }

stages() {
echo "[$(date +%T)] s. SD 1.5-shaped sampling: the compile variants"
sd_sampling sampling 1100 --compile-variants blocks,blocks-cl,whole,whole-cl,whole-cl-flags
}

stagec() {
echo "[$(date +%T)] c. SD 1.5-shaped sampling: the commands' defaults compiled"
sd_sampling compile 420 --compile-variants sampler,whole --no-cudnn-benchmark
}

stagep() {
echo "[$(date +%T)] p. the whole pipeline with --fill-batches, then with the defaults"
EVAL_FLAGS=--fill-batches time_pipeline align-fill; pack_pipeline fill align-fill
time_pipeline align-plain; pack_pipeline plain align-plain
}

for k in ${ORDER:-e s}; do "stage$k"; done
echo "[$(date +%T)] done"
