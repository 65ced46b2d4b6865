#!/usr/bin/env bash
# Run a benchmark round on the device machine so that it outlives the 10-minute calls (BENCHMARKS.md,
# "Eleventh round"): the first call starts it in a new process session (setsid; the device tool kills
# every other process a call leaves running), every call then waits up to WAIT seconds for it and
# copies what it packed so far into $OUT. The same command, run again on the warm machine, just
# waits again: no training is cut at a call's end and resumed from a checkpoint.
#
#   . scripts/device_env.sh && bash benchmarks/detach.sh r11 DEADLINE=100000 bash benchmarks/round10.sh
#
# NAME names the round (its folder /tmp/detach-NAME: log, rc, and out/, the round's own $OUT); the
# rest is the command, with leading VAR=value words set in its environment (env). Never matched by
# process name (the device's lesson): the round's own shell writes its exit code to /tmp/detach-NAME/rc.
set -u
name=$1; shift
D=/tmp/detach-$name
mkdir -p "$D/out"
if [ ! -f "$D/pid" ]; then
    # $0 of the inner shell is the folder; the round's exit code lands in $D/rc when it ends
    OUT=$D/out setsid bash -c 'env "$@"; echo $? > "$0/rc"' "$D" "$@" > "$D/log" 2>&1 < /dev/null &
    echo $! > "$D/pid"
    echo "started $name (pid $(cat "$D/pid")): $*"
fi
end=$((SECONDS + ${WAIT:-560}))
while [ ! -f "$D/rc" ] && [ "$SECONDS" -lt "$end" ]; do sleep 5; done
[ -n "${OUT:-}" ] && cp "$D"/out/* "$OUT"/ 2>/dev/null
tail -n "${TAIL:-25}" "$D/log"
if [ -f "$D/rc" ]; then echo "detach: $name ended (exit code $(cat "$D/rc"))"; else echo "detach: $name still running; run the same command again"; fi
