#!/bin/sh
# Checks libzfleet's public boundary: the dynamic symbols it defines are exactly the
# functions zfleet.h declares with ZF_EXPORT, and every function zfleet.h declares carries
# ZF_EXPORT. Usage: check_exports.sh LIBZFLEET.so ZFLEET.H
set -eu
lib=$1
hdr=$2
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# a prototype at the start of a line (the header's style) must be marked
unmarked=$(grep -nE '^[A-Za-z_][A-Za-z0-9_ *]*[ *](zf|zfleet)_[a-z0-9_]+\(' "$hdr" |
    grep -vE ':(ZF_EXPORT |typedef )' || true)
if [ -n "$unmarked" ]; then
    echo "declared in $hdr without ZF_EXPORT:"
    echo "$unmarked"
    exit 1
fi

grep -E '^ZF_EXPORT ' "$hdr" | sed -E 's/^[^(]*[ *]([A-Za-z_][A-Za-z0-9_]*)\(.*/\1/' |
    sort -u >"$tmp/declared"
# defined, global, in the dynamic table (T text, D/B/R data); the version nodes glibc adds
# (A) and the ELF init/fini helpers are no API
nm -D --defined-only "$lib" | awk '$2 ~ /^[TDBRVWiu]$/ { print $3 }' |
    grep -vE '^(_init|_fini)$' | sort -u >"$tmp/exported"

status=0
extra=$(comm -13 "$tmp/declared" "$tmp/exported")
missing=$(comm -23 "$tmp/declared" "$tmp/exported")
if [ -n "$extra" ]; then
    echo "$lib exports $(echo "$extra" | wc -l) symbols that $hdr does not declare:"
    echo "$extra"
    status=1
fi
if [ -n "$missing" ]; then
    echo "$hdr declares, but $lib does not export:"
    echo "$missing"
    status=1
fi
[ $status = 0 ] && echo "ok: $(wc -l <"$tmp/exported") symbols, all declared in $hdr"
exit $status
