#!/usr/bin/env bash
# The fortieth round (issue 16): where each EmojiWorld command's seconds go beside its GPU work, and the
# pipeline after this round's changes. Files land flat in $OUT:
#   p. prof-cost.txt, prof-data.txt, prof-eval.txt, prof-train.txt, seconds-p.txt: each of the pipeline's kinds of
#      command in a fresh process under cProfile (main thread; the functions by cumulative and by own time),
#      at the pipeline's settings but smaller where the count of prompts or steps only scales the sampling: the
#      cost model whole (pool 8,000), the data build on 500 + 500 prompts, the base model's evaluation, two
#      LoRAs trained together for 100 steps. Where the set-up, the cost model's 20 s of features and 10 s of
#      adapter steps, and the commands' other seconds go (thirty-eighth round: the build's set-up 10.7 s, each
#      evaluation's 10-12 s, the trainings' 18 s);
#   1. pipeline.txt, pipeline-compare.md, seconds.txt: emojiworld_alignment.sh with this round's defaults (EmojiWorld's
#      sampling in TF32 under `auto` on a CUDA GPU, PNGs at zlib level 1);
#   0. pipeline-before.txt, pipeline-before-compare.md, seconds-before.txt: the same with 8352f61's code (BEFORE=DIR:
#      its src/scdpo, carried in), right after stage 1 on the same machine;
#   e. rows.txt: the whole `scdpo eval` and `scdpo data build` (250 + 250 prompts) against today's settings (fp32
#      pinned, a warm-up run first), the defaults, and --dtype fp32 and bf16, on stage 1's cost model; each row's
#      seconds by phase in eval.jsonl / build.jsonl (rows.tar.gz);
#   h. pipeline-bf16.txt, ...: the whole pipeline with DTYPE=bf16, for the record (sampling 1.66x fp32's; 16.8% of
#      the build's choices moved in the thirty-sixth round);
#   f. rows-f.txt, rows-f.tar.gz: stage e again on a new machine, with a cost model of its own (COST=DIR, else one
#      trained here at the pipeline's settings), `--dtype tf32` once more (the defaults' settings, a second sample
#      of them in the same run) and the eval's row with the sampler's CUDA graphs (--graphs).
# The stage p ran on 2026-12-06 (BENCHMARKS.md, "Fortieth round"); ORDER="1 0 e h" after this round's changes,
# then ORDER=f on a second machine.
#
#   . scripts/device_env.sh && BEFORE=runs/before-src bash benchmarks/detach.sh r40 bash benchmarks/round40.sh
#       # device: carry .carry/s3 and runs/before-src after .carry/s1 and .carry/s2, every call in ONE message,
#       # the detach command repeated
#   TINY=1 R=/tmp/r40 OUT=/tmp/r40/out BEFORE=runs/before-src bash benchmarks/round40.sh   # CPU dry run
. "$(dirname "$0")/round_env.sh" r40

# prof NAME ARGS...: `scdpo ARGS` in a fresh process under cProfile; its wall time and its two tables to
# $OUT/prof-NAME.txt
prof() { local name=$1 start; shift; start=$(date +%s.%N)
    python3 -m cProfile -o "$R/$name.prof" -m scdpo.cli "$@" > "$R/$name.log" 2>&1 || { tail "$R/$name.log"; return 1; }
    { echo "scdpo $* ($(gpu_name)): $(python3 -c "import sys; print(round($(date +%s.%N) - float(sys.argv[1]), 1))" "$start") s wall"
      python3 - "$R/$name.prof" <<'PY'
import pstats, sys
s = pstats.Stats(sys.argv[1])
s.sort_stats("cumulative").print_stats(70)
s.sort_stats("tottime").print_stats(40)
PY
    } > "$OUT/prof-$name.txt" 2>&1
    head -1 "$OUT/prof-$name.txt"
}

stagep() {
echo "[$(date +%T)] p. each command under cProfile"
if [ "${TINY:-0}" = 1 ]; then COST="--pool 64 --eval-n 16 --steps 20"; N=8; STEPS=2; TSTEPS=4; BATCH=2
    DATA_TINY="--uniform-rule reward --cost-budget 1000"
else COST="--pool 8000 --eval-n 300"; N=500; STEPS=20; TSTEPS=100; BATCH=32; DATA_TINY=""; fi
prof cost cost train --out "$R/cost" $COST --no-progress || return 1
prof data data build --model emojiworld --cost-model "$R/cost" --reward emojiworld --harmful align-harmful \
    --clean align-clean --n-harmful $N --n-clean $N --candidates 4 --steps $STEPS --safe-prompt-winner $DATA_TINY \
    --out "$R/scp" || return 1
prof eval eval --model emojiworld --suites eval-harmful-explicit eval-harmful-implicit eval-clean eval-mixed \
    --steps $STEPS --cost-model "$R/cost" --name base --out "$R/eval-base" ${TINY:+--limit 4} || return 1
prof train train --config configs/emojiworld.yaml --dataset "$R/scp" --max-steps $TSTEPS --batch-size $BATCH \
    --warmup 50 --validate-every 0 --checkpoint-every 100000 --log-every 50 --out "$R/lora-together" --together \
    --run "$R/lora-dpo=--loss dpo" --run "$R/lora-sc-dpo=--loss sc-dpo" || return 1
seconds_report "$R" > "$OUT/seconds-p.txt"; cat "$OUT/seconds-p.txt"
}

stage1() {
echo "[$(date +%T)] 1. the whole pipeline with this round's defaults"
time_pipeline
seconds_report "$R/align" > "$OUT/seconds.txt"
}

stage0() {
echo "[$(date +%T)] 0. the whole pipeline with 8352f61's code"
[ -n "${BEFORE:-}" ] && [ -d "$BEFORE/scdpo" ] || { echo "no BEFORE"; return 1; }
[ -e "$BEFORE/scdpo/assets" ] || ln -s "$(cd src/scdpo/assets && pwd)" "$BEFORE/scdpo/assets"
PYTHONPATH=$(cd "$BEFORE" && pwd)${PYTHONPATH:+:$PYTHONPATH} time_pipeline align-before
seconds_report "$R/align-before" > "$OUT/seconds-before.txt"
}

stagee() {
echo "[$(date +%T)] e. the whole eval and data build against today's settings"
if [ "${TINY:-0}" = 1 ]; then TP="--device cpu --images 8 --steps 2 --eval-limit 4 --build-prompts 4"
else TP="--images 256 --build-prompts 250"; fi
{ echo "python3 benchmarks/emojiworld_throughput.py $TP --rows today --eval --build COST --dtypes fp32 bf16 ($(gpu_name))"
  python3 "$B/emojiworld_throughput.py" $TP --rows today --eval --build "$R/align/cost" --dtypes fp32 bf16 \
      --out "$R/rows" 2>&1 | grep -vE "it/s\]" | grep -E "^\| [s]cdpo|^\| whole|^\| row|^\| today" ; } > "$OUT/rows.txt"
tar czf "$OUT/rows.tar.gz" -C "$R/rows" eval.jsonl build.jsonl 2>/dev/null
cat "$OUT/rows.txt"
}

stagef() {
echo "[$(date +%T)] f. the whole eval and data build again, a second sample of the defaults, the sampler's graphs"
if [ "${TINY:-0}" = 1 ]; then TP="--device cpu --images 8 --steps 2 --eval-limit 4 --build-prompts 4"
    CT="--pool 64 --eval-n 16 --steps 20"
else TP="--images 256 --build-prompts 250"; CT="--pool 8000 --eval-n 300"; fi
cost=${COST:-$R/align/cost}
if [ ! -f "$cost/config.json" ]; then
    cost=$R/cost-f
    python3 -m scdpo.cli cost train --out "$cost" $CT --no-progress > "$R/cost-f.log" 2>&1 || { tail "$R/cost-f.log"; return 1; }
fi
{ echo "python3 benchmarks/emojiworld_throughput.py $TP --rows today --eval --build COST --dtypes tf32 fp32 bf16 --graphs ($(gpu_name))"
  python3 "$B/emojiworld_throughput.py" $TP --rows today --eval --build "$cost" --dtypes tf32 fp32 bf16 --graphs \
      --out "$R/rows-f" 2>&1 | grep -vE "it/s\]" | grep -E "^\| [s]cdpo|^\| whole|^\| row|^\| today" ; } > "$OUT/rows-f.txt"
tar czf "$OUT/rows-f.tar.gz" -C "$R/rows-f" eval.jsonl build.jsonl 2>/dev/null
cat "$OUT/rows-f.txt"
}

stageh() {
echo "[$(date +%T)] h. the whole pipeline with DTYPE=bf16"
DTYPE=bf16 time_pipeline align-bf16
seconds_report "$R/align-bf16" > "$OUT/seconds-bf16.txt"
}

for k in ${ORDER:-1 0 e h}; do "stage$k"; done
echo "[$(date +%T)] done"
