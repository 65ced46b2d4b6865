# Sourced by the rounds that time benchmarks/emojiworld_alignment.sh (round29.sh, round30.sh, round33.sh on):
#   pipeline_report TITLE ALIGN_DIR LOG START   prints the GPU, each stage's start, the whole wall time since
#   START (epoch seconds), each training's mean rate (its progress bar's last line), whatever its log says
#   of CUDA graphs, each LoRA's last loss and graph replays (metrics.json), and the failures
#   time_pipeline                               runs it with its defaults and writes that report (below)
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
# time_pipeline: emojiworld_alignment.sh (cost data train eval compare) with its defaults in $R/align, timed from
# here; its report to $OUT/pipeline.txt, its comparison table to $OUT/pipeline-compare.md (round33.sh on)
time_pipeline() {
    local start here
    start=$(date +%s); here=$(dirname "${BASH_SOURCE[0]}")
    R=$R/align STAGES="cost data train eval compare" bash "$here/emojiworld_alignment.sh" > "$R/align.log" 2>&1
    pipeline_report "emojiworld_alignment.sh (cost data train eval compare), the defaults" "$R/align" \
        "$R/align.log" "$start" > "$OUT/pipeline.txt"
    cp "$R/align/compare/table.md" "$OUT/pipeline-compare.md" 2>/dev/null
    cat "$OUT/pipeline.txt"
}
