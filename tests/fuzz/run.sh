#!/usr/bin/env bash
# Builds the libFuzzer target over the zfleet header decoder and runs it for a bounded time.
#
#   tests/fuzz/run.sh                 build, then fuzz for ${FUZZ_SECONDS:-30} s
#   tests/fuzz/run.sh --build-only    build the target and the corpus generator only
#   tests/fuzz/run.sh --make-corpus   rewrite tests/fuzz/corpus/ from make_corpus.c, then exit
#   tests/fuzz/run.sh -- ARGS...      extra libFuzzer arguments (e.g. -- -jobs=4 -workers=4)
#
# Environment: FUZZ_SECONDS (default 30), FUZZ_BUILD_DIR (default build-fuzz/ at the
# repository root), CC (default clang), FUZZ_ASAN_OPTIONS / FUZZ_UBSAN_OPTIONS (default: leak
# detection on, abort on the first error; an inherited ASAN_OPTIONS is not used). Installs clang and its fuzzer runtime with apt-get
# when they are missing. The committed corpus is copied to a scratch directory, so fuzzing
# never grows it; crash inputs land in $FUZZ_BUILD_DIR/artifacts/. Exits non-zero when the
# fuzzer finds a crash, a leak or undefined behaviour.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)
out=${FUZZ_BUILD_DIR:-$root/build-fuzz}
seconds=${FUZZ_SECONDS:-30}
cc=${CC:-clang}
mode=run
extra=()
while [ $# -gt 0 ]; do
    case $1 in
    --build-only) mode=build ;;
    --make-corpus) mode=corpus ;;
    --) shift; extra=("$@"); break ;;
    *) echo "run.sh: unknown argument $1 (see the header of this script)" >&2; exit 2 ;;
    esac
    shift
done

# ---- toolchain: clang with libFuzzer, installed only when missing ----
have_fuzzer() {
    command -v "$cc" >/dev/null 2>&1 || return 1
    local t
    t=$(mktemp -d)
    printf '#include <stdint.h>\n#include <stddef.h>\nint LLVMFuzzerTestOneInput(const uint8_t *d, size_t n) { (void)d; (void)n; return 0; }\n' >"$t/t.c"
    local ok=0
    "$cc" -fsanitize=fuzzer,address,undefined "$t/t.c" -o "$t/t" >/dev/null 2>&1 || ok=1
    rm -rf "$t"
    return $ok
}
if ! have_fuzzer; then
    echo "run.sh: $cc with the libFuzzer runtime is missing; installing clang and libclang-rt-14-dev"
    sudo=
    [ "$(id -u)" -ne 0 ] && sudo=sudo
    export DEBIAN_FRONTEND=noninteractive
    $sudo apt-get update -qq
    $sudo apt-get install -y -qq clang libclang-rt-14-dev ||
        $sudo apt-get install -y -qq clang libclang-common-14-dev # older releases ship it there
    cc=clang
    have_fuzzer || { echo "run.sh: clang still cannot build a libFuzzer target" >&2; exit 1; }
fi
for pc in msgpack libzmq; do
    pkg-config --exists "$pc" || { echo "run.sh: pkg-config cannot find $pc (install its -dev package)" >&2; exit 1; }
done
# msgpack-c ships its pkg-config file as "msgpack" (older) or "msgpack-c" (newer)
mp=msgpack
pkg-config --exists msgpack-c && mp=msgpack-c

# ---- build ----
mkdir -p "$out"
cflags="-g -O1 -std=gnu11 -Wall -Wextra -I$root/proto $(pkg-config --cflags $mp libzmq)"
"$cc" $cflags -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all \
    "$root/proto/proto.c" "$here/fuzz_proto.c" $(pkg-config --libs $mp) -o "$out/fuzz_proto"
"$cc" $cflags "$here/make_corpus.c" "$root/proto/proto.c" $(pkg-config --libs $mp) \
    -o "$out/make_corpus"
echo "run.sh: built $out/fuzz_proto"

case $mode in
build) exit 0 ;;
corpus)
    rm -f "$here"/corpus/*.bin
    "$out/make_corpus" "$here/corpus"
    exit 0 ;;
esac

# ---- fuzz for a bounded time, on a scratch copy of the corpus ----
scratch=$(mktemp -d "${TMPDIR:-/tmp}/zfleet-fuzz.XXXXXX")
trap 'rm -rf "$scratch"' EXIT
cp "$here"/corpus/* "$here"/regress/* "$scratch"/
mkdir -p "$out/artifacts"
log="$out/fuzz.log"
# the inputs that once broke the decoder must keep passing (regress/README.md)
if ! ASAN_OPTIONS=${FUZZ_ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1} \
    UBSAN_OPTIONS=${FUZZ_UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1} \
    "$out/fuzz_proto" -rss_limit_mb=2048 "$here"/regress/*.bin >"$log" 2>&1; then
    tail -n 30 "$log"
    echo "run.sh: a regression input fails again; see $log" >&2
    exit 1
fi
echo "run.sh: fuzzing zf_msg_decode for $seconds s (log: $log)"
set +e
ASAN_OPTIONS=${FUZZ_ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1} \
UBSAN_OPTIONS=${FUZZ_UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1} \
    "$out/fuzz_proto" -max_total_time="$seconds" -max_len=4200 -timeout=10 -rss_limit_mb=2048 \
    -print_final_stats=1 -artifact_prefix="$out/artifacts/" "${extra[@]}" "$scratch" >"$log" 2>&1
rc=$?
set -e
tail -n 25 "$log"
runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -n 1)
echo "run.sh: ${runs:-?} executions in $seconds s, ${rate:-?} exec/s; exit status $rc"
if [ $rc -ne 0 ]; then
    echo "run.sh: the fuzzer found a problem; see $log and $out/artifacts/" >&2
    exit 1
fi
echo "run.sh: nothing found"
