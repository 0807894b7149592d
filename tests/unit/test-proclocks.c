// SPDX-License-Identifier: LGPL-2.1-or-later
/* immctl's /proc/locks reader. */
#define _GNU_SOURCE
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <sys/sysmacros.h>

#include <cmocka.h>

#include "proclocks.h"

static const char locks[] =
	"1: POSIX  ADVISORY  WRITE 811 fe:00:1234 0 EOF\n"
	"2: LEASE  ACTIVE    WRITE 2320 fe:00:1234 0 EOF\n"
	"2: -> LEASE  BREAKER  READ 2401 fe:00:1234 0 EOF\n"
	"3: LEASE  BREAKING  READ 77 00:1b:4 0 EOF\n"
	"4: DELEG  ACTIVE    READ 9 fe:00:1234 0 EOF\n"
	"5: OFDLCK ADVISORY  READ -1 fe:00:1234 0 EOF\n"
	"garbage line\n";

static void finds_leases_of_one_file(void **state)
{
	struct lease_holder lh[4];
	FILE *f = fmemopen((void *)locks, sizeof(locks) - 1, "r");

	(void)state;
	assert_int_equal(proclocks_leases(f, makedev(0xfe, 0), 1234, lh, 4), 2);
	assert_int_equal(lh[0].pid, 2320);
	assert_string_equal(lh[0].kind, "LEASE");
	assert_string_equal(lh[0].state, "ACTIVE");
	assert_string_equal(lh[0].type, "WRITE");
	assert_int_equal(lh[1].pid, 9);
	assert_string_equal(lh[1].kind, "DELEG");
	fclose(f);

	f = fmemopen((void *)locks, sizeof(locks) - 1, "r");
	assert_int_equal(proclocks_leases(f, makedev(0, 0x1b), 4, lh, 4), 1);
	assert_string_equal(lh[0].state, "BREAKING");
	fclose(f);

	/* more holders than room: counted, not written past the end */
	f = fmemopen((void *)locks, sizeof(locks) - 1, "r");
	assert_int_equal(proclocks_leases(f, makedev(0xfe, 0), 1234, lh, 1), 2);
	assert_int_equal(lh[0].pid, 2320);
	fclose(f);

	f = fmemopen((void *)locks, sizeof(locks) - 1, "r");
	assert_int_equal(proclocks_leases(f, makedev(0xfe, 0), 999, lh, 4), 0);
	fclose(f);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(finds_leases_of_one_file),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
