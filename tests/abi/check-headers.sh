#!/usr/bin/env bash
# Every public header compiles on its own as C89 (verbs.h: C99, as
# <infiniband/verbs.h> uses inline), C99, C11, C++98 and C++11, -pedantic
# and -Werror, under gcc and clang when present, and clean of clang's
# -Weverything (no reserved identifiers); and declares extern "C".
# usage: check-headers.sh INCLUDE_DIR
set -euo pipefail
inc=$1
t=$(mktemp -d); trap 'rm -rf "$t"' EXIT
fails=0 n=0
for h in "$inc"/libimmutable/*.h; do
	rel=${h#"$inc"/}
	grep -q 'extern "C"' "$h" || { echo "FAIL: $rel lacks extern \"C\""; fails=1; }
	printf '#include <%s>\nextern int imm_header_check;\nint imm_header_check;\n' "$rel" >"$t/c.c"
	cp "$t/c.c" "$t/cxx.cc"
	for cc in gcc clang; do
		command -v $cc >/dev/null || continue
		stds="c89 c99 c11"
		[ "$rel" != libimmutable/verbs.h ] || stds="c99 c11"
		for std in $stds; do
			n=$((n + 1))
			$cc -std=$std -pedantic -Wall -Wextra -Werror -I"$inc" -c "$t/c.c" -o /dev/null \
				|| { echo "FAIL: $rel with $cc -std=$std"; fails=1; }
		done
	done
	for cxx in g++ clang++; do
		command -v $cxx >/dev/null || continue
		for std in c++98 c++11; do
			n=$((n + 1))
			$cxx -std=$std -pedantic -Wall -Wextra -Werror -I"$inc" -c "$t/cxx.cc" \
				-o /dev/null || { echo "FAIL: $rel with $cxx -std=$std"; fails=1; }
		done
	done
	if command -v clang >/dev/null; then
		n=$((n + 2))
		clang -std=c11 -Weverything -Werror -I"$inc" -c "$t/c.c" -o /dev/null ||
			{ echo "FAIL: $rel with clang -Weverything"; fails=1; }
		clang++ -std=c++11 -Weverything -Wno-c++98-compat -Werror -I"$inc" \
			-c "$t/cxx.cc" -o /dev/null ||
			{ echo "FAIL: $rel with clang++ -Weverything"; fails=1; }
	fi
done
[ "$fails" = 0 ] && echo "headers: $n compilations clean"
exit "$fails"
