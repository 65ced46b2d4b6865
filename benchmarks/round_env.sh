# Sourced by a round's script (round35.sh on) before its stages: `. "$(dirname "$0")/round_env.sh" rNN` sets
# R (the round's working folder, default /tmp/rNN), OUT (what the device brings back, default $R/out) and B
# (benchmarks/), makes the folders, and sources pipeline_report.sh (gpu_name, pipeline_report, time_pipeline).
set -u
R=${R:-/tmp/$1}
OUT=${OUT:-$R/out}
mkdir -p "$R" "$OUT"
B=$(dirname "${BASH_SOURCE[0]}")
. "$B/pipeline_report.sh"
