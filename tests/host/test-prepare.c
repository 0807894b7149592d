// SPDX-License-Identifier: LGPL-2.1-or-later
/*
 * Preparation on real filesystems: after a seal, the range's block map is
 * final (checked with our own FIEMAP, not the library's), and the data and
 * size are what they were.  A failed seal leaves no seal behind.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>
#include <linux/falloc.h>
#include <linux/fiemap.h>
#include <linux/fs.h>

#include "fixture.h"

/* The oracle: flags and holes of [start, end) as the kernel reports them. */
struct raw_map {
	unsigned extents;
	unsigned holes;
	uint32_t flags;		/* OR of every extent's flags */
};

static struct raw_map raw_fiemap_fd(int fd, uint64_t start, uint64_t end)
{
	struct fiemap *fm = calloc(1, sizeof(*fm) + 512 * sizeof(struct fiemap_extent));
	struct raw_map m = { 0 };
	uint64_t cursor = start;

	assert_non_null(fm);
	fm->fm_start = start;
	fm->fm_length = end - start;
	fm->fm_flags = FIEMAP_FLAG_SYNC;
	fm->fm_extent_count = 512;
	assert_int_equal(ioctl(fd, FS_IOC_FIEMAP, fm), 0);
	for (unsigned i = 0; i < fm->fm_mapped_extents; i++) {
		struct fiemap_extent *e = &fm->fm_extents[i];

		if (e->fe_logical > cursor)
			m.holes++;
		cursor = e->fe_logical + e->fe_length;
		m.extents++;
		m.flags |= e->fe_flags & ~(FIEMAP_EXTENT_LAST | FIEMAP_EXTENT_MERGED);
	}
	if (cursor < end)
		m.holes++;
	free(fm);
	return m;
}

/* Only for files nobody has sealed: an open would break the seal. */
static struct raw_map raw_fiemap(const char *path, uint64_t start, uint64_t end)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	struct raw_map m;

	assert_true(fd >= 0);
	m = raw_fiemap_fd(fd, start, end);
	close(fd);
	return m;
}

static void punch(const char *path, uint64_t off, uint64_t len)
{
	int fd = open(path, O_RDWR | O_CLOEXEC);

	assert_true(fd >= 0);
	assert_int_equal(fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
				   (off_t)off, (off_t)len), 0);
	close(fd);
}

static void prealloc(const char *path, uint64_t off, uint64_t len)
{
	int fd = open(path, O_RDWR | O_CLOEXEC);

	assert_true(fd >= 0);
	assert_int_equal(fallocate(fd, FALLOC_FL_KEEP_SIZE, (off_t)off,
				   (off_t)len), 0);
	close(fd);
}

static void seal_and_check_final(const char *path, uint32_t open_flags,
				 uint32_t seal_flags, uint64_t size)
{
	struct imm_layout_info li = { .sz = sizeof(li) };
	uint64_t sum = fx_checksum(path);
	struct imm_handle *h;
	struct imm_ctx *ctx;
	struct raw_map m;
	struct fx_log log;

	ctx = fx_ctx(&log);
	assert_int_equal(imm_handle_open(ctx, path, open_flags, &h), 0);
	assert_int_equal(imm_layout_query(h, 0, 0, &li), 0);
	assert_false(li.flags & IMM_LAYOUT_FINAL);
	assert_int_equal(imm_seal(h, 0, size, seal_flags, NULL), 0);
	assert_int_equal(imm_handle_get_state(h), IMM_STATE_SEALED);
	assert_true(fx_leased(path));

	m = raw_fiemap_fd(imm_handle_get_fd(h), 0, size);
	assert_int_equal(m.holes, 0);
	assert_int_equal(m.flags & (FIEMAP_EXTENT_UNWRITTEN | FIEMAP_EXTENT_SHARED |
				    FIEMAP_EXTENT_DELALLOC | FIEMAP_EXTENT_UNKNOWN |
				    FIEMAP_EXTENT_DATA_INLINE), 0);
	assert_int_equal(imm_layout_query(h, 0, 0, &li), 0);
	assert_true(li.flags & IMM_LAYOUT_FINAL);
	assert_int_equal(li.holes + li.unwritten + li.shared + li.delalloc, 0);
	assert_int_equal(imm_verify(h), 0);

	assert_int_equal(fx_checksum_fd(imm_handle_get_fd(h)), sum);
	assert_int_equal(fx_size(path), size);
	assert_int_equal(imm_handle_get_state(h), IMM_STATE_SEALED);
	assert_int_equal(imm_release(h), 0);
	assert_false(fx_leased(path));
	assert_int_equal(imm_handle_close(h), 0);
	assert_int_equal(log.errors, 0);
	imm_ctx_unref(ctx);
}

/* ext4: holes, unwritten (preallocated) and delalloc (unsynced) extents. */
static void ext4_holes_unwritten_delalloc(void **state)
{
	const uint64_t size = 8u << 20;
	struct fx_fs fs;
	char p[PATH_MAX];
	struct raw_map m;

	(void)state;
	fx_need_root("a scratch ext4 on a loop device");
	fx_mount(&fs, "ext4", 64, NULL);
	fx_path(&fs, "f", p);
	fx_sparse_file(p, size);
	fx_write_pattern(p, 0, 1 << 20, 7);
	sync();
	prealloc(p, 2 << 20, 1 << 20);		/* unwritten */
	fx_write_pattern(p, 5 << 20, 12345, 8);	/* delalloc, partial block */
	m = raw_fiemap(p, 0, size);
	/* raw_fiemap syncs, so only check the holes and unwritten here */
	assert_true(m.holes >= 2);
	assert_true(m.flags & FIEMAP_EXTENT_UNWRITTEN);
	fx_write_pattern(p, 6 << 20, 4096, 9);		/* delalloc again */
	seal_and_check_final(p, IMM_RDWR, IMM_SEAL_EXCLUSIVE, size);
	fx_umount(&fs);
}

/* XFS with reflink: shared + unwritten + holes + delalloc in one file. */
static void xfs_reflink_unwritten_holes_delalloc(void **state)
{
	const uint64_t size = 16u << 20;
	char a[PATH_MAX], b[PATH_MAX];
	struct fx_fs fs;
	uint64_t sum_a;
	struct raw_map m;
	int fa, fb;

	(void)state;
	fx_need_root("an XFS with reflink on a loop device");
	fx_mount(&fs, "xfs", 300, "-m reflink=1");
	fx_path(&fs, "a", a);
	fx_path(&fs, "b", b);
	fx_write_pattern(a, 0, size, 11);
	fa = open(a, O_RDONLY | O_CLOEXEC);
	fb = open(b, O_CREAT | O_RDWR | O_CLOEXEC, 0644);
	assert_int_equal(ioctl(fb, FICLONE, fa), 0);
	assert_int_equal(fsync(fb), 0);
	close(fa);
	close(fb);
	sum_a = fx_checksum(a);
	punch(b, 1 << 20, 1 << 20);			/* hole */
	prealloc(b, 1 << 20, 512 << 10);		/* unwritten inside it */
	m = raw_fiemap(b, 0, size);
	assert_true(m.flags & FIEMAP_EXTENT_SHARED);
	assert_true(m.flags & FIEMAP_EXTENT_UNWRITTEN);
	assert_true(m.holes >= 1);
	fx_write_pattern(b, 8 << 20, 70000, 12);	/* delalloc over shared */
	seal_and_check_final(b, IMM_RDWR, IMM_SEAL_EXCLUSIVE, size);
	/* unsharing b never touched a's data; a now owns its blocks alone */
	assert_int_equal(fx_checksum(a), sum_a);
	assert_false(raw_fiemap(a, 0, size).flags & FIEMAP_EXTENT_SHARED);
	fx_umount(&fs);
}

/* A shared seal prepares through a short-lived writable open. */
static void shared_seal_prepares_before_leasing(void **state)
{
	const uint64_t size = 4u << 20;
	struct fx_fs fs;
	char p[PATH_MAX];

	(void)state;
	fx_need_root("a scratch ext4 on a loop device");
	fx_mount(&fs, "ext4", 64, NULL);
	fx_path(&fs, "s", p);
	fx_sparse_file(p, size);
	fx_write_pattern(p, 1 << 20, 4096, 13);
	seal_and_check_final(p, IMM_RDONLY, IMM_SEAL_SHARED, size);
	fx_umount(&fs);
}

/* tmpfs: no FIEMAP; the allocation map comes from SEEK_DATA/SEEK_HOLE. */
static void tmpfs_allocation_map(void **state)
{
	struct imm_layout_info li = { .sz = sizeof(li) };
	const uint64_t size = 2u << 20;
	struct imm_handle *h;
	struct imm_ctx *ctx;
	struct fx_log log;
	struct fx_fs fs;
	char p[PATH_MAX];
	uint64_t sum;

	(void)state;
	fx_need_root("mounting a tmpfs");
	fx_mount(&fs, "tmpfs", 16, NULL);
	fx_path(&fs, "t", p);
	fx_sparse_file(p, size);
	fx_write_pattern(p, 64 << 10, 8192, 14);
	sum = fx_checksum(p);
	ctx = fx_ctx(&log);
	assert_int_equal(imm_handle_open(ctx, p, IMM_RDWR, &h), 0);
	assert_string_equal(imm_handle_get_fs_name(h), "tmpfs");
	assert_int_equal(imm_layout_query(h, 0, 0, &li), 0);
	assert_true(li.flags & IMM_LAYOUT_ALLOC_ONLY);
	assert_true(li.holes >= 1);
	assert_false(li.flags & IMM_LAYOUT_FINAL);
	assert_int_equal(imm_seal(h, 0, size, IMM_SEAL_EXCLUSIVE, NULL), 0);
	assert_int_equal(imm_layout_query(h, 0, 0, &li), 0);
	assert_true(li.flags & IMM_LAYOUT_FINAL);
	assert_int_equal(li.holes, 0);
	assert_int_equal(fx_checksum_fd(imm_handle_get_fd(h)), sum);
	/* a hole punched through the handle's own open file is detected */
	assert_int_equal(fallocate(imm_handle_get_fd(h),
				   FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
				   1 << 20, 4096), 0);
	assert_int_equal(imm_verify(h), -ESTALE);
	assert_int_equal(imm_handle_get_state(h), IMM_STATE_DEFEATED);
	assert_int_equal(imm_handle_close(h), 0);
	imm_ctx_unref(ctx);
	fx_umount(&fs);
}

/* ENOSPC while allocating holes: no seal, data and size as they were. */
static void enospc_leaves_nothing_behind(void **state)
{
	const uint64_t size = 64u << 20;	/* on a 16 MiB filesystem */
	struct imm_handle *h;
	struct imm_ctx *ctx;
	struct fx_log log;
	struct fx_fs fs;
	char p[PATH_MAX];
	uint64_t sum;

	(void)state;
	fx_need_root("a tiny ext4 on a loop device");
	fx_mount(&fs, "ext4", 16, NULL);
	fx_path(&fs, "big", p);
	fx_sparse_file(p, size);
	fx_write_pattern(p, 0, 1 << 20, 15);
	fx_write_pattern(p, 40 << 20, 1 << 20, 16);
	sum = fx_checksum(p);
	ctx = fx_ctx(&log);
	assert_int_equal(imm_handle_open(ctx, p, IMM_RDWR, &h), 0);
	assert_int_equal(imm_seal(h, 0, size, IMM_SEAL_EXCLUSIVE, NULL), -ENOSPC);
	assert_logged(&log);
	assert_non_null(strstr(log.last, "free space"));
	assert_int_equal(imm_handle_get_state(h), IMM_STATE_OPEN);
	assert_int_equal(imm_handle_get_seal(h, NULL, NULL, NULL), -ENODATA);
	assert_false(fx_leased(p));
	assert_int_equal(imm_release(h), -EINVAL);
	assert_int_equal(fx_checksum(p), sum);
	assert_int_equal(fx_size(p), size);
	/* a smaller range that fits still seals on the same handle */
	assert_int_equal(imm_seal(h, 0, 2 << 20, IMM_SEAL_EXCLUSIVE, NULL), 0);
	assert_int_equal(fx_checksum_fd(imm_handle_get_fd(h)), sum);
	assert_int_equal(imm_handle_close(h), 0);
	assert_false(fx_leased(p));
	imm_ctx_unref(ctx);
	fx_umount(&fs);
}

static void inline_data_is_refused(void **state)
{
	struct imm_handle *h;
	struct imm_ctx *ctx;
	struct fx_log log;
	struct fx_fs fs;
	char p[PATH_MAX];
	uint64_t sum;

	(void)state;
	fx_need_root("an ext4 with inline_data on a loop device");
	fx_mount(&fs, "ext4", 16, "-O inline_data");
	fx_path(&fs, "tiny", p);
	fx_write_pattern(p, 0, 40, 17);
	sum = fx_checksum(p);
	assert_true(raw_fiemap(p, 0, 4096).flags & FIEMAP_EXTENT_DATA_INLINE);
	ctx = fx_ctx(&log);
	assert_int_equal(imm_handle_open(ctx, p, IMM_RDWR, &h), 0);
	assert_int_equal(imm_seal(h, 0, 40, IMM_SEAL_EXCLUSIVE, NULL), -EINVAL);
	assert_non_null(strstr(log.last, "inline"));
	assert_false(fx_leased(p));
	assert_int_equal(fx_checksum(p), sum);
	imm_handle_close(h);
	imm_ctx_unref(ctx);
	fx_umount(&fs);
}

static void no_prepare_refuses_and_changes_nothing(void **state)
{
	const uint64_t size = 1u << 20;
	struct imm_handle *h;
	struct imm_ctx *ctx;
	struct fx_log log;
	struct fx_fs fs;
	char p[PATH_MAX];

	(void)state;
	fx_need_root("a scratch ext4 on a loop device");
	fx_mount(&fs, "ext4", 32, NULL);
	fx_path(&fs, "np", p);
	fx_sparse_file(p, size);
	ctx = fx_ctx(&log);
	assert_int_equal(imm_handle_open(ctx, p, IMM_RDWR, &h), 0);
	assert_int_equal(imm_seal(h, 0, size, IMM_SEAL_EXCLUSIVE |
					   IMM_SEAL_NO_PREPARE, NULL), -EUCLEAN);
	assert_int_equal(raw_fiemap(p, 0, size).holes, 1);	/* untouched */
	assert_false(fx_leased(p));
	/* a read-only handle cannot prepare under an exclusive seal */
	imm_handle_close(h);
	assert_int_equal(imm_handle_open(ctx, p, IMM_RDONLY, &h), 0);
	assert_int_equal(imm_seal(h, 0, size, IMM_SEAL_EXCLUSIVE, NULL), -EBADF);
	assert_false(fx_leased(p));
	imm_handle_close(h);
	/* once prepared, NO_PREPARE seals */
	assert_int_equal(imm_handle_open(ctx, p, IMM_RDWR, &h), 0);
	assert_int_equal(imm_seal(h, 0, size, IMM_SEAL_EXCLUSIVE, NULL), 0);
	assert_int_equal(imm_release(h), 0);
	assert_int_equal(imm_seal(h, 0, size, IMM_SEAL_EXCLUSIVE |
					   IMM_SEAL_NO_PREPARE, NULL), 0);
	imm_handle_close(h);
	imm_ctx_unref(ctx);
	fx_umount(&fs);
}

/* A sub-range seal prepares that range and leaves the rest alone. */
static void subrange_only(void **state)
{
	const uint64_t size = 8u << 20;
	uint64_t off, len;
	struct imm_handle *h;
	struct imm_ctx *ctx;
	struct fx_fs fs;
	char p[PATH_MAX];
	uint32_t fl;
	int fd;

	(void)state;
	fx_need_root("a scratch ext4 on a loop device");
	fx_mount(&fs, "ext4", 32, NULL);
	fx_path(&fs, "sub", p);
	fx_sparse_file(p, size);
	ctx = fx_ctx(NULL);
	assert_int_equal(imm_handle_open(ctx, p, IMM_RDWR, &h), 0);
	/* unaligned on purpose: whole blocks around it get prepared */
	assert_int_equal(imm_seal(h, 1000000, 1000000, IMM_SEAL_EXCLUSIVE, NULL), 0);
	assert_int_equal(imm_handle_get_seal(h, &off, &len, &fl), 0);
	assert_int_equal(off, 1000000);
	assert_int_equal(len, 1000000);
	assert_int_equal(fl, IMM_SEAL_EXCLUSIVE);
	fd = imm_handle_get_fd(h);
	assert_int_equal(raw_fiemap_fd(fd, 1000000 & ~4095ull, 2000000).holes, 0);
	assert_int_equal(raw_fiemap_fd(fd, 0, 512 << 10).holes, 1);
	assert_int_equal(raw_fiemap_fd(fd, 4 << 20, 8 << 20).holes, 1);
	imm_handle_close(h);
	imm_ctx_unref(ctx);
	fx_umount(&fs);
}

/* Each refused range says which limit it broke; none changes the file. */
static void layout_query_errors(void **state)
{
	struct imm_layout_info li = { .sz = sizeof(li) };
	struct imm_handle *h;
	struct imm_ctx *ctx;
	struct fx_log log;
	struct fx_fs fs;
	char p[PATH_MAX];

	(void)state;
	fx_need_root("a scratch ext4 on a loop device");
	fx_mount(&fs, "ext4", 32, NULL);
	fx_path(&fs, "q", p);
	fx_sparse_file(p, 1 << 20);
	ctx = fx_ctx(&log);
	assert_int_equal(imm_handle_open(ctx, p, IMM_RDONLY, &h), 0);
	assert_int_equal(imm_layout_query(h, (1 << 20) - 1, 2, &li), -EINVAL);
	assert_non_null(strstr(log.last, "extends past EOF (file size 1048576)"));
	assert_int_equal(imm_layout_query(h, UINT64_MAX - 10, 100, &li), -EOVERFLOW);
	assert_non_null(strstr(log.last, "past the largest file offset, 2^63 - 1"));
	assert_int_equal(imm_layout_query(h, 1ull << 62, 1ull << 62, &li),
			 -EOVERFLOW);
	assert_int_equal(imm_layout_query(h, 0, 0, NULL), -EINVAL);
	li.sz = 1;
	assert_int_equal(imm_layout_query(h, 0, 0, &li), -EINVAL);
	li.sz = sizeof(li);
	{
		/* a newer program's larger struct: told how much was filled,
		 * its own fields left alone; an older one's: its own size */
		struct { struct imm_layout_info li; unsigned char newer[24]; } big;

		memset(&big, 0xab, sizeof(big));
		big.li.sz = sizeof(big);
		assert_int_equal(imm_layout_query(h, 0, 0, &big.li), 0);
		assert_int_equal(big.li.sz, sizeof(struct imm_layout_info));
		assert_int_equal(big.li.file_size, 1 << 20);
		for (size_t i = 0; i < sizeof(big.newer); i++)
			assert_int_equal(big.newer[i], 0xab);
		big.li.sz = offsetof(struct imm_layout_info, file_size) +
			    sizeof(big.li.file_size);
		assert_int_equal(imm_layout_query(h, 0, 0, &big.li), 0);
		assert_int_equal(big.li.sz, offsetof(struct imm_layout_info,
						     file_size) +
					    sizeof(big.li.file_size));
	}
	/* to EOF, and the last byte alone, are inside */
	assert_int_equal(imm_layout_query(h, 0, 0, &li), 0);
	assert_int_equal(li.file_size, 1 << 20);
	assert_int_equal(imm_layout_query(h, (1 << 20) - 1, 1, &li), 0);
	assert_int_equal(fx_size(p), 1 << 20);
	imm_handle_close(h);
	imm_ctx_unref(ctx);
	fx_umount(&fs);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(ext4_holes_unwritten_delalloc),
		cmocka_unit_test(xfs_reflink_unwritten_holes_delalloc),
		cmocka_unit_test(shared_seal_prepares_before_leasing),
		cmocka_unit_test(tmpfs_allocation_map),
		cmocka_unit_test(enospc_leaves_nothing_behind),
		cmocka_unit_test(inline_data_is_refused),
		cmocka_unit_test(no_prepare_refuses_and_changes_nothing),
		cmocka_unit_test(subrange_only),
		cmocka_unit_test(layout_query_errors),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
