#!/usr/bin/env bash
# Builds the libFuzzer targets and runs each for a bounded time:
#   proto    fuzz_proto.c over the zfleet header decoder (proto/proto.c), held to the
#            msgpack-c reference decoder (tests/ref_decode.c)
#   journal  fuzz_journal.c over journal replay: scan and apply of records (broker/journal.c)
#
#   tests/fuzz/run.sh                 build, then fuzz for ${FUZZ_SECONDS:-40} s in all, split
#                                     evenly between the targets (20 s each by default)
#   tests/fuzz/run.sh --build-only    build the targets and the corpus generators only
#   tests/fuzz/run.sh --make-corpus   rewrite corpus/ and corpus-journal/ from make_corpus.c
#                                     and make_journal_corpus.c, then exit
#   tests/fuzz/run.sh -- ARGS...      extra libFuzzer arguments (e.g. -- -jobs=4 -workers=4)
#
# Environment: FUZZ_SECONDS (default 40, the total), FUZZ_TARGETS (default "proto journal"),
# FUZZ_BUILD_DIR (default build-fuzz/ at the repository root), CC (default clang),
# FUZZ_ASAN_OPTIONS / FUZZ_UBSAN_OPTIONS (default: leak detection on, abort on the first
# error; an inherited ASAN_OPTIONS is not used). Installs clang and its fuzzer runtime with
# apt-get when they are missing. The committed corpora are copied to scratch directories, so
# fuzzing never grows them; crash inputs land in $FUZZ_BUILD_DIR/artifacts/TARGET-*. Exits
# non-zero when a fuzzer finds a crash, a leak or undefined behaviour.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)
out=${FUZZ_BUILD_DIR:-$root/build-fuzz}
seconds=${FUZZ_SECONDS:-40}
targets=${FUZZ_TARGETS:-proto journal}
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
cflags="-g -O1 -std=gnu11 -Wall -Wextra -I$root/proto -I$root/common -I$root/broker $(pkg-config --cflags $mp libzmq zlib)"
libs="$(pkg-config --libs $mp libzmq zlib) -lm -pthread"
fuzzflags="-fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all"
"$cc" $cflags -I"$here/.." $fuzzflags "$root/proto/proto.c" "$here/../ref_decode.c" "$here/fuzz_proto.c" \
    $(pkg-config --libs $mp) \
    -o "$out/fuzz_proto"
"$cc" $cflags "$here/make_corpus.c" "$root/proto/proto.c" $(pkg-config --libs $mp) \
    -o "$out/make_corpus"
# the journal target formats and counts log lines instead of printing them (--wrap=zf_log and zf_log_event)
jsrc="$root/broker/journal.c $root/broker/job.c $root/broker/owners.c $root/proto/proto.c
    $root/common/util.c $root/common/log.c $root/common/cert.c $root/common/hist.c"
"$cc" $cflags $fuzzflags -Wl,--wrap=zf_log,--wrap=zf_log_event "$here/fuzz_journal.c" $jsrc $libs \
    -o "$out/fuzz_journal"
"$cc" $cflags -Wl,--wrap=zf_now_ms,--wrap=zf_wall_ms "$here/make_journal_corpus.c" $jsrc $libs \
    -o "$out/make_journal_corpus"
echo "run.sh: built $out/fuzz_proto and $out/fuzz_journal"

case $mode in
build) exit 0 ;;
corpus)
    rm -f "$here"/corpus/*.bin "$here"/corpus-journal/*.bin
    "$out/make_corpus" "$here/corpus"
    "$out/make_journal_corpus" "$here/corpus-journal"
    exit 0 ;;
esac

# ---- fuzz each target for its share of the time, on a scratch copy of its corpus ----
# TARGET's seeds are corpus-TARGET/ (corpus/ for proto) and regress-TARGET/ (regress/ for
# proto): inputs that once broke it, replayed before every run (regress/README.md).
set -- $targets
share=$((seconds / $#))
[ "$share" -ge 1 ] || share=1
scratch=$(mktemp -d "${TMPDIR:-/tmp}/zfleet-fuzz.XXXXXX")
# the journal target's files, on tmpfs where there is one (its syncs cost nothing there)
shm=${TMPDIR:-/tmp}
[ -d /dev/shm ] && [ -w /dev/shm ] && shm=/dev/shm
export FUZZ_JOURNAL_TMP=$(mktemp -d "$shm/zfleet-fuzz-journal.XXXXXX")
trap 'rm -rf "$scratch" "$FUZZ_JOURNAL_TMP"' EXIT
mkdir -p "$out/artifacts"
export ASAN_OPTIONS=${FUZZ_ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1}
export UBSAN_OPTIONS=${FUZZ_UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
status=0
for t in "$@"; do
    case $t in
    proto) corpus=$here/corpus regress=$here/regress maxlen=4200 ;;
    journal) corpus=$here/corpus-journal regress=$here/regress-journal maxlen=65536 ;;
    *) echo "run.sh: unknown target $t (FUZZ_TARGETS: proto, journal)" >&2; exit 2 ;;
    esac
    bin=$out/fuzz_$t
    log=$out/fuzz_$t.log
    mkdir -p "$scratch/$t"
    cp "$corpus"/* "$scratch/$t"/
    regs=()
    for f in "$regress"/*.bin; do [ -e "$f" ] && regs+=("$f"); done
    if [ ${#regs[@]} -gt 0 ]; then
        cp "${regs[@]}" "$scratch/$t"/
        if ! "$bin" -rss_limit_mb=2048 "${regs[@]}" >"$log" 2>&1; then
            tail -n 30 "$log"
            echo "run.sh: a regression input of $t fails again; see $log" >&2
            exit 1
        fi
    fi
    echo "run.sh: fuzzing $t for $share s (log: $log)"
    set +e
    "$bin" -max_total_time="$share" -max_len="$maxlen" -timeout=10 -rss_limit_mb=2048 \
        -print_final_stats=1 -artifact_prefix="$out/artifacts/$t-" "${extra[@]}" \
        "$scratch/$t" >"$log" 2>&1
    rc=$?
    set -e
    tail -n 25 "$log"
    runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
    rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -n 1)
    echo "run.sh: $t: ${runs:-?} executions in $share s, ${rate:-?} exec/s; exit status $rc"
    if [ $rc -ne 0 ]; then
        echo "run.sh: the $t fuzzer found a problem; see $log and $out/artifacts/" >&2
        status=1
    fi
done
[ $status -eq 0 ] || exit 1
echo "run.sh: nothing found"
