#!/usr/bin/env bash
# Install into a staging prefix and build consumers against the *installed*
# copy: one through pkg-config, one through find_package(libimmutable).
# usage: check-install.sh BUILD_DIR SOURCE_DIR
set -euo pipefail
build=$1 src=$2
t=$(mktemp -d); trap 'rm -rf "$t"' EXIT
prefix=$t/prefix
cmake --install "$build" --prefix "$prefix" >"$t/install.log"
libdirs=("$prefix"/lib*/); libdir=${libdirs[0]%/}
fails=0
need() { [ -e "$1" ] || { echo "FAIL: not installed: ${1#"$prefix"/}"; fails=1; }; }
need "$prefix/include/libimmutable/libimmutable.h"
need "$libdir/libimmutable.so.1"
need "$libdir/libimmutable.so"
need "$libdir/pkgconfig/libimmutable.pc"
need "$libdir/cmake/libimmutable/libimmutableConfig.cmake"
need "$prefix/bin/immctl"
if [ -d "$build/man" ]; then
	need "$prefix/share/man/man7/libimmutable.7"
	need "$prefix/share/man/man3/imm_seal.3"
	need "$prefix/share/man/man1/immctl.1"
fi

# pkg-config consumer, built against the staged copy only
export PKG_CONFIG_PATH=$libdir/pkgconfig
pc() { pkg-config --define-variable=prefix="$prefix" "$@" libimmutable; }
[ "$(pc --modversion)" = "$(sed -n 's/^project(libimmutable VERSION \([0-9.]*\).*/\1/p' "$src/CMakeLists.txt")" ] \
	|| { echo "FAIL: pkg-config version"; fails=1; }
# shellcheck disable=SC2046
cc -std=c11 -Wall -Wextra -Werror -o "$t/consumer" "$src/examples/consumer.c" \
	$(pc --cflags --libs) -Wl,-rpath,"$libdir"
ldd "$t/consumer" >"$t/ldd" 2>&1 || true
grep -q "$libdir/libimmutable.so.1" "$t/ldd" \
	|| { echo "FAIL: consumer did not link the installed copy:"; cat "$t/ldd"; fails=1; }
"$t/consumer" >"$t/consumer.out" || { echo "FAIL: consumer run"; cat "$t/consumer.out"; fails=1; }

# CMake consumer
mkdir "$t/cm"
cat >"$t/cm/CMakeLists.txt" <<CM
cmake_minimum_required(VERSION 3.25)
project(consumer C)
find_package(libimmutable 1.0 REQUIRED)
add_executable(consumer $src/examples/consumer.c)
target_link_libraries(consumer PRIVATE libimmutable::immutable)
CM
cmake -S "$t/cm" -B "$t/cm/b" -DCMAKE_PREFIX_PATH="$prefix" >"$t/cm.log" 2>&1 \
	&& cmake --build "$t/cm/b" >>"$t/cm.log" 2>&1 \
	&& LD_LIBRARY_PATH=$libdir "$t/cm/b/consumer" >/dev/null \
	|| { echo "FAIL: find_package consumer"; cat "$t/cm.log"; fails=1; }
[ "$fails" = 0 ] && echo "install: staged to a prefix; pkg-config and find_package consumers build and run: $(cat "$t/consumer.out")"
exit "$fails"
