// SPDX-License-Identifier: LGPL-2.1-or-later
/*
 * Seal, verify, release: the handle's state machine.
 *
 *   OPEN --seal--> SEALED --break--> BREAKING --deadline-margin--> REVOKED
 *                    |  \--verify mismatch--> DEFEATED               |
 *                    +------------- release ------------> OPEN <-----+
 *
 * The handle lock is held only to look at and to change that state, never
 * across a seal call, a FIEMAP or preparation: the notifier takes the same
 * lock to record a break, and must never wait behind I/O.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>
#include <linux/kcmp.h>

#include "layout-uapi.h"

#include "private.h"

static bool is_sealed(int state)
{
	return state == IMM_STATE_SEALED || state == IMM_STATE_BREAKING ||
	       state == IMM_STATE_DEFEATED;
}

/*
 * One open file description holds one lease (or layout seal) and one
 * signal owner, whoever asks for it: two handles on it (imm_handle_from_fd
 * of one fd or of its dups, in one context or two) would silently share
 * one seal -- only one hears the recall, and either's release drops both.
 */
static int shared_description(struct imm_handle *h, const char *holder)
{
	err(h->ctx, "imm_seal: fd %d shares its open file description with %s; "
		    "one open file holds one seal, so the two would share it "
		    "(one recall, one release for both). Seal one handle per "
		    "open file: open the file anew with imm_handle_open(), or "
		    "release the other first", h->fd, holder);
	return -EBUSY;
}

/* Does the kernel see a seal on h's open file that h did not take? */
static int description_sealed(struct imm_handle *h)
{
	int t = fcntl(h->fd, F_GETLEASE);

	if (t >= 0 && t != F_UNLCK)
		return shared_description(h, "a lease holder (another handle, "
					  "in this context or another, or the "
					  "application itself)");
	if (imm_handle_backend(h)->id == IMM_BACKEND_LAYOUT) {
		t = fcntl(h->fd, F_GETLAYOUT);
		if (t > 0)
			return shared_description(h, "a layout seal holder "
						  "(another handle, in this "
						  "context or another, or the "
						  "application itself)");
	}
	return 0;
}

/* 1: a and b are one open file description, 0: not, <0: cannot tell. */
static int same_description(int a, int b)
{
	pid_t pid = getpid();
	long r = syscall(SYS_kcmp, pid, pid, KCMP_FILE, a, b);

	return r < 0 ? -errno : r == 0;
}

/*
 * h->lock held: claim h's open file for h's seal, or refuse if another
 * handle of the context claimed it -- sealed, being sealed or being
 * recalled, when the kernel's F_GETLEASE may not show it.  Under ctx->lock,
 * so two threads cannot both claim one open file.
 */
static int description_claim(struct imm_handle *h, const struct stat *st)
{
	struct imm_ctx *ctx = h->ctx;
	int r = 0;

	pthread_mutex_lock(&ctx->lock);
	for (size_t i = 0; r == 0 && i < ctx->by_fd_len; i++) {
		struct imm_handle *o = ctx->by_fd[i];

		if (!o || o == h || !o->claimed || o->dev != st->st_dev ||
		    o->ino != st->st_ino)
			continue;
		/* two opens of imm_handle_open() are two open files; only a
		 * caller's fd can be a dup of another handle's */
		if (h->opened && o->opened)
			continue;
		r = same_description(h->fd, o->fd);
		if (r < 0) {
			/* no kcmp (CONFIG_CHECKPOINT_RESTORE): assume the
			 * worst rather than share a seal unknowingly */
			info(ctx, "kcmp: %s; fd %d and fd %d are the same file, "
				  "taken for one open file", strerror(-r), h->fd,
			     o->fd);
			r = 1;
		}
		if (r == 1) {
			char who[96];

			snprintf(who, sizeof(who), "the handle on fd %d of this "
				 "context, which is %s", o->fd,
				 o->sealing ? "being sealed" :
				 imm_state_name(o->state));
			pthread_mutex_unlock(&ctx->lock);
			return shared_description(h, who);
		}
	}
	h->claimed = true;
	h->dev = st->st_dev;
	h->ino = st->st_ino;
	pthread_mutex_unlock(&ctx->lock);
	return 0;
}

/* h->lock held: h's seal is gone; its open file may be sealed again. */
static void description_unclaim(struct imm_handle *h)
{
	pthread_mutex_lock(&h->ctx->lock);
	h->claimed = false;
	pthread_mutex_unlock(&h->ctx->lock);
}

/*
 * Detach the snapshot before freeing it: a child forked while this runs
 * inherits either the whole map or none, never a pointer already freed
 * (its imm_handle_close() frees what it inherited).  h->lock held.
 */
static void snapshot_drop(struct imm_handle *h)
{
	struct imm_extent_map old = h->snapshot;

	h->snapshot = (struct imm_extent_map){ .alloc_only = old.alloc_only };
	atomic_signal_fence(memory_order_seq_cst);
	imm_extent_map_free(&old);
}

/* Registrations, then mappings: what reaches the memory.  h->lock held. */
static int revoke_memory(struct imm_handle *h)
{
	return imm_handle_detach(h, IMM_ATTACH_MAP);
}

/*
 * What lives on the seal first (enum imm_attach_kind), then the seal: the
 * blocks can move only once nothing reaches them.  A step that fails
 * leaves the state as the kernel has it -- the seal kept, the handle
 * SEALED or BREAKING -- so that a later release or close tries again.
 * h->lock held.
 */
int imm_seal_teardown(struct imm_handle *h, int new_state)
{
	int r;

	r = imm_handle_detach(h, IMM_ATTACH_KINDS - 1);
	if (r == 0 && is_sealed(h->state))
		r = imm_handle_backend(h)->unseal(h);
	if (r < 0)
		return r;
	if (h->state == IMM_STATE_BREAKING)
		imm_breaking_remove(h->ctx, h);
	snapshot_drop(h);
	h->state = new_state;
	description_unclaim(h);
	return 0;
}

/* For both backends: the kernel's EACCES on a seal. */
int imm_seal_eacces(struct imm_ctx *ctx)
{
	err(ctx, "only the file's owner or a process with CAP_LEASE can seal "
		 "it; chown the file or grant CAP_LEASE");
	return -EACCES;
}

/* For both backends: layout seals are leases to the kernel's switch too. */
bool imm_leases_disabled(void)
{
	int enabled;

	return imm_read_sysctl_int("/proc/sys/fs/leases-enable", &enabled) == 0 &&
	       !enabled;
}

/* Each way a struct imm_seal_opts can be wrong, said as what to change. */
static int check_seal_opts(struct imm_ctx *ctx, const struct imm_seal_opts *o)
{
	int r = imm_opts_check(o, sizeof(*o), o->sz);

	if (r == -EINVAL) {
		err(ctx, "imm_seal: struct imm_seal_opts.sz is %zu, too small to "
			 "hold sz itself: set sz = sizeof(struct imm_seal_opts) "
			 "or use IMM_SEAL_OPTS_INIT", o->sz);
		return r;
	}
	if (r == -E2BIG) {
		err(ctx, "imm_seal: struct imm_seal_opts (sz %zu) sets fields "
			 "beyond the %zu bytes this library knows: the program "
			 "was built against a newer header; zero them or run "
			 "it with that newer library", o->sz, sizeof(*o));
		return r;
	}
	if (o->sz >= offsetof(struct imm_seal_opts, revoke_margin_ms) +
			     sizeof(o->revoke_margin_ms) &&
	    imm_revoke_margin_check(ctx, "imm_seal", o->revoke_margin_ms))
		return -EINVAL;
	if (o->sz >= sizeof(*o) && o->reserved) {
		err(ctx, "imm_seal: struct imm_seal_opts.reserved is %u: it must "
			 "be 0", o->reserved);
		return -EINVAL;
	}
	return 0;
}

static int check_seal_args(struct imm_handle *h, uint32_t flags,
			   const struct imm_seal_opts *opts)
{
	struct imm_ctx *ctx = h->ctx;
	uint32_t mode = flags & (IMM_SEAL_SHARED | IMM_SEAL_EXCLUSIVE);
	uint32_t known = IMM_SEAL_SHARED | IMM_SEAL_EXCLUSIVE |
			 IMM_SEAL_NO_PREPARE | IMM_SEAL_NO_BADBLOCKS;

	if (flags & ~known) {
		err(ctx, "imm_seal: unknown flags 0x%x", flags & ~known);
		return -EINVAL;
	}
	if (mode != IMM_SEAL_SHARED && mode != IMM_SEAL_EXCLUSIVE) {
		err(ctx, "imm_seal: give exactly one of IMM_SEAL_SHARED and "
			 "IMM_SEAL_EXCLUSIVE");
		return -EINVAL;
	}
	return opts ? check_seal_opts(ctx, opts) : 0;
}

static uint32_t margin_of(struct imm_handle *h, const struct imm_seal_opts *opts)
{
	if (opts && opts->sz >= offsetof(struct imm_seal_opts, revoke_margin_ms) +
					sizeof(opts->revoke_margin_ms) &&
	    opts->revoke_margin_ms)
		return opts->revoke_margin_ms;
	return h->ctx->revoke_margin_ms;
}

/* A writable open of a read-only handle's file, for preparation only. */
static int reopen_writable(struct imm_handle *h)
{
	char path[64];
	int fd;

	snprintf(path, sizeof(path), "/proc/self/fd/%d", h->fd);
	/* O_NONBLOCK: a lease held elsewhere fails this at once */
	fd = open(path, O_RDWR | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
	if (fd < 0) {
		int r = -errno;

		if (r == -EWOULDBLOCK)
			err(h->ctx, "the range needs preparation, and another open "
				    "file holds a lease on it; retry once it has "
				    "released");
		else
			err(h->ctx, "the range needs preparation (holes, unwritten "
				    "or shared extents), which needs write access: "
				    "%s; prepare it once from a writable open",
			    strerror(-r));
		return r;
	}
	return fd;
}

static int not_final(struct imm_handle *h, uint64_t bad, uint32_t bad_flags,
		     const char *why)
{
	if (bad_flags)
		err(h->ctx, "the block map at offset %llu is not final (extent "
			    "flags 0x%x: unwritten, shared, delayed or unknown): "
			    "%s", (unsigned long long)bad, bad_flags, why);
	else
		err(h->ctx, "the block map at offset %llu is not final (a hole): "
			    "%s", (unsigned long long)bad, why);
	return -EUCLEAN;
}

/* What imm_seal() works on while it does not hold the handle lock. */
struct sealing {
	uint64_t start;
	uint64_t end;
	uint32_t flags;
	bool alloc_only;
	bool leased;
	struct imm_extent_map map;
};

static int read_map(struct imm_handle *h, struct sealing *s)
{
	return imm_extent_map_read(h->ctx, h->fd, s->start, s->end,
				   s->alloc_only, true, &s->map);
}

static bool map_final(struct sealing *s, uint64_t *bad, uint32_t *bad_flags)
{
	return imm_extent_map_final(&s->map, s->start, s->end, bad, bad_flags);
}

/*
 * Prepare before sealing: a read lease forbids writers, ours included, and
 * a layout seal conflicts with unsharing, ours included.  Through the
 * handle's own open if it may write, else a short-lived writable one.
 */
static int prepare_before(struct imm_handle *h, struct sealing *s)
{
	uint64_t bad;
	uint32_t bad_flags;
	int r, wfd;

	r = read_map(h, s);
	if (r < 0 || map_final(s, &bad, &bad_flags))
		return r;
	if (s->flags & IMM_SEAL_NO_PREPARE)
		return not_final(h, bad, bad_flags,
				 "IMM_SEAL_NO_PREPARE forbids preparing it");
	if (h->writable)
		return imm_prepare(h, h->fd, s->start, s->end);
	wfd = reopen_writable(h);
	if (wfd < 0)
		return wfd;
	r = imm_prepare(h, wfd, s->start, s->end);
	close(wfd);
	return r;
}

/* Under an exclusive lease nobody else has the file open: prepare in
 * place, through the handle's own open. */
static int prepare_in_place(struct imm_handle *h, struct sealing *s)
{
	uint64_t bad;
	uint32_t bad_flags;
	int r;

	if (map_final(s, &bad, &bad_flags))
		return 0;
	if (s->flags & IMM_SEAL_NO_PREPARE)
		return not_final(h, bad, bad_flags,
				 "IMM_SEAL_NO_PREPARE forbids preparing it");
	if (!h->writable) {
		err(h->ctx, "the range needs preparation, which writes, and the "
			    "handle is read-only; open it IMM_RDWR");
		return -EBADF;
	}
	r = imm_prepare(h, h->fd, s->start, s->end);
	return r < 0 ? r : read_map(h, s);
}

/*
 * The work of a seal, without the handle lock: prepare, seal, snapshot.
 * An exclusive lease prepares after sealing, when nobody else can have the
 * file open; everything else before (see prepare_before()), and then finds
 * out after sealing whether someone changed the map in between.
 */
static int seal_work(struct imm_handle *h, struct sealing *s)
{
	bool first = (s->flags & IMM_SEAL_SHARED) ||
		     imm_handle_backend(h)->prepare_first;
	uint64_t bad;
	uint32_t bad_flags;
	int r = 0;

	if (first)
		r = prepare_before(h, s);
	if (r == 0)
		r = imm_handle_backend(h)->seal(h, s->flags);
	if (r < 0)
		return r;
	s->leased = true;
	r = read_map(h, s);
	if (r == 0 && !first)
		r = prepare_in_place(h, s);
	if (r == 0 && !map_final(s, &bad, &bad_flags))
		r = not_final(h, bad, bad_flags, "it changed between preparation "
			      "and sealing; another writer may be at work: retry");
	if (r == 0 && (s->flags & IMM_SEAL_NO_BADBLOCKS))
		r = imm_badblocks_check_seal(h, &s->map, s->start, s->end);
	if (r == 0 && fsync(h->fd) < 0) {
		r = -errno;
		err(h->ctx, "fsync: %s", strerror(-r));
	}
	return r;
}

/*
 * h->lock held.  The context's backend, unless it cannot seal this file: a
 * layout seal needs a filesystem that recalls seals before it moves blocks,
 * and on the others (9p, NFS, btrfs, ...) a lease still works.  Asked once
 * per handle, the first time it matters; a backend forced with
 * LIBIMMUTABLE_BACKEND is kept, and says why the seal fails.
 */
int imm_seal_pick_backend(struct imm_handle *h)
{
	const struct imm_seal_backend *b = h->ctx->backend;
	int r;

	if (h->backend)
		return 0;
	if (h->state == IMM_STATE_CLOSED)
		return -EBADF;
	r = b->file_ok ? b->file_ok(h) : 1;
	if (r < 0)
		return r;
	if (r == 0 && !h->ctx->backend_forced) {
		info(h->ctx, "fd %d: %s has no %s seals; sealing it with a lease",
		     h->fd, imm_fs_name(h->fs_magic), b->name);
		b = &imm_seal_lease;
	}
	h->backend = b;
	return 0;
}

IMM_EXPORT int imm_handle_get_backend(struct imm_handle *h)
{
	int r;

	if (!h)
		return -EINVAL;
	r = imm_check_fork(h->ctx, "imm_handle_get_backend");
	if (r < 0)
		return r;
	pthread_mutex_lock(&h->lock);
	r = imm_seal_pick_backend(h);
	if (r == 0)
		r = h->backend->id;
	pthread_mutex_unlock(&h->lock);
	return r;
}

/* h->lock held: the backend that will seal the file, and its own rules
 * for this kind of seal on this handle. */
static int backend_check(struct imm_handle *h, uint32_t flags)
{
	const struct imm_seal_backend *b;
	int r = imm_seal_pick_backend(h);

	if (r < 0)
		return r;
	b = imm_handle_backend(h);
	return b->check ? b->check(h, flags & (IMM_SEAL_SHARED |
					       IMM_SEAL_EXCLUSIVE)) : 0;
}

/* h->lock held: may this handle start a seal over [offset, +length)? */
static int seal_begin(struct imm_handle *h, uint64_t offset, uint64_t length,
		      struct sealing *s)
{
	struct imm_ctx *ctx = h->ctx;
	struct stat st;
	int e, r;

	if (h->sealing || (h->state != IMM_STATE_OPEN &&
			   h->state != IMM_STATE_REVOKED)) {
		err(ctx, "imm_seal: the handle is %s; %s",
		    h->sealing ? "being sealed" : imm_state_name(h->state),
		    h->state == IMM_STATE_CLOSED ? "it was closed" :
		    h->sealing ? "by another thread" : "imm_release() it first");
		return h->state == IMM_STATE_CLOSED ? -EBADF : -EBUSY;
	}
	if (fstat(h->fd, &st) < 0)
		return -errno;
	if (!imm_range_valid(offset, length, (uint64_t)st.st_size, &e)) {
		err(ctx, "imm_seal: range [%llu, +%llu) %s (file size %lld); "
			 "seal a non-empty range inside the file, or grow the "
			 "file first", (unsigned long long)offset,
		    (unsigned long long)length, imm_range_problem(e, length),
		    (long long)st.st_size);
		return -e;
	}
	r = backend_check(h, s->flags);
	if (r == 0)
		r = description_sealed(h);
	if (r == 0)
		r = description_claim(h, &st);
	if (r < 0)
		return r;
	imm_range_align(offset, length, h->block_size, &s->start, &s->end);
	s->alloc_only = !imm_fs_has_fiemap(h->fs_magic);
	h->sealing = true;
	h->broken_while_sealing = false;
	h->recheck_at_commit = false;
	h->state = IMM_STATE_OPEN;	/* a REVOKED handle seals afresh */
	h->seal_flags = s->flags;	/* the backend's break check reads it */
	return 0;
}

/* h->lock held: make the seal visible, or undo it. */
static int seal_commit(struct imm_handle *h, struct sealing *s, int r,
		       uint64_t offset, uint64_t length, int lbt,
		       uint32_t margin)
{
	h->sealing = false;
	if (r == 0 && h->recheck_at_commit &&
	    imm_handle_backend(h)->break_pending(h) == 1)
		h->broken_while_sealing = true;
	h->recheck_at_commit = false;
	if (r == 0 && h->broken_while_sealing) {
		/* a race the caller retries, as the man page says: info */
		info(h->ctx, "another process broke the seal while it was being "
			    "taken (it %s the file); the seal was given up: retry",
		    imm_handle_backend(h)->id == IMM_BACKEND_LAYOUT ?
		    "truncated, punched or remapped" : "opened or truncated");
		r = -EAGAIN;
	}
	if (r < 0) {
		if (s->leased)
			imm_handle_backend(h)->unseal(h);
		description_unclaim(h);
		return r;
	}
	snapshot_drop(h);
	imm_extent_map_shrink(&s->map);
	h->snapshot = s->map;
	s->map = (struct imm_extent_map){ 0 };
	h->state = IMM_STATE_SEALED;
	h->seal_gen++;
	h->seal_off = offset;
	h->seal_len = length;
	h->lease_break_time = lbt;
	h->revoke_margin_ms = margin;
	h->mismatch_reported = false;
	h->break_ns = h->deadline_ns = h->revoke_ns = 0;
	return 0;
}

IMM_EXPORT int imm_seal(struct imm_handle *h, uint64_t offset, uint64_t length,
			uint32_t flags, const struct imm_seal_opts *opts)
{
	struct sealing s = { .flags = flags };
	struct imm_ctx *ctx;
	int r, lbt;

	if (!h)
		return -EINVAL;
	ctx = h->ctx;
	r = imm_check_fork(ctx, "imm_seal");
	if (r < 0)
		return r;
	r = check_seal_args(h, flags, opts);
	if (r < 0)
		return r;
	r = imm_notifier_start(ctx);
	if (r < 0)
		return r;
	lbt = imm_ctx_get_lease_break_time(ctx);	/* the deadline to plan */
	if (lbt < 0)
		return lbt;

	pthread_mutex_lock(&h->lock);
	r = seal_begin(h, offset, length, &s);
	pthread_mutex_unlock(&h->lock);
	if (r < 0)
		return r;

	r = seal_work(h, &s);

	pthread_mutex_lock(&h->lock);
	r = seal_commit(h, &s, r, offset, length, lbt, margin_of(h, opts));
	pthread_mutex_unlock(&h->lock);
	if (r == 0)
		dbg(ctx, "sealed [%llu, +%llu) %s, %zu extents",
		    (unsigned long long)offset, (unsigned long long)length,
		    (flags & IMM_SEAL_EXCLUSIVE) ? "exclusive" : "shared",
		    h->snapshot.n);
	imm_extent_map_free(&s.map);
	return r;
}

IMM_EXPORT int imm_release(struct imm_handle *h)
{
	int r;

	if (!h)
		return -EINVAL;
	r = imm_check_fork(h->ctx, "imm_release");
	if (r < 0)
		return r;
	pthread_mutex_lock(&h->lock);
	if (h->sealing) {
		err(h->ctx, "imm_release: imm_seal() is in progress on another "
			    "thread");
		r = -EBUSY;
	} else {
		switch (h->state) {
		case IMM_STATE_REVOKED:
			h->state = IMM_STATE_OPEN;	/* acknowledged */
			break;
		case IMM_STATE_OPEN:
			err(h->ctx, "imm_release: the handle holds no seal");
			r = -EINVAL;
			break;
		case IMM_STATE_CLOSED:
			r = -EBADF;
			break;
		default:
			r = imm_seal_teardown(h, IMM_STATE_OPEN);
		}
	}
	pthread_mutex_unlock(&h->lock);
	return r;
}

/* h->lock held: the map changed; say so, once per seal. */
static struct imm_event *mismatch(struct imm_handle *h, uint64_t diff)
{
	struct imm_event *ev = NULL;

	err(h->ctx, "the block map changed under the seal at offset %llu: a "
		    "process sharing this open file, or one that had it open "
		    "before, remapped it; release the seal and re-seal",
	    (unsigned long long)diff);
	if (h->state == IMM_STATE_SEALED)
		h->state = IMM_STATE_DEFEATED;
	/* the memory is no longer what was sealed: revoke it as a recall's
	 * deadline would; the seal itself stays until imm_release() */
	if (revoke_memory(h) < 0)
		err(h->ctx, "a registration of the defeated seal could not be "
			    "deregistered; imm_release() retries it");
	if (h->mismatch_reported)
		return NULL;
	h->mismatch_reported = true;
	ev = imm_event_new(IMM_EVENT_VERIFY_MISMATCH, h);
	if (ev) {
		ev->offset = diff;
		if (h->state == IMM_STATE_BREAKING) {
			ev->deadline_ns = h->deadline_ns;
			ev->revoke_ns = h->revoke_ns;
		}
	}
	return ev;
}

/*
 * Compare the map with the snapshot.  The FIEMAP runs on a duplicate of
 * the handle's fd with no lock held, so a release or a dispatch never waits
 * for it; the comparison happens under the lock, against the same seal.
 * Returns -EINVAL if there is no seal, -ESTALE on a mismatch (and, the first
 * time for this seal, an event in *ret_ev for the caller to deliver).
 */
int imm_seal_verify(struct imm_handle *h, struct imm_event **ret_ev)
{
	struct imm_extent_map now = { .alloc_only = false };
	uint64_t start, end, gen, diff;
	bool alloc_only;
	int fd, r;

	pthread_mutex_lock(&h->lock);
	if (!is_sealed(h->state) || h->sealing) {
		bool closed = h->state == IMM_STATE_CLOSED;

		pthread_mutex_unlock(&h->lock);
		return closed ? -EBADF : -EINVAL;
	}
	fd = fcntl(h->fd, F_DUPFD_CLOEXEC, 3);
	gen = h->seal_gen;
	alloc_only = h->snapshot.alloc_only;
	imm_range_align(h->seal_off, h->seal_len, h->block_size, &start, &end);
	pthread_mutex_unlock(&h->lock);
	if (fd < 0)
		return -errno;

	r = imm_extent_map_read(h->ctx, fd, start, end, alloc_only, false, &now);
	close(fd);
	if (r < 0)
		return r;

	pthread_mutex_lock(&h->lock);
	if (gen == h->seal_gen && is_sealed(h->state) &&
	    !imm_extent_map_equal(&h->snapshot, &now, &diff)) {
		*ret_ev = mismatch(h, diff);
		r = -ESTALE;
	}
	pthread_mutex_unlock(&h->lock);
	imm_extent_map_free(&now);
	return r;
}

IMM_EXPORT int imm_verify(struct imm_handle *h)
{
	struct imm_event *ev = NULL;
	int r;

	if (!h)
		return -EINVAL;
	r = imm_check_fork(h->ctx, "imm_verify");
	if (r < 0)
		return r;
	r = imm_seal_verify(h, &ev);
	if (r == -EINVAL)
		err(h->ctx, "imm_verify: the handle is %s, there is no seal to "
			    "verify", imm_state_name(imm_handle_get_state(h)));
	if (ev)
		imm_event_deliver(h->ctx, ev);
	return r;
}

IMM_EXPORT uint64_t imm_handle_get_generation(const struct imm_handle *h)
{
	struct imm_handle *m = (struct imm_handle *)h;
	uint64_t gen;

	if (!h || imm_check_fork(h->ctx, "imm_handle_get_generation") < 0)
		return 0;
	pthread_mutex_lock(&m->lock);
	gen = is_sealed(h->state) && !h->sealing ? h->seal_gen : 0;
	pthread_mutex_unlock(&m->lock);
	return gen;
}

IMM_EXPORT int imm_handle_get_seal(const struct imm_handle *h,
				   uint64_t *ret_offset, uint64_t *ret_length,
				   uint32_t *ret_flags)
{
	struct imm_handle *m = (struct imm_handle *)h;
	int r;

	if (!h)
		return -EINVAL;
	r = imm_check_fork(h->ctx, "imm_handle_get_seal");
	if (r < 0)
		return r;
	pthread_mutex_lock(&m->lock);
	if (!is_sealed(h->state) || h->sealing) {
		r = -ENODATA;
	} else {
		if (ret_offset)
			*ret_offset = h->seal_off;
		if (ret_length)
			*ret_length = h->seal_len;
		if (ret_flags)
			*ret_flags = h->seal_flags;
	}
	pthread_mutex_unlock(&m->lock);
	return r;
}
