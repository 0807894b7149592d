#!/usr/bin/env bash
# Compare the built library's ABI with the committed baseline.  Any
# non-zero abidiff status fails: a change, a removal, and also an addition,
# which must come with an updated baseline in the same commit
# (tests/abi/check-abi.sh --update LIB.so INCLUDE_DIR BASELINE).
# usage: check-abi.sh LIB.so INCLUDE_DIR BASELINE
set -euo pipefail
update=0
[ "${1:-}" = --update ] && { update=1; shift; }
lib=$1 inc=$2 baseline=$3
command -v abidw >/dev/null || { echo "FAIL: abidw missing (apt-get install abigail-tools)"; exit 1; }
# Without DWARF abidw sees only symbol names, and a changed struct passes.
# The section table is read whole first: under pipefail, "readelf | grep -q"
# fails whenever grep exits before readelf's last write (SIGPIPE, status 141).
sections=$(readelf -S -W "$lib")
grep -q '\.z\?debug_info' <<<"$sections" \
	|| { echo "FAIL: $lib has no debug info; build it with -g (RelWithDebInfo)"; exit 1; }
t=$(mktemp -d); trap 'rm -rf "$t"' EXIT
# public types only: what the headers under include/ expose
abidw --headers-dir "$inc/libimmutable" --drop-private-types --no-corpus-path \
	--out-file "$t/now.abi" "$lib"
if [ "$update" = 1 ]; then
	cp "$t/now.abi" "$baseline"
	echo "abi: baseline $baseline updated"
	exit 0
fi
rc=0
abidiff --no-show-locs "$baseline" "$t/now.abi" >"$t/diff" || rc=$?
if [ "$rc" != 0 ]; then
	echo "FAIL: abidiff status $rc against $baseline:"
	cat "$t/diff"
	echo "If the change is an intended addition, update the baseline in the same commit."
	exit 1
fi
echo "abi: $(grep -c '<elf-symbol name=' "$baseline") symbols, no difference from $baseline"
