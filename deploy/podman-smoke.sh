#!/usr/bin/env bash
# The image for real, by hand (not a CI test: building the image needs a Debian mirror):
# a broker container on a named volume, a worker container, a job through the CLI in a third;
# then the broker killed (SIGKILL) with jobs queued and no worker, started again on its
# volume, and the jobs done by a new worker. Usage: deploy/podman-smoke.sh [IMAGE]
# (default localhost/zfleet:dev). PODMAN_OPTS adds options to every `podman run` (this
# project's VM needs "--runtime runc --ulimit nofile=4096:4096 --ulimit nproc=4096:4096":
# docs/DEPLOY.md §3). Ports 25555/25556 on the host network.
set -euo pipefail
img=${1:-localhost/zfleet:dev}
# shellcheck disable=SC2206 # options are words
opts=(${PODMAN_OPTS:-} --network host)
vol=zfleet-smoke-$$
ep=tcp://127.0.0.1:25555
wep=tcp://127.0.0.1:25556
cleanup() {
    podman rm -f -t 0 zs-broker zs-worker >/dev/null 2>&1 || true
    podman volume rm -f "$vol" >/dev/null 2>&1 || true
}
trap cleanup EXIT
# the last line: podman hands the CLI's stderr (a status line) to stdout too
cli() { podman run --rm "${opts[@]}" "$img" zfleet --broker "$ep" "$@" | tail -n 1; }
broker() {
    podman run -d --name zs-broker "${opts[@]}" -v "$vol":/var/lib/zfleet "$img" \
        broker --clients "tcp://127.0.0.1:25555" --workers "tcp://127.0.0.1:25556" >/dev/null
}
wait_broker() {
    for _ in $(seq 100); do cli stats >/dev/null 2>&1 && return 0; sleep 0.2; done
    podman logs zs-broker >&2
    echo "FAIL: the broker container does not answer" >&2
    exit 1
}
podman volume create "$vol" >/dev/null
broker
wait_broker
podman run -d --name zs-worker "${opts[@]}" "$img" worker --broker "$wep" --credits 4 >/dev/null
out=$(cli submit echo hello-from-a-container --wait --timeout 20000)
[ "$out" = hello-from-a-container ] || { echo "FAIL: echo gave '$out'" >&2; exit 1; }
echo "ok: a job through broker and worker containers"

podman rm -f -t 10 zs-worker >/dev/null # SIGTERM: the worker drains and leaves
ids=()
for i in 1 2 3; do ids+=("$(cli submit echo "queued-$i")"); done
podman kill -s KILL zs-broker >/dev/null
podman rm zs-broker >/dev/null
broker
wait_broker
podman run -d --name zs-worker "${opts[@]}" "$img" worker --broker "$wep" >/dev/null
for i in 1 2 3; do
    out=$(cli wait "${ids[$((i - 1))]}" --timeout 20000)
    [ "$out" = "queued-$i" ] || { echo "FAIL: job ${ids[$((i - 1))]} gave '$out'" >&2; exit 1; }
done
echo "ok: 3 jobs queued before a SIGKILL of the broker ran after its restart on the volume"
podman logs zs-broker 2>&1 | grep 'journal:' || true
podman stop -t 60 zs-broker >/dev/null
code=$(podman inspect -f '{{.State.ExitCode}}' zs-broker)
[ "$code" = 0 ] || { echo "FAIL: the broker exited $code on SIGTERM" >&2; exit 1; }
echo "ok: the broker container stops with exit 0 on SIGTERM"
