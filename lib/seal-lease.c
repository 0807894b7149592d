// SPDX-License-Identifier: LGPL-2.1-or-later
/*
 * The seal backend for stock kernels: a file lease on the handle's open
 * file.  A read lease breaks when anyone opens the file for writing or
 * truncates it; a write lease also when anyone opens it at all.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <unistd.h>

#include "private.h"

static int lease_probe(struct imm_ctx *ctx)
{
	(void)ctx;
	/* The sysctl exists exactly when the kernel has CONFIG_FILE_LOCKING. */
	return access("/proc/sys/fs/leases-enable", F_OK) ? -EOPNOTSUPP : 0;
}

static int lease_type(uint32_t flags)
{
	return (flags & IMM_SEAL_EXCLUSIVE) ? F_WRLCK : F_RDLCK;
}

static int lease_error(struct imm_handle *h, int e, int type)
{
	struct imm_ctx *ctx = h->ctx;

	switch (e) {
	case EAGAIN:
		/* h->break_ns: written under h->lock, which imm_seal() took */
		if (h->break_ns) {
			/* after a recall this is the retry servers expect */
			info(ctx, "the file is still %s elsewhere, most likely by "
				  "the process that recalled this handle's seal "
				  "(its open, or a truncate it is finishing, counts "
				  "as one); seal again once it has closed the file",
			     type == F_RDLCK ? "open for writing" : "open");
			return -EAGAIN;
		}
		if (type == F_RDLCK)
			err(ctx, "a shared seal needs the file to have no writer, "
				 "and it is open for writing somewhere (perhaps "
				 "in this process); close the writers and retry");
		else
			err(ctx, "an exclusive seal needs this handle's open to be "
				 "the file's only one, and it is open elsewhere "
				 "(perhaps in this process); close the other opens "
				 "or take a shared seal");
		return -EAGAIN;
	case EACCES:
		return imm_seal_eacces(ctx);
	case EINVAL:
		if (imm_leases_disabled())
			err(ctx, "file leases are disabled (/proc/sys/fs/leases-enable "
				 "is 0), and seals are built on them here; enable "
				 "them with: sysctl fs.leases-enable=1");
		else
			err(ctx, "the filesystem refused the lease: it does not "
				 "support leases");
		return -EOPNOTSUPP;
	default:
		err(ctx, "F_SETLEASE: %s", strerror(e));
		return -e;
	}
}

/* A read lease breaks on any writable open, this handle's own included. */
static int lease_check(struct imm_handle *h, uint32_t flags)
{
	if ((flags & IMM_SEAL_SHARED) && h->writable) {
		err(h->ctx, "a shared seal needs a handle opened IMM_RDONLY: a "
			    "writable open is itself a writer, and the kernel grants "
			    "no read lease while one exists");
		return -EBADF;
	}
	return 0;
}

static int lease_seal(struct imm_handle *h, uint32_t flags)
{
	int type = lease_type(flags);
	int r;

	/*
	 * Aim the break signal at the notifier thread before the lease
	 * exists: F_SETLEASE keeps an owner that is already set, and
	 * F_UNLCK cleared both, so a lease taken without this would signal
	 * the whole process with SIGIO, whose default action kills it.
	 */
	r = imm_notifier_aim(h);
	if (r < 0)
		return r;
	if (fcntl(h->fd, F_SETLEASE, type) < 0)
		return lease_error(h, errno, type);
	return 0;
}

static int lease_unseal(struct imm_handle *h)
{
	if (fcntl(h->fd, F_SETLEASE, F_UNLCK) < 0) {
		int r = -errno;

		/* Gone already: the kernel's break timer removed it. */
		if (r == -EAGAIN || r == -ENOENT)
			return 0;
		err(h->ctx, "dropping the lease: %s", strerror(-r));
		return r;
	}
	return 0;
}

/* F_GETLEASE reports the type the lease is being broken to. */
static int lease_break_pending(struct imm_handle *h)
{
	int t = fcntl(h->fd, F_GETLEASE);

	if (t < 0)
		return -errno;
	return t != lease_type(h->seal_flags);
}

const struct imm_seal_backend imm_seal_lease = {
	.id = IMM_BACKEND_LEASE,
	.name = "lease",
	.probe = lease_probe,
	.check = lease_check,
	.seal = lease_seal,
	.unseal = lease_unseal,
	.break_pending = lease_break_pending,
};
