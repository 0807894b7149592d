// SPDX-License-Identifier: LGPL-2.1-or-later
/*
 * Mappings, topology and media errors on the host's filesystems: none of
 * them is DAX, so synchronous faults are refused and page granularity is
 * what IMM_MAP_PAGE_OK gets.  DAX itself is proven in the VM tier.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "fixture.h"

#define MiB (1u << 20)
#define SEC 1000000000ull

static void make_file(const struct fx_fs *fs, const char *name, char *path)
{
	fx_path(fs, name, path);
	unlink(path);
	fx_write_pattern(path, 0, MiB, 41);
}

/* How many lines of /proc/self/maps map this file. */
static int maps_of(const char *path)
{
	char line[PATH_MAX + 128];
	FILE *f = fopen("/proc/self/maps", "re");
	int n = 0;

	assert_non_null(f);
	while (fgets(line, sizeof(line), f)) {
		line[strcspn(line, "\n")] = '\0';
		if (strstr(line, path))
			n++;
	}
	fclose(f);
	return n;
}

/* The permissions /proc/self/maps shows for addr ("rw-s", "---p"), or "". */
static void perms_at(const void *addr, char out[5])
{
	unsigned long lo, hi, a = (unsigned long)addr;
	char line[PATH_MAX + 128], perms[5];
	FILE *f = fopen("/proc/self/maps", "re");

	out[0] = '\0';
	assert_non_null(f);
	while (fgets(line, sizeof(line), f))
		if (sscanf(line, "%lx-%lx %4s", &lo, &hi, perms) == 3 &&
		    a >= lo && a < hi)
			memcpy(out, perms, 5);
	fclose(f);
}

/* Neither ext4, XFS nor tmpfs here is DAX: a mapping that requires
 * synchronous faults is refused, says why, and leaves nothing mapped. */
static void sync_refused_where_not_dax(const struct fx_fs *fs)
{
	struct imm_map *m = (struct imm_map *)1;
	struct imm_handle *h;
	struct imm_ctx *ctx;
	struct fx_log log;
	char p[PATH_MAX];

	make_file(fs, "nodax", p);
	ctx = fx_ctx(&log);
	h = fx_seal(ctx, p, IMM_SEAL_EXCLUSIVE, MiB);
	assert_int_equal(imm_map(h, 0, MiB, IMM_MAP_SYNC, &m), -EOPNOTSUPP);
	assert_null(m);
	assert_non_null(strstr(log.last, "IMM_MAP_PAGE_OK"));
	assert_non_null(strstr(log.last, "not on DAX"));
	/* no flag means the same: synchronous faults are the default */
	assert_int_equal(imm_map(h, 0, MiB, 0, &m), -EOPNOTSUPP);
	assert_int_equal(maps_of(p), 0);
	assert_int_equal(imm_handle_get_state(h), IMM_STATE_SEALED);
	imm_handle_close(h);
	imm_ctx_unref(ctx);
}

static void sync_refused_ext4(void **state)
{
	(void)state;
	fx_need_root("a scratch ext4 on a loop device");
	sync_refused_where_not_dax(&fx_ext4);
}

static void sync_refused_xfs_tmpfs(void **state)
{
	struct fx_fs xfs, tmp;

	(void)state;
	fx_need_root("XFS on a loop device and a tmpfs mount");
	fx_mount(&xfs, "xfs", 300, NULL);
	sync_refused_where_not_dax(&xfs);
	fx_umount(&xfs);
	fx_mount(&tmp, "tmpfs", 16, NULL);
	sync_refused_where_not_dax(&tmp);
	fx_umount(&tmp);
}

/* Page granularity when allowed: the data written through the mapping and
 * persisted with its persist function is what pread() sees. */
static void page_granularity_when_allowed(const struct fx_fs *fs)
{
	struct imm_handle *h;
	struct imm_ctx *ctx;
	struct imm_map *m;
	struct fx_log log;
	char p[PATH_MAX], buf[4096];
	unsigned char *a;

	make_file(fs, "paged", p);
	ctx = fx_ctx(&log);
	h = fx_seal(ctx, p, IMM_SEAL_EXCLUSIVE, MiB);
	assert_int_equal(imm_map(h, 64 * 1024, 256 * 1024,
				 IMM_MAP_PAGE_OK | IMM_MAP_POPULATE, &m), 0);
	assert_int_equal(imm_map_get_granularity(m), IMM_GRANULARITY_PAGE);
	assert_string_equal(imm_granularity_name(imm_map_get_granularity(m)),
			    "page");
	assert_int_equal(imm_map_get_offset(m), 64 * 1024);
	assert_int_equal(imm_map_get_length(m), 256 * 1024);
	assert_ptr_equal(imm_map_get_handle(m), h);
	assert_non_null(imm_map_get_persist_fn(m));
	assert_non_null(imm_map_get_flush_fn(m));
	assert_non_null(imm_map_get_drain_fn(m));
	a = imm_map_get_addr(m);
	assert_non_null(a);
	assert_int_equal(maps_of(p), 1);

	memset(a + 4096, 0x5a, 4096);
	imm_map_get_persist_fn(m)(a + 4096, 4096);
	assert_int_equal(pread(imm_handle_get_fd(h), buf, sizeof(buf),
			       64 * 1024 + 4096), (ssize_t)sizeof(buf));
	for (size_t i = 0; i < sizeof(buf); i++)
		assert_int_equal((unsigned char)buf[i], 0x5a);
	assert_int_equal(imm_map_deep_flush(m, a, 4096), 0);
	/* outside the mapping: the library's words; libpmem2's were garbled */
	assert_int_equal(imm_map_deep_flush(m, a + 256 * 1024, 1), -EINVAL);
	assert_non_null(strstr(log.last, "is not inside the mapping"));
	assert_null(strstr(log.last, "rage"));
	assert_int_equal(imm_map_deep_flush(m, (void *)((uintptr_t)a - 1), 1),
			 -EINVAL);
	assert_int_equal(imm_map_deep_flush(m, a + 4096, SIZE_MAX), -EINVAL);
	assert_int_equal(imm_map_deep_flush(m, a + 256 * 1024 - 4096, 4096), 0);
	assert_int_equal(log.errors, 3);

	assert_int_equal(imm_unmap(m), 0);
	assert_int_equal(maps_of(p), 0);
	assert_int_equal(log.errors, 3);	/* none from mapping and unmapping */
	imm_handle_close(h);
	imm_ctx_unref(ctx);
}

static void page_ok_ext4(void **state)
{
	(void)state;
	fx_need_root("a scratch ext4 on a loop device");
	page_granularity_when_allowed(&fx_ext4);
}

static void page_ok_xfs_tmpfs(void **state)
{
	struct fx_fs xfs, tmp;

	(void)state;
	fx_need_root("XFS on a loop device and a tmpfs mount");
	fx_mount(&xfs, "xfs", 300, NULL);
	page_granularity_when_allowed(&xfs);
	fx_umount(&xfs);
	fx_mount(&tmp, "tmpfs", 16, NULL);
	page_granularity_when_allowed(&tmp);
	fx_umount(&tmp);
}

/* Each bad request: a negative errno, a log line, nothing mapped. */
static void bad_input(void **state)
{
	struct imm_handle *h, *ro;
	struct imm_ctx *ctx;
	struct imm_map *m;
	struct fx_log log;
	char p[PATH_MAX], q[PATH_MAX];
	const uint32_t ok = IMM_MAP_PAGE_OK;

	(void)state;
	fx_need_root("a scratch ext4 on a loop device");
	make_file(&fx_ext4, "bad", p);
	ctx = fx_ctx(&log);
	assert_int_equal(imm_handle_open(ctx, p, IMM_RDWR, &h), 0);
	/* no seal yet */
	assert_int_equal(imm_map(h, 0, MiB, ok, &m), -EINVAL);
	assert_non_null(strstr(log.last, "imm_seal() it first"));
	assert_int_equal(imm_seal(h, 128 * 1024, 512 * 1024, IMM_SEAL_EXCLUSIVE,
				  NULL), 0);
	log.errors = 0;
	assert_int_equal(imm_map(h, 128 * 1024, 0, ok, &m), -EINVAL);
	assert_non_null(strstr(log.last, "zero length"));
	assert_int_equal(imm_map(h, 0, 4096, ok, &m), -ERANGE);
	assert_non_null(strstr(log.last, "not inside the sealed range"));
	assert_int_equal(imm_map(h, 128 * 1024, 512 * 1024 + 4096, ok, &m),
			 -ERANGE);
	assert_int_equal(imm_map(h, UINT64_MAX - 4095, 8192, ok, &m), -ERANGE);
	assert_int_equal(imm_map(h, 128 * 1024 + 512, 4096, ok, &m), -EINVAL);
	assert_non_null(strstr(log.last, "multiples of"));
	assert_int_equal(imm_map(h, 128 * 1024, 1000, ok, &m), -EINVAL);
	assert_int_equal(imm_map(h, 128 * 1024, 4096, 0x100, &m), -EINVAL);
	assert_non_null(strstr(log.last, "unknown flags"));
	assert_int_equal(imm_map(h, 128 * 1024, 4096,
				 IMM_MAP_SYNC | IMM_MAP_PAGE_OK, &m), -EINVAL);
	assert_int_equal(imm_map(NULL, 0, 4096, ok, &m), -EINVAL);
	assert_int_equal(imm_map(h, 128 * 1024, 4096, ok, NULL), -EINVAL);
	assert_int_equal(log.errors, 8);	/* NULLs have no context to log to */
	assert_int_equal(maps_of(p), 0);
	assert_int_equal(imm_handle_get_state(h), IMM_STATE_SEALED);
	imm_handle_close(h);

	/* a read-only handle maps read-only, and says so otherwise */
	make_file(&fx_ext4, "bad-ro", q);
	ro = fx_seal(ctx, q, IMM_SEAL_SHARED, MiB);
	assert_int_equal(imm_map(ro, 0, MiB, ok, &m), -EBADF);
	assert_non_null(strstr(log.last, "IMM_MAP_READONLY"));
	assert_int_equal(maps_of(q), 0);
	assert_int_equal(imm_map(ro, 0, MiB, ok | IMM_MAP_READONLY |
				 IMM_MAP_POPULATE, &m), 0);
	{
		char perms[5];

		perms_at(imm_map_get_addr(m), perms);
		assert_string_equal(perms, "r--s");
	}
	assert_int_equal(fx_checksum_fd(imm_handle_get_fd(ro)), fx_checksum(q));
	assert_int_equal(imm_unmap(m), 0);
	assert_int_equal(imm_unmap(NULL), -EINVAL);
	imm_handle_close(ro);
	imm_ctx_unref(ctx);
}

/* A stale pointer into a torn-down mapping faults (the address range is
 * kept reserved, PROT_NONE) instead of reaching the file or new memory. */
static void assert_faults(volatile unsigned char *a)
{
	int status;
	pid_t pid = fork();

	assert_true(pid >= 0);
	if (pid == 0) {
		signal(SIGSEGV, SIG_DFL);
		a[0] = 1;
		_exit(0);
	}
	assert_int_equal(waitpid(pid, &status, 0), pid);
	assert_true(WIFSIGNALED(status));
	assert_int_equal(WTERMSIG(status), SIGSEGV);
}

static void release_and_close_unmap(void **state)
{
	struct imm_map *m1, *m2;
	struct imm_handle *h;
	struct imm_ctx *ctx;
	struct fx_log log;
	char p[PATH_MAX], perms[5];
	unsigned char *a1, *a2;

	(void)state;
	fx_need_root("a scratch ext4 on a loop device");
	make_file(&fx_ext4, "release", p);
	ctx = fx_ctx(&log);
	h = fx_seal(ctx, p, IMM_SEAL_EXCLUSIVE, MiB);
	assert_int_equal(imm_map(h, 0, MiB / 2, IMM_MAP_PAGE_OK, &m1), 0);
	assert_int_equal(imm_map(h, MiB / 2, MiB / 2, IMM_MAP_PAGE_OK, &m2), 0);
	a1 = imm_map_get_addr(m1);
	a2 = imm_map_get_addr(m2);
	assert_true(a2 != a1);
	perms_at(a1, perms);
	assert_string_equal(perms, "rw-s");
	assert_int_equal(maps_of(p), 2);

	assert_int_equal(imm_release(h), 0);
	assert_int_equal(maps_of(p), 0);
	assert_null(imm_map_get_addr(m1));
	assert_null(imm_map_get_addr(m2));
	perms_at(a1, perms);
	assert_string_equal(perms, "---p");
	perms_at(a2, perms);
	assert_string_equal(perms, "---p");
	assert_faults(a1);
	assert_int_equal(imm_unmap(m2), 0);
	assert_int_equal(imm_map_deep_flush(m1, a1, 4096), -ESTALE);
	/* a released handle can't map until sealed again */
	assert_int_equal(imm_map(h, 0, MiB, IMM_MAP_PAGE_OK, &m2), -EINVAL);
	assert_null(m2);
	assert_int_equal(imm_unmap(m1), 0);
	perms_at(a1, perms);
	assert_string_equal(perms, "");	/* reservation gone too */

	/* close tears down the same way; the object lives until imm_unmap */
	assert_int_equal(imm_seal(h, 0, MiB, IMM_SEAL_EXCLUSIVE, NULL), 0);
	assert_int_equal(imm_map(h, 0, MiB, IMM_MAP_PAGE_OK, &m1), 0);
	assert_int_equal(maps_of(p), 1);
	assert_int_equal(imm_handle_close(h), 0);
	assert_int_equal(maps_of(p), 0);
	assert_null(imm_map_get_addr(m1));
	assert_int_equal(imm_unmap(m1), 0);
	assert_int_equal(log.errors, 2);	/* the deep flush and the map */
	imm_ctx_unref(ctx);
}

/* Lines of /proc/self/maps, and VmSize in KiB. */
static void address_space(int *ret_lines, long *ret_vm_kib)
{
	char line[PATH_MAX + 128];
	FILE *f = fopen("/proc/self/maps", "re");

	assert_non_null(f);
	*ret_lines = 0;
	while (fgets(line, sizeof(line), f))
		(*ret_lines)++;
	fclose(f);
	f = fopen("/proc/self/status", "re");
	assert_non_null(f);
	*ret_vm_kib = -1;
	while (fgets(line, sizeof(line), f))
		if (sscanf(line, "VmSize: %ld kB", ret_vm_kib) == 1)
			break;
	fclose(f);
	assert_true(*ret_vm_kib > 0);
}

/*
 * Every map/unmap cycle gives all its address space back, whether the
 * mapping was unmapped live or after its seal went (the range kept
 * reserved until imm_unmap).  libpmem2 1.12.1's vm reservations reserved
 * ALIGN_UP(len, 2 MiB) + 2 MiB and gave back len: the old code grew by
 * 600 MiB of VmSize and 200 lines of /proc/self/maps in these 200 cycles
 * of 1 MiB mappings; now by nothing.
 */
static void map_cycles_leak_nothing(void **state)
{
	struct imm_handle *h;
	struct imm_ctx *ctx;
	struct imm_map *m;
	struct fx_log log;
	char p[PATH_MAX], perms[5];
	int lines0, lines;
	long vm0, vm;

	(void)state;
	fx_need_root("a scratch ext4 on a loop device");
	make_file(&fx_ext4, "cycles", p);
	ctx = fx_ctx(&log);
	h = fx_seal(ctx, p, IMM_SEAL_EXCLUSIVE, MiB);
	/* one cycle first: libpmem2 and libc set up what they keep */
	assert_int_equal(imm_map(h, 0, MiB, IMM_MAP_PAGE_OK, &m), 0);
	assert_int_equal(imm_unmap(m), 0);
	address_space(&lines0, &vm0);
	for (int i = 0; i < 200; i++) {
		unsigned char *a;

		assert_int_equal(imm_map(h, 0, MiB, IMM_MAP_PAGE_OK, &m), 0);
		a = imm_map_get_addr(m);
		assert_int_equal(a[0], a[0]);	/* mapped, readable */
		if (i % 2) {
			/* torn down with the seal: reserved, no longer the file */
			assert_int_equal(imm_release(h), 0);
			perms_at(a, perms);
			assert_string_equal(perms, "---p");
			assert_int_equal(maps_of(p), 0);
			assert_int_equal(imm_unmap(m), 0);
			perms_at(a, perms);
			assert_string_equal(perms, "");
			assert_int_equal(imm_seal(h, 0, MiB, IMM_SEAL_EXCLUSIVE,
						  NULL), 0);
		} else {
			assert_int_equal(imm_unmap(m), 0);
		}
	}
	address_space(&lines, &vm);
	print_message("200 cycles: %+d lines of /proc/self/maps, %+ld KiB "
		      "VmSize\n", lines - lines0, vm - vm0);
	assert_true(lines - lines0 <= 2);
	assert_true(vm - vm0 <= 4096);
	assert_int_equal(log.errors, 0);
	imm_handle_close(h);
	imm_ctx_unref(ctx);
}

static void count_event(struct imm_event *ev, void *data)
{
	int *types = data;

	types[imm_event_get_type(ev)]++;
}

/* A holder that ignores a recall loses its mappings at the revoke, before
 * the lease goes; mapping while the seal is being broken is refused. */
static void revoke_unmaps(void **state)
{
	struct imm_handle *h;
	struct imm_ctx *ctx;
	struct imm_map *m, *m2;
	struct fx_log log;
	char p[PATH_MAX];
	int types[8] = { 0 };
	uint64_t end;
	pid_t pid;

	(void)state;
	fx_need_root("writing /proc/sys/fs/lease-break-time");
	make_file(&fx_ext4, "revoke", p);
	fx_sysctl_set("/proc/sys/fs/lease-break-time", 2);
	ctx = fx_ctx(&log);
	assert_int_equal(imm_ctx_set_revoke_margin(ctx, 500), 0);
	assert_int_equal(imm_ctx_set_event_fn(ctx, count_event, types, 0), 0);
	h = fx_seal(ctx, p, IMM_SEAL_EXCLUSIVE, MiB);
	assert_int_equal(imm_map(h, 0, MiB, IMM_MAP_PAGE_OK, &m), 0);
	pid = fx_breaker_start(p, FX_OPEN_RDWR);
	end = fx_now_ns() + 20 * SEC;
	while (!types[IMM_EVENT_RECALL] && fx_now_ns() < end)
		fx_dispatch_wait(ctx, 100);
	assert_int_equal(imm_handle_get_state(h), IMM_STATE_BREAKING);
	assert_int_equal(imm_map(h, 0, MiB, IMM_MAP_PAGE_OK, &m2), -ESTALE);
	assert_non_null(strstr(log.last, "release and re-seal"));
	assert_non_null(imm_map_get_addr(m));	/* still usable until revoke */
	while (!types[IMM_EVENT_REVOKED] && fx_now_ns() < end)
		fx_dispatch_wait(ctx, 100);
	fx_breaker_wait(pid);
	assert_int_equal(imm_handle_get_state(h), IMM_STATE_REVOKED);
	assert_null(imm_map_get_addr(m));
	assert_int_equal(maps_of(p), 0);
	assert_false(fx_leased(p));
	assert_int_equal(imm_map(h, 0, MiB, IMM_MAP_PAGE_OK, &m2), -ESTALE);
	assert_int_equal(imm_unmap(m), 0);
	imm_handle_close(h);
	imm_ctx_unref(ctx);
}

/* Topology of non-pmem files: the block device is found, the namespace is
 * not, and the granularities say what imm_map() would do. */
static void topology_not_pmem(void **state)
{
	struct imm_topology t = { .sz = sizeof(t) };
	struct imm_badblock bb[4];
	struct imm_handle *h;
	struct imm_ctx *ctx;
	struct fx_log log;
	struct fx_fs tmp;
	char p[PATH_MAX];

	(void)state;
	fx_need_root("a scratch ext4 on a loop device and a tmpfs mount");
	make_file(&fx_ext4, "topo", p);
	ctx = fx_ctx(&log);
	assert_int_equal(imm_handle_open(ctx, p, IMM_RDWR, &h), 0);
	assert_int_equal(imm_topology_query(h, &t), 0);
	assert_int_equal(strncmp(t.blockdev, "loop", 4), 0);
	assert_string_equal(t.disk, t.blockdev);
	assert_int_equal(t.flags & (IMM_TOPO_PMEM | IMM_TOPO_DAX |
				    IMM_TOPO_PARTITION), 0);
	assert_int_equal(t.gran_sync, IMM_GRANULARITY_NONE);
	assert_int_equal(t.gran_page_ok, IMM_GRANULARITY_PAGE);
	assert_string_equal(t.region, "");
	/* no known media errors: none unsealed, none sealed, the flag seals */
	assert_int_equal(imm_badblocks(h, bb, 4), 0);
	assert_int_equal(imm_badblocks(h, NULL, 0), 0);
	assert_int_equal(imm_badblocks(h, NULL, 4), -EINVAL);
	assert_int_equal(imm_seal(h, 0, MiB, IMM_SEAL_EXCLUSIVE |
				  IMM_SEAL_NO_BADBLOCKS, NULL), 0);
	assert_int_equal(imm_badblocks(h, bb, 4), 0);
	t.sz = 3;
	assert_int_equal(imm_topology_query(h, &t), -EINVAL);
	assert_non_null(strstr(log.last, "sizeof(struct imm_topology)"));
	log.errors = 0;
	imm_handle_close(h);

	fx_mount(&tmp, "tmpfs", 16, NULL);
	make_file(&tmp, "topo", p);
	assert_int_equal(imm_handle_open(ctx, p, IMM_RDWR, &h), 0);
	t = (struct imm_topology){ .sz = sizeof(t) };
	assert_int_equal(imm_topology_query(h, &t), 0);
	assert_string_equal(t.blockdev, "");	/* no block device at all */
	assert_int_equal(t.flags, 0);
	assert_int_equal(t.gran_page_ok, IMM_GRANULARITY_PAGE);
	{
		/* a program built against a newer, larger struct: told how
		 * much this library filled, the rest left alone */
		struct { struct imm_topology t; unsigned char newer[24]; } big;

		memset(&big, 0xab, sizeof(big));
		big.t.sz = sizeof(big);
		assert_int_equal(imm_topology_query(h, &big.t), 0);
		assert_int_equal(big.t.sz, sizeof(struct imm_topology));
		for (size_t i = 0; i < sizeof(big.newer); i++)
			assert_int_equal(big.newer[i], 0xab);
		/* an older, smaller one: exactly its own size */
		big.t.sz = offsetof(struct imm_topology, disk);
		assert_int_equal(imm_topology_query(h, &big.t), 0);
		assert_int_equal(big.t.sz, offsetof(struct imm_topology, disk));
	}
	imm_handle_close(h);
	fx_umount(&tmp);
	if (log.errors)
		print_message("unexpected log: %s\n", log.last);
	assert_int_equal(log.errors, 0);
	imm_ctx_unref(ctx);
}

/* A filesystem on a partition: the partition's start is reported. */
static void topology_partition(void **state)
{
	struct imm_topology t = { .sz = sizeof(t) };
	struct imm_handle *h;
	struct imm_ctx *ctx;
	struct fx_log log;
	char dir[] = "/var/tmp/imm-part-XXXXXX", img[64], cmd[512];
	char dev[64] = "", p[PATH_MAX];
	FILE *f;

	(void)state;
	fx_need_root("a partitioned loop device");
	assert_non_null(mkdtemp(dir));
	snprintf(img, sizeof(img), "%s/disk.img", dir);
	snprintf(cmd, sizeof(cmd),
		 "truncate -s 64M %s && printf 'start=4096, size=100000\\n' | "
		 "sfdisk -q %s && losetup -f --show %s", img, img, img);
	f = popen(cmd, "r");
	assert_non_null(f);
	assert_non_null(fgets(dev, sizeof(dev), f));
	assert_int_equal(pclose(f), 0);
	dev[strcspn(dev, "\n")] = '\0';
	/* partx: a loop device's own partition scan is off on some kernels,
	 * and partitions added by hand outlive the loop device unless removed */
	snprintf(cmd, sizeof(cmd), "partx -u %s && mkfs.ext4 -qF %sp1 && mkdir %s/m && "
		 "mount %sp1 %s/m && dd if=/dev/zero of=%s/m/f bs=1M count=1 "
		 "status=none", dev, dev, dir, dev, dir, dir);
	assert_int_equal(system(cmd), 0);

	snprintf(p, sizeof(p), "%s/m/f", dir);
	ctx = fx_ctx(&log);
	assert_int_equal(imm_handle_open(ctx, p, IMM_RDWR, &h), 0);
	assert_int_equal(imm_topology_query(h, &t), 0);
	assert_true(t.flags & IMM_TOPO_PARTITION);
	assert_int_equal(t.part_start, 4096 * 512);
	assert_string_equal(t.disk, dev + strlen("/dev/"));
	assert_int_equal(strncmp(t.blockdev, t.disk, strlen(t.disk)), 0);
	assert_string_equal(t.blockdev + strlen(t.disk), "p1");
	imm_handle_close(h);
	imm_ctx_unref(ctx);
	snprintf(cmd, sizeof(cmd), "umount %s/m; partx -d %s; losetup -d %s; rm -rf %s",
		 dir, dev, dev, dir);
	assert_int_equal(system(cmd), 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(sync_refused_ext4),
		cmocka_unit_test(sync_refused_xfs_tmpfs),
		cmocka_unit_test(page_ok_ext4),
		cmocka_unit_test(page_ok_xfs_tmpfs),
		cmocka_unit_test(bad_input),
		cmocka_unit_test(release_and_close_unmap),
		cmocka_unit_test(revoke_unmaps),
		cmocka_unit_test(map_cycles_leak_nothing),
		cmocka_unit_test(topology_not_pmem),
		cmocka_unit_test(topology_partition),
	};

	return cmocka_run_group_tests(tests, fx_group_ext4_setup,
				      fx_group_ext4_teardown);
}
