// SPDX-License-Identifier: LGPL-2.1-or-later
/*
 * Media errors → file offsets.  qemu's NVDIMM cannot inject media errors,
 * so libndctl's region badblock iterator is wrapped (-Wl,--wrap) to feed
 * lists; the extent maps are built by hand with the shapes that matter: a
 * partition offset, an fsdax data offset, blocks that straddle extent
 * edges, extents that are logically apart but physically adjacent.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <linux/fiemap.h>

#include <cmocka.h>
#include <ndctl/libndctl.h>

#include "private.h"

#define KiB 1024ull
#define MiB (1024 * KiB)

static struct badblock fake[8];
static size_t nfake, cursor;
static struct ndctl_region *const REGION = (struct ndctl_region *)0x1000;

struct badblock *__wrap_ndctl_region_get_first_badblock(struct ndctl_region *r);
struct badblock *__wrap_ndctl_region_get_next_badblock(struct ndctl_region *r);

struct badblock *__wrap_ndctl_region_get_first_badblock(struct ndctl_region *r)
{
	assert_ptr_equal(r, REGION);
	cursor = 0;
	return nfake ? &fake[cursor++] : NULL;
}

struct badblock *__wrap_ndctl_region_get_next_badblock(struct ndctl_region *r)
{
	assert_ptr_equal(r, REGION);
	return cursor < nfake ? &fake[cursor++] : NULL;
}

/* A bad range given in bytes from the region's start. */
static void bad(uint64_t region_byte, uint64_t bytes)
{
	assert_true(nfake < 8);
	fake[nfake++] = (struct badblock){ .offset = region_byte / 512,
					   .len = (unsigned)(bytes / 512) };
}

/* fsdax data 2 MiB into the region, a partition 1 MiB into the disk */
static const struct imm_pmem_loc loc = {
	.region = REGION, .data_offset = 2 * MiB, .part_start = 1 * MiB,
	.linear = true,
};
#define FS0 (loc.data_offset + loc.part_start) /* region byte of fs byte 0 */

/*
 * file [0, 64K)     at fs byte 1M
 * file [64K, 128K)  at fs byte 3M
 * file [128K, 192K) at fs byte 1M + 64K: physically right after the first
 * file [192K, 256K) delalloc: no physical address
 */
static void make_map(struct imm_extent_map *m)
{
	const struct imm_extent e[] = {
		{ 0, 1 * MiB, 64 * KiB, 0 },
		{ 64 * KiB, 3 * MiB, 64 * KiB, 0 },
		{ 128 * KiB, 1 * MiB + 64 * KiB, 64 * KiB, 0 },
		{ 192 * KiB, 0, 64 * KiB, FIEMAP_EXTENT_DELALLOC },
	};

	*m = (struct imm_extent_map){ 0 };
	for (size_t i = 0; i < sizeof(e) / sizeof(e[0]); i++)
		assert_int_equal(imm_extent_map_push(m, &e[i]), 0);
	nfake = 0;
}

static void none_known(void **state)
{
	struct imm_extent_map m;
	struct imm_badblock out[4];

	(void)state;
	make_map(&m);
	assert_int_equal(imm_badblocks_intersect(&loc, &m, 0, 256 * KiB, out, 4), 0);
	imm_extent_map_free(&m);
}

/* One sector inside the first extent: the partition and data offsets are
 * both taken off, and the sector is reported on the disk. */
static void one_sector_with_offsets(void **state)
{
	struct imm_extent_map m;
	struct imm_badblock out[4];

	(void)state;
	make_map(&m);
	bad(FS0 + 1 * MiB + 4 * KiB, 512);
	assert_int_equal(imm_badblocks_intersect(&loc, &m, 0, 256 * KiB, out, 4), 1);
	assert_int_equal(out[0].offset, 4 * KiB);
	assert_int_equal(out[0].length, 512);
	assert_int_equal(out[0].sector, (loc.part_start + 1 * MiB + 4 * KiB) / 512);
	imm_extent_map_free(&m);
}

/* A bad range over the physical edge between two extents that are apart in
 * the file: one entry for each, each clipped to its extent. */
static void straddles_extent_edge(void **state)
{
	struct imm_extent_map m;
	struct imm_badblock out[4];

	(void)state;
	make_map(&m);
	bad(FS0 + 1 * MiB + 62 * KiB, 4 * KiB);
	assert_int_equal(imm_badblocks_intersect(&loc, &m, 0, 256 * KiB, out, 4), 2);
	assert_int_equal(out[0].offset, 62 * KiB);
	assert_int_equal(out[0].length, 2 * KiB);
	assert_int_equal(out[1].offset, 128 * KiB);
	assert_int_equal(out[1].length, 2 * KiB);
	assert_int_equal(out[1].sector, (loc.part_start + 1 * MiB + 64 * KiB) / 512);
	imm_extent_map_free(&m);
}

/* Bad ranges outside every extent, inside the fsdax info block or the
 * partition's lead-in, or on a delalloc extent: nothing. */
static void outside_the_file(void **state)
{
	struct imm_extent_map m;
	struct imm_badblock out[4];

	(void)state;
	make_map(&m);
	bad(0, 4096);				/* region's first page */
	bad(loc.data_offset + 512, 512);	/* before the partition */
	bad(FS0 + 2 * MiB, 64 * KiB);		/* free space */
	bad(FS0, 512);				/* fs byte 0, the superblock */
	assert_int_equal(imm_badblocks_intersect(&loc, &m, 0, 256 * KiB, out, 4), 0);
	imm_extent_map_free(&m);
}

/* A range that starts before the filesystem and runs into the file. */
static void starts_before_the_filesystem(void **state)
{
	const struct imm_extent e = { 0, 0, 8 * KiB, 0 };
	struct imm_extent_map m = { 0 };
	struct imm_badblock out[2];

	(void)state;
	nfake = 0;
	assert_int_equal(imm_extent_map_push(&m, &e), 0);
	bad(FS0 - 4 * KiB, 6 * KiB);
	assert_int_equal(imm_badblocks_intersect(&loc, &m, 0, 8 * KiB, out, 2), 1);
	assert_int_equal(out[0].offset, 0);
	assert_int_equal(out[0].length, 2 * KiB);
	assert_int_equal(out[0].sector, loc.part_start / 512);
	imm_extent_map_free(&m);
}

/* Only the asked file range counts: a sealed [64K, 160K) sees the second
 * extent and the first 32K of the third. */
static void clipped_to_the_range(void **state)
{
	struct imm_extent_map m;
	struct imm_badblock out[4];

	(void)state;
	make_map(&m);
	bad(FS0 + 1 * MiB, 192 * KiB);	/* all of extents 1 and 3 */
	bad(FS0 + 3 * MiB + 60 * KiB, 8 * KiB); /* end of extent 2 and past */
	assert_int_equal(imm_badblocks_intersect(&loc, &m, 64 * KiB, 160 * KiB,
						 out, 4), 2);
	assert_int_equal(out[0].offset, 124 * KiB);
	assert_int_equal(out[0].length, 4 * KiB);
	assert_int_equal(out[1].offset, 128 * KiB);
	assert_int_equal(out[1].length, 32 * KiB);
	imm_extent_map_free(&m);
}

/* More than fit: the count is of all, the array holds the lowest, sorted. */
static void more_than_fit(void **state)
{
	struct imm_extent_map m;
	struct imm_badblock out[2];

	(void)state;
	make_map(&m);
	bad(FS0 + 1 * MiB + 64 * KiB, 512);	/* file 128K (third extent) */
	bad(FS0 + 3 * MiB, 512);		/* file 64K */
	bad(FS0 + 1 * MiB, 512);		/* file 0 */
	assert_int_equal(imm_badblocks_intersect(&loc, &m, 0, 256 * KiB, out, 2), 3);
	assert_int_equal(out[0].offset, 0);
	assert_int_equal(out[1].offset, 64 * KiB);
	assert_int_equal(imm_badblocks_intersect(&loc, &m, 0, 256 * KiB, NULL, 0), 3);
	imm_extent_map_free(&m);
}

/* tmpfs-style allocation maps carry no physical addresses. */
static void alloc_only_map(void **state)
{
	struct imm_extent_map m;
	struct imm_badblock out[4];

	(void)state;
	make_map(&m);
	m.alloc_only = true;
	bad(FS0 + 1 * MiB, 512);
	assert_int_equal(imm_badblocks_intersect(&loc, &m, 0, 256 * KiB, out, 4), 0);
	imm_extent_map_free(&m);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(none_known),
		cmocka_unit_test(one_sector_with_offsets),
		cmocka_unit_test(straddles_extent_edge),
		cmocka_unit_test(outside_the_file),
		cmocka_unit_test(starts_before_the_filesystem),
		cmocka_unit_test(clipped_to_the_range),
		cmocka_unit_test(more_than_fit),
		cmocka_unit_test(alloc_only_map),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
