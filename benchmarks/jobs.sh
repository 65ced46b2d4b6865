# Sourced by the EmojiWorld benchmark scripts (emojiworld_alignment.sh, _baselines.sh, _attacks.sh,
# _round4.sh): the job plumbing they share. Needs R (the run folder) and PAR (jobs at once);
# STAGES for has(); DEADLINE (seconds after sourcing) stops bg() from starting new jobs, so a
# device call ends inside its limit (unset: no deadline).
mkdir -p "$R/logs"
T0=$(date +%s)
scdpo() { python3 -m scdpo.cli "$@"; }
# WARM=1 (the default on Linux): every scdpo command of the script is forked from one server that imported torch,
# diffusers, transformers and scdpo once (scdpo.utils.warm) instead of importing them again in each process: on one
# H100 the whole emojiworld_alignment.sh took 209-225 s against 245-257 s with WARM=0, its tables the same to the
# character (docs/performance.md, "Warm starts"). WARM=0: each command a fresh process, as before. A script run by this
# one (emojiworld_baselines.sh) reuses the server through WARM_SOCKET; the script that started it stops it at its exit
# (one with its own EXIT trap calls warm_stop from it).
# warm_stop: stop the server this script started (scripts with an EXIT trap of their own call it from theirs)
warm_stop() { [ -z "${_warm_started:-}" ] || python3 -m scdpo.utils.warm stop "$WARM_SOCKET" 2>/dev/null; }
if [ "${WARM:-$([ "$(uname -s)" = Linux ] && echo 1)}" = 1 ]; then
    # in a folder only this user can open (the server serves its own user only, and a client trusts no other's)
    export WARM_SOCKET=${WARM_SOCKET:-$(mktemp -d /tmp/scdpo-warm-XXXXXX)/s.sock}
    if _warm=$(python3 -m scdpo.utils.warm start "$WARM_SOCKET" --log "$R/logs/warm.log"); then
        [ "$_warm" = "already running" ] || { _warm_started=1; trap warm_stop EXIT; }
        # a server gone (stopped by the script that started it, idle too long) leaves its commands cold, not failed
        scdpo() { python3 -m scdpo.utils.warm run --wait 0 --cold-if-absent "$WARM_SOCKET" -- "$@"; }
    else
        echo "WARM=1: the warm server did not start (above; $R/logs/warm.log); the commands run cold"
    fi
fi
stamp() { echo "[$(date +%T)] $*"; }
has() { case " $STAGES " in *" $1 "*) return 0;; esac; return 1; }
# run "$@" in the background with its log and exit code under $R/logs; at most PAR at once
bg() { local log=$1; shift; while [ "$(jobs -rp | wc -l)" -ge "$PAR" ]; do sleep 1; done
       [ $(( $(date +%s) - T0 )) -lt "${DEADLINE:-1000000000}" ] || { echo "deadline: $log not started"; return 0; }
       # the command runs in the background of its subshell, so a TERM to the subshell (`kill $(jobs -rp)`, a failed
       # stage) reaches it too instead of leaving it running, a GPU and its folder's lock held
       ( "$@" >> "$R/logs/$log.log" 2>&1 & c=$!
         t=; trap 'kill $c 2>/dev/null; t=1' TERM
         wait $c; rc=$?
         [ -z "$t" ] || { wait $c; rc=$?; }  # the trap cut the wait short: the command's own exit code
         echo $rc > "$R/logs/$log.rc" ) & }
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
