#!/usr/bin/env bash
# Exported symbols == version script == public headers == man pages.
# usage: check-symbols.sh LIB.so SYMFILE INCLUDE_DIR MAN_SRC_DIR
set -euo pipefail
lib=$1 sym=$2 inc=$3 man=$4
t=$(mktemp -d); trap 'rm -rf "$t"' EXIT
fails=0

# defined, exported, with their version node
readelf --dyn-syms -W "$lib" | awk '$7 != "UND" && $5 == "GLOBAL" && $8 ~ /@/ {print $8}' \
	| sort -u >"$t/versioned"
sed 's/@.*//' "$t/versioned" | sort -u >"$t/exported"
grep -oE '^[[:space:]]+imm_[a-z0-9_]+;' "$sym" | tr -d ' \t;' | sort -u >"$t/script"
grep -hoE '\bimm_[a-z0-9_]+\(' "$inc"/*.h | tr -d '(' | sort -u >"$t/header"

report() {  # label file-a file-b
	if ! diff -u "$2" "$3" >"$t/diff"; then
		echo "FAIL: $1"; sed -n '3,$p' "$t/diff"; fails=1
	fi
}
report "exported symbols vs $sym" "$t/exported" "$t/script"
report "public header functions vs $sym" "$t/header" "$t/script"

# nothing but imm_ is exported, and every symbol sits in a LIBIMMUTABLE node
if grep -v '^imm_' "$t/exported"; then echo "FAIL: non-imm_ symbols exported"; fails=1; fi
if grep -v '@@*LIBIMMUTABLE_[0-9]' "$t/versioned"; then
	echo "FAIL: symbols outside a LIBIMMUTABLE_x.y node"; fails=1
fi
# the newest node matches the project version's major.minor
newest=$(grep -oE '^LIBIMMUTABLE_[0-9]+\.[0-9]+' "$sym" | sort -V | tail -1)
soname=$(readelf -d "$lib" | sed -n 's/.*SONAME.*\[\(.*\)\]/\1/p')
[ "$soname" = libimmutable.so.1 ] || { echo "FAIL: SONAME is $soname"; fails=1; }
version=$(readlink -f "$lib" | grep -oE '[0-9]+\.[0-9]+\.[0-9]+$' || true)
if [ -n "$version" ] && [ "LIBIMMUTABLE_${version%.*}" != "$newest" ]; then
	echo "FAIL: library version $version but newest node $newest"; fails=1
fi

# every symbol has a man page: its own, or an alias listed in man/
while read -r s; do
	if ! compgen -G "$man/$s.3*" >/dev/null && ! grep -qs "^$s\b" "$man/aliases" 2>/dev/null \
		&& ! grep -lqs "\b$s\b" "$man"/*.3.scd; then
		echo "FAIL: $s has no man page"; fails=1
	fi
done <"$t/script"

[ "$fails" = 0 ] && echo "symbols: $(wc -l <"$t/script") exported, script, header and man pages agree; SONAME $soname; newest node $newest"
exit "$fails"
