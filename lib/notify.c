// SPDX-License-Identifier: LGPL-2.1-or-later
/*
 * The notifier: one thread per context that owns the break signal.
 *
 * Every lease is aimed at this thread (F_SETOWN_EX F_OWNER_TID), whose
 * signal mask blocks everything; a signalfd reads the thread-directed
 * signal, si_fd names the handle, and the break becomes an event.  The
 * host's signal dispositions and other threads' masks are never touched.
 * A timerfd revokes seals the application has not released before the
 * kernel's deadline comes.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <poll.h>
#include <semaphore.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/signalfd.h>
#include <sys/timerfd.h>
#include <unistd.h>

#include "private.h"

#define NSEC_PER_MSEC 1000000ull
#define NSEC_PER_SEC 1000000000ull

struct start_arg {
	struct imm_ctx *ctx;
	sem_t started;
};

void imm_breaking_remove(struct imm_ctx *ctx, struct imm_handle *h)
{
	pthread_mutex_lock(&ctx->lock);
	for (struct imm_handle **pp = &ctx->breaking; *pp;
	     pp = &(*pp)->breaking_next) {
		if (*pp == h) {
			*pp = h->breaking_next;
			h->breaking_next = NULL;
			break;
		}
	}
	pthread_mutex_unlock(&ctx->lock);
}

/*
 * Sorted by revoke time, so the timer only ever looks at the head.
 * Returns true if h became the head: only then must the timer move.
 */
static bool breaking_insert(struct imm_ctx *ctx, struct imm_handle *h)
{
	struct imm_handle **pp;
	bool head;

	pthread_mutex_lock(&ctx->lock);
	for (pp = &ctx->breaking; *pp && (*pp)->revoke_ns <= h->revoke_ns;
	     pp = &(*pp)->breaking_next)
		;
	h->breaking_next = *pp;
	*pp = h;
	head = ctx->breaking == h;
	pthread_mutex_unlock(&ctx->lock);
	return head;
}

void imm_notifier_rearm(struct imm_ctx *ctx)
{
	struct itimerspec its = { 0 };
	uint64_t at = 0;

	pthread_mutex_lock(&ctx->lock);
	if (ctx->breaking)
		at = ctx->breaking->revoke_ns ? ctx->breaking->revoke_ns : 1;
	pthread_mutex_unlock(&ctx->lock);
	its.it_value.tv_sec = (time_t)(at / NSEC_PER_SEC);
	its.it_value.tv_nsec = (long)(at % NSEC_PER_SEC);
	timerfd_settime(ctx->timer_fd, TFD_TIMER_ABSTIME, &its, NULL);
}

/*
 * The kernel's deadline runs from its break; the signal reaches us a few
 * microseconds later, so "now" is a hair late and the margin covers it.
 * Never plan to revoke later than halfway to a short deadline.
 */
static void plan_deadline(struct imm_handle *h, uint64_t now)
{
	uint64_t lbt_ns = (uint64_t)h->lease_break_time * NSEC_PER_SEC;
	uint64_t margin = (uint64_t)h->revoke_margin_ms * NSEC_PER_MSEC;

	if (margin > lbt_ns / 2)
		margin = lbt_ns / 2;
	h->break_ns = now;
	h->deadline_ns = now + lbt_ns;
	h->revoke_ns = h->deadline_ns - margin;
}

/* A break signal for this handle (or a rescan after a lost signal). */
static void on_break(struct imm_ctx *ctx, struct imm_handle *h)
{
	struct imm_event *ev = NULL, *mismatch = NULL;
	bool rearm = false;

	pthread_mutex_lock(&h->lock);
	if (h->state == IMM_STATE_CLOSED)
		goto out;
	if (ctx->backend->break_pending(h) != 1)
		goto out;	/* stale signal for a reused fd, or a duplicate */
	if (h->sealing) {
		h->broken_while_sealing = true;
		goto out;
	}
	if (h->state != IMM_STATE_SEALED && h->state != IMM_STATE_DEFEATED)
		goto out;
	plan_deadline(h, imm_now_ns());
	h->state = IMM_STATE_BREAKING;
	rearm = breaking_insert(ctx, h);
	ev = imm_event_new(IMM_EVENT_RECALL, h);
	if (ev) {
		ev->time_ns = h->break_ns;
		ev->deadline_ns = h->deadline_ns;
		ev->revoke_ns = h->revoke_ns;
	}
out:
	pthread_mutex_unlock(&h->lock);
	if (!ev)
		return;
	imm_event_deliver(ctx, ev);
	if (rearm)
		imm_notifier_rearm(ctx);
	/* Deliver first, verify second: the recall is what is urgent, and
	 * the verify holds no lock the application's release needs. */
	if (imm_seal_verify(h, &mismatch) == -ESTALE && mismatch)
		imm_event_deliver(ctx, mismatch);
}

static void on_break_fd(struct imm_ctx *ctx, int fd)
{
	struct imm_handle *h;

	pthread_mutex_lock(&ctx->lock);
	h = imm_ctx_handle_by_fd(ctx, fd);
	pthread_mutex_unlock(&ctx->lock);
	if (!h) {
		dbg(ctx, "break signal for fd %d, which no handle owns now", fd);
		return;
	}
	on_break(ctx, h);
	imm_handle_unref(h);
}

/* The RT signal queue overflowed and the kernel fell back to plain SIGIO,
 * which names no fd: ask every handle. */
static void rescan(struct imm_ctx *ctx)
{
	struct imm_handle **all;
	size_t n = 0;

	warn(ctx, "the real-time signal queue overflowed; checking every seal");
	pthread_mutex_lock(&ctx->lock);
	all = calloc(ctx->by_fd_len ? ctx->by_fd_len : 1, sizeof(*all));
	for (size_t i = 0; all && i < ctx->by_fd_len; i++)
		if (ctx->by_fd[i])
			all[n++] = imm_handle_ref(ctx->by_fd[i]);
	pthread_mutex_unlock(&ctx->lock);
	if (!all) {
		err(ctx, "out of memory while rescanning seals after a lost signal");
		return;
	}
	for (size_t i = 0; i < n; i++) {
		on_break(ctx, all[i]);
		imm_handle_unref(all[i]);
	}
	free(all);
}

static void read_signals(struct imm_ctx *ctx)
{
	struct signalfd_siginfo si;

	while (read(ctx->sig_fd, &si, sizeof(si)) == sizeof(si)) {
		if ((int)si.ssi_signo == ctx->signo && si.ssi_code == POLL_MSG)
			on_break_fd(ctx, si.ssi_fd);
		else if (si.ssi_signo == SIGIO && si.ssi_code == SI_KERNEL)
			rescan(ctx);
		else
			warn(ctx, "took signal %u (code %d, from pid %u) that was "
				  "not a lease break; if the application waits for "
				  "this signal itself, give the library another one "
				  "with imm_ctx_set_signal()", si.ssi_signo,
			     si.ssi_code, si.ssi_pid);
	}
}

static void revoke_due(struct imm_ctx *ctx)
{
	uint64_t now = imm_now_ns();

	for (;;) {
		struct imm_event *ev = NULL;
		struct imm_handle *h;

		pthread_mutex_lock(&ctx->lock);
		h = ctx->breaking;
		if (h && h->revoke_ns <= now) {
			ctx->breaking = h->breaking_next;
			h->breaking_next = NULL;
			imm_handle_ref(h);
		} else {
			h = NULL;
		}
		pthread_mutex_unlock(&ctx->lock);
		if (!h)
			return;

		pthread_mutex_lock(&h->lock);
		if (h->state == IMM_STATE_BREAKING) {
			uint64_t deadline = h->deadline_ns;

			imm_seal_teardown(h, IMM_STATE_REVOKED);
			ev = imm_event_new(IMM_EVENT_REVOKED, h);
			if (ev)
				ev->deadline_ns = deadline;
			warn(ctx, "revoked a seal %llu ms before the kernel's "
				  "deadline: the application did not release it",
			     (unsigned long long)((deadline - imm_now_ns()) /
						  NSEC_PER_MSEC));
		}
		pthread_mutex_unlock(&h->lock);
		if (ev)
			imm_event_deliver(ctx, ev);
		imm_handle_unref(h);
	}
}

static void drain(int fd)
{
	uint64_t v;

	while (read(fd, &v, sizeof(v)) == sizeof(v))
		;
}

static void *notifier_main(void *arg)
{
	struct start_arg *sa = arg;
	struct imm_ctx *ctx = sa->ctx;
	struct pollfd pfd[3] = {
		{ .fd = ctx->sig_fd, .events = POLLIN },
		{ .fd = ctx->timer_fd, .events = POLLIN },
		{ .fd = ctx->wake_fd, .events = POLLIN },
	};

	ctx->notifier_tid = gettid();
	sem_post(&sa->started);	/* sa is gone after this */

	for (;;) {
		if (poll(pfd, 3, -1) < 0) {
			if (errno == EINTR)
				continue;
			err(ctx, "notifier poll: %s; breaks are no longer "
				 "delivered", strerror(errno));
			break;
		}
		if (pfd[2].revents) {
			drain(ctx->wake_fd);
			break;	/* only ever woken to stop */
		}
		if (pfd[0].revents)
			read_signals(ctx);
		if (pfd[1].revents) {
			drain(ctx->timer_fd);
			revoke_due(ctx);
			imm_notifier_rearm(ctx);
		}
		if (ctx->free_on_notifier_exit) {
			/* The last reference went away on this thread. */
			pthread_detach(pthread_self());
			ctx->notifier_running = false;
			imm_ctx_destroy(ctx);
			return NULL;
		}
	}
	return NULL;
}

static void close_fds(struct imm_ctx *ctx)
{
	int *fds[] = { &ctx->sig_fd, &ctx->timer_fd, &ctx->wake_fd };

	for (size_t i = 0; i < 3; i++) {
		if (*fds[i] >= 0)
			close(*fds[i]);
		*fds[i] = -1;
	}
}

static int start_locked(struct imm_ctx *ctx)
{
	struct start_arg sa = { .ctx = ctx };
	pthread_attr_t attr;
	sigset_t set;
	int r;

	sigemptyset(&set);
	sigaddset(&set, ctx->signo);
	sigaddset(&set, SIGIO);	/* the kernel's fallback when the queue is full */
	ctx->sig_fd = signalfd(-1, &set, SFD_CLOEXEC | SFD_NONBLOCK);
	ctx->timer_fd = timerfd_create(CLOCK_MONOTONIC, TFD_CLOEXEC | TFD_NONBLOCK);
	ctx->wake_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (ctx->sig_fd < 0 || ctx->timer_fd < 0 || ctx->wake_fd < 0) {
		r = -errno;
		err(ctx, "cannot create the notifier's fds: %s; raise "
			 "RLIMIT_NOFILE", strerror(-r));
		goto fail;
	}
	if (sem_init(&sa.started, 0, 0) < 0) {
		r = -errno;
		goto fail;
	}
	/* Born with every signal blocked: it must never run a host handler,
	 * and the break signal must stay pending for the signalfd. */
	sigfillset(&set);
	r = -pthread_attr_init(&attr);
	if (r == 0)
		r = -pthread_attr_setsigmask_np(&attr, &set);
	if (r == 0)
		r = -pthread_create(&ctx->notifier, &attr, notifier_main, &sa);
	pthread_attr_destroy(&attr);
	if (r < 0) {
		sem_destroy(&sa.started);
		err(ctx, "cannot start the notifier thread: %s", strerror(-r));
		goto fail;
	}
	while (sem_wait(&sa.started) < 0 && errno == EINTR)
		;
	sem_destroy(&sa.started);
	ctx->notifier_running = true;
	dbg(ctx, "notifier thread %d listens on signal %d", ctx->notifier_tid,
	    ctx->signo);
	return 0;
fail:
	close_fds(ctx);
	return r;
}

int imm_notifier_start(struct imm_ctx *ctx)
{
	int r = 0;

	pthread_mutex_lock(&ctx->lock);
	if (!ctx->notifier_running)
		r = start_locked(ctx);
	pthread_mutex_unlock(&ctx->lock);
	return r;
}

/* Also in a forked child, where the thread does not exist: fds only. */
void imm_notifier_stop(struct imm_ctx *ctx)
{
	uint64_t one = 1;

	if (ctx->notifier_running && !imm_forked(ctx)) {
		if (write(ctx->wake_fd, &one, sizeof(one)) < 0)
			err(ctx, "cannot wake the notifier to stop it: %s",
			    strerror(errno));
		pthread_join(ctx->notifier, NULL);
	}
	ctx->notifier_running = false;
	close_fds(ctx);
}

bool imm_notifier_is_self(const struct imm_ctx *ctx)
{
	return ctx->notifier_running && pthread_equal(pthread_self(), ctx->notifier);
}
