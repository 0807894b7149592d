// SPDX-License-Identifier: LGPL-2.1-or-later
/* Handles: one open file and everything that hangs off it. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "private.h"

struct imm_handle *imm_handle_ref(struct imm_handle *h)
{
	atomic_fetch_add(&h->refcount, 1);
	return h;
}

void imm_handle_unref(struct imm_handle *h)
{
	struct imm_ctx *ctx;

	if (!h || atomic_fetch_sub(&h->refcount, 1) != 1)
		return;
	ctx = h->ctx;
	if (!imm_forked(ctx))
		pthread_mutex_destroy(&h->lock);
	imm_extent_map_free(&h->snapshot);
	free(h);
	imm_ctx_unref(ctx);
}

/* h->lock held: a duplicate of the handle's fd, or -EBADF once closed. */
int imm_handle_dup_fd(struct imm_handle *h)
{
	int fd;

	if (h->state == IMM_STATE_CLOSED)
		return -EBADF;
	fd = fcntl(h->fd, F_DUPFD_CLOEXEC, 3);
	return fd < 0 ? -errno : fd;
}

/* Takes ownership of fd: on failure it is closed. */
static int handle_new(struct imm_ctx *ctx, int fd, bool writable,
		      bool opened, const char *what, struct imm_handle **ret)
{
	struct imm_handle *h;
	int r;

	h = calloc(1, sizeof(*h));
	if (!h) {
		close(fd);
		return -ENOMEM;
	}
	r = imm_fscheck_fd(ctx, fd, what, &h->fs_magic, &h->block_size);
	if (r < 0)
		goto fail;
	r = -pthread_mutex_init(&h->lock, NULL);
	if (r < 0)
		goto fail;
	atomic_init(&h->refcount, 1);
	h->ctx = imm_ctx_ref(ctx);
	h->fd = fd;
	h->writable = writable;
	h->opened = opened;
	h->state = IMM_STATE_OPEN;
	r = imm_ctx_track(ctx, h);
	if (r < 0) {
		h->fd = -1;
		imm_handle_unref(h);
		close(fd);
		return r;
	}
	dbg(ctx, "%s: handle on fd %d (%s, %s)", what, fd,
	    imm_fs_name(h->fs_magic), writable ? "rw" : "ro");
	*ret = h;
	return 0;
fail:
	free(h);
	close(fd);
	return r;
}

static int open_error(struct imm_ctx *ctx, const char *path, int e)
{
	switch (e) {
	case EWOULDBLOCK:
		err(ctx, "%s is leased by another open of the file (a seal or an "
			 "oplock, maybe in this process); the kernel has sent "
			 "its holder a recall: retry once it has released", path);
		break;
	case ENOENT:
		err(ctx, "%s does not exist", path);
		break;
	case EACCES:
		err(ctx, "%s: permission denied; open read-only (IMM_RDONLY) "
			 "or fix the file's mode", path);
		break;
	default:
		err(ctx, "cannot open %s: %s", path, strerror(e));
	}
	return -e;
}

/*
 * Open for real the very file that was checked, through its O_PATH
 * descriptor: opening the path a second time would open whatever the path
 * names by then (a FIFO or a device renamed into place meanwhile).
 * O_NONBLOCK: if another process holds a lease, fail at once with
 * EWOULDBLOCK instead of sleeping up to lease-break-time here.
 */
static int reopen_checked(int pfd, bool writable)
{
	char proc[64];
	int fd;

	snprintf(proc, sizeof(proc), "/proc/self/fd/%d", pfd);
	fd = open(proc, (writable ? O_RDWR : O_RDONLY) | O_CLOEXEC | O_NOCTTY |
			O_NONBLOCK);
	return fd < 0 ? -errno : fd;
}

IMM_EXPORT int imm_handle_open(struct imm_ctx *ctx, const char *path,
			       uint32_t flags, struct imm_handle **ret_handle)
{
	bool writable = flags & IMM_RDWR;
	int pfd, fd, r;

	if (!ctx || !path || !ret_handle)
		return -EINVAL;
	r = imm_check_fork(ctx, "imm_handle_open");
	if (r < 0)
		return r;
	if (flags & ~IMM_RDWR) {
		err(ctx, "imm_handle_open: unknown flags 0x%x; use IMM_RDONLY or "
			 "IMM_RDWR", flags & ~IMM_RDWR);
		return -EINVAL;
	}
	/*
	 * Look before opening for real: opening a FIFO blocks, opening a
	 * device has side effects.  O_PATH does neither and breaks no lease.
	 */
	pfd = open(path, O_PATH | O_CLOEXEC);
	if (pfd < 0)
		return open_error(ctx, path, errno);
	r = imm_fscheck_type(ctx, pfd, path);
	if (r < 0) {
		close(pfd);
		return r;
	}
	fd = reopen_checked(pfd, writable);
	close(pfd);
	if (fd < 0)
		return open_error(ctx, path, -fd);
	if (fcntl(fd, F_SETFL, 0) < 0) {
		r = -errno;
		close(fd);
		return r;
	}
	return handle_new(ctx, fd, writable, true, path, ret_handle);
}

IMM_EXPORT int imm_handle_from_fd(struct imm_ctx *ctx, int fd, uint32_t flags,
				  struct imm_handle **ret_handle)
{
	char what[32];
	int fl, dup_fd, r;

	if (!ctx || !ret_handle)
		return -EINVAL;
	r = imm_check_fork(ctx, "imm_handle_from_fd");
	if (r < 0)
		return r;
	snprintf(what, sizeof(what), "fd %d", fd);
	if (flags) {
		err(ctx, "imm_handle_from_fd: flags must be 0 (the access mode is "
			 "the fd's own)");
		return -EINVAL;
	}
	fl = fcntl(fd, F_GETFL);
	if (fl < 0) {
		err(ctx, "%s is not an open file descriptor", what);
		return -EBADF;
	}
	if (fl & O_PATH) {
		err(ctx, "%s is an O_PATH descriptor; open the file for reading "
			 "or writing", what);
		return -EBADF;
	}
	r = imm_fscheck_type(ctx, fd, what);
	if (r < 0)
		return r;
	/*
	 * Share the open file description instead of reopening: a seal
	 * belongs to it (lease or layout seal), an exclusive lease needs it
	 * to be the file's only open, and a layout seal lets only mappings of
	 * it be pinned.  The caller keeps its own fd.
	 */
	dup_fd = fcntl(fd, F_DUPFD_CLOEXEC, 3);
	if (dup_fd < 0) {
		r = -errno;
		err(ctx, "%s: dup: %s", what, strerror(-r));
		return r;
	}
	return handle_new(ctx, dup_fd, (fl & O_ACCMODE) != O_RDONLY, false,
			  what, ret_handle);
}

IMM_EXPORT int imm_handle_close(struct imm_handle *h)
{
	struct imm_ctx *ctx;
	int r = 0;

	if (!h)
		return -EINVAL;
	ctx = h->ctx;
	if (imm_forked(ctx)) {
		/* The parent still owns the lease on this open file: only drop
		 * the child's copy of the fd. */
		close(h->fd);
		h->fd = -1;
		imm_handle_unref(h);
		return 0;
	}
	pthread_mutex_lock(&h->lock);
	if (h->state == IMM_STATE_CLOSED || h->sealing) {
		pthread_mutex_unlock(&h->lock);
		if (h->sealing)
			err(ctx, "imm_handle_close: imm_seal() is in progress on "
				 "another thread; close after it returns");
		return h->sealing ? -EBUSY : -EBADF;
	}
	/* A teardown that failed left the seal and its state as they are in
	 * the kernel: so does the close, which the caller may retry. */
	if (h->state != IMM_STATE_OPEN)
		r = imm_seal_teardown(h, IMM_STATE_CLOSED);
	if (r < 0) {
		pthread_mutex_unlock(&h->lock);
		err(ctx, "imm_handle_close: the handle stays %s; fix the cause "
			 "above and close it again", imm_state_name(h->state));
		return r;
	}
	h->state = IMM_STATE_CLOSED;
	imm_ctx_untrack(ctx, h);
	close(h->fd);
	h->fd = -1;
	pthread_mutex_unlock(&h->lock);
	imm_event_purge_handle(ctx, h);
	imm_handle_unref(h);
	return r;
}

void imm_handle_attach(struct imm_handle *h, enum imm_attach_kind kind,
		       const struct imm_attach_ops *ops)
{
	h->attached[kind] = ops;
}

/* Every kind up to @last, in order; the first failure stops it, since
 * what that module keeps may still reach what the later ones guard. */
int imm_handle_detach(struct imm_handle *h, enum imm_attach_kind last)
{
	for (int k = 0; k <= (int)last; k++) {
		const struct imm_attach_ops *ops = h->attached[k];
		int r = ops ? ops->teardown(h) : 0;

		if (r < 0)
			return r;
	}
	return 0;
}

IMM_EXPORT struct imm_ctx *imm_handle_get_ctx(const struct imm_handle *h)
{
	return h ? h->ctx : NULL;
}

IMM_EXPORT int imm_handle_get_fd(const struct imm_handle *h)
{
	if (!h)
		return -EINVAL;
	return h->fd >= 0 ? h->fd : -EBADF;
}

IMM_EXPORT void imm_handle_set_userdata(struct imm_handle *h, void *userdata)
{
	if (h)
		h->userdata = userdata;
}

IMM_EXPORT void *imm_handle_get_userdata(const struct imm_handle *h)
{
	return h ? h->userdata : NULL;
}

IMM_EXPORT int imm_handle_get_state(const struct imm_handle *h)
{
	struct imm_handle *m = (struct imm_handle *)h;
	int s;

	if (!h)
		return -EINVAL;
	s = imm_check_fork(h->ctx, "imm_handle_get_state");
	if (s < 0)
		return s;
	pthread_mutex_lock(&m->lock);
	s = h->state;
	pthread_mutex_unlock(&m->lock);
	return s;
}

IMM_EXPORT const char *imm_state_name(int state)
{
	switch (state) {
	case IMM_STATE_OPEN:
		return "open";
	case IMM_STATE_SEALED:
		return "sealed";
	case IMM_STATE_BREAKING:
		return "breaking";
	case IMM_STATE_REVOKED:
		return "revoked";
	case IMM_STATE_DEFEATED:
		return "defeated";
	case IMM_STATE_CLOSED:
		return "closed";
	default:
		return NULL;
	}
}

IMM_EXPORT const char *imm_handle_get_fs_name(const struct imm_handle *h)
{
	return h ? imm_fs_name(h->fs_magic) : NULL;
}
