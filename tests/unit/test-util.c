// SPDX-License-Identifier: LGPL-2.1-or-later
/* Range math and option-struct validation. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "private.h"

static void range_valid(void **state)
{
	int e = 0;

	(void)state;
	assert_true(imm_range_valid(0, 4096, 4096, &e));
	assert_true(imm_range_valid(4095, 1, 4096, &e));
	assert_false(imm_range_valid(0, 0, 4096, &e));
	assert_int_equal(e, EINVAL);
	assert_false(imm_range_valid(4095, 2, 4096, &e));
	assert_int_equal(e, EINVAL);
	assert_false(imm_range_valid(UINT64_MAX, 1, 4096, &e));
	assert_int_equal(e, EOVERFLOW);
	assert_false(imm_range_valid(1, UINT64_MAX, UINT64_MAX, &e));
	assert_int_equal(e, EOVERFLOW);
	/* past what off_t can address, even if the sum does not wrap */
	assert_false(imm_range_valid((uint64_t)INT64_MAX, 1, UINT64_MAX, &e));
	assert_int_equal(e, EOVERFLOW);
}

static void range_align(void **state)
{
	uint64_t s, e;

	(void)state;
	imm_range_align(0, 4096, 4096, &s, &e);
	assert_int_equal(s, 0);
	assert_int_equal(e, 4096);
	imm_range_align(1000000, 1000000, 4096, &s, &e);
	assert_int_equal(s, 999424);
	assert_int_equal(e, 2002944);
	imm_range_align(5, 1, 65536, &s, &e);
	assert_int_equal(s, 0);
	assert_int_equal(e, 65536);
	imm_range_align(8192, 1, 0, &s, &e);	/* unknown block size: 4 KiB */
	assert_int_equal(s, 8192);
	assert_int_equal(e, 12288);
}

static void opts_check(void **state)
{
	struct {
		size_t sz;
		uint32_t a;
		uint32_t b;
		uint64_t future;
	} o;

	(void)state;
	memset(&o, 0, sizeof(o));
	/* an older caller's smaller struct */
	assert_int_equal(imm_opts_check(&o, 16, sizeof(size_t)), 0);
	/* the same size */
	assert_int_equal(imm_opts_check(&o, 16, 16), 0);
	/* a newer caller's bigger struct, extra bytes zero */
	assert_int_equal(imm_opts_check(&o, 16, sizeof(o)), 0);
	/* ... and non-zero: asking for what this library cannot do */
	o.future = 1;
	assert_int_equal(imm_opts_check(&o, 16, sizeof(o)), -E2BIG);
	/* too small to even hold sz */
	assert_int_equal(imm_opts_check(&o, 16, 3), -EINVAL);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(range_valid),
		cmocka_unit_test(range_align),
		cmocka_unit_test(opts_check),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
