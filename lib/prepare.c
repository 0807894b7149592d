// SPDX-License-Identifier: LGPL-2.1-or-later
/*
 * Preparation: make the block map of a range final, so that no store
 * through a mapping can change it.  Holes are allocated, unwritten extents
 * written, reflinked extents unshared, delayed allocation flushed.  None of
 * it changes the file's data or size: allocation keeps the size, and
 * unwritten blocks become written by write faults that store nothing (see
 * populate_written()), so a concurrent writer's bytes are never replaced.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#include <linux/falloc.h>
#include <linux/fiemap.h>

#include "private.h"

/* address space mapped at a time while preparing */
#define POPULATE_CHUNK (64ull << 20)

static int fallocate_retry(int fd, int mode, uint64_t off, uint64_t len)
{
	int r;

	do {
		r = fallocate(fd, mode, (off_t)off, (off_t)len);
	} while (r < 0 && errno == EINTR);
	return r < 0 ? -errno : 0;
}

static int space_error(struct imm_ctx *ctx, int r, const char *step,
		       uint64_t off, uint64_t len)
{
	if (r == -ENOSPC || r == -EDQUOT)
		err(ctx, "%s of [%llu, +%llu) failed: %s; free space on the "
			 "filesystem (or raise the quota), or seal a smaller range",
		    step, (unsigned long long)off, (unsigned long long)len,
		    strerror(-r));
	else if (r == -ETXTBSY)
		err(ctx, "%s of [%llu, +%llu): another open of the file holds an "
			 "exclusive layout seal, which refuses block map changes; "
			 "retry once it has released", step,
		    (unsigned long long)off, (unsigned long long)len);
	else if (r == -EOPNOTSUPP)
		err(ctx, "%s of [%llu, +%llu): the filesystem cannot do it; "
			 "copy the file without reflinks (cp --reflink=never) "
			 "and seal the copy", step, (unsigned long long)off,
		    (unsigned long long)len);
	else
		err(ctx, "%s of [%llu, +%llu) failed: %s", step,
		    (unsigned long long)off, (unsigned long long)len,
		    strerror(-r));
	return r;
}

/*
 * Turn [off, off+len) into written blocks without storing a byte: a write
 * fault through a shared mapping makes the filesystem allocate, convert or
 * (DAX) zero-and-convert the block, and dirties the page cache page with
 * whatever it holds, which writeback then stores.  Reading bytes and
 * writing them back instead would replace what another writer stores in
 * between.  MADV_POPULATE_WRITE faults without touching the memory, and
 * reports a fault it cannot satisfy (the file shrank, no space, a media
 * error) as an error instead of SIGBUS.
 */
static int populate_chunk(struct imm_ctx *ctx, int fd, uint64_t off,
			  uint64_t len)
{
	void *p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED, fd,
		       (off_t)off);
	int r = 0;

	if (p == MAP_FAILED)
		return space_error(ctx, -errno, "mapping for preparation", off,
				   len);
	while (madvise(p, len, MADV_POPULATE_WRITE) < 0) {
		r = -errno;
		if (r == -EINTR) {
			r = 0;
			continue;
		}
		if (r == -EINVAL)
			err(ctx, "preparing [%llu, +%llu) needs MADV_POPULATE_WRITE "
				 "(Linux 5.14): on this kernel, write the range's "
				 "data (or zeros) yourself before sealing it",
			    (unsigned long long)off, (unsigned long long)len);
		else if (r == -EFAULT || r == -EHWPOISON)
			err(ctx, "making [%llu, +%llu) written failed: the file "
				 "shrank or lost blocks meanwhile, the filesystem is "
				 "out of space, or the range has a media error; "
				 "check the file and retry",
			    (unsigned long long)off, (unsigned long long)len);
		else
			space_error(ctx, r, "making blocks written", off, len);
		r = r == -EINVAL ? -EOPNOTSUPP : r == -EFAULT ? -EIO : r;
		break;
	}
	munmap(p, len);
	return r;
}

static int populate_written(struct imm_ctx *ctx, int fd, uint64_t off,
			    uint64_t len)
{
	uint64_t page = (uint64_t)sysconf(_SC_PAGESIZE);
	uint64_t a = off & ~(page - 1), b = (off + len + page - 1) & ~(page - 1);
	int r = 0;

	while (a < b && r == 0) {
		uint64_t n = b - a < POPULATE_CHUNK ? b - a : POPULATE_CHUNK;

		r = populate_chunk(ctx, fd, a, n);
		a += n;
	}
	return r;
}

static bool has_gaps(const struct imm_extent_map *m, uint64_t start,
		     uint64_t end)
{
	uint64_t cursor = start;

	for (size_t i = 0; i < m->n; i++) {
		if (m->ext[i].logical > cursor)
			return true;
		cursor = m->ext[i].logical + m->ext[i].length;
	}
	return cursor < end;
}

static int refuse_unfixable(struct imm_ctx *ctx, const struct imm_extent_map *m)
{
	for (size_t i = 0; i < m->n; i++) {
		uint32_t f = m->ext[i].flags;

		if (f & FIEMAP_EXTENT_DATA_INLINE) {
			err(ctx, "the file's data is stored inline in its inode "
				 "(ext4 inline_data): it has no blocks to seal; "
				 "grow the file past one block or use a filesystem "
				 "without inline_data");
			return -EINVAL;
		}
		if ((f & (FIEMAP_EXTENT_ENCODED | FIEMAP_EXTENT_NOT_ALIGNED |
			  FIEMAP_EXTENT_DATA_TAIL)) ||
		    ((f & FIEMAP_EXTENT_UNKNOWN) && !(f & FIEMAP_EXTENT_DELALLOC))) {
			err(ctx, "extent at %llu has flags 0x%x (encoded, packed or "
				 "of unknown location): its blocks cannot be pinned "
				 "down", (unsigned long long)m->ext[i].logical, f);
			return -EOPNOTSUPP;
		}
	}
	return 0;
}

static int unshare_reflinks(struct imm_ctx *ctx, int fd, const struct imm_extent_map *m)
{
	for (size_t i = 0; i < m->n; i++) {
		const struct imm_extent *e = &m->ext[i];
		int r;

		if (!(e->flags & FIEMAP_EXTENT_SHARED))
			continue;
		r = fallocate_retry(fd, FALLOC_FL_UNSHARE_RANGE |
						FALLOC_FL_KEEP_SIZE,
				    e->logical, e->length);
		if (r < 0)
			return space_error(ctx, r, "unsharing reflinked extents",
					   e->logical, e->length);
	}
	return 0;
}

/* Every hole and unwritten extent made written, clipped to EOF so the
 * size stays: a partial last page is still made written as a whole. */
static int make_written(struct imm_ctx *ctx, int fd,
			     const struct imm_extent_map *m, uint64_t start,
			     uint64_t end, uint64_t size)
{
	uint64_t cursor = start, stop = end < size ? end : size;
	int r = 0;

	for (size_t i = 0; i <= m->n && r == 0; i++) {
		uint64_t s = i < m->n ? m->ext[i].logical : stop;
		bool unwritten = i < m->n &&
				 (m->ext[i].flags & FIEMAP_EXTENT_UNWRITTEN);
		uint64_t runs[2][2] = {
			{ cursor, s },	/* the gap before this extent */
			{ s, unwritten ? s + m->ext[i].length : s },
		};

		for (int k = 0; k < 2 && r == 0; k++) {
			uint64_t a = runs[k][0];
			uint64_t b = runs[k][1] < stop ? runs[k][1] : stop;

			if (a >= b)
				continue;
			r = populate_written(ctx, fd, a, b - a);
		}
		if (i < m->n)
			cursor = m->ext[i].logical + m->ext[i].length;
	}
	return r;
}

int imm_prepare(struct imm_handle *h, int fd, uint64_t start, uint64_t end)
{
	struct imm_ctx *ctx = h->ctx;
	bool alloc_only = !imm_fs_has_fiemap(h->fs_magic);
	struct imm_extent_map m = { 0 };
	struct stat st;
	int r;

	if (fstat(fd, &st) < 0)
		return -errno;
	r = imm_extent_map_read(ctx, fd, start, end, alloc_only, true, &m);
	if (r < 0)
		return r;
	r = refuse_unfixable(ctx, &m);
	if (r < 0)
		goto out;
	if (has_gaps(&m, start, end)) {
		r = fallocate_retry(fd, FALLOC_FL_KEEP_SIZE, start, end - start);
		if (r < 0) {
			space_error(ctx, r, "allocating holes", start, end - start);
			goto out;
		}
	}
	r = unshare_reflinks(ctx, fd, &m);
	if (r < 0)
		goto out;
	r = imm_extent_map_read(ctx, fd, start, end, alloc_only, true, &m);
	if (r < 0)
		goto out;
	/* No fsync here: the seal syncs the file once, prepared or not. */
	r = make_written(ctx, fd, &m, start, end, (uint64_t)st.st_size);
	if (r == 0)
		dbg(ctx, "prepared [%llu, %llu)", (unsigned long long)start,
		    (unsigned long long)end);
out:
	imm_extent_map_free(&m);
	return r;
}
