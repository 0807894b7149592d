// SPDX-License-Identifier: LGPL-2.1-or-later
/*
 * Extent maps: a FIEMAP snapshot of a range (or, where the filesystem has
 * no FIEMAP, its allocation map from SEEK_DATA/SEEK_HOLE), normalised so
 * that two reads of an unchanged file compare equal.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>
#include <linux/fiemap.h>
#include <linux/fs.h>

#include "private.h"

/* Extents per FIEMAP call: 512 * 56 bytes keeps the buffer under 32 KiB. */
#define FIEMAP_BATCH 512u

/*
 * LAST moves when the file grows; MERGED only says how the filesystem
 * reports.  Neither is a change of the block map.
 */
#define FLAGS_IGNORED (FIEMAP_EXTENT_LAST | FIEMAP_EXTENT_MERGED)

/* Anything in here means a store may still change the block map. */
#define FLAGS_NOT_FINAL                                                      \
	(FIEMAP_EXTENT_UNKNOWN | FIEMAP_EXTENT_DELALLOC |                     \
	 FIEMAP_EXTENT_ENCODED | FIEMAP_EXTENT_NOT_ALIGNED |                  \
	 FIEMAP_EXTENT_DATA_INLINE | FIEMAP_EXTENT_DATA_TAIL |                \
	 FIEMAP_EXTENT_UNWRITTEN | FIEMAP_EXTENT_SHARED)

void imm_extent_map_free(struct imm_extent_map *map)
{
	free(map->ext);
	map->ext = NULL;
	map->n = map->cap = 0;
}

int imm_extent_map_push(struct imm_extent_map *map, const struct imm_extent *e)
{
	if (map->n == map->cap) {
		size_t cap = map->cap ? map->cap * 2 : 8;
		struct imm_extent *x = realloc(map->ext, cap * sizeof(*x));

		if (!x)
			return -ENOMEM;
		map->ext = x;
		map->cap = cap;
	}
	map->ext[map->n++] = *e;
	return 0;
}

static bool contiguous(const struct imm_extent *a, const struct imm_extent *b,
		       bool alloc_only)
{
	if (a->logical + a->length != b->logical || a->flags != b->flags)
		return false;
	return alloc_only || a->physical + a->length == b->physical;
}

/* Merge neighbours that are one run on disk: filesystems split extents in
 * their own trees without moving a block. */
void imm_extent_map_normalize(struct imm_extent_map *map)
{
	size_t w = 0;

	for (size_t r = 0; r < map->n; r++) {
		struct imm_extent e = map->ext[r];

		e.flags &= ~FLAGS_IGNORED;
		if (w && contiguous(&map->ext[w - 1], &e, map->alloc_only))
			map->ext[w - 1].length += e.length;
		else
			map->ext[w++] = e;
	}
	map->n = w;
}

/* A snapshot lives as long as its seal: give back the slack. */
void imm_extent_map_shrink(struct imm_extent_map *map)
{
	struct imm_extent *x;

	if (map->n == map->cap || map->n == 0)
		return;
	x = realloc(map->ext, map->n * sizeof(*x));
	if (x) {
		map->ext = x;
		map->cap = map->n;
	}
}

/* Clip [logical, logical+length) to [start, end); false if nothing left. */
static bool clip(struct imm_extent *e, uint64_t start, uint64_t end)
{
	uint64_t s = e->logical, t = e->logical + e->length;

	if (t <= start || s >= end)
		return false;
	if (s < start) {
		if (e->physical)
			e->physical += start - s;
		s = start;
	}
	if (t > end)
		t = end;
	e->logical = s;
	e->length = t - s;
	return true;
}

static int read_fiemap(int fd, uint64_t start, uint64_t end, bool sync,
		       struct imm_extent_map *out)
{
	size_t sz = sizeof(struct fiemap) +
		    FIEMAP_BATCH * sizeof(struct fiemap_extent);
	/* zeroed: valgrind does not see the kernel fill fm_extents */
	struct fiemap *fm = calloc(1, sz);
	uint64_t cursor = start;
	bool last = false;
	int r = 0;

	if (!fm)
		return -ENOMEM;
	while (!last && cursor < end) {
		uint64_t before = cursor;

		memset(fm, 0, sizeof(*fm));
		fm->fm_start = cursor;
		fm->fm_length = end - cursor;
		fm->fm_flags = sync ? FIEMAP_FLAG_SYNC : 0;
		fm->fm_extent_count = FIEMAP_BATCH;
		if (ioctl(fd, FS_IOC_FIEMAP, fm) < 0) {
			r = -errno;
			break;
		}
		if (fm->fm_mapped_extents == 0)
			break;
		for (uint32_t i = 0; i < fm->fm_mapped_extents; i++) {
			const struct fiemap_extent *fe = &fm->fm_extents[i];
			struct imm_extent e = {
				.logical = fe->fe_logical,
				.physical = fe->fe_physical,
				.length = fe->fe_length,
				.flags = fe->fe_flags,
			};

			last = fe->fe_flags & FIEMAP_EXTENT_LAST;
			if (fe->fe_logical + fe->fe_length > cursor)
				cursor = fe->fe_logical + fe->fe_length;
			if (!clip(&e, start, end))
				continue;
			r = imm_extent_map_push(out, &e);
			if (r < 0)
				goto out;
		}
		sync = false;	/* the first call flushed everything */
		if (cursor == before)
			break;	/* zero-length extents: nothing further */
	}
out:
	free(fm);
	return r;
}

/* tmpfs has no FIEMAP; its allocation map is what SEEK_DATA reports. */
static int read_seek(int fd, uint64_t start, uint64_t end,
		     struct imm_extent_map *out)
{
	off_t pos = (off_t)start;

	while ((uint64_t)pos < end) {
		off_t data = lseek(fd, pos, SEEK_DATA), hole;
		struct imm_extent e = { 0 };
		int r;

		if (data < 0)
			return errno == ENXIO ? 0 : -errno;
		if ((uint64_t)data >= end)
			return 0;
		hole = lseek(fd, data, SEEK_HOLE);
		if (hole < 0)
			return -errno;
		e.logical = (uint64_t)data;
		e.length = ((uint64_t)hole < end ? (uint64_t)hole : end) -
			   (uint64_t)data;
		r = imm_extent_map_push(out, &e);
		if (r < 0)
			return r;
		pos = hole;
	}
	return 0;
}

int imm_extent_map_read(struct imm_ctx *ctx, int fd, uint64_t start,
			uint64_t end, bool alloc_only, bool sync,
			struct imm_extent_map *out)
{
	struct imm_extent_map m = { .alloc_only = alloc_only };
	int r;

	r = alloc_only ? read_seek(fd, start, end, &m) :
			 read_fiemap(fd, start, end, sync, &m);
	if (r < 0) {
		imm_extent_map_free(&m);
		if (r == -EOPNOTSUPP || r == -ENOTTY)
			err(ctx, "the filesystem does not report its extents "
				 "(FIEMAP: %s); it cannot hold a seal", strerror(-r));
		else
			err(ctx, "reading the extent map failed: %s", strerror(-r));
		return r;
	}
	imm_extent_map_normalize(&m);
	imm_extent_map_free(out);
	*out = m;
	return 0;
}

bool imm_extent_map_equal(const struct imm_extent_map *a,
			  const struct imm_extent_map *b,
			  uint64_t *ret_first_diff)
{
	size_t n = a->n < b->n ? a->n : b->n;

	for (size_t i = 0; i < n; i++) {
		const struct imm_extent *x = &a->ext[i], *y = &b->ext[i];

		if (x->logical != y->logical) {
			*ret_first_diff = x->logical < y->logical ? x->logical :
								    y->logical;
			return false;
		}
		if (x->physical != y->physical || x->flags != y->flags) {
			*ret_first_diff = x->logical;
			return false;
		}
		if (x->length != y->length) {	/* same start, one ends early */
			*ret_first_diff = x->logical + (x->length < y->length ?
							x->length : y->length);
			return false;
		}
	}
	if (a->n == b->n)
		return true;
	*ret_first_diff = a->n > n ? a->ext[n].logical : b->ext[n].logical;
	return false;
}

static void count(uint64_t *num, uint64_t *bytes, uint64_t len)
{
	(*num)++;
	*bytes += len;
}

void imm_extent_map_summarize(const struct imm_extent_map *map,
			      uint64_t start, uint64_t end,
			      struct imm_layout_info *info)
{
	uint64_t cursor = start;

	info->extents = map->n;
	for (size_t i = 0; i < map->n; i++) {
		const struct imm_extent *e = &map->ext[i];
		uint32_t f = e->flags;

		if (e->logical > cursor)
			count(&info->holes, &info->hole_bytes,
			      e->logical - cursor);
		cursor = e->logical + e->length;
		if (f & FIEMAP_EXTENT_UNWRITTEN)
			count(&info->unwritten, &info->unwritten_bytes, e->length);
		if (f & FIEMAP_EXTENT_SHARED)
			count(&info->shared, &info->shared_bytes, e->length);
		if (f & FIEMAP_EXTENT_DELALLOC)
			count(&info->delalloc, &info->delalloc_bytes, e->length);
		if (f & FIEMAP_EXTENT_DATA_INLINE)
			count(&info->inline_data, &info->inline_bytes, e->length);
		if ((f & (FIEMAP_EXTENT_ENCODED | FIEMAP_EXTENT_NOT_ALIGNED |
			  FIEMAP_EXTENT_DATA_TAIL)) ||
		    ((f & FIEMAP_EXTENT_UNKNOWN) && !(f & FIEMAP_EXTENT_DELALLOC)))
			count(&info->other, &info->other_bytes, e->length);
	}
	if (cursor < end)
		count(&info->holes, &info->hole_bytes, end - cursor);
}

bool imm_extent_map_final(const struct imm_extent_map *map, uint64_t start,
			  uint64_t end, uint64_t *ret_bad_offset,
			  uint32_t *ret_bad_flags)
{
	uint64_t cursor = start;

	for (size_t i = 0; i < map->n; i++) {
		const struct imm_extent *e = &map->ext[i];

		if (e->logical > cursor || (e->flags & FLAGS_NOT_FINAL)) {
			*ret_bad_offset = e->logical > cursor ? cursor : e->logical;
			*ret_bad_flags = e->logical > cursor ?
						 0 : e->flags & FLAGS_NOT_FINAL;
			return false;
		}
		cursor = e->logical + e->length;
	}
	if (cursor < end) {
		*ret_bad_offset = cursor;
		*ret_bad_flags = 0;
		return false;
	}
	return true;
}

/* dst (empty) gets a copy of src's extents. */
int imm_extent_map_copy(struct imm_extent_map *dst,
			const struct imm_extent_map *src)
{
	dst->alloc_only = src->alloc_only;
	for (size_t i = 0; i < src->n; i++) {
		int r = imm_extent_map_push(dst, &src->ext[i]);

		if (r < 0)
			return r;
	}
	return 0;
}

/* No seal: the whole file's map as it is now, over [*start, *end) (the
 * file out to whole blocks; both 0 for an empty file).  sync: make
 * delayed allocations first. */
int imm_extent_map_read_file(struct imm_handle *h, int fd, bool sync,
			     struct imm_extent_map *map, uint64_t *start,
			     uint64_t *end)
{
	struct stat st;

	if (fstat(fd, &st) < 0)
		return -errno;
	if (st.st_size == 0)
		return 0;
	imm_range_align(0, (uint64_t)st.st_size, h->block_size, start, end);
	return imm_extent_map_read(h->ctx, fd, *start, *end,
				   !imm_fs_has_fiemap(h->fs_magic), sync, map);
}
