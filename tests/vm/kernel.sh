# shellcheck shell=bash
# Sourced by tests/vm/run: pick a guest kernel, fetch it once into the cache,
# and work out which modules each boot stage loads.
#
# kernel_select NAME sets the three things the rest of run needs:
#   KERNEL_IMAGE  the bzImage/vmlinuz to boot
#   MODULES_ROOT  a directory holding lib/modules/$KVER (a depmod -b base)
#   KVER          the kernel release (uname -r in the guest)
# A self-built kernel needs only one more case branch that sets these three;
# "patched" is one: kernel/build's tree in $IMM_KERNEL_DIR (default
# build-kernel in the repo), built first if it has no image yet.

# Modules the initramfs loads to reach the 9p root; the rest of virtio is
# built into Debian's kernels (listing them anyway costs nothing: builtins
# are skipped).
VM_STAGE1_MODULES=(virtio virtio_ring virtio_pci 9pnet_virtio 9p)

# Modules guest-init loads before it sets up devices.  The crc32 and crc32c
# shashes come first: nothing in the guest can answer the kernel's
# request_module for them in time, and rxe, xfs and ext4 fail without them.
VM_STAGE2_MODULES=(crypto-crc32 crypto-crc32c libcrc32c configfs
	xfs ext4 nfit libnvdimm nd_pmem nd_btt dax_pmem device_dax
	virtio_pmem virtio_blk virtio_net dummy loop dm_mod md_mod raid1 nvme
	nvmet nvmet_tcp nvme_tcp nvmet_rdma nvme_rdma
	ib_core ib_uverbs rdma_ucm rdma_cm rdma_rxe)

kernel_select() {  # name
	case $1 in
	stock-6.12) stock_kernel 6.12 bookworm-backports ;;
	stock-7.3) stock_kernel 7.3 trixie-backports ;;
	patched) patched_kernel ;;
	*) echo "vm: unknown kernel '$1' (stock-6.12, stock-7.3, patched)" >&2; return 1 ;;
	esac
}

# Linux 6.12 with kernel/patches/*.patch, built by kernel/build on every
# boot: up to date with the series and config, ~5 s when nothing changed.
# $IMM_KERNEL_IMAGE names an image built earlier (its kver and modroot
# beside it, as kernel/build --snapshot leaves them) to boot without
# rebuilding, e.g. while the tree is being edited.
patched_kernel() {
	local dir
	if [ -n "${IMM_KERNEL_IMAGE:-}" ]; then
		dir=$(dirname "$(realpath "$IMM_KERNEL_IMAGE")")
		# shellcheck disable=SC2034  # read by tests/vm/run
		KERNEL_IMAGE=$IMM_KERNEL_IMAGE
	else
		dir=$(realpath -m "${IMM_KERNEL_DIR:-$VM_REPO/build-kernel}")
		"$VM_REPO/kernel/build" --out "$dir" >"$VM_CACHE/kernel-build.log" 2>&1 \
			|| { tail -n 30 "$VM_CACHE/kernel-build.log" >&2
			     echo "vm: kernel/build failed (log: $VM_CACHE/kernel-build.log)" >&2
			     return 1; }
		# shellcheck disable=SC2034  # read by tests/vm/run
		KERNEL_IMAGE=$dir/src/arch/x86/boot/bzImage
	fi
	KVER=$(cat "$dir/kver")
	MODULES_ROOT=$dir/modroot
	[ -d "$MODULES_ROOT/lib/modules/$KVER" ] \
		|| { echo "vm: no $MODULES_ROOT/lib/modules/$KVER: rerun kernel/build" >&2; return 1; }
	modules_prepare "$MODULES_ROOT" "$KVER"
}

# A private apt setup in the cache: its own sources, lists and download
# cache, so the host's /etc/apt is neither read for sources nor changed.
apt_private() {
	local dir=$VM_CACHE/apt
	apt-get -q -o Dir::Etc::sourcelist="$dir/sources.list" \
		-o Dir::Etc::sourceparts=/nonexistent \
		-o Dir::Etc::preferences="$dir/preferences" \
		-o Dir::Etc::preferencesparts="$dir/preferences.d" \
		-o Dir::State::Lists="$dir/lists" -o Dir::Cache="$dir/cache" \
		-o Dir::State::status=/dev/null \
		-o APT::Architectures::=amd64 -o APT::Sandbox::User=root "$@"
}

apt_cache_private() {
	local dir=$VM_CACHE/apt
	apt-cache -o Dir::Etc::sourcelist="$dir/sources.list" \
		-o Dir::Etc::sourceparts=/nonexistent \
		-o Dir::State::Lists="$dir/lists" -o Dir::Cache="$dir/cache" \
		-o Dir::State::status=/dev/null \
		-o APT::Architectures::=amd64 "$@"
}

apt_private_update() {  # once per run at most, and only when something is fetched
	local dir=$VM_CACHE/apt key=/usr/share/keyrings/debian-archive-keyring.gpg uri
	[ -n "${VM_APT_UPDATED:-}" ] && return 0
	mkdir -p "$dir/lists/partial" "$dir/cache/archives/partial" "$dir/preferences.d"
	# The archive is the one the system's own apt takes bookworm main from,
	# a local mirror included; no host name is written here.
	uri=$(apt-get indextargets --format '$(REPO_URI) $(RELEASE) $(COMPONENT) $(CODENAME)' \
		"Created-By: Packages" | awk '($2 == "bookworm" || $4 == "bookworm") && $3 == "main" && !u { u = $1 }
					     END { print u }')
	[ -n "$uri" ] || { echo "vm: the system's apt has no source for bookworm main;" \
		"add one (any Debian mirror) to /etc/apt/sources.list.d" >&2; return 1; }
	# The host's bookworm keyring verifies trixie-backports too: trixie's
	# Release files are signed by the bookworm archive key as well as the
	# trixie one (checked with debian-archive-keyring 2023.3+deb12u2).
	{
		echo "deb [signed-by=$key] $uri bookworm-backports main"
		echo "deb [signed-by=$key] $uri trixie-backports main"
	} >"$dir/sources.list"
	apt_private update >"$dir/update.log" 2>&1 \
		|| { cat "$dir/update.log" >&2; echo "vm: apt-get update (private) failed" >&2; return 1; }
	VM_APT_UPDATED=1
}

# The newest plain amd64 kernel of a series, e.g. 6.12 -> 6.12.95+deb12-amd64.
newest_kver() {  # series
	apt_cache_private pkgnames "linux-image-$1." \
		| sed -n "s/^linux-image-\(${1//./\\.}\.[0-9][^-]*-amd64\)\$/\1/p" \
		| sort -V | tail -n 1
}

stock_kernel() {  # series suite
	local series=$1 suite=$2 kdir stamp=$VM_CACHE/stock-$1.kver
	# A kernel fetched once stays in use: no network needed on later runs.
	if [ -s "$stamp" ] && [ -e "$VM_CACHE/kernels/$(cat "$stamp")/ready" ]; then
		KVER=$(cat "$stamp")
		# modules added to the lists since: unpack them too
		if ! module_list | cmp -s - "$VM_CACHE/kernels/$KVER/ready"; then
			modules_prepare "$VM_CACHE/kernels/$KVER/root" "$KVER"
			module_list >"$VM_CACHE/kernels/$KVER/ready"
		fi
	else
		local t0=$SECONDS
		apt_private_update
		KVER=$(newest_kver "$series")
		[ -n "$KVER" ] || { echo "vm: no linux-image-$series.* in $suite" >&2; return 1; }
		stock_fetch "$KVER"
		echo "$KVER" >"$stamp"
		echo "vm: fetched and prepared $KVER in $((SECONDS - t0)) s"
	fi
	kdir=$VM_CACHE/kernels/$KVER
	MODULES_ROOT=$kdir/root
	# shellcheck disable=SC2034  # read by tests/vm/run
	KERNEL_IMAGE=$(kernel_image_in "$MODULES_ROOT" "$KVER")
}

# 6.x ships one linux-image package; 7.x splits it into a meta package and
# linux-binary (vmlinuz), linux-modules and linux-base (modules.builtin).
stock_fetch() {  # kver
	local kver=$1 kdir=$VM_CACHE/kernels/$1 debs=$VM_CACHE/debs p want=() deb=()
	for p in linux-image linux-binary linux-modules linux-base; do
		apt_cache_private show "$p-$kver" >/dev/null 2>&1 && want+=("$p-$kver")
	done
	mkdir -p "$debs"
	(cd "$debs" && apt_private download "${want[@]}" >/dev/null) \
		|| { echo "vm: apt-get download ${want[*]} failed" >&2; return 1; }
	rm -rf "$kdir"
	mkdir -p "$kdir/root"
	for p in "${want[@]}"; do
		deb=("$debs/${p}_"*.deb)
		dpkg-deb -x "${deb[-1]}" "$kdir/root"
	done
	# 7.x installs under usr/lib/modules; kmod 30's depmod/modprobe -b/-d
	# only look at lib/modules.
	[ -e "$kdir/root/lib" ] || ln -s usr/lib "$kdir/root/lib"
	modules_prepare "$kdir/root" "$kver"
	module_list >"$kdir/ready"
}

kernel_image_in() {  # root kver
	local f
	for f in "$1/boot/vmlinuz-$2" "$1/lib/modules/$2/vmlinuz"; do
		[ -f "$f" ] && { echo "$f"; return 0; }
	done
	echo "vm: no vmlinuz for $2 under $1" >&2
	return 1
}

# Print the insmod order (one .ko path a line) for the given modules and
# their dependencies; builtins and modules the kernel lacks are skipped.
# -C /dev/null: the host's modprobe.d (ndctl's "install libnvdimm") must not
# leak into a guest kernel's dependency resolution.
module_order() {  # root kver module...
	local root=$1 kver=$2 m
	shift 2
	for m in "$@"; do
		modprobe -C /dev/null -d "$root" -S "$kver" --show-depends "$m" 2>/dev/null || true
	done | awk '$1 == "insmod" && !seen[$2]++ { print $2 }'
}

# What modules_prepare unpacked a kernel for; kept in its ready file.
module_list() {
	printf '%s\n' "${VM_STAGE1_MODULES[@]}" "${VM_STAGE2_MODULES[@]}"
}

# Debian's .deb has no modules.dep, and its modules are .ko.xz, which
# busybox insmod cannot load: unpack just the ones the guest needs, then
# index the tree.
modules_prepare() {  # root kver
	local root=$1 kver=$2 f
	depmod -b "$root" "$kver"
	module_order "$root" "$kver" "${VM_STAGE1_MODULES[@]}" "${VM_STAGE2_MODULES[@]}" \
		| while read -r f; do
			case $f in *.ko.xz) xz -d -f "$f" ;; esac
		done
	depmod -b "$root" "$kver"
}
