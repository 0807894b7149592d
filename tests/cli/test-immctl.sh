#!/usr/bin/env bash
# immctl as a user drives it: probe, status, seal with breaks from a second
# process, and every bad input with its exit code and message.
# usage: test-immctl.sh PATH/TO/immctl
set -euo pipefail

IMMCTL=$1
fails=0
pass() { printf 'ok   %s\n' "$*"; }
bad() { printf 'FAIL %s\n' "$*"; fails=$((fails + 1)); }
check() { local what=$1; shift; if "$@"; then pass "$what"; else bad "$what"; fi; }
# Bounded waits on conditions, never sleeps as synchronisation.
wait_for() {  # file pattern seconds: until a line of file matches
	local end=$((SECONDS + $3))
	until grep -q "$2" "$1" 2>/dev/null; do
		[ "$SECONDS" -lt "$end" ] || { echo "timeout: no '$2' in $1"; return 1; }
		sleep 0.05
	done
}
bg_to() {  # file command...: run it in the background into file, holder=its pid
	local out=$1; shift
	: >"$out"	# emptied first: a wait_for must not match the last holder's lines
	"$@" >"$out" &
	holder=$!
}
wait_exit() {  # pid seconds: its exit status, or 124 (and killed) after that
	local end=$((SECONDS + $2)) rc=0
	while kill -0 "$1" 2>/dev/null; do
		if [ "$SECONDS" -ge "$end" ]; then
			kill -9 "$1" 2>/dev/null; wait "$1" 2>/dev/null || true
			echo "timeout: pid $1 still running after $2 s"; return 124
		fi
		sleep 0.05
	done
	wait "$1" || rc=$?
	return "$rc"
}
term_after_first_line() {  # rounds command...: SIGTERM once its first line is out
	local lost=0 rest rc i
	local n=$1; shift
	[ -p "$work/lines" ] || mkfifo "$work/lines"
	for ((i = 0; i < n; i++)); do
		"$@" >"$work/lines" &
		holder=$!
		exec 3<"$work/lines"
		read -r -t 10 _ <&3 || true
		kill -TERM "$holder"
		rest=$(timeout 10 cat <&3 || true)
		exec 3<&-
		rc=0; wait_exit "$holder" 10 || rc=$?
		[ "$rc" = 0 ] && [ "$(jq -r .event <<<"$rest" | tail -1)" = released ] ||
			lost=$((lost + 1))
	done
	[ "$lost" = 0 ] || echo "SIGTERM lost the release in $lost of $n rounds"
	[ "$lost" = 0 ]
}
lock_id() {  # file: how /proc/locks names it, "MAJ:MIN:INODE" (hex, hex, decimal)
	local d
	d=$(stat -c %d "$1")	# st_dev, glibc's encoding of major and minor
	printf '%02x:%02x:%d' $(((d >> 8) & 0xfff)) $(((d & 0xff) | ((d >> 12) & 0xfff00))) \
		"$(stat -c %i "$1")"
}
lease_state() {  # file: the lease's /proc/locks state (ACTIVE, BREAKING...) or none
	local s
	# the device too: another test's file may have the same inode number
	s=$(awk -v id=" $(lock_id "$1") " '$2 == "LEASE" && index($0, id) && $0 !~ /->/ { print $3; exit }' /proc/locks)
	echo "${s:-none}"
}

if [ "$(id -u)" != 0 ] || [ ! -e /dev/loop-control ]; then
	echo "SKIP: needs root and loop devices (a scratch ext4, sysctls, a non-owner)"
	[ "${IMM_REQUIRE_ROOT:-0}" = 1 ] && exit 1
	exit 77
fi
command -v jq >/dev/null || { echo "FAIL: jq is needed (apt-get install jq)"; exit 1; }

work=$(mktemp -d /var/tmp/imm-cli.XXXXXX)
mnt=$work/mnt
lbt_saved=$(cat /proc/sys/fs/lease-break-time)
le_saved=$(cat /proc/sys/fs/leases-enable)
cleanup() {
	echo "$lbt_saved" >/proc/sys/fs/lease-break-time
	echo "$le_saved" >/proc/sys/fs/leases-enable
	jobs -p | xargs -r kill -9 2>/dev/null || true
	umount "$mnt" 2>/dev/null || umount -l "$mnt" 2>/dev/null || true
	rm -rf "$work"
}
trap cleanup EXIT
chmod 755 "$work"
mkdir "$mnt"
truncate -s 64M "$work/fs.img"
mkfs.ext4 -q -F "$work/fs.img" >/dev/null
mount -o loop "$work/fs.img" "$mnt"
chmod 755 "$mnt"

# ---------------------------------------------------------------- version
# the version of the library immctl loads, from its file name (1.0.0 was
# printed for a 1.2.0 library once)
lib=$(ldd "$IMMCTL" | awk '$1 == "libimmutable.so.1" { print $3 }')
libver=$(readlink -f "$lib" | sed -n 's/.*\.so\.\([0-9]*\.[0-9]*\.[0-9]*\)$/\1/p')
check "--version names the library's version ($libver)" \
	test "$("$IMMCTL" --version)" = "immctl (libimmutable) $libver"

# ---------------------------------------------------------------- probe
out=$("$IMMCTL" probe --json)
check "probe --json is one JSON object" jq -e . <<<"$out" >/dev/null
check "probe reports the lease backend" test "$(jq -r .backend <<<"$out")" = lease
check "probe: no layout-seal-version with the lease backend" \
	test "$(jq -c .layout_seal_version <<<"$out")" = null
check "probe reports lease-break-time" test "$(jq -r .lease_break_time <<<"$out")" = "$lbt_saved"
check "probe reports the kernel" test "$(jq -r .kernel <<<"$out")" = "$(uname -r)"
text=$("$IMMCTL" probe)
check "probe text names the backend" grep -q 'seal backend: *lease' <<<"$text"
check "probe text: no layout seal line with the lease backend" \
	bash -c '! grep -q "^layout seals:" <<<"$1"' _ "$text"
# The host has no RDMA device (the guest tier has rxe: tests/vm/suite).
if [ -z "$(ls /sys/class/infiniband 2>/dev/null)" ]; then
	check "probe --json: no RDMA devices" test "$(jq -c .rdma <<<"$out")" = '[]'
	check "probe text: no RDMA devices" grep -q '^rdma: no devices' <<<"$text"
	out=$("$IMMCTL" probe --json --dax-dir /nonexistent --tmpfs-dir "$mnt")
	check "probe: directories unused without devices" test "$(jq -c .rdma <<<"$out")" = '[]'
else
	check "probe --json: one entry per RDMA device" test "$(jq '.rdma | length' <<<"$out")" \
		= "$(ls /sys/class/infiniband | wc -l)"
fi
expect_usage() {  # what args...
	local what=$1 rc=0; shift
	"$IMMCTL" probe "$@" >/dev/null 2>&1 || rc=$?
	check "$what" test "$rc" = 2
}
expect_usage "probe: unknown option" --frobnicate
expect_usage "probe: --dax-dir needs a directory" --dax-dir
expect_usage "probe: no operands" /tmp
rc=0; err=$("$IMMCTL" seal --shared --exclusive /tmp/x 2>&1) || rc=$?
check "seal: --shared and --exclusive together is a usage error" \
	test "$rc/$(grep -c 'not both' <<<"$err")" = 2/1

# ---------------------------------------------------------------- status
f=$mnt/data
truncate -s 4M "$f"
dd if=/dev/urandom of="$f" bs=64K count=4 conv=notrunc status=none
sync
fallocate -o 2M -l 512K --keep-size "$f"
out=$("$IMMCTL" status --json "$f")
check "status --json parses" jq -e . <<<"$out" >/dev/null
check "status size" test "$(jq -r .size <<<"$out")" = 4194304
check "status fs" test "$(jq -r .fs <<<"$out")" = ext4
check "status sees holes" test "$(jq -r .holes.count <<<"$out")" -ge 1
check "status sees unwritten" test "$(jq -r .unwritten.bytes <<<"$out")" = 524288
check "status: not final" test "$(jq -r .final <<<"$out")" = false
check "status: no dax on ext4 loop" test "$(jq -r .dax <<<"$out")" = false
check "status: no leases" test "$(jq -r '.leases | length' <<<"$out")" = 0
check "status: the loop device" test "$(jq -r .device.blockdev <<<"$out")" = "$(basename "$(findmnt -n -o SOURCE --target "$f")")"
check "status: not pmem" test "$(jq -r .pmem <<<"$out")" = null
check "status: MAP_SYNC refused" test "$(jq -r .granularity.sync <<<"$out")" = none
check "status: page granularity allowed" test "$(jq -r .granularity.page_ok <<<"$out")" = page
check "status: no badblocks" test "$(jq -r .badblocks_total <<<"$out")" = 0
text=$("$IMMCTL" status "$f")
check "status text: mapping line" grep -q '^mapping: *refused with IMM_MAP_SYNC, page with IMM_MAP_PAGE_OK$' <<<"$text"
check "status text: not pmem" grep -q '^pmem: *no' <<<"$text"

# ---------------------------------------------------------------- seal
sum=$(md5sum <"$f")
events=$work/events
bg_to "$events" "$IMMCTL" seal --json --auto-release "$f"
wait_for "$events" sealed 10
check "seal prints sealed" test "$(head -1 "$events" | jq -r .event)" = sealed
check "sealed line has the mode" test "$(head -1 "$events" | jq -r .mode)" = exclusive
check "sealed line has the length" test "$(head -1 "$events" | jq -r .length)" = 4194304
out=$("$IMMCTL" status --json "$f")
check "status while sealed lists the holder" test "$(jq -r '.leases[0].pid' <<<"$out")" = "$holder"
check "status while sealed does not open the file" test "$(jq -r .extent_map <<<"$out")" = null
# An open would have moved the lease out of ACTIVE before status returned.
check "status did not break the seal" test "$(lease_state "$f")" = ACTIVE
check "status did not break the seal (no event)" test "$(wc -l <"$events")" = 1
t0=$(date +%s%N)
cat "$f" >/dev/null          # a second process opens the file
t1=$(date +%s%N)
rc=0; wait_exit "$holder" 10 || rc=$?
check "auto-release exits 0" test "$rc" = 0
check "events: sealed, break, released" test "$(jq -r .event "$events" | paste -sd,)" = sealed,break,released
check "break carries a deadline" test "$(sed -n 2p "$events" | jq -r '.deadline_ns > .time_ns')" = true
check "time_ns increases" test "$(jq -s '.[0].time_ns < .[1].time_ns and .[1].time_ns <= .[2].time_ns' "$events")" = true
check "the reader waited well under lease-break-time" test $(((t1 - t0) / 1000000)) -lt 5000
check "seal prepared the file: final now" test "$("$IMMCTL" status --json "$f" | jq -r .final)" = true
check "data unchanged by sealing" test "$(md5sum <"$f")" = "$sum"

# SIGTERM: hold, then release and exit 0
bg_to "$events" "$IMMCTL" seal --json "$f"
wait_for "$events" sealed 10
kill -TERM "$holder"
rc=0; wait_exit "$holder" 10 || rc=$?
check "SIGTERM: exit 0" test "$rc" = 0
check "SIGTERM: sealed, released" test "$(jq -r .event "$events" | paste -sd,)" = sealed,released
check "SIGTERM: lease gone" test -z "$(grep LEASE /proc/locks | grep " $(lock_id "$f") " || true)"

# SIGTERM the moment the "sealed" line is out: still a release and exit 0.
# immctl blocked the signal only after printing that line, and a script that
# stopped it on seeing the line killed it outright (6 of 40 rounds here).
check "SIGTERM right after 'sealed': released and exit 0 in 40 rounds" \
	term_after_first_line 40 "$IMMCTL" seal --json "$f"

# truncate(1) opens with O_NONBLOCK: under a seal it fails instead of
# waiting and leaves the file alone, yet recalls the seal (libimmutable(7))
bg_to "$events" "$IMMCTL" seal --json --auto-release "$f"
wait_for "$events" sealed 10
sz0=$(stat -c %s "$f")
rc=0; truncate -s 4096 "$f" 2>"$work/err" || rc=$?
check "truncate(1) under a seal fails ($rc: $(cat "$work/err"))" \
	grep -q 'Resource temporarily unavailable' "$work/err"
check "truncate(1) under a seal leaves the size" test "$(stat -c %s "$f")" = "$sz0"
rc=0; wait_exit "$holder" 10 || rc=$?
check "truncate(1) recalled the seal all the same" \
	test "$(jq -r .event "$events" | paste -sd,)" = sealed,break,released

# A holder that never releases is revoked before the kernel's deadline
echo 2 >/proc/sys/fs/lease-break-time
bg_to "$events" "$IMMCTL" seal --json "$f"
wait_for "$events" sealed 10
cat "$f" >/dev/null
wait_for "$events" revoked 10
kill -INT "$holder"
wait_exit "$holder" 10 || true
check "revoke: sealed, break, revoked, released" test "$(jq -r .event "$events" | paste -sd,)" = sealed,break,revoked,released
check "revoked before the deadline" test "$(jq -s '.[2].time_ns < .[1].deadline_ns' "$events")" = true

# status --force against an exclusive holder: it recalls the seal, waits for
# the release and reads the map (it used to fail with EAGAIN at once).
bg_to "$events" "$IMMCTL" seal --json --auto-release "$f"
wait_for "$events" sealed 10
rc=0; out=$(timeout 20 "$IMMCTL" status --json --force "$f" 2>"$work/err") || rc=$?
check "status --force against a holder exits 0 (rc=$rc: $(head -c 200 "$work/err"))" test "$rc" = 0
check "status --force read the extent map" test "$(jq -r .extents <<<"$out")" -ge 1
check "status --force: the map is final" test "$(jq -r .final <<<"$out")" = true
check "status --force: no 'leased' noise on stderr" test ! -s "$work/err"
rc=0; wait_exit "$holder" 10 || rc=$?
check "status --force: the holder saw the break and released" \
	test "$(jq -r .event "$events" | paste -sd,)/$rc" = sealed,break,released/0
# a holder that never releases: its library revokes before the deadline
bg_to "$events" "$IMMCTL" seal --json "$f"
wait_for "$events" sealed 10
t0=$(date +%s%N)
rc=0; out=$(timeout 20 "$IMMCTL" status --json --force "$f" 2>"$work/err") || rc=$?
t1=$(date +%s%N)
check "status --force against a revoked holder exits 0 (rc=$rc: $(head -c 200 "$work/err"))" test "$rc" = 0
check "status --force after revoke read the map" test "$(jq -r .extents <<<"$out")" -ge 1
check "status --force waited no longer than lease-break-time + 1 s" \
	test $(((t1 - t0) / 1000000)) -lt 3000
kill -INT "$holder"
wait_exit "$holder" 10 || true
check "status --force: holder revoked" grep -q revoked "$events"
echo "$lbt_saved" >/proc/sys/fs/lease-break-time

# shared seal, sub-range, human output
bg_to "$work/shared" "$IMMCTL" seal --shared --auto-release --offset 1M --length 64K "$f"
wait_for "$work/shared" sealed 10
echo x >>"$f"
wait_exit "$holder" 10 || true
out=$(cat "$work/shared")
check "shared text output" grep -q 'sealed.*\[1048576, +65536) shared' <<<"$out"
check "shared seal broken by a writer" grep -q '^break' <<<"$out"

# --offset alone: to the end of the file
bg_to "$events" "$IMMCTL" seal --json --auto-release --offset 1M "$f"
wait_for "$events" sealed 10
check "seal --offset alone seals to EOF" \
	test "$(head -1 "$events" | jq -r '"\(.offset)+\(.length)"')" = "1048576+$(($(stat -c %s "$f") - 1048576))"
cat "$f" >/dev/null
wait_exit "$holder" 10 || true

# ---------------------------------------------------------------- errors
# A failure (exit 1) is one line, "immctl: FILE: REASON" as immctl(1) says;
# it was the library's line and then immctl's own "cannot seal: strerror".
expect_fail() {  # what code pattern cmd...
	local what=$1 code=$2 pattern=$3; shift 3
	local err rc=0 one=true
	err=$("$@" 2>&1 >/dev/null) || rc=$?
	[ "$code" != 1 ] || { [ "$(wc -l <<<"$err")" = 1 ] && [[ $err == "immctl: "* ]]; } ||
		one=false
	if [ "$rc" = "$code" ] && grep -qiE "$pattern" <<<"$err" && $one; then
		pass "$what"
	else
		bad "$what (rc=$rc, stderr: $err)"
	fi
}
expect_fail "missing file" 1 "does not exist" "$IMMCTL" seal "$mnt/nope"
expect_fail "directory" 1 "directory" "$IMMCTL" seal "$mnt"
mkfifo "$mnt/fifo"
expect_fail "FIFO (and no hang)" 1 "FIFO" timeout 10 "$IMMCTL" seal "$mnt/fifo"
expect_fail "status of a FIFO" 1 "regular file" "$IMMCTL" status "$mnt/fifo"
sz=$(stat -c %s "$f")
expect_fail "range past EOF" 1 "past EOF" timeout 10 "$IMMCTL" seal --offset "$sz" --length 1 "$f"
: >"$mnt/empty"
expect_fail "--offset alone past EOF" 1 "offset 8388608 is at or past the end of the file \\(size $sz\\)" \
	timeout 10 "$IMMCTL" seal --offset 8M "$f"
expect_fail "empty file" 1 "empty" timeout 10 "$IMMCTL" seal "$mnt/empty"
expect_fail "overflowing range" 1 "past the largest file offset" timeout 10 "$IMMCTL" seal --offset 0x7ffffffffffff000 --length 0x2000 "$f"
expect_fail "bad number" 2 "bad number" "$IMMCTL" seal --length 12Q "$f"
expect_fail "unknown command" 2 "unknown command" "$IMMCTL" frobnicate
expect_fail "usage" 2 "usage" "$IMMCTL" seal
expect_fail "unsupported filesystem" 1 "not known|cannot hold" "$IMMCTL" seal /proc/self/status
chmod 644 "$f"
expect_fail "not the owner (EACCES)" 1 "CAP_LEASE" runuser -u nobody -- "$IMMCTL" seal --shared "$f"
echo 0 >/proc/sys/fs/leases-enable
expect_fail "leases disabled" 1 "leases-enable" "$IMMCTL" seal "$f"
echo "$le_saved" >/proc/sys/fs/leases-enable
exec {fd}<"$f"
expect_fail "exclusive with another open" 1 "only one|open elsewhere" "$IMMCTL" seal "$f"
exec {fd}<&-

# ---------------------------------------------------------------- extents
x=$mnt/extents
head -c 3M /dev/urandom >"$x"
fallocate -p -o 1M -l 512K "$x"
sync "$x"
out=$("$IMMCTL" extents --json "$x")
check "extents --json parses" jq -e . <<<"$out" >/dev/null
check "extents: the loop device" test "$(jq -r .device <<<"$out")" = "$(findmnt -n -o SOURCE --target "$x")"
check "extents: its major:minor" test "$(jq -r .dev <<<"$out")" = "$(mountpoint -d "$mnt")"
check "extents: the loop's block size" test "$(jq -r .block_size <<<"$out")" = "$(blockdev --getss "$(jq -r .device <<<"$out")")"
check "extents: not sealed, generation 0" test "$(jq -r '[.sealed, .generation] | join(",")' <<<"$out")" = false,0
check "extents: the hole is left out" test "$(jq '[.extents[].length] | add' <<<"$out")" = $((3 * 1048576 - 524288))
check "extents: none inside the hole" test "$(jq '[.extents[] | select(.logical < 1572864 and .logical + .length > 1048576)] | length' <<<"$out")" = 0
# the device holds the file's bytes where the map says
phys=$(jq -r '.extents[0].physical' <<<"$out")
check "extents: physical offset holds the file's first block" test \
	"$(dd if="$(jq -r .device <<<"$out")" iflag=direct,skip_bytes skip="$phys" bs=4096 count=1 status=none | md5sum)" = \
	"$(head -c 4096 "$x" | md5sum)"
check "extents text: device line" grep -q '^device: *'"$(jq -r .device <<<"$out")" <<<"$("$IMMCTL" extents "$x")"
bg_to "$events" "$IMMCTL" extents --seal --json "$x"
wait_for "$events" '"sealed":true' 10
gen=$(head -1 "$events" | jq -r .generation)
check "extents --seal: sealed, generation >= 1" test "$gen" -ge 1
check "extents --seal: prepared, no hole left" test "$(head -1 "$events" | jq '[.extents[].length] | add')" = $((3 * 1048576))
cat "$x" >/dev/null          # a second open recalls the seal
rc=0; wait_exit "$holder" 10 || rc=$?
check "extents --seal: a recall ends it, exit 0" test "$rc" = 0
check "extents --seal: map, break, released" test "$(tail -n +2 "$events" | jq -r .event | paste -sd,)" = break,released
check "extents --seal: the break names the generation" test "$(sed -n 2p "$events" | jq -r .generation)" = "$gen"
check "extents --seal: SIGTERM right after the map, released and exit 0 in 20 rounds" \
	term_after_first_line 20 "$IMMCTL" extents --seal --json "$x"
mkdir "$work/tmpfs" && mount -t tmpfs -o size=4m tmpfs "$work/tmpfs"
head -c 64K /dev/zero >"$work/tmpfs/f"
expect_fail "extents on tmpfs" 1 "not in device blocks" "$IMMCTL" extents "$work/tmpfs/f"
umount "$work/tmpfs"
expect_fail "extents --shared without --seal" 2 "usage" "$IMMCTL" extents --shared "$x"
expect_fail "extents of a FIFO" 1 "FIFO" timeout 10 "$IMMCTL" extents "$mnt/fifo"

echo "cli: $fails failure(s)"
[ "$fails" = 0 ]
