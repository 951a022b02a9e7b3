#!/bin/bash
# The work one broker restart costs: a fleet of W workers busy on W `spin` jobs of 5 s; the
# broker is killed (SIGKILL) 2.5 s in and started again on the same journal 1 s later. The
# workers' CPU time (utime + stime from /proc) minus the useful work (W x 5 s) is the work
# repeated because of the restart. Run from the repository root with a built tree:
#   bench/reattach_cost.sh [BUILD_DIR] [WORKERS]
# Prints one line: workers, CPU-s used, CPU-s useful, CPU-s repeated, attempts, wall time.
set -u
B=${1:-build}
W=${2:-4}
D=$(mktemp -d /tmp/reattach-cost.XXXXXX)
CEP=ipc://$D/c
WEP=ipc://$D/w
HZ=$(getconf CLK_TCK)
broker() {
    "$B/broker/zfleet-broker" --clients "$CEP" --workers "$WEP" --data "$D/data" \
        >>"$D/broker.log" 2>&1 &
    BPID=$!
    for _ in $(seq 100); do
        ZFLEET_BROKER=$CEP "$B/client/zfleet" stats >/dev/null 2>&1 && return
        sleep 0.05
    done
}
cleanup() { kill -9 "$BPID" "${WPIDS[@]}" 2>/dev/null; wait 2>/dev/null; rm -rf "$D"; }
trap cleanup EXIT
broker
WPIDS=()
for i in $(seq "$W"); do
    "$B/worker/zfleet-worker" --broker "$WEP" --name "w$i" >>"$D/workers.log" 2>&1 &
    WPIDS+=($!)
done
until [ "$(ZFLEET_BROKER=$CEP "$B/client/zfleet" --json workers 2>/dev/null | grep -o '"name"' | wc -l)" -ge "$W" ]; do
    sleep 0.1
done
T0=$(date +%s.%N)
IDS=()
for i in $(seq "$W"); do
    IDS+=("$(ZFLEET_BROKER=$CEP "$B/client/zfleet" submit spin 5000)")
done
sleep 2.5
kill -9 "$BPID"
wait "$BPID" 2>/dev/null
sleep 1
broker
ATT=0
for id in "${IDS[@]}"; do
    out=$(ZFLEET_BROKER=$CEP "$B/client/zfleet" --json wait "$id" --timeout 120000)
    a=$(echo "$out" | grep -o '"attempts": *[0-9]*' | grep -o '[0-9]*$')
    ATT=$((ATT + ${a:-0}))
done
T1=$(date +%s.%N)
TICKS=0
for p in "${WPIDS[@]}"; do
    read -r -a st <"/proc/$p/stat"
    TICKS=$((TICKS + st[13] + st[14]))
done
awk -v t="$TICKS" -v hz="$HZ" -v w="$W" -v a="$ATT" -v t0="$T0" -v t1="$T1" 'BEGIN {
    used = t / hz; useful = w * 5;
    printf "workers %d  cpu_s_used %.1f  cpu_s_useful %.1f  cpu_s_repeated %.1f  attempts %d  wall_s %.1f\n",
        w, used, useful, used - useful, a, t1 - t0 }'
