// SPDX-License-Identifier: LGPL-2.1-or-later
/*
 * Which filesystems are refused, and that each refusal names the
 * filesystem and says why.  btrfs is refused for real in the host tier
 * (test-open); f2fs, zfs and bcachefs are not in this machine's kernel, so
 * fstatfs() is wrapped to report their magic for a real file on ext4.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/vfs.h>
#include <syslog.h>
#include <unistd.h>

#include <cmocka.h>

#include "private.h"

static unsigned long fake_type;	/* 0: the real answer */

int __real_fstatfs(int fd, struct statfs *buf);
int __wrap_fstatfs(int fd, struct statfs *buf);
int __wrap_fstatfs(int fd, struct statfs *buf)
{
	int r = __real_fstatfs(fd, buf);

	if (r == 0 && fake_type)
		buf->f_type = (__fsword_t)fake_type;
	return r;
}

static char last[1024];
static int errors;

static void log_fn(void *data, int priority, const char *file, int line,
		   const char *fn, const char *format, va_list args)
{
	(void)data, (void)file, (void)line, (void)fn;
	if (priority <= LOG_ERR) {
		vsnprintf(last, sizeof(last), format, args);
		errors++;
	}
}

/* A refusal of a real file on a filesystem of this magic: -EOPNOTSUPP,
 * one error line that names @name and contains @why. */
static void refused(unsigned long magic, const char *name, const char *why)
{
	char path[] = "/var/tmp/imm-fscheck.XXXXXX";
	struct imm_ctx *ctx;
	uint64_t m = 0;
	uint32_t b = 0;
	int fd;

	assert_int_equal(imm_ctx_new(&ctx), 0);
	imm_ctx_set_log_fn(ctx, log_fn, NULL);
	imm_ctx_set_log_priority(ctx, LOG_DEBUG);
	fd = mkstemp(path);
	assert_true(fd >= 0);
	unlink(path);
	errors = 0;
	last[0] = '\0';
	fake_type = magic;
	assert_int_equal(imm_fscheck_fd(ctx, fd, "f", &m, &b), -EOPNOTSUPP);
	fake_type = 0;
	printf("# %s: %s\n", name, last);
	assert_int_equal(errors, 1);
	assert_non_null(strstr(last, name));
	assert_non_null(strstr(last, why));
	assert_int_equal(m, 0);		/* nothing returned */
	close(fd);
	imm_ctx_unref(ctx);
}

static void out_of_place_filesystems(void **state)
{
	(void)state;
	refused(0x9123683Eul, "btrfs", "checksums");
	refused(0xF2F52010ul, "f2fs", "cleaner moves blocks");
	refused(0x2fc12fc1ul, "zfs", "checksums");
	refused(0xca451a4eul, "bcachefs", "checksums");
}

static void network_and_unknown_filesystems(void **state)
{
	(void)state;
	refused(0x6969ul, "nfs", "server");
	refused(0xFF534D42ul, "cifs", "server");
	refused(0x1234abcdul, "0x1234abcd", "ext4, xfs and tmpfs");
}

/* The real answer for the same file: ext4 or xfs here, accepted. */
static void real_filesystem_accepted(void **state)
{
	char path[] = "/var/tmp/imm-fscheck.XXXXXX";
	struct imm_ctx *ctx;
	uint64_t m = 0;
	uint32_t b = 0;
	int fd;

	(void)state;
	assert_int_equal(imm_ctx_new(&ctx), 0);
	fd = mkstemp(path);
	assert_true(fd >= 0);
	unlink(path);
	assert_int_equal(imm_fscheck_fd(ctx, fd, "f", &m, &b), 0);
	assert_true(m != 0 && b >= 512);
	close(fd);
	imm_ctx_unref(ctx);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(out_of_place_filesystems),
		cmocka_unit_test(network_and_unknown_filesystems),
		cmocka_unit_test(real_filesystem_accepted),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
