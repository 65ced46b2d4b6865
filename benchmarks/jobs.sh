# Sourced by the EmojiWorld benchmark scripts (emojiworld_alignment.sh, _baselines.sh, _attacks.sh,
# _round4.sh): the job plumbing they share. Needs R (the run folder) and PAR (jobs at once);
# STAGES for has(); DEADLINE (seconds after sourcing) stops bg() from starting new jobs, so a
# device call ends inside its limit (unset: no deadline).
mkdir -p "$R/logs"
T0=$(date +%s)
scdpo() { python3 -m scdpo.cli "$@"; }
stamp() { echo "[$(date +%T)] $*"; }
has() { case " $STAGES " in *" $1 "*) return 0;; esac; return 1; }
# run "$@" in the background with its log and exit code under $R/logs; at most PAR at once
bg() { local log=$1; shift; while [ "$(jobs -rp | wc -l)" -ge "$PAR" ]; do sleep 1; done
       [ $(( $(date +%s) - T0 )) -lt "${DEADLINE:-1000000000}" ] || { echo "deadline: $log not started"; return 0; }
       ( "$@" >> "$R/logs/$log.log" 2>&1; echo $? > "$R/logs/$log.rc" ) & }
# `scdpo eval compare` of every finished evaluation under $R, and its table
compare_runs() { local runs
    runs=$(ls -d "$R"/eval-*/ 2>/dev/null | while read -r d; do [ -f "$d/metrics.json" ] && echo "${d%/}"; done)
    scdpo eval compare $runs --out "$R/compare" > "$R/logs/compare.log" 2>&1
    cat "$R/compare/table.md" 2>/dev/null || tail "$R/logs/compare.log"; }
# every job whose exit code was not 0, with the end of its log
report_failures() { local f
    for f in "$R"/logs/*.rc; do [ -e "$f" ] || continue
        [ "$(cat "$f")" = 0 ] || { echo "FAILED: $f"; tail -5 "${f%.rc}.log"; }; done; }
# wait for every background job but the given PIDs (the packer, the judge). Not a bare `wait` on an
# empty list: that waits for the packer's endless loop too (a rerun with every training done hung so)
wait_jobs() { local skip=" $* " pids=() p
    for p in $(jobs -rp); do case "$skip" in *" $p "*) ;; *) pids+=("$p");; esac; done
    [ ${#pids[@]} = 0 ] || wait "${pids[@]}" 2>/dev/null; }
# SEED_FROM (a folder of LoRAs trained in earlier rounds): copied into $R, never over what is there,
# so the device carries that folder and not $R: the device tool replaces a carried path on every
# call, and carrying $R itself deleted a running round's outputs (thirteenth round, BENCHMARKS.md)
seed_from() { [ -n "${SEED_FROM:-}" ] || return 0
    [ -d "$SEED_FROM" ] || { echo "SEED_FROM=$SEED_FROM is not a folder: carry it, or unset SEED_FROM"; return 2; }
    cp -rn "$SEED_FROM"/. "$R"/; }
