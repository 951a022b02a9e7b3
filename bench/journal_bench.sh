#!/bin/sh
# Journal cost on the echo throughput workload: runs `zfleet bench throughput` against a
# fresh broker with --no-journal, --fsync always, --fsync interval:10 (and never), side by
# side, on this machine. Usage: bench/journal_bench.sh [BUILD_DIR] [JOBS] [WORKERS] [CREDITS]
# The journal lives in a scratch directory under $TMPDIR (default /tmp): put TMPDIR on the
# disk you want to measure.
set -eu
B=${1:-build}
JOBS=${2:-50000}
WORKERS=${3:-2}
CREDITS=${4:-8}
T=$(mktemp -d "${TMPDIR:-/tmp}/zfjbench.XXXXXX")
PIDS=""
stop() { [ -n "$PIDS" ] && kill $PIDS 2>/dev/null; for p in $PIDS; do wait "$p" 2>/dev/null || true; done; PIDS=""; }
trap 'stop; rm -rf "$T"' EXIT INT TERM
run() { # label, broker journal options...
    label=$1; shift
    rm -rf "$T/data" "$T/c" "$T/w"
    "$B/broker/zfleet-broker" --clients "ipc://$T/c" --workers "ipc://$T/w" "$@" \
        >"$T/broker.log" 2>&1 &
    PIDS=$!
    i=0; while [ $i -lt $WORKERS ]; do
        "$B/worker/zfleet-worker" --broker "ipc://$T/w" --credits "$CREDITS" >/dev/null 2>&1 &
        PIDS="$PIDS $!"
        i=$((i + 1))
    done
    sleep 1
    out=$("$B/client/zfleet" --broker "ipc://$T/c" bench throughput --jobs "$JOBS" --json)
    rate=$(printf '%s' "$out" | sed -n 's/.*"jobs_per_s":\([0-9.]*\).*/\1/p')
    errors=$(printf '%s' "$out" | sed -n 's/.*"errors":\([0-9]*\).*/\1/p')
    size=$( [ -f "$T/data/journal" ] && stat -c %s "$T/data/journal" || echo -)
    printf '%-22s %12s %8s %14s\n' "$label" "${rate:-?}" "${errors:-?}" "$size"
    stop
}
printf '%-22s %12s %8s %14s\n' "policy" "jobs/s" "errors" "journal bytes"
run "--no-journal" --no-journal
run "--fsync always" --data "$T/data" --fsync always
run "--fsync interval:10" --data "$T/data" --fsync interval:10
run "--fsync never" --data "$T/data" --fsync never
