#!/usr/bin/env bash
# The forty-second round (issue 16): the pipeline's critical path shortened. The data build's first pass (K
# candidates a prompt and their rewards) samples beside the cost model's training (`data build --candidates-only`,
# CANDIDATES_FIRST=1); the warm server listens once the cost model's modules are in and imports the rest between
# requests; the trainings' final validation samples every run's grid in one call; `scdpo eval` replayed its UNet
# calls from CUDA graphs by default for EmojiWorld on a GPU in stages n-e (opt-in since: `--cuda-graphs`, and the
# rows of stage e are now the defaults without and with them). Each stage packs its files into one tar.gz in $OUT
# (the device brings back a few files a call) and prints its report:
#   n. new.tar.gz: emojiworld_alignment.sh with this round's defaults (report, comparison table, seconds by
#      phase, the cost model's metrics.json, the server's log);
#   o. old.tar.gz: the same with 1068beb's code (BEFORE=DIR: its src/scdpo, carried in; copied first, since a
#      later call rewrites what it carries) and CANDIDATES_FIRST=0 (that code has no --candidates-only): the
#      pipeline as it was, right after stage n on the same machine;
#   N. new2.tar.gz: stage n again, a second sample;
#   b. bf16.tar.gz: stage n with DTYPE=bf16;
#   e. eval.tar.gz: the whole `scdpo eval` against today's settings (the 5x goal's yardstick, its graphs off),
#      the defaults, and one more row (`--graphs`): when it ran, the defaults had the graphs on and that row had them
#      off; with the final code the defaults have them off and that row on.
# After stages n-e (ORDER="n o N b e"), the eval's graphs went back to opt-in (they bought nothing there) and a
# second call on a new machine (ORDER="z f") ran:
#   z. zero.tar.gz: the pipeline with the final code and CANDIDATES_FIRST=0 (the build after the cost model);
#   f. first.tar.gz: the same with CANDIDATES_FIRST=1, right after, on the same machine.
#
#   . scripts/device_env.sh && BEFORE=.carry/old bash benchmarks/detach.sh r42 bash benchmarks/round42.sh
#       # device: carry .carry/s3 and .carry/old after .carry/s1 and .carry/s2, every call in ONE message,
#       # the detach command repeated
#   TINY=1 R=/tmp/r42 OUT=/tmp/r42/out BEFORE=.carry/old ORDER="n o" bash benchmarks/round42.sh   # CPU dry run
. "$(dirname "$0")/round_env.sh" r42

pack() { pack_pipeline "$@"; }  # benchmarks/pipeline_report.sh

stagen() { echo "[$(date +%T)] n. the whole pipeline, this round's defaults"; time_pipeline align-new; pack new align-new; }
stageN() { echo "[$(date +%T)] N. the whole pipeline, this round's defaults, again"; time_pipeline align-new2; pack new2 align-new2; }
stagez() { echo "[$(date +%T)] z. the whole pipeline, the final code, CANDIDATES_FIRST=0"
           CANDIDATES_FIRST=0 time_pipeline align-zero; pack zero align-zero; }
stagef() { echo "[$(date +%T)] f. the whole pipeline, the final code, CANDIDATES_FIRST=1"
           CANDIDATES_FIRST=1 time_pipeline align-first; pack first align-first; }
stageb() { echo "[$(date +%T)] b. the whole pipeline, DTYPE=bf16"; DTYPE=bf16 time_pipeline align-bf16; pack bf16 align-bf16; }

stageo() {
echo "[$(date +%T)] o. the whole pipeline with 1068beb's code"
[ -n "${BEFORE:-}" ] && [ -d "$BEFORE/scdpo" ] || { echo "no BEFORE"; return 1; }
rm -rf "$R/before-src" && cp -r "$BEFORE" "$R/before-src"
[ -e "$R/before-src/scdpo/assets" ] || ln -s "$(cd src/scdpo/assets && pwd)" "$R/before-src/scdpo/assets"
PYTHONPATH=$R/before-src${PYTHONPATH:+:$PYTHONPATH} CANDIDATES_FIRST=0 time_pipeline align-old
pack old align-old
}

stagee() {
echo "[$(date +%T)] e. the whole eval against today's settings, with and without the sampler's graphs"
if [ "${TINY:-0}" = 1 ]; then TP="--device cpu --images 8 --steps 2 --eval-limit 4"; else TP="--images 256"; fi
{ echo "python3 benchmarks/emojiworld_throughput.py $TP --rows today --eval --graphs ($(gpu_name))"
  python3 "$B/emojiworld_throughput.py" $TP --rows today --eval --graphs --out "$R/rows-e" 2>&1 \
      | grep -vE "it/s\]" | grep -E "^\| [s]cdpo|^\| whole|^\| row|^\| today" ; } > "$R/rows-e.txt"
tar czf "$OUT/eval.tar.gz" -C "$R" rows-e.txt -C "$R/rows-e" eval.jsonl 2>/dev/null
cat "$R/rows-e.txt"
}

for k in ${ORDER:-n o N b e}; do "stage$k"; done
echo "[$(date +%T)] done"
