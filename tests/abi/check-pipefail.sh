#!/usr/bin/env bash
# Lint the project's shell scripts for a race that pipefail turns into a
# failure: a pipeline whose reader may exit before its writer is done
# (grep -q/-l/-m, head) kills the writer with SIGPIPE, and the pipeline's
# status becomes 141 even though the reader found what it looked for.
# "readelf -S | grep -q" failed this way 113 times in 500 on this machine.
# Read the whole output first ($(...) or a here-string), or let the reader
# consume everything (grep without -q, grep -c).  A line with "|| true"
# opts out: its status is ignored anyway.
# usage: check-pipefail.sh SOURCE_DIR
set -euo pipefail
cd "$1"
fails=0
while read -r f; do
	[ "$f" = tests/abi/check-pipefail.sh ] && continue  # its own patterns
	IFS= read -r first <"$f" || continue
	[[ $first =~ ^#!.*(bash|/sh) ]] || continue
	grep -q 'pipefail' "$f" || continue
	hits=$(grep -nE '(^|[^|])\|[[:space:]]*(grep[[:space:]]+([^|]*[[:space:]])?-[a-zA-Z]*[qlm][a-zA-Z0-9]*|head)\b' "$f" \
		| grep -vE '^[0-9]+:[[:space:]]*#|\|\|[[:space:]]*true' || true)
	[ -z "$hits" ] && continue
	sed "s|^|FAIL: $f:|" <<<"$hits"
	fails=1
done < <(git ls-files 2>/dev/null || find . -type f -not -path './.git/*' | sed 's|^\./||')
[ "$fails" = 0 ] && echo "pipefail: no early-exit reader in a pipeline"
exit "$fails"
