// SPDX-License-Identifier: LGPL-2.1-or-later
/*
 * Faults that cannot be provoked for real at one exact call: ENOSPC while
 * allocating, a failed write fault while preparing, EIO from fsync, storms
 * of EINTR.  The library's
 * calls into libc are wrapped (-Wl,--wrap); everything else is real: a real
 * file on whatever filesystem /var/tmp, /tmp or /dev/shm is.
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
#include <sys/mman.h>
#include <unistd.h>
#include <linux/falloc.h>

#include <cmocka.h>

#include "private.h"

#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23	/* Linux 5.14; glibc 2.36 names it */
#endif

/* Which call fails how; 0 = pass through. */
struct fault {
	int calls;
	int fail_at;	/* 1-based call number that fails with err */
	int err;
	int eintr;	/* this many EINTRs first */
};

static struct fault f_fallocate, f_madvise, f_fsync;

static bool inject(struct fault *f)
{
	f->calls++;
	if (f->eintr > 0) {
		f->eintr--;
		errno = EINTR;
		return true;
	}
	if (f->fail_at && f->calls == f->fail_at) {
		errno = f->err;
		return true;
	}
	return false;
}

int __real_fallocate(int fd, int mode, off_t off, off_t len);
int __wrap_fallocate(int fd, int mode, off_t off, off_t len);
int __wrap_fallocate(int fd, int mode, off_t off, off_t len)
{
	return inject(&f_fallocate) ? -1 : __real_fallocate(fd, mode, off, len);
}

int __real_madvise(void *addr, size_t len, int advice);
int __wrap_madvise(void *addr, size_t len, int advice);
int __wrap_madvise(void *addr, size_t len, int advice)
{
	/* only preparation's write faults: a context's fork token page
	 * (MADV_WIPEONFORK) is none of this test's business */
	if (advice == MADV_POPULATE_WRITE && inject(&f_madvise))
		return -1;
	return __real_madvise(addr, len, advice);
}

int __real_fsync(int fd);
int __wrap_fsync(int fd);
int __wrap_fsync(int fd)
{
	return inject(&f_fsync) ? -1 : __real_fsync(fd);
}

static void reset_faults(void)
{
	memset(&f_fallocate, 0, sizeof(f_fallocate));
	memset(&f_madvise, 0, sizeof(f_madvise));
	memset(&f_fsync, 0, sizeof(f_fsync));
}

struct fixture {
	char path[256];
	struct imm_ctx *ctx;
	struct imm_handle *h;
	uint64_t sum;
	char last[512];
};

static void capture(void *data, int prio, const char *file, int line,
		    const char *fn, const char *fmt, va_list ap)
{
	struct fixture *fx = data;

	(void)prio;
	(void)file;
	(void)line;
	(void)fn;
	vsnprintf(fx->last, sizeof(fx->last), fmt, ap);
}

static uint64_t checksum(int fd)
{
	uint64_t h = 1469598103934665603ull;
	char buf[65536];
	off_t off = 0;
	ssize_t n;

	while ((n = pread(fd, buf, sizeof(buf), off)) > 0) {
		for (ssize_t i = 0; i < n; i++)
			h = (h ^ (unsigned char)buf[i]) * 1099511628211ull;
		off += n;
	}
	return h ^ (uint64_t)off;
}

/*
 * 8 MiB: data in the first MiB, 3 MiB preallocated (unwritten) after a
 * hole, so a seal has holes to allocate and unwritten blocks to rewrite.
 */
static int setup(void **state)
{
	static const char *dirs[] = { "/var/tmp", "/tmp", "/dev/shm" };
	struct fixture *fx = calloc(1, sizeof(*fx));
	char data[4096];

	assert_non_null(fx);
	reset_faults();
	memset(data, 0x5a, sizeof(data));
	assert_int_equal(imm_ctx_new(&fx->ctx), 0);
	imm_ctx_set_log_fn(fx->ctx, capture, fx);
	for (size_t i = 0; i < 3; i++) {
		int fd;

		snprintf(fx->path, sizeof(fx->path), "%s/imm-faults.XXXXXX", dirs[i]);
		fd = mkostemp(fx->path, O_CLOEXEC);
		if (fd < 0)
			continue;
		assert_int_equal(ftruncate(fd, 8 << 20), 0);
		for (int b = 0; b < 256; b++)
			assert_int_equal(pwrite(fd, data, sizeof(data),
						       b * 4096), 4096);
		/* ext4/xfs: unwritten extents; tmpfs: fallocated pages */
		assert_int_equal(__real_fallocate(fd, FALLOC_FL_KEEP_SIZE, 2 << 20,
						  3 << 20), 0);
		fx->sum = checksum(fd);
		close(fd);
		if (imm_handle_open(fx->ctx, fx->path, IMM_RDWR, &fx->h) == 0)
			break;
		unlink(fx->path);	/* a filesystem that cannot hold seals */
		fx->h = NULL;
	}
	assert_non_null(fx->h);
	*state = fx;
	return 0;
}

static int teardown(void **state)
{
	struct fixture *fx = *state;

	reset_faults();
	imm_handle_close(fx->h);
	imm_ctx_unref(fx->ctx);
	unlink(fx->path);
	free(fx);
	return 0;
}

/* Nothing left behind: no lease, no seal, same data and size. */
static void assert_untouched(struct fixture *fx)
{
	int fd = imm_handle_get_fd(fx->h);

	reset_faults();
	assert_int_equal(imm_handle_get_state(fx->h), IMM_STATE_OPEN);
	assert_int_equal(fcntl(fd, F_GETLEASE), F_UNLCK);
	assert_int_equal(checksum(fd), fx->sum);
	assert_int_equal(lseek(fd, 0, SEEK_END), 8 << 20);
	/* and the same handle seals once the fault is gone */
	assert_int_equal(imm_seal(fx->h, 0, 8 << 20, IMM_SEAL_EXCLUSIVE, NULL), 0);
	assert_int_equal(checksum(fd), fx->sum);
	assert_int_equal(imm_release(fx->h), 0);
}

static void enospc_allocating_holes(void **state)
{
	struct fixture *fx = *state;

	f_fallocate.fail_at = 1;
	f_fallocate.err = ENOSPC;
	assert_int_equal(imm_seal(fx->h, 0, 8 << 20, IMM_SEAL_EXCLUSIVE, NULL),
			 -ENOSPC);
	assert_non_null(strstr(fx->last, "free space"));
	assert_untouched(fx);
}

/* A write fault the kernel cannot satisfy while preparing (the file
 * shrank, a media error): -EIO, said why, nothing left behind. */
static void failed_write_fault(void **state)
{
	struct fixture *fx = *state;

	f_madvise.fail_at = 1;
	f_madvise.err = EFAULT;
	assert_int_equal(imm_seal(fx->h, 0, 8 << 20, IMM_SEAL_EXCLUSIVE, NULL),
			 -EIO);
	assert_int_equal(f_madvise.calls, 1);
	assert_non_null(strstr(fx->last, "shrank"));
	assert_untouched(fx);
}

static void eio_from_fsync(void **state)
{
	struct fixture *fx = *state;

	f_fsync.fail_at = 1;
	f_fsync.err = EIO;
	assert_int_equal(imm_seal(fx->h, 0, 8 << 20, IMM_SEAL_EXCLUSIVE, NULL),
			 -EIO);
	assert_non_null(strstr(fx->last, "fsync"));
	assert_untouched(fx);
}

static void eintr_storm_is_retried(void **state)
{
	struct fixture *fx = *state;
	int fd = imm_handle_get_fd(fx->h);

	f_fallocate.eintr = 100;
	f_madvise.eintr = 100;
	assert_int_equal(imm_seal(fx->h, 0, 8 << 20, IMM_SEAL_EXCLUSIVE, NULL), 0);
	assert_int_equal(f_fallocate.eintr + f_madvise.eintr, 0);
	reset_faults();
	assert_int_equal(checksum(fd), fx->sum);
	assert_int_equal(imm_verify(fx->h), 0);
	assert_int_equal(imm_release(fx->h), 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(enospc_allocating_holes, setup, teardown),
		cmocka_unit_test_setup_teardown(failed_write_fault, setup, teardown),
		cmocka_unit_test_setup_teardown(eio_from_fsync, setup, teardown),
		cmocka_unit_test_setup_teardown(eintr_storm_is_retried, setup, teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
