#!/usr/bin/env bash
# bench/batchy.sh — dynamic batching (issue 17): the batchy function (2 ms per call + 0.05 ms
# per job, bench/batchy.c) batched (max_batch 32, max_delay 5 ms) against the same function
# unbatched, in the same run, on the same broker and 2 workers (--credits 1: the batched
# function raises a worker's credits to 32 by itself).
#   throughput: JOBS (2000) jobs submitted at once (--inflight JOBS), jobs/s
#   latency:    LAT_JOBS (300) sequential round trips of a lone job at idle, p50/p99 in us
# Environment: BUILD=DIR (build), RESULTS=DIR (a temp dir), JOBS, LAT_JOBS.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BUILD=${BUILD:-$ROOT/build}
JOBS=${JOBS:-2000}
LAT_JOBS=${LAT_JOBS:-300}
RESULTS=${RESULTS:-$(mktemp -d /tmp/zfleet-batchy.XXXXXX)}
ninja -C "$BUILD" broker/zfleet-broker worker/zfleet-worker client/zfleet bench/zf_batchy.so \
    >"$RESULTS/ninja.log"
CEP=ipc://$RESULTS/c
WEP=ipc://$RESULTS/w
"$BUILD/broker/zfleet-broker" --clients "$CEP" --workers "$WEP" --no-journal \
    >"$RESULTS/broker.log" 2>&1 &
PIDS=($!)
trap 'kill "${PIDS[@]}" 2>/dev/null || true; wait 2>/dev/null || true' EXIT
sleep 0.3
for i in 1 2; do
    "$BUILD/worker/zfleet-worker" --broker "$WEP" --credits 1 --name "batchy-$i" \
        --module "$BUILD/bench/zf_batchy.so" >"$RESULTS/worker-$i.log" 2>&1 &
    PIDS+=($!)
done
ZF=("$BUILD/client/zfleet" --broker "$CEP")
for t in $(seq 50); do
    [ "$("${ZF[@]}" --json workers | grep -o '"name"' | wc -l)" -ge 2 ] && break
    sleep 0.1
done
get() { /usr/bin/python3 -c "import json,sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])" "$@"; }
for fn in batchy1 batchy; do
    "${ZF[@]}" bench throughput --function "$fn" --jobs "$JOBS" --inflight "$JOBS" --json \
        >"$RESULTS/throughput-$fn.json"
    "${ZF[@]}" bench latency --function "$fn" --jobs "$LAT_JOBS" --warmup 20 --json \
        >"$RESULTS/latency-$fn.json"
done
"${ZF[@]}" stats >"$RESULTS/stats.txt"
printf '%-10s %12s %10s %10s %8s\n' FUNCTION JOBS_PER_S P50_US P99_US ERRORS
for fn in batchy1 batchy; do
    printf '%-10s %12s %10s %10s %8s\n' "$fn" \
        "$(get "$RESULTS/throughput-$fn.json" jobs_per_s)" \
        "$(get "$RESULTS/latency-$fn.json" p50_us)" "$(get "$RESULTS/latency-$fn.json" p99_us)" \
        "$(( $(get "$RESULTS/throughput-$fn.json" errors) + $(get "$RESULTS/latency-$fn.json" errors) ))"
done
grep "batch mean" "$RESULTS/stats.txt" || true
echo "results in $RESULTS" >&2
