// SPDX-License-Identifier: LGPL-2.1-or-later
/*
 * Known media errors inside a file's extents.
 *
 * libndctl lists a region's bad blocks in 512-byte sectors from the region's
 * start.  The filesystem's FIEMAP speaks bytes from the start of its own
 * block device, which begins data_offset bytes into the region (past an
 * fsdax info block and page map) plus part_start bytes when it is a
 * partition.  A bad range is clipped to each extent it meets, so one that
 * straddles an extent edge yields one entry per extent.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <linux/fiemap.h>

#include <ndctl/libndctl.h>

#include "private.h"

#define SECTOR 512ull

/* FIEMAP flags for which fe_physical means nothing */
#define NO_PHYSICAL (FIEMAP_EXTENT_UNKNOWN | FIEMAP_EXTENT_DELALLOC | \
		     FIEMAP_EXTENT_DATA_INLINE | FIEMAP_EXTENT_DATA_TAIL | \
		     FIEMAP_EXTENT_ENCODED)

static uint64_t max_u64(uint64_t a, uint64_t b) { return a > b ? a : b; }
static uint64_t min_u64(uint64_t a, uint64_t b) { return a < b ? a : b; }

/* Keep the max lowest file offsets of the n + 1 found so far. */
static void keep(struct imm_badblock *out, size_t max, size_t n,
		 struct imm_badblock b)
{
	size_t i, hi = 0;

	if (n < max) {
		out[n] = b;
		return;
	}
	for (i = 1; i < max; i++)
		if (out[i].offset > out[hi].offset)
			hi = i;
	if (max && b.offset < out[hi].offset)
		out[hi] = b;
}

/* One bad range [lo, hi), in bytes of the filesystem's device, against
 * every extent of the map inside the file range [start, end). */
static void intersect_one(const struct imm_pmem_loc *loc,
			  const struct imm_extent_map *map, uint64_t start,
			  uint64_t end, uint64_t lo, uint64_t hi,
			  struct imm_badblock *out, size_t max, size_t *n)
{
	const struct imm_extent *e;
	uint64_t ls, le, ps, pe, is, ie;
	size_t i;

	for (i = 0; i < map->n; i++) {
		e = &map->ext[i];
		if (e->flags & NO_PHYSICAL)
			continue;
		ls = max_u64(e->logical, start);
		le = min_u64(e->logical + e->length, end);
		if (ls >= le)
			continue;
		ps = e->physical + (ls - e->logical);
		pe = ps + (le - ls);
		is = max_u64(lo, ps);
		ie = min_u64(hi, pe);
		if (is >= ie)
			continue;
		keep(out, max, *n, (struct imm_badblock){
			.offset = ls + (is - ps),
			.length = ie - is,
			.sector = (is + loc->part_start) / SECTOR,
		});
		(*n)++;
	}
}

static int by_offset(const void *a, const void *b)
{
	const struct imm_badblock *x = a, *y = b;

	return x->offset < y->offset ? -1 : x->offset > y->offset;
}

/* imm_ndctl_lock() held.  Returns how many bad ranges were found; the max
 * lowest in the file are in out, sorted by file offset. */
ssize_t imm_badblocks_intersect(const struct imm_pmem_loc *loc,
				const struct imm_extent_map *map,
				uint64_t start, uint64_t end,
				struct imm_badblock *out, size_t max)
{
	uint64_t base = loc->data_offset + loc->part_start, lo, hi;
	struct badblock *bb;
	size_t n = 0;

	if (map->alloc_only)
		return 0;	/* no physical addresses to compare */
	for (bb = ndctl_region_get_first_badblock(loc->region); bb;
	     bb = ndctl_region_get_next_badblock(loc->region)) {
		lo = bb->offset * SECTOR;
		hi = lo + bb->len * SECTOR;
		if (hi <= base)
			continue;	/* before the filesystem */
		lo = max_u64(lo, base) - base;
		intersect_one(loc, map, start, end, lo, hi - base, out, max, &n);
	}
	if (n && max)
		qsort(out, min_u64(n, max), sizeof(*out), by_offset);
	return (ssize_t)n;
}

/* imm_ndctl_lock() held: where the file lives, or why its media errors
 * cannot be told.  1: an nvdimm with a linear layout; 0: not pmem. */
static int locate_linear(struct imm_handle *h, int fd, struct imm_pmem_loc *loc)
{
	struct imm_topology t = { .sz = sizeof(t) };
	int r;

	r = imm_pmem_locate(h, fd, &t, loc);
	if (r < 0 || !(t.flags & IMM_TOPO_PMEM))
		return r;
	if (!loc->linear) {
		err(h->ctx, "cannot place media errors of %s in the file: %s",
		    t.disk, strcmp(t.ns_mode, "sector") == 0 ?
		    "a sector-mode (BTT) namespace remaps every block" :
		    "the region's resource addresses are unreadable (they "
		    "need root)");
		return -EOPNOTSUPP;
	}
	return 1;
}

/* Refuse a seal over known media errors: -EIO, the offsets in the log. */
int imm_badblocks_check_seal(struct imm_handle *h,
			     const struct imm_extent_map *map,
			     uint64_t start, uint64_t end)
{
	struct imm_badblock bb[16];
	struct imm_pmem_loc loc;
	ssize_t n = 0, i;
	int r;

	r = imm_ndctl_lock(h->ctx);
	if (r == 0) {
		r = locate_linear(h, h->fd, &loc);
		if (r > 0)
			n = imm_badblocks_intersect(&loc, map, start, end, bb, 16);
		imm_ndctl_unlock(h->ctx);
	}
	if (r < 0) {
		err(h->ctx, "IMM_SEAL_NO_BADBLOCKS: media errors cannot be "
			    "checked on this file; seal without the flag");
		return r;
	}
	for (i = 0; i < n && i < 16; i++)
		err(h->ctx, "media error at file offset %llu, %llu bytes "
			    "(sector %llu)", (unsigned long long)bb[i].offset,
		    (unsigned long long)bb[i].length,
		    (unsigned long long)bb[i].sector);
	if (n > 0) {
		err(h->ctx, "IMM_SEAL_NO_BADBLOCKS: %zd known media error(s) in "
			    "the range; rewrite or clear them (ndctl "
			    "clear-errors, or punch and rewrite the blocks) and "
			    "seal again", n);
		return -EIO;
	}
	return 0;
}

/* h->lock held: the extents to look at, a copy that outlives the lock. */
static int extents_of(struct imm_handle *h, struct imm_extent_map *out,
		      uint64_t *start, uint64_t *end, bool *need_read)
{
	*need_read = !(h->state == IMM_STATE_SEALED ||
		       h->state == IMM_STATE_BREAKING ||
		       h->state == IMM_STATE_DEFEATED) || h->sealing;
	if (*need_read)
		return 0;
	imm_range_align(h->seal_off, h->seal_len, h->block_size, start, end);
	return imm_extent_map_copy(out, &h->snapshot);
}

IMM_EXPORT int imm_badblocks(struct imm_handle *h, struct imm_badblock *bb,
			     size_t max)
{
	struct imm_extent_map map = { 0 };
	struct imm_pmem_loc loc;
	uint64_t start = 0, end = 0;
	bool need_read;
	ssize_t n = 0;
	int fd, r;

	if (!h || (!bb && max))
		return -EINVAL;
	r = imm_check_fork(h->ctx, "imm_badblocks");
	if (r < 0)
		return r;
	pthread_mutex_lock(&h->lock);
	fd = imm_handle_dup_fd(h);
	r = fd < 0 ? fd : extents_of(h, &map, &start, &end, &need_read);
	pthread_mutex_unlock(&h->lock);
	if (r == 0) {
		/* where the file lives first: most files are not on pmem, and
		 * need no extent map read */
		r = imm_ndctl_lock(h->ctx);
		if (r == 0) {
			r = locate_linear(h, fd, &loc);
			if (r > 0 && need_read)
				r = imm_extent_map_read_file(h, fd, false, &map,
							     &start, &end) ?: 1;
			if (r > 0)
				n = imm_badblocks_intersect(&loc, &map, start,
							    end, bb, max);
			imm_ndctl_unlock(h->ctx);
		}
	}
	if (fd >= 0)
		close(fd);
	imm_extent_map_free(&map);
	if (r < 0)
		return r;
	return n > INT32_MAX ? INT32_MAX : (int)n;
}
