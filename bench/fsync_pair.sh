#!/bin/sh
# `--fsync always` against in-memory (`--no-journal`) at credits 1, in pairs measured one
# after the other on this machine (issue 19 part 2: the fsync off the event loop). Each
# round runs `zfleet bench throughput` on a fresh broker with --no-journal, then with
# --data and --fsync always (the flusher thread), and, if BEFORE names another zfleet-broker
# binary (an older build), that one with --fsync always too, or with BEFORE=inline this
# build with --fsync always-inline (the fdatasync in the loop), all with the same workers
# and client.
# Usage: bench/fsync_pair.sh [BUILD_DIR] [JOBS] [ROUNDS] [WORKERS]   (env BEFORE=path|inline)
set -eu
B=${1:-build}
JOBS=${2:-20000}
ROUNDS=${3:-3}
WORKERS=${4:-2}
T=$(mktemp -d "${TMPDIR:-/tmp}/zffpair.XXXXXX")
PIDS=""
stop() { [ -n "$PIDS" ] && kill $PIDS 2>/dev/null; for p in $PIDS; do wait "$p" 2>/dev/null || true; done; PIDS=""; }
trap 'stop; rm -rf "$T"' EXIT INT TERM
run() { # broker binary, broker options... ; prints jobs/s and errors
    broker=$1; shift
    rm -rf "$T/data" "$T/c" "$T/w"
    "$broker" --clients "ipc://$T/c" --workers "ipc://$T/w" "$@" >"$T/broker.log" 2>&1 &
    PIDS=$!
    i=0; while [ $i -lt $WORKERS ]; do
        "$B/worker/zfleet-worker" --broker "ipc://$T/w" --credits 1 >/dev/null 2>&1 &
        PIDS="$PIDS $!"
        i=$((i + 1))
    done
    sleep 1
    out=$("$B/client/zfleet" --broker "ipc://$T/c" bench throughput --jobs "$JOBS" --json)
    rate=$(printf '%s' "$out" | sed -n 's/.*"jobs_per_s":\([0-9.]*\).*/\1/p')
    errors=$(printf '%s' "$out" | sed -n 's/.*"errors":\([0-9]*\).*/\1/p')
    stop
    echo "${rate:-0} ${errors:-?}"
}
printf '%-6s %14s %14s %8s %14s %8s %s\n' round no-journal always ratio before ratio errors
r=1
while [ $r -le "$ROUNDS" ]; do
    set -- $(run "$B/broker/zfleet-broker" --no-journal); mem=$1; e1=$2
    set -- $(run "$B/broker/zfleet-broker" --data "$T/data" --fsync always); alw=$1; e2=$2
    old=- ro=- e3=-
    if [ -n "${BEFORE:-}" ]; then
        if [ "$BEFORE" = inline ]; then
            set -- $(run "$B/broker/zfleet-broker" --data "$T/data" --fsync always-inline)
        else
            set -- $(run "$BEFORE" --data "$T/data" --fsync always)
        fi
        old=$1; e3=$2
        ro=$(awk "BEGIN{printf \"%.2f\", $old / $mem}")
    fi
    printf '%-6s %14s %14s %8s %14s %8s %s\n' "$r" "$mem" "$alw" \
        "$(awk "BEGIN{printf \"%.2f\", $alw / $mem}")" "$old" "$ro" "$e1/$e2/$e3"
    r=$((r + 1))
done
