// SPDX-License-Identifier: LGPL-2.1-or-later
/* The context: refcount, settings, capability probe, fd -> handle table. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#include "private.h"

#define LEASES_ENABLE "/proc/sys/fs/leases-enable"
#define LEASE_BREAK_TIME "/proc/sys/fs/lease-break-time"

/*
 * Samba uses SIGRTMIN+1 for its kernel oplocks, and glibc reserves the
 * slots below SIGRTMIN; stay clear of the low end.  The signal only ever
 * reaches the library's own thread, and the notifier reads it only when an
 * instance is pending there and none for the process (notify.c), so the
 * application may use the same number itself.
 */
#define DEFAULT_SIGNAL_OFFSET_FROM_MAX 3
#define DEFAULT_REVOKE_MARGIN_MS 1000

/* In order of preference: the native seal wherever the kernel has it. */
static const struct imm_seal_backend *const backends[] = {
	&imm_seal_layout,
	&imm_seal_lease,
};

static int pick_backend(struct imm_ctx *ctx)
{
	const char *want = secure_getenv("LIBIMMUTABLE_BACKEND");
	bool known = !want || !*want;

	for (size_t i = 0; i < sizeof(backends) / sizeof(backends[0]); i++) {
		const struct imm_seal_backend *b = backends[i];

		if (want && *want && strcmp(want, b->name))
			continue;
		known = true;
		if (b->probe(ctx) < 0)
			continue;
		ctx->backend = b;
		ctx->backend_forced = want && *want;
		dbg(ctx, "seal backend: %s", b->name);
		return 0;
	}
	if (want && *want && known) {
		err(ctx, "LIBIMMUTABLE_BACKEND=%s: this kernel lacks that seal "
			 "backend%s; unset the variable to pick automatically", want,
		    strcmp(want, "layout") ? "" : " (layout needs the libimmutable "
		    "companion kernel patch: F_GETLAYOUT and "
		    "/proc/sys/fs/layout-seal-version)");
		return -EOPNOTSUPP;
	}
	if (want && *want) {
		err(ctx, "LIBIMMUTABLE_BACKEND=%s: no such seal backend (known: "
			 "layout, lease); unset the variable to pick automatically",
		    want);
		return -EINVAL;
	}
	err(ctx, "no seal backend works on this kernel: it lacks file leases "
		 "(CONFIG_FILE_LOCKING)");
	return -EOPNOTSUPP;
}

/* The revoker sleeps until a revoke time on CLOCK_MONOTONIC. */
static int init_cond(pthread_cond_t *cond)
{
	pthread_condattr_t attr;
	int r = pthread_condattr_init(&attr);

	if (r == 0)
		r = pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
	if (r == 0)
		r = pthread_cond_init(cond, &attr);
	pthread_condattr_destroy(&attr);
	return r;
}

IMM_EXPORT int imm_ctx_new(struct imm_ctx **ret_ctx)
{
	struct imm_ctx *ctx;
	int r;

	if (!ret_ctx)
		return -EINVAL;
	ctx = calloc(1, sizeof(*ctx));
	if (!ctx)
		return -ENOMEM;
	atomic_init(&ctx->refcount, 1);
	ctx->signo = SIGRTMAX - DEFAULT_SIGNAL_OFFSET_FROM_MAX;
	ctx->revoke_margin_ms = DEFAULT_REVOKE_MARGIN_MS;
	ctx->wake_fd = ctx->sig_fd = ctx->sigio_fd = ctx->status_fd = -1;
	imm_log_init(ctx);
	r = pthread_mutex_init(&ctx->log_lock, NULL);
	if (r) {
		free(ctx);
		return -r;
	}
	imm_fork_token_init(ctx);

	r = pthread_mutex_init(&ctx->lock, NULL);
	if (r) {
		imm_fork_token_free(ctx);
		pthread_mutex_destroy(&ctx->log_lock);
		free(ctx);
		return -r;
	}
	r = init_cond(&ctx->revoke_cond);
	if (r) {
		pthread_mutex_destroy(&ctx->lock);
		imm_fork_token_free(ctx);
		pthread_mutex_destroy(&ctx->log_lock);
		free(ctx);
		return -r;
	}
	ctx->event_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (ctx->event_fd < 0) {
		r = -errno;
		err(ctx, "eventfd: %s; raise RLIMIT_NOFILE", strerror(-r));
		goto fail;
	}
	r = pick_backend(ctx);
	if (r < 0)
		goto fail;
	*ret_ctx = ctx;
	return 0;
fail:
	if (ctx->event_fd >= 0)
		close(ctx->event_fd);
	pthread_cond_destroy(&ctx->revoke_cond);
	pthread_mutex_destroy(&ctx->lock);
	imm_fork_token_free(ctx);
	pthread_mutex_destroy(&ctx->log_lock);
	free(ctx);
	return r;
}

IMM_EXPORT struct imm_ctx *imm_ctx_ref(struct imm_ctx *ctx)
{
	if (ctx)
		atomic_fetch_add(&ctx->refcount, 1);
	return ctx;
}

void imm_ctx_destroy(struct imm_ctx *ctx)
{
	imm_notifier_stop(ctx);
	/*
	 * In a forked child the lock may have been copied while held by the
	 * parent's notifier: give the memory and fds back without touching it.
	 */
	if (!imm_forked(ctx)) {
		imm_event_purge_all(ctx);
		pthread_cond_destroy(&ctx->revoke_cond);
		pthread_mutex_destroy(&ctx->lock);
		pthread_mutex_destroy(&ctx->log_lock);
	}
	for (int m = 0; m < IMM_MODULES; m++)
		if (ctx->modules[m].data)
			ctx->modules[m].ops->free(ctx, ctx->modules[m].data);
	close(ctx->event_fd);
	imm_fork_token_free(ctx);
	free(ctx->by_fd);
	free(ctx);
}

static void ctx_free(struct imm_ctx *ctx)
{
	/* An async callback dropped the last reference: the notifier cannot
	 * join itself, so it finishes the job when the callback returns. */
	if (!imm_forked(ctx) && imm_notifier_is_self(ctx)) {
		if (ctx->revoker_running &&
		    pthread_equal(pthread_self(), ctx->revoker))
			ctx->free_on_revoker_exit = true;
		else
			ctx->free_on_notifier_exit = true;
		return;
	}
	imm_ctx_destroy(ctx);
}

IMM_EXPORT struct imm_ctx *imm_ctx_unref(struct imm_ctx *ctx)
{
	if (ctx && atomic_fetch_sub(&ctx->refcount, 1) == 1)
		ctx_free(ctx);
	return NULL;
}

IMM_EXPORT void imm_ctx_set_userdata(struct imm_ctx *ctx, void *userdata)
{
	if (ctx)
		ctx->userdata = userdata;
}

IMM_EXPORT void *imm_ctx_get_userdata(const struct imm_ctx *ctx)
{
	return ctx ? ctx->userdata : NULL;
}

IMM_EXPORT int imm_ctx_set_signal(struct imm_ctx *ctx, int signo)
{
	int r = 0;

	if (!ctx)
		return -EINVAL;
	r = imm_check_fork(ctx, "imm_ctx_set_signal");
	if (r < 0)
		return r;
	if (signo < SIGRTMIN || signo > SIGRTMAX) {
		err(ctx, "signal %d is not a real-time signal (%d..%d): "
			 "only those queue one instance per break",
		    signo, SIGRTMIN, SIGRTMAX);
		return -EINVAL;
	}
	pthread_mutex_lock(&ctx->lock);
	if (ctx->notifier_running && ctx->signo != signo) {
		err(ctx, "the notifier already listens on signal %d; "
			 "set the signal before the first imm_seal()", ctx->signo);
		r = -EBUSY;
	} else if (!ctx->notifier_running) {
		/* only before the notifier runs: it reads signo unlocked */
		ctx->signo = signo;
	}
	pthread_mutex_unlock(&ctx->lock);
	return r;
}

IMM_EXPORT int imm_ctx_get_signal(const struct imm_ctx *ctx)
{
	return ctx ? ctx->signo : -EINVAL;
}

/* One limit for the context's margin and a seal's own (struct imm_seal_opts). */
int imm_revoke_margin_check(struct imm_ctx *ctx, const char *who, uint32_t ms)
{
	if (ms <= IMM_REVOKE_MARGIN_MAX_MS)
		return 0;
	err(ctx, "%s: revoke margin %u ms is longer than any lease-break-time "
		 "worth having; use at most one hour (%u ms)", who, ms,
	    IMM_REVOKE_MARGIN_MAX_MS);
	return -EINVAL;
}

IMM_EXPORT int imm_ctx_set_revoke_margin(struct imm_ctx *ctx, uint32_t margin_ms)
{
	if (!ctx)
		return -EINVAL;
	if (imm_forked(ctx))
		return imm_check_fork(ctx, "imm_ctx_set_revoke_margin");
	if (imm_revoke_margin_check(ctx, "imm_ctx_set_revoke_margin", margin_ms))
		return -EINVAL;
	pthread_mutex_lock(&ctx->lock);
	ctx->revoke_margin_ms = margin_ms;
	pthread_mutex_unlock(&ctx->lock);
	return 0;
}

IMM_EXPORT uint32_t imm_ctx_get_revoke_margin(const struct imm_ctx *ctx)
{
	return ctx ? ctx->revoke_margin_ms : 0;
}

IMM_EXPORT int imm_ctx_get_backend(const struct imm_ctx *ctx)
{
	if (!ctx)
		return -EINVAL;
	return ctx->backend ? ctx->backend->id : IMM_BACKEND_NONE;
}

IMM_EXPORT const char *imm_backend_name(int backend)
{
	switch (backend) {
	case IMM_BACKEND_LEASE:
		return "lease";
	case IMM_BACKEND_LAYOUT:
		return "layout";
	case IMM_BACKEND_NONE:
		return "none";
	default:
		return NULL;
	}
}

IMM_EXPORT int imm_ctx_get_leases_enabled(struct imm_ctx *ctx)
{
	int v, r;

	if (!ctx)
		return -EINVAL;
	r = imm_read_sysctl_int(LEASES_ENABLE, &v);
	if (r < 0) {
		err(ctx, "cannot read %s: %s; is /proc mounted?", LEASES_ENABLE,
		    strerror(-r));
		return r;
	}
	return v ? 1 : 0;
}

IMM_EXPORT int imm_ctx_get_lease_break_time(struct imm_ctx *ctx)
{
	int v, r;

	if (!ctx)
		return -EINVAL;
	r = imm_read_sysctl_int(LEASE_BREAK_TIME, &v);
	if (r < 0) {
		err(ctx, "cannot read %s: %s; is /proc mounted?",
		    LEASE_BREAK_TIME, strerror(-r));
		return r;
	}
	return v;
}

void *imm_ctx_module(struct imm_ctx *ctx, enum imm_module m,
		     const struct imm_module_ops *ops)
{
	void *data;

	pthread_mutex_lock(&ctx->lock);
	if (!ctx->modules[m].data) {
		ctx->modules[m].data = ops->make(ctx);
		ctx->modules[m].ops = ops;
	}
	data = ctx->modules[m].data;
	pthread_mutex_unlock(&ctx->lock);
	if (!data)
		err(ctx, "out of memory for the context's state");
	return data;
}

/* The fd table: grown on demand, indexed by the handle's own fd. */
int imm_ctx_track(struct imm_ctx *ctx, struct imm_handle *h)
{
	size_t want = (size_t)h->fd + 1;
	int r = 0;

	pthread_mutex_lock(&ctx->lock);
	if (want > ctx->by_fd_len) {
		size_t len = ctx->by_fd_len ? ctx->by_fd_len : 64;
		struct imm_handle **t;

		while (len < want)
			len *= 2;
		t = realloc(ctx->by_fd, len * sizeof(*t));
		if (!t) {
			r = -ENOMEM;
			goto out;
		}
		memset(t + ctx->by_fd_len, 0,
		       (len - ctx->by_fd_len) * sizeof(*t));
		ctx->by_fd = t;
		ctx->by_fd_len = len;
	}
	if (!ctx->by_fd[h->fd])
		ctx->n_tracked++;
	ctx->by_fd[h->fd] = h;
	ctx->sole = ctx->n_tracked == 1 ? h : NULL;
out:
	pthread_mutex_unlock(&ctx->lock);
	return r;
}

void imm_ctx_untrack(struct imm_ctx *ctx, struct imm_handle *h)
{
	pthread_mutex_lock(&ctx->lock);
	if ((size_t)h->fd < ctx->by_fd_len && ctx->by_fd[h->fd] == h) {
		ctx->by_fd[h->fd] = NULL;
		ctx->n_tracked--;
		ctx->sole = NULL;
		for (size_t i = 0; ctx->n_tracked == 1 && !ctx->sole &&
		     i < ctx->by_fd_len; i++)
			ctx->sole = ctx->by_fd[i];
	}
	h->untracked = true;
	pthread_mutex_unlock(&ctx->lock);
}

/* ctx->lock held; returns a new reference or NULL. */
struct imm_handle *imm_ctx_handle_by_fd(struct imm_ctx *ctx, int fd)
{
	if (fd < 0 || (size_t)fd >= ctx->by_fd_len || !ctx->by_fd[fd])
		return NULL;
	return imm_handle_ref(ctx->by_fd[fd]);
}
