// SPDX-License-Identifier: LGPL-2.1-or-later
/* Small helpers shared by the pieces: time, sysctl reads, range math. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "private.h"

uint64_t imm_now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

int imm_read_sysctl_int(const char *path, int *ret_value)
{
	char buf[32];
	char *end;
	ssize_t n;
	long v;
	int fd;

	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	do {
		n = read(fd, buf, sizeof(buf) - 1);
	} while (n < 0 && errno == EINTR);
	if (n < 0) {
		int e = -errno;

		close(fd);
		return e;
	}
	close(fd);
	buf[n] = '\0';
	errno = 0;
	v = strtol(buf, &end, 10);
	if (errno || end == buf || v < 0 || v > 0x7fffffff)
		return -EINVAL;
	*ret_value = (int)v;
	return 0;
}

/*
 * A seal range must be non-empty, must not wrap and must lie inside the
 * file: growing the file is a layout change the caller has to make first.
 */
bool imm_range_valid(uint64_t offset, uint64_t length, uint64_t size,
		     int *ret_errno)
{
	if (length == 0) {
		*ret_errno = EINVAL;
		return false;
	}
	if (offset > UINT64_MAX - length || offset + length > (uint64_t)INT64_MAX) {
		*ret_errno = EOVERFLOW;
		return false;
	}
	if (offset + length > size) {
		*ret_errno = EINVAL;
		return false;
	}
	return true;
}

const char *imm_range_problem(int e, uint64_t length)
{
	if (e == EOVERFLOW)
		return "ends past the largest file offset, 2^63 - 1";
	return length == 0 ? "is empty" : "extends past EOF";
}

/* Widen [offset, offset+length) to whole filesystem blocks. */
void imm_range_align(uint64_t offset, uint64_t length, uint32_t block,
		     uint64_t *ret_start, uint64_t *ret_end)
{
	uint64_t b = block ? block : 4096;
	uint64_t end = offset + length;

	*ret_start = offset - offset % b;
	*ret_end = end % b ? end + (b - end % b) : end;
}

/*
 * Size-prefixed option structs (libbpf style): a caller built against an
 * older header passes a smaller struct, which is fine; a newer caller's
 * bytes beyond what this library knows must be zero, or it would be asking
 * for something this version cannot do.
 */
int imm_opts_check(const void *opts, size_t known_size, size_t given_size)
{
	const unsigned char *p = opts;

	if (given_size < sizeof(size_t))
		return -EINVAL;
	for (size_t i = known_size; i < given_size; i++)
		if (p[i])
			return -E2BIG;
	return 0;
}

/*
 * A pid can come back: a grandchild in a new PID namespace, or after pid
 * wrap-around, may get the creator's pid.  A MADV_WIPEONFORK page cannot:
 * every child reads it as zero.  The pid is the fallback on kernels without
 * MADV_WIPEONFORK (before 4.14).
 */
#define FORK_TOKEN 0x696d6d7574626c65ull	/* any nonzero value */

void imm_fork_token_init(struct imm_ctx *ctx)
{
	long page = sysconf(_SC_PAGESIZE);
	void *p;

	ctx->pid = getpid();
	ctx->fork_token = NULL;
	p = mmap(NULL, (size_t)page, PROT_READ | PROT_WRITE,
		 MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (p == MAP_FAILED) {
		dbg(ctx, "no fork token page (%s): fork detection by pid",
		    strerror(errno));
		return;
	}
	if (madvise(p, (size_t)page, MADV_WIPEONFORK) < 0) {
		dbg(ctx, "MADV_WIPEONFORK: %s: fork detection by pid",
		    strerror(errno));
		munmap(p, (size_t)page);
		return;
	}
	ctx->fork_token = p;
	*ctx->fork_token = FORK_TOKEN;
}

void imm_fork_token_free(struct imm_ctx *ctx)
{
	if (ctx->fork_token)
		munmap((void *)ctx->fork_token, (size_t)sysconf(_SC_PAGESIZE));
	ctx->fork_token = NULL;
}

bool imm_forked(const struct imm_ctx *ctx)
{
	/* both: a CLONE_VM child (vfork(), posix_spawn()) shares the token
	 * page, unwiped, but not the pid */
	if (getpid() != ctx->pid)
		return true;
	return ctx->fork_token && *ctx->fork_token != FORK_TOKEN;
}

int imm_check_fork(const struct imm_ctx *ctx, const char *what)
{
	if (!imm_forked(ctx))
		return 0;
	err(ctx, "%s: this object belongs to process %d, not to this child (%d); "
		 "seals do not cross fork(): create a new context in the child",
	    what, (int)ctx->pid, (int)getpid());
	return -ECHILD;
}

/* The attribute *mask* claims DAX even on tmpfs; only the attribute itself
 * says the file is accessed directly. */
bool imm_fd_is_dax(int fd)
{
	struct statx stx;

	if (statx(fd, "", AT_EMPTY_PATH, STATX_BASIC_STATS, &stx) < 0)
		return false;
	return (stx.stx_attributes_mask & STATX_ATTR_DAX) &&
	       (stx.stx_attributes & STATX_ATTR_DAX);
}
