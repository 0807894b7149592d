// SPDX-License-Identifier: LGPL-2.1-or-later
/*
 * Events: the notifier queues them and kicks an eventfd; the application
 * polls that fd and calls imm_ctx_dispatch(), which runs its callback, or
 * pulls them with imm_ctx_next_event().  An event for a handle that was
 * closed or re-sealed since, or a recall of a seal already released, is
 * stale and never delivered.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "private.h"

struct imm_event *imm_event_new(int type, struct imm_handle *h)
{
	struct imm_event *ev = calloc(1, sizeof(*ev));

	if (!ev) {
		err(h->ctx, "out of memory: a %s event was lost",
		    imm_event_type_name(type));
		return NULL;
	}
	atomic_init(&ev->refcount, 1);
	ev->type = type;
	ev->handle = imm_handle_ref(h);
	ev->seal_gen = h->seal_gen;
	ev->time_ns = imm_now_ns();
	return ev;
}

IMM_EXPORT struct imm_event *imm_event_ref(struct imm_event *ev)
{
	if (ev)
		atomic_fetch_add(&ev->refcount, 1);
	return ev;
}

IMM_EXPORT struct imm_event *imm_event_unref(struct imm_event *ev)
{
	if (ev && atomic_fetch_sub(&ev->refcount, 1) == 1) {
		imm_handle_unref(ev->handle);
		free(ev);
	}
	return NULL;
}

bool imm_event_stale(const struct imm_event *ev)
{
	struct imm_handle *h = ev->handle;
	bool stale;

	pthread_mutex_lock(&h->lock);
	/* A recall is moot once released; a mismatch or a revoke still
	 * tells what happened to that seal, until the next one. */
	stale = h->state == IMM_STATE_CLOSED || h->seal_gen != ev->seal_gen ||
		(ev->type == IMM_EVENT_RECALL && h->state == IMM_STATE_OPEN);
	pthread_mutex_unlock(&h->lock);
	return stale;
}

static void kick(struct imm_ctx *ctx)
{
	uint64_t one = 1;

	/* Only fails when the counter would overflow: it is readable then. */
	if (write(ctx->event_fd, &one, sizeof(one)) < 0)
		dbg(ctx, "eventfd write: %s", strerror(errno));
}

/*
 * ctx->lock held: queue ev, or drop it if its handle was closed.  A close
 * untracks the handle under ctx->lock before it purges the handle's
 * events, so an event is queued before that purge or not at all -- never
 * after it, where it would keep the closed handle, and through it the
 * context, alive.  False: ev was not queued, the caller unrefs it.
 */
static bool enqueue_locked(struct imm_ctx *ctx, struct imm_event *ev)
{
	if (ev->handle->untracked)
		return false;
	if (ctx->queue_tail)
		ctx->queue_tail->next = ev;
	else
		ctx->queue_head = ev;
	ctx->queue_tail = ev;
	return true;
}

void imm_event_post(struct imm_ctx *ctx, struct imm_event *ev)
{
	bool queued;

	pthread_mutex_lock(&ctx->lock);
	queued = enqueue_locked(ctx, ev);
	pthread_mutex_unlock(&ctx->lock);
	if (queued)
		kick(ctx);
	else
		imm_event_unref(ev);
}

/* Hand an event over: the async callback now, or the queue. */
void imm_event_deliver(struct imm_ctx *ctx, struct imm_event *ev)
{
	imm_event_fn fn;
	void *data;
	bool async;

	pthread_mutex_lock(&ctx->lock);
	fn = ctx->event_fn;
	data = ctx->event_data;
	async = fn && (ctx->event_flags & IMM_EVENT_FN_ASYNC);
	pthread_mutex_unlock(&ctx->lock);
	if (!async) {
		imm_event_post(ctx, ev);
		return;
	}
	if (!imm_event_stale(ev))
		fn(ev, data);
	imm_event_unref(ev);
}

void imm_event_deliver_later(struct imm_ctx *ctx, struct imm_event *ev)
{
	uint64_t one = 1;
	bool async;

	bool gone;

	pthread_mutex_lock(&ctx->lock);
	async = ctx->event_fn && (ctx->event_flags & IMM_EVENT_FN_ASYNC);
	gone = ev->handle->untracked;	/* as in enqueue_locked() */
	if (async && !gone) {
		struct imm_event **pp = &ctx->late;

		while (*pp)
			pp = &(*pp)->next;
		*pp = ev;
	}
	pthread_mutex_unlock(&ctx->lock);
	if (gone) {
		imm_event_unref(ev);
		return;
	}
	if (!async) {
		imm_event_post(ctx, ev);
		return;
	}
	/* the notifier runs async callbacks: wake it if it sleeps */
	if (write(ctx->wake_fd, &one, sizeof(one)) < 0)
		dbg(ctx, "wake eventfd write: %s", strerror(errno));
}

/* On the notifier: what the revoker left for the async callback. */
void imm_event_deliver_late_all(struct imm_ctx *ctx)
{
	struct imm_event *ev, *next;

	pthread_mutex_lock(&ctx->lock);
	ev = ctx->late;
	ctx->late = NULL;
	pthread_mutex_unlock(&ctx->lock);
	for (; ev; ev = next) {
		next = ev->next;
		ev->next = NULL;
		imm_event_deliver(ctx, ev);
	}
}

static void unref_list(struct imm_event *ev)
{
	while (ev) {
		struct imm_event *next = ev->next;

		imm_event_unref(ev);
		ev = next;
	}
}

static struct imm_event *take_all(struct imm_ctx *ctx)
{
	struct imm_event *list;

	pthread_mutex_lock(&ctx->lock);
	list = ctx->queue_head;
	ctx->queue_head = ctx->queue_tail = NULL;
	pthread_mutex_unlock(&ctx->lock);
	return list;
}

/*
 * Put back what the application has not consumed, ahead of newer events,
 * and keep the fd readable while they wait for imm_ctx_next_event().
 */
static void put_back(struct imm_ctx *ctx, struct imm_event *head,
		     struct imm_event *tail)
{
	struct imm_event *dead = NULL, **pp;

	if (!head)
		return;
	pthread_mutex_lock(&ctx->lock);
	/* a handle closed on another thread meanwhile was purged without
	 * these: drop its events here, as enqueue_locked() does */
	for (pp = &head, tail = NULL; *pp;) {
		struct imm_event *ev = *pp;

		if (ev->handle->untracked) {
			*pp = ev->next;
			ev->next = dead;
			dead = ev;
		} else {
			tail = ev;
			pp = &ev->next;
		}
	}
	if (tail) {
		tail->next = ctx->queue_head;
		ctx->queue_head = head;
		if (!ctx->queue_tail)
			ctx->queue_tail = tail;
	}
	pthread_mutex_unlock(&ctx->lock);
	unref_list(dead);
	if (tail)
		kick(ctx);
}

IMM_EXPORT int imm_ctx_dispatch(struct imm_ctx *ctx)
{
	struct imm_event *ev, *next, *kept = NULL, *kept_tail = NULL;
	imm_event_fn fn;
	uint64_t count;
	void *data;
	int n = 0, r;

	if (!ctx)
		return -EINVAL;
	r = imm_check_fork(ctx, "imm_ctx_dispatch");
	if (r < 0)
		return r;
	r = imm_notifier_check(ctx, "imm_ctx_dispatch");
	if (r < 0)
		return r;
	pthread_mutex_lock(&ctx->lock);
	fn = ctx->event_flags & IMM_EVENT_FN_ASYNC ? NULL : ctx->event_fn;
	data = ctx->event_data;
	pthread_mutex_unlock(&ctx->lock);

	/*
	 * Callbacks first, then reset the fd, then take once more: what was
	 * posted before the reset is taken by that second pass, what is
	 * posted after it kicks the fd again.  Resetting before the first
	 * pass would be as correct and one system call slower to the recall.
	 * The reset comes after callbacks that may close the last handle and
	 * drop the application's reference: hold one of our own till the end.
	 */
	imm_ctx_ref(ctx);
	for (bool reset = false;; reset = true) {
		for (ev = take_all(ctx); ev; ev = next) {
			next = ev->next;
			ev->next = NULL;
			if (imm_event_stale(ev)) {
				imm_event_unref(ev);
			} else if (fn) {
				fn(ev, data);
				imm_event_unref(ev);
				n++;
			} else {
				if (kept_tail)
					kept_tail->next = ev;
				else
					kept = ev;
				kept_tail = ev;
				n++;
			}
		}
		if (reset)
			break;
		if (read(ctx->event_fd, &count, sizeof(count)) < 0 &&
		    errno != EAGAIN) {
			n = -errno;
			break;
		}
	}
	put_back(ctx, kept, kept_tail);
	imm_ctx_unref(ctx);	/* may free it, as the last event's unref did */
	return n;
}

/* The oldest queued event, or NULL. */
static struct imm_event *take_one(struct imm_ctx *ctx)
{
	struct imm_event *ev;

	pthread_mutex_lock(&ctx->lock);
	ev = ctx->queue_head;
	if (ev) {
		ctx->queue_head = ev->next;
		if (!ctx->queue_head)
			ctx->queue_tail = NULL;
		ev->next = NULL;
	}
	pthread_mutex_unlock(&ctx->lock);
	return ev;
}

IMM_EXPORT int imm_ctx_next_event(struct imm_ctx *ctx,
				  struct imm_event **ret_event)
{
	struct imm_event *ev;
	uint64_t count;
	int r;

	if (!ctx || !ret_event)
		return -EINVAL;
	r = imm_check_fork(ctx, "imm_ctx_next_event");
	if (r == 0)	/* a poll loop may never call imm_ctx_dispatch() */
		r = imm_notifier_check(ctx, "imm_ctx_next_event");
	if (r < 0)
		return r;
	for (bool reset = false;;) {
		ev = take_one(ctx);
		/*
		 * Empty: reset the descriptor, so that a poll loop without
		 * imm_ctx_dispatch() does not spin on it, then look once more.
		 * An event posted after the reset kicks it again.
		 */
		if (!ev && !reset) {
			reset = true;
			if (read(ctx->event_fd, &count, sizeof(count)) < 0 &&
			    errno != EAGAIN)
				return -errno;
			continue;
		}
		if (!ev)
			return -EAGAIN;
		if (!imm_event_stale(ev)) {
			*ret_event = ev;
			return 0;
		}
		imm_event_unref(ev);
	}
}

IMM_EXPORT int imm_ctx_set_event_fn(struct imm_ctx *ctx, imm_event_fn fn,
				    void *userdata, uint32_t flags)
{
	if (!ctx)
		return -EINVAL;
	if (imm_forked(ctx))
		return imm_check_fork(ctx, "imm_ctx_set_event_fn");
	if (flags & ~IMM_EVENT_FN_ASYNC) {
		err(ctx, "imm_ctx_set_event_fn: unknown flags 0x%x",
		    flags & ~IMM_EVENT_FN_ASYNC);
		return -EINVAL;
	}
	if ((flags & IMM_EVENT_FN_ASYNC) && !fn) {
		err(ctx, "imm_ctx_set_event_fn: IMM_EVENT_FN_ASYNC needs a callback");
		return -EINVAL;
	}
	pthread_mutex_lock(&ctx->lock);
	ctx->event_fn = fn;
	ctx->event_data = userdata;
	ctx->event_flags = flags;
	pthread_mutex_unlock(&ctx->lock);
	return 0;
}

IMM_EXPORT int imm_ctx_get_fd(struct imm_ctx *ctx)
{
	int r;

	if (!ctx)
		return -EINVAL;
	r = imm_check_fork(ctx, "imm_ctx_get_fd");
	return r < 0 ? r : ctx->event_fd;
}

/* ctx->lock held: unlink h's events from list, onto *dead; the last left. */
static struct imm_event *unlink_handle(struct imm_event **pp,
				       struct imm_handle *h,
				       struct imm_event **dead)
{
	struct imm_event *prev = NULL;

	while (*pp) {
		struct imm_event *ev = *pp;

		if (ev->handle == h) {
			*pp = ev->next;
			ev->next = *dead;
			*dead = ev;
		} else {
			prev = ev;
			pp = &ev->next;
		}
	}
	return prev;
}

/* h is CLOSED: drop its queued events and those the revoker left for the
 * notifier's async callback, which hold h (and so the context). */
void imm_event_purge_handle(struct imm_ctx *ctx, struct imm_handle *h)
{
	struct imm_event *dead = NULL;

	pthread_mutex_lock(&ctx->lock);
	ctx->queue_tail = unlink_handle(&ctx->queue_head, h, &dead);
	unlink_handle(&ctx->late, h, &dead);
	pthread_mutex_unlock(&ctx->lock);
	unref_list(dead);
}

void imm_event_purge_all(struct imm_ctx *ctx)
{
	struct imm_event *late;

	unref_list(take_all(ctx));
	pthread_mutex_lock(&ctx->lock);
	late = ctx->late;
	ctx->late = NULL;
	pthread_mutex_unlock(&ctx->lock);
	unref_list(late);
}

IMM_EXPORT int imm_event_get_type(const struct imm_event *ev)
{
	return ev ? ev->type : -EINVAL;
}

IMM_EXPORT const char *imm_event_type_name(int type)
{
	switch (type) {
	case IMM_EVENT_RECALL:
		return "recall";
	case IMM_EVENT_VERIFY_MISMATCH:
		return "verify-mismatch";
	case IMM_EVENT_REVOKED:
		return "revoked";
	default:
		return NULL;
	}
}

IMM_EXPORT struct imm_handle *imm_event_get_handle(const struct imm_event *ev)
{
	return ev ? ev->handle : NULL;
}

IMM_EXPORT uint64_t imm_event_get_time_ns(const struct imm_event *ev)
{
	return ev ? ev->time_ns : 0;
}

IMM_EXPORT uint64_t imm_event_get_deadline_ns(const struct imm_event *ev)
{
	return ev ? ev->deadline_ns : 0;
}

IMM_EXPORT uint64_t imm_event_get_revoke_ns(const struct imm_event *ev)
{
	return ev ? ev->revoke_ns : 0;
}

IMM_EXPORT uint64_t imm_event_get_offset(const struct imm_event *ev)
{
	return ev ? ev->offset : 0;
}

IMM_EXPORT uint64_t imm_event_get_generation(const struct imm_event *ev)
{
	return ev ? ev->seal_gen : 0;
}
