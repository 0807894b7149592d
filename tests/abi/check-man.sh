#!/bin/bash
# SPDX-License-Identifier: LGPL-2.1-or-later
#
# Lint the generated man pages and check that every exported symbol has one.
#
#   check-man.sh BUILD_MAN_DIR SYM_FILE
#
# BUILD_MAN_DIR is the build tree's man directory (man1/, man3/, man7/ below
# it, as man/CMakeLists.txt makes them); SYM_FILE is lib/libimmutable.sym.
# For every page:
#   - man --warnings prints nothing (the harmless "cannot adjust line" aside);
#   - real pages: mandoc -T lint -W error passes, lexgrog finds a NAME line;
#   - alias pages (".so man3/x.3"): the target exists and names the alias.
# Every symbol of SYM_FILE must have a page of its own name in man3/, and be
# named in the NAME line of exactly one real page.
# Prints each failure and exits 1; prints a one-line summary on success.
set -euo pipefail

if [ $# -ne 2 ]; then
	echo "usage: $0 BUILD_MAN_DIR SYM_FILE" >&2
	exit 2
fi
man_dir=$1
sym_file=$2

fail=0
problem() {
	echo "check-man: $*" >&2
	fail=1
}

for tool in man mandoc lexgrog; do
	if ! command -v "$tool" >/dev/null; then
		echo "check-man: $tool not found (apt-get install man-db mandoc)" >&2
		exit 1
	fi
done
if [ ! -d "$man_dir" ] || [ ! -r "$sym_file" ]; then
	echo "check-man: no directory $man_dir or no file $sym_file" >&2
	exit 1
fi

# Symbols: the global names in the version script, one "name;" per line.
mapfile -t symbols < <(grep -E '^[[:space:]]*[A-Za-z_][A-Za-z0-9_]*;[[:space:]]*$' \
	"$sym_file" | tr -d ' \t;')
if [ ${#symbols[@]} -eq 0 ]; then
	echo "check-man: no symbols found in $sym_file" >&2
	exit 1
fi

export LC_ALL=C.UTF-8 MANWIDTH=80
cd "$man_dir"

shopt -s nullglob
pages=(man[1-9]/*.[1-9])
if [ ${#pages[@]} -eq 0 ]; then
	echo "check-man: no pages under $man_dir/man[1-9]; build the 'man' target" >&2
	exit 1
fi

declare -A named_by=()	# symbol -> the real pages whose NAME line has it
n_real=0
n_alias=0

for page in "${pages[@]}"; do
	first=$(head -n 1 "$page")
	if [[ $first =~ ^\.so[[:space:]]+([^[:space:]]+)$ ]]; then
		target=${BASH_REMATCH[1]}
		n_alias=$((n_alias + 1))
		if [ ! -f "$target" ]; then
			problem "$page: .so target $target does not exist"
			continue
		fi
		alias=$(basename "$page")
		alias=${alias%.*}
		if ! lexgrog "$target" 2>/dev/null |
			grep -q -- "\"$alias - "; then
			problem "$page: $target does not name $alias in its NAME line"
		fi
	else
		n_real=$((n_real + 1))
		if ! out=$(mandoc -T lint -W error "$page" 2>&1); then
			problem "$page: mandoc -T lint -W error:"
			printf '%s\n' "$out" >&2
		fi
		if ! whatis=$(lexgrog "$page" 2>&1); then
			problem "$page: lexgrog finds no NAME line: $whatis"
		else
			while IFS= read -r line; do
				# page: "name - description"
				name=${line#*: \"}
				name=${name%% - *}
				named_by[$name]+=" $page"
			done <<<"$whatis"
		fi
	fi
	# Warnings go to stderr; -Z stops before the output device.
	if ! out=$(man --warnings -E UTF-8 -l -Tutf8 -Z "$page" 2>&1 >/dev/null); then
		problem "$page: man failed:"
		printf '%s\n' "$out" >&2
		continue
	fi
	out=$(printf '%s\n' "$out" | grep -v -e 'cannot adjust line' -e '^$' || true)
	if [ -n "$out" ]; then
		problem "$page: man --warnings:"
		printf '%s\n' "$out" >&2
	fi
done

for sym in "${symbols[@]}"; do
	if [ ! -f "man3/$sym.3" ]; then
		problem "$sym: no page man3/$sym.3 (real or alias)"
	fi
	set -- ${named_by[$sym]:-}
	if [ $# -eq 0 ]; then
		problem "$sym: not named in the NAME line of any page"
	elif [ $# -gt 1 ]; then
		problem "$sym: named in the NAME line of $# pages:$(printf ' %s' "$@")"
	fi
done

if [ $fail -ne 0 ]; then
	echo "check-man: FAILED" >&2
	exit 1
fi
echo "check-man: $n_real pages and $n_alias aliases lint clean;" \
	"all ${#symbols[@]} symbols documented"
