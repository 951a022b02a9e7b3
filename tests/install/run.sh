#!/usr/bin/env bash
# `meson install` into a --destdir, then a user's view of it: the binaries, zfleet.h, the
# versioned libzfleet.so and zfleet.pc are there; a small C client compiled with
# `pkg-config --cflags --libs zfleet` (and nothing from the source or build tree) runs
# against the installed broker and worker and gets its `echo` back.
# Usage: run.sh BUILD_DIR CLIENT_C
set -euo pipefail
build=$1
client_c=$2
tmp=$(mktemp -d /tmp/zfleet-install.XXXXXX)
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill -KILL "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$tmp"
}
trap cleanup EXIT
fail() {
    echo "FAIL: $*" >&2
    for f in "$tmp"/*.log; do [ -f "$f" ] && { echo "--- $f" >&2; tail -n 20 "$f" >&2; }; done
    exit 1
}

root=$tmp/root
meson install -C "$build" --destdir "$root" --no-rebuild --quiet >"$tmp/install.log" 2>&1 ||
    fail "meson install: $(tail -n 5 "$tmp/install.log")"

prefix=$(meson introspect "$build" --buildoptions |
    /usr/bin/python3 -c 'import json,sys; print(next(o["value"] for o in json.load(sys.stdin) if o["name"]=="prefix"))')
bindir=$root$prefix/bin
for b in zfleet-broker zfleet-worker zfleet; do
    [ -x "$bindir/$b" ] || fail "$bindir/$b not installed"
done
[ -f "$root$prefix/include/zfleet.h" ] || fail "zfleet.h not installed under $prefix/include"
pc=$(find "$root" -name zfleet.pc)
[ -n "$pc" ] || fail "no zfleet.pc installed"
libdir=$(dirname "$(dirname "$pc")")
version=$(meson introspect "$build" --projectinfo |
    /usr/bin/python3 -c 'import json,sys; print(json.load(sys.stdin)["version"])')
[ -f "$libdir/libzfleet.so.$version" ] || fail "no libzfleet.so.$version in $libdir"
[ -L "$libdir/libzfleet.so" ] || fail "no libzfleet.so link (for -lzfleet) in $libdir"
soname=$(objdump -p "$libdir/libzfleet.so.$version" | awk '$1 == "SONAME" {print $2}')
[ "$soname" = "libzfleet.so.${version%%.*}" ] || fail "soname '$soname', expected libzfleet.so.${version%%.*}"
[ -L "$libdir/$soname" ] || fail "no $soname link in $libdir"

# The .pc says prefix=$prefix; the sysroot puts the destdir in front of its -I and -L.
export PKG_CONFIG_PATH=$(dirname "$pc") PKG_CONFIG_SYSROOT_DIR=$root
[ "$(pkg-config --modversion zfleet)" = "$version" ] || fail "pkg-config --modversion zfleet"
flags=$(pkg-config --cflags --libs zfleet)
case "$flags" in
*"-I$root$prefix/include"*"-L$libdir"*"-lzfleet"* | *"-L$libdir"*"-lzfleet"*"-I$root$prefix/include"*) ;;
*) fail "pkg-config --cflags --libs zfleet gave '$flags'" ;;
esac
# A sanitizer build (scripts/test's ASan pass) installs an instrumented libzfleet: the client
# must then be built with the same sanitizers, as a user of that build would.
san=$(meson introspect "$build" --buildoptions |
    /usr/bin/python3 -c 'import json,sys; print(next(o["value"] for o in json.load(sys.stdin) if o["name"]=="b_sanitize"))')
sanflags=""
[ "$san" = none ] || sanflags="-fsanitize=$san"
# shellcheck disable=SC2086 # the flags are words
cc -std=c11 -Wall -Wextra -Werror $sanflags -o "$tmp/client" "$client_c" $flags 2>"$tmp/cc.log" ||
    fail "compiling the client with '$flags': $(cat "$tmp/cc.log")"
export LD_LIBRARY_PATH=$libdir
ldd "$tmp/client" | grep -q "libzfleet.so.* => $libdir/" ||
    fail "the client does not load the installed libzfleet: $(ldd "$tmp/client" | grep zfleet)"

# The installed programs, on their own: a broker with a journal, one worker.
cep=ipc://$tmp/clients.sock wep=ipc://$tmp/workers.sock
"$bindir/zfleet-broker" --clients "$cep" --workers "$wep" --data "$tmp/data" \
    >"$tmp/broker.log" 2>&1 &
pids+=($!)
"$bindir/zfleet-worker" --broker "$wep" --name installed >"$tmp/worker.log" 2>&1 &
pids+=($!)

text="hello from an installed zfleet $$"
out=$(timeout 20 "$tmp/client" "$cep" "$text" 2>"$tmp/client.log") ||
    fail "the installed client's echo failed: '$out'"
[ "$out" = "succeeded $text" ] || fail "client printed '$out', expected 'succeeded $text'"
# The installed CLI (it loads the installed libzfleet too) sees the job and the worker.
stats=$(timeout 10 "$bindir/zfleet" --broker "$cep" --json workers 2>"$tmp/cli.log") ||
    fail "installed zfleet workers failed"
case "$stats" in *installed*) ;; *) fail "zfleet workers does not list the worker: $stats" ;; esac
echo "ok: installed under $prefix (destdir), client built with '$flags' ran echo"
