# Sourced by the rounds that time benchmarks/emojiworld_alignment.sh (round29.sh, round30.sh, round33.sh on):
#   pipeline_report TITLE ALIGN_DIR LOG START   prints the GPU, each stage's start, the whole wall time since
#   START (epoch seconds), each training's mean rate (its progress bar's last line), whatever its log says
#   of CUDA graphs, each LoRA's last loss and graph replays (metrics.json), and the failures
#   time_pipeline [NAME]                        runs it with its defaults and writes that report (below)
#   seconds_report DIR                          where its commands' seconds went (below)
gpu_name() { python3 -c 'import torch; print(torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu")'; }
pipeline_report() {
    local title=$1 dir=$2 log=$3 start=$4 f
    echo "$title, $(gpu_name)"
    grep '^\[' "$log"; echo "whole: $(( $(date +%s) - start )) s wall"
    for f in "$dir"/logs/train-*.log; do
        [ -f "$f" ] || continue
        echo "${f##*/}: $(tr '\r' '\n' < "$f" | grep -E '^train .*100%' | tail -1 | grep -oE '[0-9.]+(it/s|s/it)' | head -1)"
        grep -hi "cuda.graphs" "$f" | head -3; done
    for f in "$dir"/lora-*/metrics.json; do
        [ -f "$f" ] && echo "${f%/metrics.json}: $(python3 -c 'import json, sys; m = json.load(open(sys.argv[1]))
print({k: m[k] for k in ("steps", "loss", "cuda_graph_replays", "cuda_graphs_on", "seconds") if k in m})' "$f")"; done
    grep -h FAILED "$log"
}
# time_pipeline [NAME]: emojiworld_alignment.sh (cost data train eval compare) in $R/NAME (default align), with the
# caller's environment (its defaults, or e.g. DTYPE=tf32), timed from here; its report to $OUT/pipeline.txt and its
# comparison table to $OUT/pipeline-compare.md (round33.sh on), with -NAME before .txt/.md for another NAME
time_pipeline() {
    local start here name=${1:-align} tag
    tag=${name#align}; [ "$tag" != "$name" ] || tag=-$name  # align-tf32: -tf32
    start=$(date +%s); here=$(dirname "${BASH_SOURCE[0]}")
    R=$R/$name STAGES="cost data train eval compare" bash "$here/emojiworld_alignment.sh" > "$R/$name.log" 2>&1
    pipeline_report "emojiworld_alignment.sh (cost data train eval compare), the defaults${DTYPE:+, DTYPE=$DTYPE}${WARM:+, WARM=$WARM}${EVAL_FLAGS:+, EVAL_FLAGS=$EVAL_FLAGS}" \
        "$R/$name" "$R/$name.log" "$start" > "$OUT/pipeline$tag.txt"
    cp "$R/$name/compare/table.md" "$OUT/pipeline$tag-compare.md" 2>/dev/null
    cat "$OUT/pipeline$tag.txt"
}
# seconds_report DIR: every "seconds" by phase a pipeline's commands wrote under DIR (the trainings' metrics.json
# "seconds", the evaluations' "seconds_by_phase" and "worker_seconds_by_phase", the data build's seconds.json),
# one line each (round38.sh on)
seconds_report() {
    python3 - "$1" <<'PY'
import json, sys
from pathlib import Path
for path in sorted(Path(sys.argv[1]).rglob("*.json")):
    try:
        data = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError):
        continue
    for key, value in (data.items() if isinstance(data, dict) else ()):
        if "seconds" in key and isinstance(value, dict):
            print(f"{path.relative_to(sys.argv[1])} {key}: {value}")
PY
}
# pack_pipeline NAME DIR: the pipeline in DIR (a time_pipeline name under $R): its report files, seconds by phase, cost
# model metrics and warm server log into $OUT/NAME.tar.gz (the device brings back a few files a call; round42.sh on)
pack_pipeline() { local name=$1 dir=$2 tag
    tag=${dir##*/}; tag=${tag#align}
    seconds_report "$R/$dir" > "$R/seconds$tag.txt"
    cp "$R/$dir/cost/metrics.json" "$R/cost-metrics$tag.json" 2>/dev/null
    cp "$R/$dir/logs/warm.log" "$R/warm$tag.log" 2>/dev/null
    cp "$OUT/pipeline$tag.txt" "$OUT/pipeline$tag-compare.md" "$R/" 2>/dev/null
    tar czf "$OUT/$name.tar.gz" -C "$R" "pipeline$tag.txt" "pipeline$tag-compare.md" "seconds$tag.txt" \
        $(cd "$R" && ls "cost-metrics$tag.json" "warm$tag.log" 2>/dev/null)
    rm -f "$OUT/pipeline$tag.txt" "$OUT/pipeline$tag-compare.md"  # in the tar: few files a call come back
    cat "$R/seconds$tag.txt"; python3 -c 'import json, sys; m = json.load(open(sys.argv[1]))
print("cost:", {k: m.get(k) for k in ("feature_seconds", "adapter_seconds", "total_seconds")})' "$R/cost-metrics$tag.json" 2>/dev/null
}
