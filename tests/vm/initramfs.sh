# shellcheck shell=bash
# Sourced by tests/vm/run: the guest's first-stage initramfs, built per kernel
# into the cache.  busybox-static and the 9p modules are all it holds; every
# other tool comes from the host's / once that is mounted.

initramfs_for() {  # kver: print the path of an up-to-date initramfs
	local out=$VM_CACHE/initramfs/$1.cpio.gz init=$VM_HERE/initramfs-init
	if [ ! -s "$out" ] || [ "$init" -nt "$out" ] || [ "$KERNEL_IMAGE" -nt "$out" ] \
		|| [ /usr/bin/busybox -nt "$out" ]; then
		initramfs_build "$out" "$1" >&2 || return 1
	fi
	echo "$out"
}

initramfs_build() {  # out kver
	local out=$1 kver=$2 tree f
	tree=$(mktemp -d "$VM_CACHE/initramfs.XXXXXX")
	mkdir -p "$tree"/{bin,dev,proc,sys,newroot,lib/mod} "$(dirname "$out")"
	cp /usr/bin/busybox "$tree/bin/busybox"
	ln -s busybox "$tree/bin/sh"
	install -m 0755 "$VM_HERE/initramfs-init" "$tree/init"
	# The kernel opens /dev/console for /init before devtmpfs is mounted.
	mknod -m 0600 "$tree/dev/console" c 5 1
	: >"$tree/lib/mod/order"
	while read -r f; do
		cp "$f" "$tree/lib/mod/"
		basename "$f" >>"$tree/lib/mod/order"
	done < <(module_order "$MODULES_ROOT" "$kver" "${VM_STAGE1_MODULES[@]}")
	grep -q '^9p\.ko$' "$tree/lib/mod/order" || [ -n "$(builtin_has "$kver" 9p)" ] \
		|| { echo "vm: no 9p module for $kver" >&2; rm -rf "$tree"; return 1; }
	(cd "$tree" && find . | LC_ALL=C sort | cpio -o -H newc --quiet) | gzip -1 >"$out.tmp"
	mv "$out.tmp" "$out"
	echo "vm: built $out ($(wc -l <"$tree/lib/mod/order") modules)"
	rm -rf "$tree"
}

builtin_has() {  # kver module: print the module's line in modules.builtin, if any
	grep -m1 "/$2\.ko\$" "$MODULES_ROOT/lib/modules/$1/modules.builtin" 2>/dev/null || true
}
