#!/usr/bin/env bash
# Every public header compiles on its own as C99, C11 and C++ with -Werror,
# under gcc and clang when present, and declares extern "C".
# usage: check-headers.sh INCLUDE_DIR
set -euo pipefail
inc=$1
t=$(mktemp -d); trap 'rm -rf "$t"' EXIT
fails=0 n=0
for h in "$inc"/libimmutable/*.h; do
	rel=${h#"$inc"/}
	grep -q 'extern "C"' "$h" || { echo "FAIL: $rel lacks extern \"C\""; fails=1; }
	printf '#include <%s>\nint imm_header_check;\n' "$rel" >"$t/c.c"
	cp "$t/c.c" "$t/cxx.cc"
	for cc in gcc clang; do
		command -v $cc >/dev/null || continue
		for std in c99 c11; do
			n=$((n + 1))
			$cc -std=$std -pedantic -Wall -Wextra -Werror -I"$inc" -c "$t/c.c" -o /dev/null \
				|| { echo "FAIL: $rel with $cc -std=$std"; fails=1; }
		done
	done
	for cxx in g++ clang++; do
		command -v $cxx >/dev/null || continue
		n=$((n + 1))
		$cxx -std=c++11 -Wall -Wextra -Werror -I"$inc" -c "$t/cxx.cc" -o /dev/null \
			|| { echo "FAIL: $rel with $cxx"; fails=1; }
	done
done
[ "$fails" = 0 ] && echo "headers: $n compilations clean"
exit "$fails"
