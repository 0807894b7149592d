#!/usr/bin/env bash
# examples/block-io on ext4 and XFS on loop devices: block I/O at the sealed
# map's device offsets, every byte checked through the file afterwards; and
# a truncate from another process, which recalls the seal: the example
# drains its I/O before it releases, and the freed blocks on the device hold
# what they held at the release.  Then examples/block-remote, its server
# and client over a TCP socket on this host, the client writing the loop
# device itself (the VM tier runs it over NVMe-oF): every acknowledged
# write is in the file after the truncate.  Both proofs are shown to fail
# on a late write (--late-write).
# usage: test-block-io.sh PATH/TO/block-io PATH/TO/block-remote
set -euo pipefail
bio=$1 brem=$2
fails=0
if [ "$(id -u)" != 0 ] || [ ! -e /dev/loop-control ]; then
	echo "SKIP: needs root and loop devices (a scratch ext4 and XFS)"
	[ "${IMM_REQUIRE_ROOT:-0}" = 1 ] && exit 1
	exit 77
fi
command -v jq >/dev/null || { echo "FAIL: jq is needed (apt-get install jq)"; exit 1; }
pass() { printf 'ok   %s\n' "$*"; }
bad() { printf 'FAIL %s\n' "$*"; fails=$((fails + 1)); }
check() { local what=$1; shift; if "$@"; then pass "$what"; else bad "$what"; fi; }

work=$(mktemp -d "${TMPDIR:-/var/tmp}/imm-bio.XXXXXX")
cleanup() {
	jobs -p | xargs -r kill -9 2>/dev/null || true
	umount "$work/mnt" 2>/dev/null || umount -l "$work/mnt" 2>/dev/null || true
	rm -rf "$work"
}
trap cleanup EXIT
mkdir "$work/mnt"

phase() {  # file phase field: that field of that phase's line
	jq -rs --arg p "$2" "map(select(.phase == \$p)) | first | .$3 // empty" "$1"
}

# block-remote: serve FILE, a client on DEVICE, a truncate to a quarter
remote() {  # fs file device [--late-write]
	local fs=$1 f=$2 dev=$3 late=$4 port=$((7420 + RANDOM % 1000)) srv cli rc=0
	rm -f "$f"
	"$brem" serve "$f" "$port" $((32 << 20)) >"$work/srv" 2>&1 &
	srv=$!
	for _ in $(seq 200); do grep -q '^server: ready' "$work/srv" && break; sleep 0.05; done
	timeout 60 "$brem" client $late 127.0.0.1 "$port" "$dev" >"$work/cli" 2>&1 &
	cli=$!
	for _ in $(seq 200); do grep -q '^client: map of' "$work/cli" && break; sleep 0.05; done
	sleep 0.5	# let it write
	python3 -c "import os, sys; os.truncate(sys.argv[1], 8 << 20)" "$f"
	wait "$cli" || rc=$?
	check "$fs: block-remote client stopped and acknowledged (rc=$rc)" test "$rc" = 0
	check "$fs: ... after writing something" \
		grep -Eq '^client: recalled after [1-9][0-9]* writes' "$work/cli"
	rc=0; wait "$srv" || rc=$?
	if [ -z "$late" ]; then
		check "$fs: block-remote: every acknowledged write is in the file (rc=$rc)" \
			grep -q ' 0 not as acknowledged$' "$work/srv"
		check "$fs: ... and the server exits 0" test "$rc" = 0
	else
		check "$fs: block-remote: a write left out of the acknowledgement is caught (rc=$rc)" \
			grep -q ' 1 not as acknowledged$' "$work/srv"
		check "$fs: ... and the server exits 1" test "$rc" = 1
	fi
	[ "$fails" = 0 ] || cat "$work/srv" "$work/cli"
}

for fs in ext4 xfs; do
	truncate -s 400M "$work/fs.img"
	if [ "$fs" = xfs ]; then mkfs.xfs -q -f "$work/fs.img"
	else mkfs.ext4 -q -F "$work/fs.img" >/dev/null; fi
	mount -o loop "$work/fs.img" "$work/mnt"
	f=$work/mnt/data
	loopdev=$(findmnt -n -o SOURCE --target "$work/mnt")

	out=$work/out
	rc=0; timeout 120 "$bio" --size 32M --seconds 1 "$f" >"$out" || rc=$?
	check "$fs: block-io exits 0 (rc=$rc)" test "$rc" = 0
	check "$fs: the map is on $loopdev" test "$(phase "$out" map device)" = "$loopdev"
	check "$fs: QD1 and QD32 ran, every read checked" test \
		"$(jq -s '[.[] | select(.phase == "io" and .ios > 0 and .bad_reads == 0)] | length' "$out")" = 2
	check "$fs: every page through the file is its last device write" test \
		"$(phase "$out" check bad_pages),$(phase "$out" check pages_in_file)" = 0,8192

	# a recall in the middle of QD32 I/O: truncate(2) blocks until released
	"$bio" --size 32M --seconds 60 --until-recall "$f" >"$out" &
	pid=$!
	for _ in $(seq 200); do grep -q '"phase":"map"' "$out" && break; sleep 0.05; done
	python3 -c "import os, sys; os.truncate(sys.argv[1], 16 << 20)" "$f"
	rc=0; timeout 60 tail --pid="$pid" -f /dev/null || rc=$?
	wait "$pid" || rc=$?
	check "$fs: recalled run exits 0 (rc=$rc)" test "$rc" = 0
	check "$fs: the recall stopped the I/O" test "$(phase "$out" io recalled)" = true
	check "$fs: released before the revoke time" test \
		"$(jq -r 'select(.phase == "release") | .before_revoke_ms > 0' "$out")" = true
	check "$fs: the truncate went through: 16 MiB" test "$(stat -c %s "$f")" = 16777216
	check "$fs: kept pages in the file, freed pages on the device, all as at the release" test \
		"$(phase "$out" check pages_in_file),$(phase "$out" check freed_pages_on_device),$(phase "$out" check bad_pages)" = 4096,4096,0

	# the check can fail: a write to a freed block after the release
	# (what a program that ignored the recall would do) is caught
	"$bio" --size 32M --seconds 60 --until-recall --late-write "$f" >"$out" 2>"$work/err" &
	pid=$!
	for _ in $(seq 200); do grep -q '"phase":"map"' "$out" && break; sleep 0.05; done
	python3 -c "import os, sys; os.truncate(sys.argv[1], 16 << 20)" "$f"
	rc=0; wait "$pid" || rc=$?
	check "$fs: a late write to a freed block fails the check (rc=$rc)" test "$rc" = 1
	check "$fs: ... as one bad page, on the device" test \
		"$(phase "$out" late_write page),$(phase "$out" check bad_pages)" = 4096,1

	remote "$fs" "$f" "$loopdev" ""
	remote "$fs" "$f" "$loopdev" --late-write
	umount "$work/mnt"
	rm -f "$work/fs.img"
done
echo "block-io: $fails failure(s)"
[ "$fails" = 0 ]
