// SPDX-License-Identifier: LGPL-2.1-or-later
/*
 * The notifier: one thread per context that owns the break signal.
 *
 * Every seal, lease or layout seal, is aimed at this thread (F_SETOWN_EX
 * F_OWNER_TID, imm_notifier_aim()), whose signal mask blocks everything;
 * sigtimedwait() takes the thread-directed signal, si_fd names the handle,
 * and the break becomes an event -- or, for an exclusive layout seal, which
 * is never broken, a log line about the refused layout change.  The host's
 * signal dispositions and other threads' masks are never touched.
 *
 * The thread sleeps in that one call, as the raw kernel path it is measured
 * against does (a poll() over several fds would cost a syscall per break).
 * Its timeout is the earliest revoke time, so seals not released before the
 * kernel's deadline are revoked without any timer; only this thread ever
 * adds a breaking seal, so it always knows that time.  A flag plus a
 * tgkill()ed SIGIO asks it to stop.  It uses no fd and no timer, so it works
 * even when RLIMIT_SIGPENDING leaves no room for a POSIX timer.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <semaphore.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
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

/* Sorted by revoke time, so the notifier only ever looks at the head. */
static void breaking_insert(struct imm_ctx *ctx, struct imm_handle *h)
{
	struct imm_handle **pp;

	pthread_mutex_lock(&ctx->lock);
	for (pp = &ctx->breaking; *pp && (*pp)->revoke_ns <= h->revoke_ns;
	     pp = &(*pp)->breaking_next)
		;
	h->breaking_next = *pp;
	*pp = h;
	pthread_mutex_unlock(&ctx->lock);
}

/* The earliest revoke time of a breaking seal, 0 if none. */
static uint64_t next_revoke(struct imm_ctx *ctx)
{
	uint64_t at;

	pthread_mutex_lock(&ctx->lock);
	at = ctx->breaking ? ctx->breaking->revoke_ns : 0;
	pthread_mutex_unlock(&ctx->lock);
	return at;
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

/*
 * A signal with no break pending.  Under an exclusive layout seal it means
 * a layout change was refused: nothing to recall or revoke, the seal holds.
 * Say so, and check that the map really is the one sealed (a mismatch is
 * an event of its own).  Anything else is a stale or duplicate signal.
 */
static void on_refusal(struct imm_ctx *ctx, struct imm_handle *h)
{
	const char *(*meaning)(const struct imm_handle *);
	struct imm_event *mismatch = NULL;
	const char *what = NULL;
	int fd = -1;

	pthread_mutex_lock(&h->lock);
	meaning = imm_handle_backend(h)->signal_without_break;
	if (meaning && h->state == IMM_STATE_SEALED && !h->sealing) {
		what = meaning(h);
		fd = h->fd;
	}
	pthread_mutex_unlock(&h->lock);
	if (!what)
		return;
	info(ctx, "fd %d: %s", fd, what);
	if (imm_seal_verify(h, &mismatch) == -ESTALE && mismatch)
		imm_event_deliver(ctx, mismatch);
}

/* A break signal for this handle (or a rescan after a lost signal). */
static void on_break(struct imm_ctx *ctx, struct imm_handle *h, bool named)
{
	struct imm_event *ev = NULL, *mismatch = NULL;
	bool refusal = false;
	int pending;

	pthread_mutex_lock(&h->lock);
	if (h->state == IMM_STATE_CLOSED)
		goto out;
	pending = imm_handle_backend(h)->break_pending(h);
	if (pending != 1) {
		/* a rescan asks every handle: only a named one was signalled */
		refusal = pending == 0 && named;
		goto out;
	}
	if (h->sealing) {
		h->broken_while_sealing = true;
		goto out;
	}
	if (h->state != IMM_STATE_SEALED && h->state != IMM_STATE_DEFEATED)
		goto out;
	plan_deadline(h, imm_now_ns());
	h->state = IMM_STATE_BREAKING;
	breaking_insert(ctx, h);
	ev = imm_event_new(IMM_EVENT_RECALL, h);
	if (ev) {
		ev->time_ns = h->break_ns;
		ev->deadline_ns = h->deadline_ns;
		ev->revoke_ns = h->revoke_ns;
	}
out:
	pthread_mutex_unlock(&h->lock);
	if (refusal)
		on_refusal(ctx, h);
	if (!ev)
		return;
	imm_event_deliver(ctx, ev);
	/*
	 * Deliver first, verify second: the recall is what is urgent.  The
	 * verify holds no lock a release needs, but on a busy or single CPU
	 * it would still keep the application off the CPU: yield to it first.
	 * A seal released meanwhile is not verified -- after a release the
	 * breaker may change the map legitimately.
	 */
	sched_yield();
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
	on_break(ctx, h, true);
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
		on_break(ctx, all[i], false);
		imm_handle_unref(all[i]);
	}
	free(all);
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

			if (imm_seal_teardown(h, IMM_STATE_REVOKED) < 0) {
				/* still BREAKING, as in the kernel */
				err(ctx, "could not revoke a recalled seal; "
					 "imm_release() retries it");
				goto next;
			}

			ev = imm_event_new(IMM_EVENT_REVOKED, h);
			if (ev)
				ev->deadline_ns = deadline;
			warn(ctx, "revoked a seal %llu ms before the kernel's "
				  "deadline: the application did not release it",
			     (unsigned long long)((deadline - imm_now_ns()) /
						  NSEC_PER_MSEC));
		}
next:
		pthread_mutex_unlock(&h->lock);
		if (ev)
			imm_event_deliver(ctx, ev);
		imm_handle_unref(h);
	}
}

static void on_signal(struct imm_ctx *ctx, const siginfo_t *si)
{
	if (si->si_signo == ctx->signo && si->si_code == POLL_MSG)
		on_break_fd(ctx, si->si_fd);
	else if (si->si_signo == SIGIO && si->si_code == SI_KERNEL)
		rescan(ctx);
	else
		warn(ctx, "took signal %d (code %d, from pid %d) that was not a "
			  "lease break; if the application waits for this signal "
			  "itself, give the library another one with "
			  "imm_ctx_set_signal()", si->si_signo, si->si_code,
		     (int)si->si_pid);
}

/* Until the next revoke time, or forever (NULL) with nothing breaking. */
static const struct timespec *timeout(struct imm_ctx *ctx, struct timespec *ts)
{
	uint64_t at = next_revoke(ctx), now;

	if (!at)
		return NULL;
	now = imm_now_ns();
	at = at > now ? at - now : 0;
	ts->tv_sec = (time_t)(at / NSEC_PER_SEC);
	ts->tv_nsec = (long)(at % NSEC_PER_SEC);
	return ts;
}

static void *notifier_main(void *arg)
{
	struct start_arg *sa = arg;
	struct imm_ctx *ctx = sa->ctx;
	sigset_t set;

	ctx->notifier_tid = gettid();
	sem_post(&sa->started);	/* sa is gone after this */

	sigemptyset(&set);
	sigaddset(&set, ctx->signo);
	sigaddset(&set, SIGIO);	/* the kernel's fallback when the queue is full */
	for (;;) {
		struct timespec ts;
		siginfo_t si;
		int sig = sigtimedwait(&set, &si, timeout(ctx, &ts));

		if (atomic_load(&ctx->notifier_stop))
			break;
		if (sig > 0) {
			on_signal(ctx, &si);
		} else if (errno == EAGAIN) {
			revoke_due(ctx);	/* the timeout is the revoke time */
		} else if (errno != EINTR) {
			err(ctx, "notifier: sigtimedwait: %s; breaks are no longer "
				 "delivered", strerror(errno));
			break;
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

static int start_locked(struct imm_ctx *ctx)
{
	struct start_arg sa = { .ctx = ctx };
	pthread_attr_t attr;
	sigset_t all;
	int r;

	if (sem_init(&sa.started, 0, 0) < 0)
		return -errno;
	/* Born with every signal blocked: it must never run a host handler,
	 * and the break signal must stay pending until it waits for it. */
	sigfillset(&all);
	atomic_store(&ctx->notifier_stop, false);
	r = -pthread_attr_init(&attr);
	if (r == 0)
		r = -pthread_attr_setsigmask_np(&attr, &all);
	if (r == 0)
		r = -pthread_create(&ctx->notifier, &attr, notifier_main, &sa);
	pthread_attr_destroy(&attr);
	if (r < 0) {
		sem_destroy(&sa.started);
		err(ctx, "cannot start the notifier thread: %s", strerror(-r));
		return r;
	}
	while (sem_wait(&sa.started) < 0 && errno == EINTR)
		;
	sem_destroy(&sa.started);
	ctx->notifier_running = true;
	dbg(ctx, "notifier thread %d listens on signal %d", ctx->notifier_tid,
	    ctx->signo);
	return 0;
}

/* Aim the handle's break signal at the notifier thread, thread-directed,
 * as ctx->signo: before a seal exists, so that no break can reach the
 * process as a plain SIGIO (default action: death). */
int imm_notifier_aim(struct imm_handle *h)
{
	struct imm_ctx *ctx = h->ctx;
	struct f_owner_ex owner = {
		.type = F_OWNER_TID,
		.pid = ctx->notifier_tid,
	};
	int r;

	if (fcntl(h->fd, F_SETOWN_EX, &owner) < 0 ||
	    fcntl(h->fd, F_SETSIG, ctx->signo) < 0) {
		r = -errno;
		err(ctx, "cannot direct break signals to the notifier: %s",
		    strerror(-r));
		return r;
	}
	return 0;
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

/* In a forked child the thread does not exist: nothing to do there. */
void imm_notifier_stop(struct imm_ctx *ctx)
{
	if (ctx->notifier_running && !imm_forked(ctx)) {
		/*
		 * SIGIO, not the RT signal: a legacy signal is delivered even
		 * when RLIMIT_SIGPENDING leaves no room to queue one, and the
		 * thread checks the flag before it looks at what it read.
		 */
		atomic_store(&ctx->notifier_stop, true);
		syscall(SYS_tgkill, getpid(), ctx->notifier_tid, SIGIO);
		pthread_join(ctx->notifier, NULL);
	}
	ctx->notifier_running = false;
}

bool imm_notifier_is_self(const struct imm_ctx *ctx)
{
	return ctx->notifier_running && pthread_equal(pthread_self(), ctx->notifier);
}
