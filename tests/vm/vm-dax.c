// SPDX-License-Identifier: LGPL-2.1-or-later
/*
 * The VM tier's DAX tests, run inside the qemu guest by tests/vm/suite with
 * the mounts tests/vm/guest-init makes: fsdax xfs and ext4, virtio-pmem,
 * and a non-DAX ext4.
 *
 *   vm-dax                      the cmocka suite
 *   vm-dax persist-write OUT    write + persist through MAP_SYNC mappings;
 *                               write OUT for the host: where in each
 *                               NVDIMM backing file the data must be
 *   vm-dax persist-check        after a reboot on the same NVDIMMs: read
 *                               the data back
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#include <linux/fiemap.h>
#include <linux/fs.h>

#include <cmocka.h>

#include <libimmutable/libimmutable.h>

#define MiB (1u << 20)
#define FILE_SIZE (4 * MiB)

static const char *const fsdax[] = { "/mnt/pmem-xfs", "/mnt/pmem-ext4" };

static char logbuf[1024];

static void log_fn(void *data, int priority, const char *file, int line,
		   const char *fn, const char *format, va_list args)
{
	(void)data; (void)file; (void)line; (void)fn;
	vsnprintf(logbuf, sizeof(logbuf), format, args);
	if (priority <= 3)
		fprintf(stderr, "  log: %s\n", logbuf);
}

static struct imm_ctx *ctx_new(void)
{
	struct imm_ctx *ctx;

	assert_int_equal(imm_ctx_new(&ctx), 0);
	imm_ctx_set_log_fn(ctx, log_fn, NULL);
	return ctx;
}

/* A fully written file: the seal then has nothing to prepare. */
static void make_file(const char *dir, const char *name, char *path,
		      unsigned seed)
{
	char buf[4096];
	int fd;

	snprintf(path, PATH_MAX, "%s/%s", dir, name);
	unlink(path);
	fd = open(path, O_CREAT | O_RDWR | O_CLOEXEC, 0644);
	assert_true(fd >= 0);
	for (unsigned off = 0; off < FILE_SIZE; off += sizeof(buf)) {
		for (size_t i = 0; i < sizeof(buf); i++)
			buf[i] = (char)(seed + off / 4096 + i * 7);
		assert_int_equal(pwrite(fd, buf, sizeof(buf), off), sizeof(buf));
	}
	assert_int_equal(fsync(fd), 0);
	close(fd);
}

static struct imm_handle *sealed(struct imm_ctx *ctx, const char *path)
{
	struct imm_handle *h;

	assert_int_equal(imm_handle_open(ctx, path, IMM_RDWR, &h), 0);
	assert_int_equal(imm_seal(h, 0, FILE_SIZE, IMM_SEAL_EXCLUSIVE |
				  IMM_SEAL_NO_BADBLOCKS, NULL), 0);
	return h;
}

static void fill(unsigned char *p, size_t n, unsigned seed)
{
	for (size_t i = 0; i < n; i++)
		p[i] = (unsigned char)(seed * 31 + i * 13 + (i >> 12));
}

static bool same_as_fill(const unsigned char *p, size_t n, unsigned seed)
{
	for (size_t i = 0; i < n; i++)
		if (p[i] != (unsigned char)(seed * 31 + i * 13 + (i >> 12)))
			return false;
	return true;
}

/* MAP_SYNC on fsdax: byte or cache-line granularity (byte only where the
 * region's persistence domain is the CPU cache), data visible to pread. */
static void map_sync_on_fsdax(void **state)
{
	(void)state;
	for (size_t i = 0; i < 2; i++) {
		struct imm_topology t = { .sz = sizeof(t) };
		struct imm_ctx *ctx = ctx_new();
		unsigned char *buf = malloc(MiB);
		struct imm_handle *h;
		struct imm_map *m;
		char p[PATH_MAX];

		make_file(fsdax[i], "sync", p, 3);
		h = sealed(ctx, p);
		assert_int_equal(imm_map(h, MiB, 2 * MiB, IMM_MAP_SYNC |
					 IMM_MAP_POPULATE, &m), 0);
		assert_int_equal(imm_topology_query(h, &t), 0);
		assert_int_equal(imm_map_get_granularity(m),
				 strcmp(t.persistence_domain, "cpu_cache") == 0 ?
				 IMM_GRANULARITY_BYTE : IMM_GRANULARITY_CACHE_LINE);
		fill(imm_map_get_addr(m), MiB, 9);
		imm_map_get_persist_fn(m)(imm_map_get_addr(m), MiB);
		assert_int_equal(pread(imm_handle_get_fd(h), buf, MiB, MiB), MiB);
		assert_true(same_as_fill(buf, MiB, 9));
		/* flush + drain is the split form of persist */
		fill((unsigned char *)imm_map_get_addr(m) + MiB, 4096, 10);
		imm_map_get_flush_fn(m)((char *)imm_map_get_addr(m) + MiB, 4096);
		imm_map_get_drain_fn(m)();
		assert_int_equal(imm_map_deep_flush(m, imm_map_get_addr(m), MiB), 0);
		printf("  %s: %s granularity, %s\n", fsdax[i],
		       imm_granularity_name(imm_map_get_granularity(m)),
		       t.persistence_domain);
		assert_int_equal(imm_release(h), 0);
		assert_null(imm_map_get_addr(m));
		assert_int_equal(imm_unmap(m), 0);
		imm_handle_close(h);
		imm_ctx_unref(ctx);
		free(buf);
	}
}

/* The namespace under each fsdax mount, as ndctl sees it. */
static void topology_of_fsdax(void **state)
{
	(void)state;
	for (size_t i = 0; i < 2; i++) {
		struct imm_topology t = { .sz = sizeof(t) };
		struct imm_badblock bb[4];
		struct imm_ctx *ctx = ctx_new();
		struct imm_handle *h;
		char p[PATH_MAX];

		make_file(fsdax[i], "topo", p, 4);
		h = sealed(ctx, p);
		assert_int_equal(imm_topology_query(h, &t), 0);
		printf("  %s: %s on %s, %s %s, %llu bytes, align %llu, %s, "
		       "persistence %s, data +%llu, sync %s\n", fsdax[i],
		       t.blockdev, t.ns_name, t.bus, t.region,
		       (unsigned long long)t.ns_size,
		       (unsigned long long)t.ns_align, t.ns_mode,
		       t.persistence_domain, (unsigned long long)t.data_offset,
		       imm_granularity_name(t.gran_sync));
		assert_true(t.flags & IMM_TOPO_DAX);
		assert_true(t.flags & IMM_TOPO_PMEM);
		assert_false(t.flags & IMM_TOPO_PARTITION);
		assert_int_equal(strncmp(t.blockdev, "pmem", 4), 0);
		assert_string_equal(t.ns_mode, "fsdax");
		assert_int_equal(strncmp(t.ns_name, "namespace", 9), 0);
		assert_int_equal(strncmp(t.region, "region", 6), 0);
		assert_string_equal(t.bus, "ACPI.NFIT");
		assert_true(t.ns_size > 512 * MiB && t.ns_size <= 1024 * MiB);
		assert_true(t.ns_align >= 4096);
		/* the fsdax info block and page map come first */
		assert_true(t.data_offset >= 4096 && t.data_offset < 64 * MiB);
		assert_true(t.gran_sync == IMM_GRANULARITY_CACHE_LINE ||
			    t.gran_sync == IMM_GRANULARITY_BYTE);
		assert_int_equal(t.gran_page_ok, t.gran_sync);
		/* a fresh emulated NVDIMM has no media errors */
		assert_int_equal(imm_badblocks(h, bb, 4), 0);
		imm_handle_close(h);
		imm_ctx_unref(ctx);
	}
}

/* virtio-pmem is DAX without MAP_SYNC: refused when synchronous faults
 * are required, page granularity when allowed. */
static void virtio_pmem_policy(void **state)
{
	struct imm_topology t = { .sz = sizeof(t) };
	struct imm_ctx *ctx = ctx_new();
	struct imm_handle *h;
	struct imm_map *m;
	char p[PATH_MAX], buf[4096];

	(void)state;
	make_file("/mnt/vpmem", "vp", p, 5);
	h = sealed(ctx, p);
	assert_int_equal(imm_map(h, 0, MiB, IMM_MAP_SYNC, &m), -EOPNOTSUPP);
	assert_non_null(strstr(logbuf, "virtio-pmem"));
	assert_non_null(strstr(logbuf, "IMM_MAP_PAGE_OK"));
	assert_int_equal(imm_map(h, 0, MiB, IMM_MAP_PAGE_OK | IMM_MAP_POPULATE,
				 &m), 0);
	assert_int_equal(imm_map_get_granularity(m), IMM_GRANULARITY_PAGE);
	memset(imm_map_get_addr(m), 0x77, 4096);
	imm_map_get_persist_fn(m)(imm_map_get_addr(m), 4096);
	assert_int_equal(pread(imm_handle_get_fd(h), buf, 4096, 0), 4096);
	assert_int_equal((unsigned char)buf[4095], 0x77);
	assert_int_equal(imm_topology_query(h, &t), 0);
	printf("  /mnt/vpmem: %s, bus %s, %s, sync %s, page_ok %s\n",
	       t.blockdev, t.bus[0] ? t.bus : "-", t.ns_mode[0] ? t.ns_mode : "-",
	       imm_granularity_name(t.gran_sync),
	       imm_granularity_name(t.gran_page_ok));
	assert_true(t.flags & IMM_TOPO_DAX);
	assert_int_equal(t.gran_sync, IMM_GRANULARITY_NONE);
	assert_int_equal(t.gran_page_ok, IMM_GRANULARITY_PAGE);
	assert_int_equal(imm_unmap(m), 0);
	imm_handle_close(h);
	imm_ctx_unref(ctx);
}

/* A non-DAX ext4 on a virtio disk: page granularity only when allowed. */
static void plain_ext4_policy(void **state)
{
	struct imm_topology t = { .sz = sizeof(t) };
	struct imm_ctx *ctx = ctx_new();
	struct imm_handle *h;
	struct imm_map *m;
	char p[PATH_MAX];

	(void)state;
	make_file("/mnt/plain", "plain", p, 6);
	h = sealed(ctx, p);
	assert_int_equal(imm_map(h, 0, MiB, IMM_MAP_SYNC, &m), -EOPNOTSUPP);
	assert_non_null(strstr(logbuf, "not on DAX"));
	assert_int_equal(imm_map(h, 0, MiB, IMM_MAP_PAGE_OK, &m), 0);
	assert_int_equal(imm_map_get_granularity(m), IMM_GRANULARITY_PAGE);
	assert_int_equal(imm_topology_query(h, &t), 0);
	assert_false(t.flags & (IMM_TOPO_DAX | IMM_TOPO_PMEM));
	assert_int_equal(t.gran_sync, IMM_GRANULARITY_NONE);
	assert_int_equal(imm_unmap(m), 0);
	imm_handle_close(h);
	imm_ctx_unref(ctx);
}

/* Bad input on a DAX file: errno, log line, nothing mapped, seal kept. */
static void bad_input_on_fsdax(void **state)
{
	struct imm_ctx *ctx = ctx_new();
	struct imm_handle *h;
	struct imm_map *m;
	char p[PATH_MAX];

	(void)state;
	make_file(fsdax[0], "bad", p, 7);
	h = sealed(ctx, p);
	assert_int_equal(imm_map(h, 0, 0, IMM_MAP_SYNC, &m), -EINVAL);
	assert_int_equal(imm_map(h, 0, FILE_SIZE + 4096, IMM_MAP_SYNC, &m), -ERANGE);
	assert_int_equal(imm_map(h, 100, 4096, IMM_MAP_SYNC, &m), -EINVAL);
	assert_non_null(strstr(logbuf, "multiples of"));
	assert_int_equal(imm_handle_get_state(h), IMM_STATE_SEALED);
	assert_int_equal(imm_release(h), 0);
	assert_int_equal(imm_map(h, 0, MiB, IMM_MAP_SYNC, &m), -EINVAL);
	imm_handle_close(h);
	imm_ctx_unref(ctx);
}

/* The file's first physical byte, from FIEMAP. */
static uint64_t first_physical(int fd)
{
	struct fiemap *fm = calloc(1, sizeof(*fm) + sizeof(struct fiemap_extent));
	uint64_t phys;

	assert_non_null(fm);
	fm->fm_length = FIEMAP_MAX_OFFSET;
	fm->fm_extent_count = 1;
	assert_int_equal(ioctl(fd, FS_IOC_FIEMAP, fm), 0);
	assert_int_equal(fm->fm_mapped_extents, 1);
	phys = fm->fm_extents[0].fe_physical;
	free(fm);
	return phys;
}

/*
 * Write a pattern through a MAP_SYNC mapping, persist it, and stop: no
 * msync, no fsync, no unmount (the guest powers off hard).  OUT tells the
 * host where in each NVDIMM's backing file the first 4 KiB must be: the
 * region offset the library's topology gives, plus FIEMAP's physical.
 */
static int persist_write(const char *out)
{
	FILE *f = fopen(out, "we");

	if (!f)
		return 1;
	for (size_t i = 0; i < 2; i++) {
		struct imm_topology t = { .sz = sizeof(t) };
		struct imm_ctx *ctx = ctx_new();
		struct imm_handle *h;
		struct imm_map *m;
		char p[PATH_MAX];

		make_file(fsdax[i], "persist", p, 8);
		if (imm_handle_open(ctx, p, IMM_RDWR, &h) ||
		    imm_seal(h, 0, FILE_SIZE, IMM_SEAL_EXCLUSIVE, NULL) ||
		    imm_map(h, 0, FILE_SIZE, IMM_MAP_SYNC, &m) ||
		    imm_topology_query(h, &t))
			return 1;
		fill(imm_map_get_addr(m), FILE_SIZE, 11 + (unsigned)i);
		imm_map_get_persist_fn(m)(imm_map_get_addr(m), FILE_SIZE);
		/* region = NVDIMM backing file when it has no label area */
		fprintf(f, "%s %s %llu\n", fsdax[i], t.region,
			(unsigned long long)(t.data_offset + t.part_start +
					     first_physical(imm_handle_get_fd(h))));
		printf("  %s: persisted %u bytes, %s data at region +%llu\n",
		       fsdax[i], FILE_SIZE, t.region,
		       (unsigned long long)t.data_offset);
		/* deliberately no release: the seal dies with the guest */
	}
	return fclose(f) ? 1 : 0;
}

static int persist_check(void)
{
	int bad = 0;

	for (size_t i = 0; i < 2; i++) {
		unsigned char *buf = malloc(FILE_SIZE);
		char p[PATH_MAX];
		int fd;

		snprintf(p, sizeof(p), "%s/persist", fsdax[i]);
		fd = open(p, O_RDONLY | O_CLOEXEC);
		if (fd < 0 || !buf || pread(fd, buf, FILE_SIZE, 0) != FILE_SIZE ||
		    !same_as_fill(buf, FILE_SIZE, 11 + (unsigned)i)) {
			fprintf(stderr, "persist-check: %s lost data\n", p);
			bad = 1;
		} else {
			printf("  %s: %u bytes survived the reboot\n", p,
			       FILE_SIZE);
		}
		if (fd >= 0)
			close(fd);
		free(buf);
	}
	return bad;
}

int main(int argc, char **argv)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(map_sync_on_fsdax),
		cmocka_unit_test(topology_of_fsdax),
		cmocka_unit_test(virtio_pmem_policy),
		cmocka_unit_test(plain_ext4_policy),
		cmocka_unit_test(bad_input_on_fsdax),
	};

	if (argc == 3 && strcmp(argv[1], "persist-write") == 0)
		return persist_write(argv[2]);
	if (argc == 2 && strcmp(argv[1], "persist-check") == 0)
		return persist_check();
	if (argc != 1) {
		fprintf(stderr, "usage: vm-dax [persist-write OUT | persist-check]\n");
		return 2;
	}
	return cmocka_run_group_tests(tests, NULL, NULL);
}
