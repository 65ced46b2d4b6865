# Sourced by a round's script (round35.sh on) before its stages: `. "$(dirname "$0")/round_env.sh" rNN` sets
# R (the round's working folder, default /tmp/rNN), OUT (what the device brings back, default $R/out) and B
# (benchmarks/), makes the folders, and sources pipeline_report.sh (gpu_name, pipeline_report, time_pipeline).
set -u
R=${R:-/tmp/$1}
OUT=${OUT:-$R/out}
mkdir -p "$R" "$OUT"
B=$(dirname "${BASH_SOURCE[0]}")
. "$B/pipeline_report.sh"

# sd_sampling NAME BUDGET_S ARGS...: one stage of SD 1.5-shaped sampling (`gpu_sampling.py --only-best ARGS`, a
# 600 s budget and the tiny pipeline under TINY=1), its rows and log packed into $OUT/NAME.tar.gz, its table printed
# (round43.sh on)
sd_sampling() {
    local name=$1 budget=(--budget-s "$2"); shift 2
    [ "${TINY:-0}" = 1 ] && budget=(--tiny --budget-s 600)
    python3 "$B/gpu_sampling.py" "${budget[@]}" --only-best "$@" --out "$R/$name.jsonl" > "$R/$name.log" 2>&1
    tar czf "$OUT/$name.tar.gz" -C "$R" "$name.jsonl" "$name.log"
    sed -n '/^## Sampling/,$p' "$R/$name.log"
}
