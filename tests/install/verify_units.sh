#!/usr/bin/env bash
# The systemd units of deploy/systemd/ under `systemd-analyze verify` (which must print
# nothing: an unknown or misspelt directive is only a warning there, so any output fails
# here) and `systemd-analyze security --offline`, each held under an exposure threshold.
# verify needs every ExecStart program to exist: the copies checked here name the built
# binaries where the units name /usr/local/bin (meson install's default prefix).
# Skipped (77) where systemd-analyze is missing.
# Usage: verify_units.sh BUILD_DIR UNITS_DIR
set -euo pipefail
build=$1
units=$2
command -v systemd-analyze >/dev/null || {
    echo "SKIP: systemd-analyze not installed (Debian's systemd package)"
    exit 77
}
tmp=$(mktemp -d /tmp/zfleet-units.XXXXXX)
trap 'rm -rf "$tmp"' EXIT
fail() {
    echo "FAIL: $*" >&2
    exit 1
}

declare -A bin=([zfleet-broker]=broker/zfleet-broker [zfleet-worker]=worker/zfleet-worker)
# exposure thresholds (systemd-analyze security, 0-100 = 0.0-10.0)
declare -A most=([zfleet-broker.service]=20 [zfleet-fleet.service]=45)
n=0
for u in "$units"/*.service; do
    name=$(basename "$u")
    [ -n "${most[$name]:-}" ] || fail "$name: a unit this test does not know (give it a threshold)"
    sed -e "s|/usr/local/bin/zfleet-broker|$build/${bin[zfleet-broker]}|g" \
        -e "s|/usr/local/bin/zfleet-worker|$build/${bin[zfleet-worker]}|g" "$u" >"$tmp/$name"
    ! grep -n '/usr/local/bin/' "$tmp/$name" || fail "$name names a program this test cannot map"
    grep -q "^ExecStart=$build/" "$tmp/$name" || fail "$name: no ExecStart of a zfleet program"
    n=$((n + 1))
done
[ "$n" -eq 2 ] || fail "expected 2 units in $units, found $n"

out=$(cd "$tmp" && systemd-analyze verify --man=no ./*.service 2>&1) ||
    fail "systemd-analyze verify: $out"
[ -z "$out" ] || fail "systemd-analyze verify warns: $out"

for u in "$tmp"/*.service; do
    name=$(basename "$u")
    sec=$(systemd-analyze security --offline=yes --no-pager --threshold="${most[$name]}" "$u" 2>&1) ||
        fail "$name: exposure over ${most[$name]}/100: $(echo "$sec" | tail -n 1)"
    echo "$name: $(echo "$sec" | grep 'Overall exposure' | sed 's/.*: //')"
done

# What the broker's unit promises, by directive (verify checks syntax, not intent).
b=$tmp/zfleet-broker.service
for d in 'Type=notify' 'NotifyAccess=main' 'StateDirectory=zfleet' 'ProtectSystem=strict' \
    'ProtectHome=yes' 'NoNewPrivileges=yes' 'PrivateTmp=yes' 'DynamicUser=yes' \
    'ExecReload=/bin/kill -HUP $MAINPID'; do
    grep -qxF "$d" "$b" || fail "zfleet-broker.service lacks '$d'"
done
grep -q '^WatchdogSec=' "$b" || fail "zfleet-broker.service has no WatchdogSec="
grep -q '^ExecStart=.* --data /var/lib/zfleet' "$b" || fail "the broker's --data is not its StateDirectory"
f=$tmp/zfleet-fleet.service
grep -q '^ExecStart=.*zfleet-worker --fleet' "$f" || fail "zfleet-fleet.service does not run --fleet"
grep -qxF 'KillSignal=SIGTERM' "$f" && grep -qxF 'KillMode=mixed' "$f" ||
    fail "zfleet-fleet.service: SIGTERM must reach the supervisor alone (KillMode=mixed)"
# TimeoutStopSec covers the drain: --drain-timeout plus the supervisor's 2 s
drain_ms=$(sed -n 's/^ExecStart=.*--drain-timeout \([0-9]*\).*/\1/p' "$f")
stop_s=$(sed -n 's/^TimeoutStopSec=\([0-9]*\)s$/\1/p' "$f")
[ -n "$drain_ms" ] && [ -n "$stop_s" ] || fail "zfleet-fleet.service: no --drain-timeout or TimeoutStopSec=Ns"
[ $((stop_s * 1000)) -ge $((drain_ms + 2000)) ] ||
    fail "TimeoutStopSec=${stop_s}s is shorter than the drain (${drain_ms} ms + 2 s)"
grep -q '^EnvironmentFile=-/etc/zfleet/' "$b" && grep -q '^EnvironmentFile=-/etc/zfleet/' "$f" ||
    fail "a unit without EnvironmentFile=-/etc/zfleet/..."
echo "ok: $n units verified"
