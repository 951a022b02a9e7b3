#!/bin/sh
# The container's entrypoint (deploy/Dockerfile): its first argument names the program, the
# rest are that program's own options.
#   broker ARGS   zfleet-broker, listening on every interface (--clients tcp://0.0.0.0:5555
#                 --workers tcp://0.0.0.0:5556) with its journal on the volume
#                 (--data /var/lib/zfleet); ARGS come after these, so they win
#   worker ARGS   one zfleet-worker (ZFLEET_WORKER_BROKER or --broker: the broker's :5556)
#   fleet ARGS    zfleet-worker --fleet: one worker per device, supervised, drained on SIGTERM
#   zfleet ARGS   the CLI (ZFLEET_BROKER or --broker: the broker's :5555)
#   anything else is run as it is (a shell, say)
# tini runs this as its child and passes SIGTERM on to the program exec'd here, alone: the
# fleet then drains its workers once (a second SIGTERM to a worker means "leave now", which is
# why it must not reach them directly), and tini reaps orphans a handler's children leave.
# ZFLEET_BIN (default /usr/local/bin) is where the programs are; tests point it at a build.
set -eu
bin=${ZFLEET_BIN:-/usr/local/bin}
[ $# -gt 0 ] || set -- broker
cmd=$1
shift
case "$cmd" in
broker)
    exec "$bin/zfleet-broker" --clients tcp://0.0.0.0:5555 --workers tcp://0.0.0.0:5556 \
        --data "${ZFLEET_DATA:-/var/lib/zfleet}" "$@" ;;
worker) exec "$bin/zfleet-worker" "$@" ;;
fleet) exec "$bin/zfleet-worker" --fleet "$@" ;;
zfleet) exec "$bin/zfleet" "$@" ;;
*) exec "$cmd" "$@" ;;
esac
