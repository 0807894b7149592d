// SPDX-License-Identifier: LGPL-2.1-or-later
/* Extent maps: normalisation, comparison, summaries, finality. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <linux/fiemap.h>

#include <cmocka.h>

#include "private.h"

#define K 4096ull

static struct imm_extent_map map_of(const struct imm_extent *e, size_t n)
{
	struct imm_extent_map m = { 0 };

	for (size_t i = 0; i < n; i++)
		assert_int_equal(imm_extent_map_push(&m, &e[i]), 0);
	return m;
}

static void normalize_merges_only_true_runs(void **state)
{
	const struct imm_extent e[] = {
		{ 0, 100 * K, K, 0 },
		{ K, 101 * K, K, FIEMAP_EXTENT_MERGED },	/* contiguous */
		{ 2 * K, 200 * K, K, 0 },			/* jumps on disk */
		{ 3 * K, 201 * K, K, FIEMAP_EXTENT_UNWRITTEN },	/* other flags */
		{ 4 * K, 202 * K, K, FIEMAP_EXTENT_UNWRITTEN | FIEMAP_EXTENT_LAST },
	};
	struct imm_extent_map m = map_of(e, 5);

	(void)state;
	imm_extent_map_normalize(&m);
	assert_int_equal(m.n, 3);
	assert_int_equal(m.ext[0].length, 2 * K);
	assert_int_equal(m.ext[0].flags, 0);
	assert_int_equal(m.ext[1].physical, 200 * K);
	assert_int_equal(m.ext[2].length, 2 * K);
	assert_int_equal(m.ext[2].flags, FIEMAP_EXTENT_UNWRITTEN);
	imm_extent_map_free(&m);
	assert_null(m.ext);
}

static void normalize_alloc_only_ignores_physical(void **state)
{
	const struct imm_extent e[] = { { 0, 0, K, 0 }, { K, 0, K, 0 } };
	struct imm_extent_map m = map_of(e, 2);

	(void)state;
	m.alloc_only = true;
	imm_extent_map_normalize(&m);
	assert_int_equal(m.n, 1);
	assert_int_equal(m.ext[0].length, 2 * K);
	imm_extent_map_free(&m);
}

static void equal_and_first_difference(void **state)
{
	const struct imm_extent a[] = { { 0, 10 * K, 4 * K, 0 },
					{ 8 * K, 50 * K, 4 * K, 0 } };
	struct imm_extent b[] = { { 0, 10 * K, 4 * K, 0 },
				  { 8 * K, 50 * K, 4 * K, 0 } };
	struct imm_extent_map ma = map_of(a, 2), mb;
	uint64_t d = 0;

	(void)state;
	mb = map_of(b, 2);
	assert_true(imm_extent_map_equal(&ma, &mb, &d));
	imm_extent_map_free(&mb);

	b[1].physical = 70 * K;		/* moved on disk */
	mb = map_of(b, 2);
	assert_false(imm_extent_map_equal(&ma, &mb, &d));
	assert_int_equal(d, 8 * K);
	imm_extent_map_free(&mb);

	b[1].physical = 50 * K;
	b[1].flags = FIEMAP_EXTENT_UNWRITTEN;	/* zeroed behind our back */
	mb = map_of(b, 2);
	assert_false(imm_extent_map_equal(&ma, &mb, &d));
	assert_int_equal(d, 8 * K);
	imm_extent_map_free(&mb);

	b[1].flags = 0;
	b[1].length = 2 * K;			/* shorter: punched at its end */
	mb = map_of(b, 2);
	assert_false(imm_extent_map_equal(&ma, &mb, &d));
	assert_int_equal(d, 10 * K);
	imm_extent_map_free(&mb);

	mb = map_of(b, 1);			/* tail punched out */
	assert_false(imm_extent_map_equal(&ma, &mb, &d));
	assert_int_equal(d, 8 * K);
	imm_extent_map_free(&mb);

	b[0].logical = K;			/* head punched, rest shifted */
	b[0].length = 3 * K;
	mb = map_of(b, 1);
	assert_false(imm_extent_map_equal(&ma, &mb, &d));
	assert_int_equal(d, 0);
	imm_extent_map_free(&mb);
	imm_extent_map_free(&ma);
}

static void summarize_counts_kinds(void **state)
{
	const struct imm_extent e[] = {
		{ 2 * K, 10 * K, K, FIEMAP_EXTENT_UNWRITTEN },
		{ 3 * K, 20 * K, 2 * K, FIEMAP_EXTENT_SHARED },
		{ 6 * K, 0, K, FIEMAP_EXTENT_DELALLOC | FIEMAP_EXTENT_UNKNOWN },
		{ 7 * K, 0, K, FIEMAP_EXTENT_DATA_INLINE | FIEMAP_EXTENT_NOT_ALIGNED },
	};
	struct imm_extent_map m = map_of(e, 4);
	struct imm_layout_info li = { 0 };

	(void)state;
	imm_extent_map_summarize(&m, 0, 10 * K, &li);
	assert_int_equal(li.extents, 4);
	assert_int_equal(li.holes, 3);		/* head, middle, tail */
	assert_int_equal(li.hole_bytes, 2 * K + K + 2 * K);
	assert_int_equal(li.unwritten_bytes, K);
	assert_int_equal(li.shared, 1);
	assert_int_equal(li.shared_bytes, 2 * K);
	assert_int_equal(li.delalloc, 1);
	assert_int_equal(li.inline_data, 1);
	assert_int_equal(li.other, 1);		/* NOT_ALIGNED; delalloc's UNKNOWN is not */
	imm_extent_map_free(&m);
}

static void final_means_nothing_left_to_do(void **state)
{
	struct imm_extent e[] = { { 0, 10 * K, 4 * K, FIEMAP_EXTENT_DATA_ENCRYPTED },
				  { 4 * K, 90 * K, 4 * K, 0 } };
	struct imm_extent_map m = map_of(e, 2);
	uint64_t bad;
	uint32_t flags;

	(void)state;
	assert_true(imm_extent_map_final(&m, 0, 8 * K, &bad, &flags));
	/* a hole at the end of the range */
	assert_false(imm_extent_map_final(&m, 0, 9 * K, &bad, &flags));
	assert_int_equal(bad, 8 * K);
	assert_int_equal(flags, 0);
	imm_extent_map_free(&m);

	e[1].flags = FIEMAP_EXTENT_SHARED;
	m = map_of(e, 2);
	assert_false(imm_extent_map_final(&m, 0, 8 * K, &bad, &flags));
	assert_int_equal(bad, 4 * K);
	assert_int_equal(flags, FIEMAP_EXTENT_SHARED);
	imm_extent_map_free(&m);

	e[1].flags = 0;
	e[1].logical = 5 * K;		/* a hole in the middle */
	m = map_of(e, 2);
	assert_false(imm_extent_map_final(&m, 0, 9 * K, &bad, &flags));
	assert_int_equal(bad, 4 * K);
	imm_extent_map_free(&m);

	m = map_of(e, 0);		/* nothing mapped at all */
	assert_false(imm_extent_map_final(&m, 0, K, &bad, &flags));
	assert_int_equal(bad, 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(normalize_merges_only_true_runs),
		cmocka_unit_test(normalize_alloc_only_ignores_physical),
		cmocka_unit_test(equal_and_first_difference),
		cmocka_unit_test(summarize_counts_kinds),
		cmocka_unit_test(final_means_nothing_left_to_do),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
