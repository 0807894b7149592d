// SPDX-License-Identifier: LGPL-2.1-or-later
/*
 * The native seal backend, for kernels with the libimmutable companion
 * patch: F_SETLAYOUT seals the open file's block map itself.  Unlike a
 * lease it ignores opens and writes and conflicts only with layout changes
 * (truncate down, hole punch, collapse/insert/zero/unshare range, reflink,
 * dedupe, defrag swaps).  A breakable seal (IMM_SEAL_SHARED) makes such a
 * change wait for the holder's release, up to lease-break-time; an
 * exclusive one (IMM_SEAL_EXCLUSIVE) makes it fail with ETXTBSY, and only
 * tells the holder.  While a seal is not being broken, the kernel lets
 * mappings of that same open file be pinned long-term (RDMA on fsdax).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <unistd.h>

#include "layout-uapi.h"
#include "private.h"

/* Both must hold: an unpatched kernel refuses F_GETLAYOUT with EINVAL, and
 * the sysctl pins the semantics this file was written for. */
static int layout_probe(struct imm_ctx *ctx)
{
	int fd, state, version, r;

	fd = open(LAYOUT_SEAL_VERSION_PATH, O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		dbg(ctx, "layout seals: no %s; the kernel lacks the companion "
			 "patch", LAYOUT_SEAL_VERSION_PATH);
		return -EOPNOTSUPP;
	}
	state = fcntl(fd, F_GETLAYOUT);
	r = state < 0 ? -errno : 0;
	close(fd);
	if (r < 0) {
		dbg(ctx, "layout seals: F_GETLAYOUT: %s", strerror(-r));
		return -EOPNOTSUPP;
	}
	r = imm_read_sysctl_int(LAYOUT_SEAL_VERSION_PATH, &version);
	if (r < 0 || version != LAYOUT_SEAL_VERSION) {
		dbg(ctx, "layout seals: %s is %d, this library speaks version %d",
		    LAYOUT_SEAL_VERSION_PATH, r < 0 ? r : version,
		    LAYOUT_SEAL_VERSION);
		return -EOPNOTSUPP;
	}
	return 0;
}

/*
 * Only filesystems that recall seals before they move blocks accept one:
 * those the companion patch gives FS_LAYOUT_SEALS, xfs and ext4 (which
 * also mounts ext2 and ext3).  Answered from the filesystem type alone: a
 * trial seal would drop a seal the application holds on a shared open
 * file, and re-aim its signal (a getter asks this too).  A seal the kernel
 * refuses after all fails with a line that says why.
 */
#define EXT4_SUPER_MAGIC 0xEF53u
#define XFS_SUPER_MAGIC 0x58465342u

static int layout_file_ok(struct imm_handle *h)
{
	return h->fs_magic == EXT4_SUPER_MAGIC || h->fs_magic == XFS_SUPER_MAGIC;
}

static int layout_type(uint32_t flags)
{
	return (flags & IMM_SEAL_EXCLUSIVE) ? F_LAYOUT_SEAL_EXCL : F_LAYOUT_SEAL;
}

/* The kernel would say EBADF; say why before any preparation is done. */
static int layout_check(struct imm_handle *h, uint32_t flags)
{
	if ((flags & IMM_SEAL_EXCLUSIVE) && !h->writable) {
		err(h->ctx, "an exclusive layout seal needs a handle opened "
			    "IMM_RDWR (the kernel ties it to a writable open); "
			    "open it IMM_RDWR, or take a shared (breakable) seal");
		return -EBADF;
	}
	return 0;
}

static int layout_einval(struct imm_ctx *ctx)
{
	if (imm_leases_disabled())
		err(ctx, "layout seals are disabled with file leases "
			 "(/proc/sys/fs/leases-enable is 0); enable them with: "
			 "sysctl fs.leases-enable=1");
	else
		err(ctx, "the filesystem refused the layout seal: only "
			 "filesystems that recall seals before they move blocks "
			 "take one; unset LIBIMMUTABLE_BACKEND=layout to seal "
			 "files elsewhere with a lease");
	return -EOPNOTSUPP;
}

static int layout_error(struct imm_handle *h, int e)
{
	struct imm_ctx *ctx = h->ctx;

	switch (e) {
	case EAGAIN:
		/* a server re-sealing after a recall meets this: not an error */
		info(ctx, "a layout change is recalling a seal of this file "
			 "(this handle's or another holder's) and is owed its "
			 "unseal first; release the handle if it was recalled, "
			 "else wait for the change to finish, and seal again");
		return -EAGAIN;
	case EACCES:
		return imm_seal_eacces(ctx);
	case EBADF:
		err(ctx, "the kernel refused the layout seal on this open (EBADF): "
			 "an exclusive seal needs the file open for writing; open "
			 "it IMM_RDWR");
		return -EBADF;
	case EINVAL:
		return layout_einval(ctx);
	default:
		err(ctx, "F_SETLAYOUT: %s", strerror(e));
		return -e;
	}
}

static int layout_seal(struct imm_handle *h, uint32_t flags)
{
	int type = layout_type(flags);
	int r;

	/* As for leases: the signal must reach the notifier thread, never
	 * the process as a SIGIO that kills it. */
	r = imm_notifier_aim(h);
	if (r < 0)
		return r;
	if (fcntl(h->fd, F_SETLAYOUT, type) < 0)
		return layout_error(h, errno);
	return 0;
}

static int layout_unseal(struct imm_handle *h)
{
	int r;

	if (fcntl(h->fd, F_SETLAYOUT, F_LAYOUT_UNSEAL) == 0)
		return 0;
	r = -errno;
	switch (r) {
	case -ENOENT:	/* gone already: the kernel dropped it at its deadline */
		return 0;
	case -EBUSY:
		err(h->ctx, "the kernel keeps the layout seal: pages of the file are "
			    "still pinned long-term, by an RDMA registration made "
			    "outside the library (ibv_reg_mr on the mapping); "
			    "deregister it, then close the handle (its last close "
			    "drops the seal)");
		return r;
	default:
		err(h->ctx, "dropping the layout seal: %s", strerror(-r));
		return r;
	}
}

static int layout_break_pending(struct imm_handle *h)
{
	int t = fcntl(h->fd, F_GETLAYOUT);

	if (t < 0)
		return -errno;
	return t == F_LAYOUT_BREAKING;
}

/* An exclusive seal is never broken: a signal says a change was refused. */
static const char *layout_signal_without_break(const struct imm_handle *h)
{
	if (!(h->seal_flags & IMM_SEAL_EXCLUSIVE))
		return NULL;
	return "another process tried to change the block map of the sealed "
	       "file (truncate, hole punch, reflink or the like) and the "
	       "exclusive layout seal made it fail with ETXTBSY; the seal holds";
}

const struct imm_seal_backend imm_seal_layout = {
	.id = IMM_BACKEND_LAYOUT,
	.name = "layout",
	.prepare_first = true,
	.probe = layout_probe,
	.file_ok = layout_file_ok,
	.check = layout_check,
	.seal = layout_seal,
	.unseal = layout_unseal,
	.break_pending = layout_break_pending,
	.signal_without_break = layout_signal_without_break,
};
