#!/usr/bin/env bash
# The thirty-ninth round (issue 16), for the next budget: the whole pipeline in each sampling precision, for the
# owner's decision on EmojiWorld's `auto` (fp32 today). Files land flat in $OUT:
#   1. pipeline.txt, pipeline-compare.md, seconds.txt: emojiworld_alignment.sh with its defaults (fp32);
#   t. pipeline-tf32.txt, pipeline-tf32-compare.md, seconds-tf32.txt: the same with DTYPE=tf32 (the data build and
#      every evaluation with `--dtype tf32`): the build's and the evaluations' sampling 1.22x in the thirty-eighth
#      round's sampler rows, the choices as close to today's as fp32's; whether the comparison table keeps its
#      order and standard errors;
#   h. the same with DTYPE=bf16 (sampling 1.66x; 16.8% of the build's choices moved in the thirty-sixth round).
# Each pipeline takes about 280 s on one H100: the three need two detached calls.
#
#   . scripts/device_env.sh && bash benchmarks/detach.sh r39 bash benchmarks/round39.sh   # device: carry
#       .carry/s3 after .carry/s1 and .carry/s2, every call in ONE message, the detach command repeated
#   TINY=1 R=/tmp/r39 OUT=/tmp/r39/out bash benchmarks/round39.sh                        # CPU dry run
. "$(dirname "$0")/round_env.sh" r39

run() { local name=$1 tag=${1#align}
    echo "[$(date +%T)] the whole pipeline in $R/$name${DTYPE:+, DTYPE=$DTYPE}"
    time_pipeline "$name"
    seconds_report "$R/$name" > "$OUT/seconds$tag.txt"
}
stage1() { run align; }
staget() { DTYPE=tf32 run align-tf32; }
stageh() { DTYPE=bf16 run align-bf16; }

for k in ${ORDER:-1 t h}; do "stage$k"; done
echo "[$(date +%T)] done"
