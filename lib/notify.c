// SPDX-License-Identifier: LGPL-2.1-or-later
/*
 * The notifier: one thread per context that owns the break signal.
 *
 * Every seal, lease or layout seal, is aimed at this thread (F_SETOWN_EX
 * F_OWNER_TID, imm_notifier_aim()), whose signal mask blocks everything, so
 * our breaks are pending *on this thread*.  The application's signals of
 * the same numbers (its kill(), an O_ASYNC SIGIO) are pending on the
 * process.  sigtimedwait() or a signalfd read would take those too, so the
 * thread never waits in one: it polls a signalfd per number (poll does not
 * dequeue).  A read takes the thread's own queue before the process's,
 * oldest first, so before reading the break signal the thread queues a
 * marker to itself (rt_tgsigqueueinfo) and reads up to the marker: all it
 * reads was aimed at this thread, and an instance still pending after the
 * marker is the process's.  SIGIO does not queue, so it cannot be bounded
 * that way; when it is pending the thread reads SigPnd/ShdPnd of its
 * /proc/self/task/TID/status instead (and for the break signal too when
 * RLIMIT_SIGPENDING refuses the marker).  A number pending for the process
 * is left to the application: its signalfd is not polled, and the thread
 * re-checks after a bounded back-off, no busy spin.
 *
 * SIGIO stays in the mask for the kernel's fallback when the RT queue is
 * full (it names no fd: rescan).  Stop is a flag plus an eventfd, not a
 * signal.  Deadlines are the revoker's (a second thread): a callback
 * running here, or a slow verify, never delays a revoke.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <sched.h>
#include <semaphore.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/signalfd.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "private.h"

#define NSEC_PER_MSEC 1000000ull
#define NSEC_PER_SEC 1000000000ull
#define LATE_MIN_NS (10 * NSEC_PER_MSEC)
#define LATE_MAX_NS (250 * NSEC_PER_MSEC)
#define BACKOFF_MIN_MS 1
#define BACKOFF_MAX_MS 64

struct start_arg {
	struct imm_ctx *ctx;
	sem_t started;
	int r;
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
 * The kernel's deadline runs from its break.  The signal can reach us late
 * (a busy callback, a verify), so plan from the earliest moment the break
 * can have started: when the notifier last saw its queue empty or woke up.
 * A margin longer than half the break time is cut to half: the holder
 * always gets at least half of it to release on its own.
 */
static void plan_deadline(struct imm_handle *h, uint64_t since)
{
	uint64_t lbt_ns = (uint64_t)h->lease_break_time * NSEC_PER_SEC;
	uint64_t margin = (uint64_t)h->revoke_margin_ms * NSEC_PER_MSEC;

	if (margin > lbt_ns / 2)
		margin = lbt_ns / 2;
	h->break_ns = since;
	h->deadline_ns = since + lbt_ns;
	h->revoke_ns = h->deadline_ns - margin;
}

/* How often the revoker looks for a notifier that is late. */
static uint64_t late_ns(const struct imm_ctx *ctx)
{
	uint64_t ns = (uint64_t)ctx->revoke_margin_ms * NSEC_PER_MSEC / 4;

	return ns < LATE_MIN_NS ? LATE_MIN_NS : ns > LATE_MAX_NS ? LATE_MAX_NS : ns;
}

/* Sorted by revoke time; wake the revoker only when it could otherwise
 * sleep past this one (it wakes every late_ns() anyway). */
static void breaking_insert(struct imm_ctx *ctx, struct imm_handle *h)
{
	struct imm_handle **pp;

	pthread_mutex_lock(&ctx->lock);
	for (pp = &ctx->breaking; *pp && (*pp)->revoke_ns <= h->revoke_ns;
	     pp = &(*pp)->breaking_next)
		;
	h->breaking_next = *pp;
	*pp = h;
	if (h->revoke_ns < imm_now_ns() + late_ns(ctx))
		pthread_cond_signal(&ctx->revoke_cond);
	pthread_mutex_unlock(&ctx->lock);
}

/* h->lock held: SEALED -> BREAKING, planned from since; the recall event. */
static struct imm_event *begin_break(struct imm_ctx *ctx, struct imm_handle *h,
				     uint64_t since)
{
	struct imm_event *ev;

	plan_deadline(h, since);
	h->state = IMM_STATE_BREAKING;
	breaking_insert(ctx, h);
	ev = imm_event_new(IMM_EVENT_RECALL, h);
	if (ev) {
		ev->time_ns = h->break_ns;
		ev->deadline_ns = h->deadline_ns;
		ev->revoke_ns = h->revoke_ns;
	}
	return ev;
}

static struct imm_handle **all_handles(struct imm_ctx *ctx, size_t *ret_n)
{
	struct imm_handle **all;
	size_t n = 0;

	pthread_mutex_lock(&ctx->lock);
	all = calloc(ctx->by_fd_len ? ctx->by_fd_len : 1, sizeof(*all));
	for (size_t i = 0; all && i < ctx->by_fd_len; i++)
		if (ctx->by_fd[i])
			all[n++] = imm_handle_ref(ctx->by_fd[i]);
	pthread_mutex_unlock(&ctx->lock);
	*ret_n = n;
	return all;
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
	if (h->sealing && !named) {
		/* a rescan while imm_seal() works unlocked: the lease may not
		 * be taken yet, so ask again when the seal is committed */
		h->recheck_at_commit = true;
		goto out;
	}
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
	ev = begin_break(ctx, h, atomic_load(&ctx->quiet_ns));
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

void imm_notifier_on_break_fd(struct imm_ctx *ctx, int fd)
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

/*
 * Woken with the break signal pending and one handle in the context: ask
 * its seal before reading the queue.  Reading safely costs two system
 * calls more (the marker, and the read itself) than asking; when the
 * answer is yes the recall goes out first and the queue is read after.
 * The signal read later finds the seal breaking (or released) and adds
 * nothing; when the answer is no, the queue is read as usual.
 */
static void ask_sole(struct imm_ctx *ctx)
{
	struct imm_handle *h;
	bool sealed;

	pthread_mutex_lock(&ctx->lock);
	h = ctx->sole ? imm_handle_ref(ctx->sole) : NULL;
	pthread_mutex_unlock(&ctx->lock);
	if (!h)
		return;
	pthread_mutex_lock(&h->lock);
	sealed = (h->state == IMM_STATE_SEALED || h->state == IMM_STATE_DEFEATED) &&
		 !h->sealing;
	pthread_mutex_unlock(&h->lock);
	if (sealed)	/* else asking costs a system call and tells nothing */
		on_break(ctx, h, false);
	imm_handle_unref(h);
}

/* A signal that names no fd (the kernel's SIGIO fallback), or a new
 * notifier after one died: ask every handle. */
static void rescan(struct imm_ctx *ctx)
{
	struct imm_handle **all;
	size_t n = 0;

	all = all_handles(ctx, &n);
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

static void on_signal(struct imm_ctx *ctx, const struct signalfd_siginfo *si)
{
	if ((int)si->ssi_signo == ctx->signo && si->ssi_code == POLL_MSG) {
		imm_notifier_on_break_fd(ctx, si->ssi_fd);
	} else if (si->ssi_signo == SIGIO) {
		warn(ctx, "the real-time signal queue overflowed; checking every "
			  "seal");
		rescan(ctx);
	} else {
		/* thread-directed at us: only a tgkill() does that */
		warn(ctx, "took signal %d (code %d, from pid %d) sent to the "
			  "notifier thread itself; it is not a break",
		     (int)si->ssi_signo, si->ssi_code, (int)si->ssi_pid);
	}
}

/* One SigXxx: line of a status file, as a mask (bit n-1 is signal n). */
static uint64_t status_mask(const char *buf, const char *key)
{
	const char *p = strstr(buf, key);

	return p ? strtoull(p + strlen(key), NULL, 16) : 0;
}

static uint64_t bit(int sig)
{
	return 1ull << (sig - 1);
}

/*
 * From this thread's status file: what of @want is pending on this thread
 * (*ret_mine) and what for the process (*ret_theirs), as masks.
 */
static int status_pending(struct imm_ctx *ctx, uint64_t want, uint64_t *ret_mine,
			  uint64_t *ret_theirs)
{
	uint64_t priv, shared;
	char buf[4096];
	ssize_t n;

	n = pread(ctx->status_fd, buf, sizeof(buf) - 1, 0);
	if (n <= 0)
		return n < 0 ? -errno : -EIO;
	buf[n] = '\0';
	priv = status_mask(buf, "\nSigPnd:");
	shared = status_mask(buf, "\nShdPnd:");
	/* a number pending for both is left until the application takes its
	 * own: which queue a read would take from is not ours to bet on */
	*ret_mine = priv & ~shared & want;
	*ret_theirs = shared & want;
	return 0;
}

/* One signalfd per number: a read can only take the number it is for. */
static int take_one(struct imm_ctx *ctx, uint64_t mine)
{
	int fd = (mine & bit(ctx->signo)) ? ctx->sig_fd : ctx->sigio_fd;
	struct signalfd_siginfo si;
	ssize_t n = read(fd, &si, sizeof(si));

	if (n == (ssize_t)sizeof(si)) {
		on_signal(ctx, &si);
		return 1;
	}
	if (n < 0 && (errno == EAGAIN || errno == EINTR))
		return 0;
	return n < 0 ? -errno : -EIO;
}

static bool is_marker(const struct imm_ctx *ctx, const struct signalfd_siginfo *si)
{
	return si->ssi_code == SI_QUEUE && (pid_t)si->ssi_pid == ctx->notifier_pid &&
	       si->ssi_ptr == (uintptr_t)ctx;
}

/*
 * Read ctx->signo up to a marker queued behind what this thread has:
 * everything before it was aimed here.  Returns how many were taken, or
 * -EAGAIN when the marker could not be queued (RLIMIT_SIGPENDING).
 */
static int drain_to_marker(struct imm_ctx *ctx)
{
	siginfo_t mark = { .si_signo = ctx->signo, .si_code = SI_QUEUE };
	struct signalfd_siginfo si;
	int taken = 0;
	ssize_t n;

	mark.si_pid = ctx->notifier_pid;
	mark.si_uid = ctx->notifier_uid;
	mark.si_value.sival_ptr = ctx;
	if (syscall(SYS_rt_tgsigqueueinfo, ctx->notifier_pid, ctx->notifier_tid,
		    ctx->signo, &mark) < 0)
		return -errno;
	for (;;) {
		n = read(ctx->sig_fd, &si, sizeof(si));
		if (n < 0 && errno == EINTR)
			continue;
		/* only this thread reads its own queue: the marker is there */
		if (n != (ssize_t)sizeof(si))
			return n < 0 ? -errno : -EIO;
		if (is_marker(ctx, &si))
			return taken;
		on_signal(ctx, &si);
		taken++;
	}
}

/*
 * Take what of ours is pending (@set is sigpending()'s view, this thread's
 * and the process's together); *ret_theirs gets the numbers pending for
 * the process only.  Returns how many signals were taken.
 */
static int take_mine(struct imm_ctx *ctx, const sigset_t *set, uint64_t *ret_theirs)
{
	uint64_t want = 0, mine = 0, theirs = 0;
	int taken = 0, r;

	*ret_theirs = 0;
	if (sigismember(set, ctx->signo)) {
		r = drain_to_marker(ctx);
		if (r == -EAGAIN)
			want |= bit(ctx->signo);
		else if (r < 0)
			return r;
		else if (r == 0)
			*ret_theirs |= bit(ctx->signo);	/* pending, not here */
		else
			taken = r;
	}
	if (sigismember(set, SIGIO))
		want |= bit(SIGIO);
	if (!want)
		return taken;
	r = status_pending(ctx, want, &mine, &theirs);
	if (r < 0)
		return r;
	*ret_theirs |= theirs;
	for (uint64_t b = mine; b; b &= b - 1) {
		r = take_one(ctx, b & -b);
		if (r < 0)
			return r;
		taken += r;
	}
	return taken;
}

/* Sleep until something may be ours, a wake-up, or the back-off bound;
 * a number pending for the process is not watched (it would not let us
 * sleep).  When every number was watched, *ready says which are pending
 * (as sigpending() would) and returns 1: the caller need not ask again. */
static int sleep_once(struct imm_ctx *ctx, uint64_t theirs, int timeout_ms,
		      sigset_t *ready)
{
	struct pollfd fds[3] = {
		{ .fd = ctx->wake_fd, .events = POLLIN },
		{ .fd = ctx->sig_fd, .events = POLLIN },
		{ .fd = ctx->sigio_fd, .events = POLLIN },
	};
	uint64_t count;

	if (theirs & bit(ctx->signo))
		fds[1].fd = -1;
	if (theirs & bit(SIGIO))
		fds[2].fd = -1;
	if (poll(fds, 3, timeout_ms) < 0)
		return errno == EINTR ? 0 : -errno;
	if ((fds[0].revents & POLLIN) &&
	    read(ctx->wake_fd, &count, sizeof(count)) < 0 && errno != EAGAIN)
		return -errno;
	if (theirs)
		return 0;
	sigemptyset(ready);
	if (fds[1].revents & POLLIN)
		sigaddset(ready, ctx->signo);
	if (fds[2].revents & POLLIN)
		sigaddset(ready, SIGIO);
	return 1;
}

static int notifier_loop(struct imm_ctx *ctx)
{
	int backoff = 0, r;
	bool told = false, known = false;
	uint64_t woke = 0;
	sigset_t set;

	while (!atomic_load(&ctx->notifier_stop) && !ctx->free_on_notifier_exit) {
		/* the poll that woke us already told what was pending, and
		 * when: "empty" then holds from its return, not from now */
		uint64_t theirs = 0, t = known ? woke : imm_now_ns();

		imm_event_deliver_late_all(ctx);
		if (!known && sigpending(&set) < 0)
			return -errno;
		if (known && sigismember(&set, ctx->signo))
			ask_sole(ctx);
		known = false;
		if (sigismember(&set, ctx->signo) || sigismember(&set, SIGIO)) {
			if (!atomic_load(&ctx->busy_since))
				atomic_store(&ctx->busy_since,
					     atomic_load(&ctx->quiet_ns));
			r = take_mine(ctx, &set, &theirs);
			if (r < 0)
				return r;
			if (r > 0)
				continue;
		}
		/* empty at t: a later break started after t */
		atomic_store(&ctx->quiet_ns, t);
		atomic_store(&ctx->busy_since, 0);
		if (theirs && !told) {
			info(ctx, "signal %d is pending for the process and the "
				  "notifier leaves it to the application; until it "
				  "is taken, breaks may be seen up to %d ms late",
			     (theirs & bit(SIGIO)) ? SIGIO : ctx->signo,
			     BACKOFF_MAX_MS);
			told = true;
		}
		backoff = !theirs ? 0 : !backoff ? BACKOFF_MIN_MS :
			  backoff * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : backoff * 2;
		r = sleep_once(ctx, theirs, theirs ? backoff : -1, &set);
		if (r < 0)
			return r;
		known = r == 1;
		woke = imm_now_ns();
		atomic_store(&ctx->quiet_ns, woke);
	}
	return 0;
}

static int notifier_open(struct imm_ctx *ctx)
{
	char path[64];
	sigset_t set;

	sigemptyset(&set);
	sigaddset(&set, ctx->signo);
	ctx->sig_fd = signalfd(-1, &set, SFD_CLOEXEC | SFD_NONBLOCK);
	if (ctx->sig_fd < 0)
		return -errno;
	sigemptyset(&set);
	sigaddset(&set, SIGIO);	/* the kernel's fallback when the queue is full */
	ctx->sigio_fd = signalfd(-1, &set, SFD_CLOEXEC | SFD_NONBLOCK);
	if (ctx->sigio_fd < 0)
		return -errno;
	ctx->notifier_pid = getpid();
	ctx->notifier_uid = getuid();
	snprintf(path, sizeof(path), "/proc/self/task/%d/status",
		 (int)ctx->notifier_tid);
	ctx->status_fd = open(path, O_RDONLY | O_CLOEXEC);
	if (ctx->status_fd < 0)
		return -errno;
	return 0;
}

/* Every exit path: the thread's own fds go with it. */
static void notifier_close(struct imm_ctx *ctx)
{
	if (ctx->sig_fd >= 0)
		close(ctx->sig_fd);
	if (ctx->sigio_fd >= 0)
		close(ctx->sigio_fd);
	if (ctx->status_fd >= 0)
		close(ctx->status_fd);
	ctx->sig_fd = ctx->sigio_fd = ctx->status_fd = -1;
}

static void *notifier_main(void *arg)
{
	struct start_arg *sa = arg;
	struct imm_ctx *ctx = sa->ctx;
	uint64_t one = 1;
	int r;

	/* named, so top -H and the tests can tell the library's threads */
	pthread_setname_np(pthread_self(), "imm-notify");

	ctx->notifier_tid = gettid();
	atomic_store(&ctx->quiet_ns, imm_now_ns());
	r = notifier_open(ctx);
	sa->r = r;
	sem_post(&sa->started);	/* sa is gone after this */
	if (r < 0) {
		notifier_close(ctx);
		return NULL;
	}
	if (ctx->notifier_rescan) {
		ctx->notifier_rescan = false;
		rescan(ctx);	/* breaks the dead notifier never read */
	}
	r = notifier_loop(ctx);
	notifier_close(ctx);
	if (ctx->free_on_notifier_exit) {
		/* The last reference went away on this thread. */
		pthread_detach(pthread_self());
		imm_ctx_destroy(ctx);
		return NULL;
	}
	if (r < 0) {
		err(ctx, "notifier thread: %s; breaks are not delivered until "
			 "the next imm_seal() or imm_ctx_dispatch() restarts it",
		    strerror(-r));
		atomic_store(&ctx->notifier_error, r);
		atomic_store(&ctx->notifier_dead, true);
		/* wake a poller: its dispatch restarts us */
		if (write(ctx->event_fd, &one, sizeof(one)) < 0)
			dbg(ctx, "eventfd write: %s", strerror(errno));
	}
	return NULL;
}

/* ------------------------------------------------------------ revoker */

/* h->lock held, state BREAKING: tear down; loud when the kernel's deadline
 * has passed (its lease may be gone while MRs still targeted the pages). */
static struct imm_event *revoke_now(struct imm_ctx *ctx, struct imm_handle *h)
{
	uint64_t deadline = h->deadline_ns, now = imm_now_ns();
	struct imm_event *ev;

	if (imm_seal_teardown(h, IMM_STATE_REVOKED) < 0) {
		/* still BREAKING, as in the kernel */
		err(ctx, "fd %d: could not revoke a recalled seal; "
			 "imm_release() retries it", h->fd);
		return NULL;
	}
	if (now >= deadline)
		err(ctx, "fd %d: revoked a seal %llu ms AFTER the kernel's "
			 "deadline: the kernel may have dropped it while mappings "
			 "and registrations still targeted its blocks; this "
			 "process was not scheduled in time: raise the revoke "
			 "margin or lease-break-time", h->fd,
		    (unsigned long long)((now - deadline) / NSEC_PER_MSEC));
	else
		warn(ctx, "revoked a seal %llu ms before the kernel's deadline: "
			  "the application did not release it",
		     (unsigned long long)((deadline - now) / NSEC_PER_MSEC));
	ev = imm_event_new(IMM_EVENT_REVOKED, h);
	if (ev)
		ev->deadline_ns = deadline;
	return ev;
}

/* ctx->lock held: take the first due handle whose lock is free.  A handle
 * whose lock is busy stays listed and never holds up another's revoke. */
static struct imm_handle *take_due(struct imm_ctx *ctx, uint64_t now,
				   bool *ret_busy)
{
	for (struct imm_handle **pp = &ctx->breaking;
	     *pp && (*pp)->revoke_ns <= now; pp = &(*pp)->breaking_next) {
		struct imm_handle *h = *pp;

		if (pthread_mutex_trylock(&h->lock)) {
			*ret_busy = true;
			continue;
		}
		*pp = h->breaking_next;
		h->breaking_next = NULL;
		return imm_handle_ref(h);	/* locked */
	}
	return NULL;
}

/* true: a due handle was busy, try again soon */
static bool revoke_due(struct imm_ctx *ctx)
{
	bool busy = false;

	for (;;) {
		struct imm_event *ev = NULL;
		struct imm_handle *h;

		pthread_mutex_lock(&ctx->lock);
		h = take_due(ctx, imm_now_ns(), &busy);
		pthread_mutex_unlock(&ctx->lock);
		if (!h)
			return busy;
		if (h->state == IMM_STATE_BREAKING)
			ev = revoke_now(ctx, h);
		pthread_mutex_unlock(&h->lock);
		if (ev)
			imm_event_deliver_later(ctx, ev);
		imm_handle_unref(h);
	}
}

/*
 * The notifier has held a signal for a while (a slow callback, a verify):
 * breaks queued behind it would be planned too late.  Ask the seals
 * themselves, skipping handles whose lock is busy (the next round gets
 * them), and plan from when the notifier was last idle.
 */
static void late_scan(struct imm_ctx *ctx, uint64_t since)
{
	struct imm_handle **all;
	size_t n = 0;

	all = all_handles(ctx, &n);
	for (size_t i = 0; all && i < n; i++) {
		struct imm_handle *h = all[i];
		struct imm_event *ev = NULL;

		if (pthread_mutex_trylock(&h->lock) == 0) {
			if ((h->state == IMM_STATE_SEALED ||
			     h->state == IMM_STATE_DEFEATED) && !h->sealing &&
			    imm_handle_backend(h)->break_pending(h) == 1) {
				warn(ctx, "fd %d: a break waited behind the "
					  "notifier, busy for %llu ms (a slow "
					  "callback?); planned from when it was "
					  "last idle", h->fd,
				     (unsigned long long)((imm_now_ns() - since) /
							  NSEC_PER_MSEC));
				ev = begin_break(ctx, h, since);
			}
			pthread_mutex_unlock(&h->lock);
		}
		if (ev)
			imm_event_deliver_later(ctx, ev);
		imm_handle_unref(h);
	}
	free(all);
}

static void *revoker_main(void *arg)
{
	struct imm_ctx *ctx = arg;

	pthread_setname_np(pthread_self(), "imm-revoke");
	pthread_mutex_lock(&ctx->lock);
	while (!atomic_load(&ctx->notifier_stop)) {
		uint64_t now = imm_now_ns(), late = late_ns(ctx), at, since;
		struct timespec ts;
		bool busy;

		pthread_mutex_unlock(&ctx->lock);
		since = atomic_load(&ctx->busy_since);
		if (since && now > since && now - since >= late)
			late_scan(ctx, since);
		busy = revoke_due(ctx);
		if (ctx->free_on_revoker_exit) {
			/* The last reference went away on this thread. */
			pthread_detach(pthread_self());
			imm_ctx_destroy(ctx);
			return NULL;
		}
		pthread_mutex_lock(&ctx->lock);
		now = imm_now_ns();
		at = now + (busy ? NSEC_PER_MSEC : late);
		if (ctx->breaking && ctx->breaking->revoke_ns < at)
			at = ctx->breaking->revoke_ns;
		ts.tv_sec = (time_t)(at / NSEC_PER_SEC);
		ts.tv_nsec = (long)(at % NSEC_PER_SEC);
		if (!atomic_load(&ctx->notifier_stop) && at > now)
			pthread_cond_timedwait(&ctx->revoke_cond, &ctx->lock, &ts);
	}
	pthread_mutex_unlock(&ctx->lock);
	return NULL;
}

/* ------------------------------------------------------------ lifecycle */

static void wake_notifier(struct imm_ctx *ctx)
{
	uint64_t one = 1;

	if (write(ctx->wake_fd, &one, sizeof(one)) < 0)
		dbg(ctx, "wake eventfd write: %s", strerror(errno));
}

static int start_threads(struct imm_ctx *ctx)
{
	struct start_arg sa = { .ctx = ctx };
	pthread_attr_t attr;
	sigset_t all;
	int r;

	if (sem_init(&sa.started, 0, 0) < 0)
		return -errno;
	/* Born with every signal blocked: they must never run a host handler,
	 * and the break signal must stay pending until the notifier reads it. */
	sigfillset(&all);
	r = -pthread_attr_init(&attr);
	if (r == 0)
		r = -pthread_attr_setsigmask_np(&attr, &all);
	if (r == 0)
		r = -pthread_create(&ctx->notifier, &attr, notifier_main, &sa);
	if (r == 0) {
		while (sem_wait(&sa.started) < 0 && errno == EINTR)
			;
		r = sa.r;
		if (r < 0)
			pthread_join(ctx->notifier, NULL);
	}
	if (r == 0) {
		r = -pthread_create(&ctx->revoker, &attr, revoker_main, ctx);
		if (r < 0) {
			atomic_store(&ctx->notifier_stop, true);
			wake_notifier(ctx);
			pthread_join(ctx->notifier, NULL);
		}
	}
	pthread_attr_destroy(&attr);
	sem_destroy(&sa.started);
	return r;
}

/* ctx->lock held */
static int start_locked(struct imm_ctx *ctx)
{
	int r;

	ctx->wake_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (ctx->wake_fd < 0) {
		r = -errno;
		err(ctx, "cannot start the notifier: eventfd: %s; raise "
			 "RLIMIT_NOFILE", strerror(-r));
		return r;
	}
	atomic_store(&ctx->notifier_stop, false);
	atomic_store(&ctx->notifier_dead, false);
	r = start_threads(ctx);
	if (r < 0) {
		err(ctx, "cannot start the notifier thread: %s", strerror(-r));
		close(ctx->wake_fd);
		ctx->wake_fd = -1;
		return r;
	}
	ctx->notifier_running = ctx->revoker_running = true;
	dbg(ctx, "notifier thread %d listens on signal %d", ctx->notifier_tid,
	    ctx->signo);
	return 0;
}

/* Aim the handle's break signal at the notifier thread, thread-directed,
 * as ctx->signo: before a seal exists, so that no break can reach the
 * process as a plain SIGIO (default action: death). */
static int aim_at(struct imm_handle *h, pid_t tid)
{
	struct f_owner_ex owner = { .type = F_OWNER_TID, .pid = tid };

	if (fcntl(h->fd, F_SETOWN_EX, &owner) < 0 ||
	    fcntl(h->fd, F_SETSIG, h->ctx->signo) < 0)
		return -errno;
	return 0;
}

int imm_notifier_aim(struct imm_handle *h)
{
	struct imm_ctx *ctx = h->ctx;
	int r;

	r = aim_at(h, ctx->notifier_tid);
	if (r == -ESRCH && atomic_load(&ctx->notifier_dead)) {
		/* it died since imm_seal() started it: start a new one (its
		 * error stays for imm_ctx_dispatch() to return once) */
		r = imm_notifier_start(ctx);
		if (r == 0)
			r = aim_at(h, ctx->notifier_tid);
	}
	if (r < 0) {
		err(ctx, "cannot direct break signals to the notifier: %s",
		    strerror(-r));
		return r;
	}
	return 0;
}


/* ctx->lock held (dropped while joining): both threads gone, fds closed. */
static void stop_locked(struct imm_ctx *ctx)
{
	bool self_n = ctx->notifier_running &&
		      pthread_equal(pthread_self(), ctx->notifier);
	bool self_r = ctx->revoker_running &&
		      pthread_equal(pthread_self(), ctx->revoker);

	atomic_store(&ctx->notifier_stop, true);
	wake_notifier(ctx);
	pthread_cond_broadcast(&ctx->revoke_cond);
	pthread_mutex_unlock(&ctx->lock);
	if (ctx->revoker_running && !self_r)
		pthread_join(ctx->revoker, NULL);
	if (ctx->notifier_running && !self_n)
		pthread_join(ctx->notifier, NULL);
	pthread_mutex_lock(&ctx->lock);
	ctx->notifier_running = ctx->revoker_running = false;
	if (ctx->wake_fd >= 0)
		close(ctx->wake_fd);
	ctx->wake_fd = -1;
}

/* A new notifier: every seal aimed at it, and checked for breaks the dead
 * one left unread (their signals died with it). */
static int restart_locked(struct imm_ctx *ctx)
{
	int r;

	stop_locked(ctx);
	ctx->notifier_rescan = true;
	r = start_locked(ctx);
	if (r < 0)
		return r;
	for (size_t i = 0; i < ctx->by_fd_len; i++) {
		struct f_owner_ex owner = {
			.type = F_OWNER_TID,
			.pid = ctx->notifier_tid,
		};

		if (ctx->by_fd[i] &&
		    fcntl(ctx->by_fd[i]->fd, F_SETOWN_EX, &owner) < 0)
			warn(ctx, "fd %zu: cannot aim it at the new notifier: %s",
			     i, strerror(errno));
	}
	return 0;
}

int imm_notifier_start(struct imm_ctx *ctx)
{
	int r = 0;

	pthread_mutex_lock(&ctx->lock);
	if (ctx->notifier_running && atomic_load(&ctx->notifier_dead)) {
		err(ctx, "the notifier thread had stopped (%s); restarting it "
			 "and checking every seal",
		    strerror(-atomic_load(&ctx->notifier_error)));
		r = restart_locked(ctx);
	} else if (!ctx->notifier_running) {
		r = start_locked(ctx);
	}
	pthread_mutex_unlock(&ctx->lock);
	return r;
}

/* A dead notifier is restarted; its error is returned once. */
int imm_notifier_check(struct imm_ctx *ctx, const char *what)
{
	int r = 0, e;

	/* dead, or restarted by a seal since: its error is still due */
	if (!atomic_load(&ctx->notifier_dead) &&
	    !atomic_load(&ctx->notifier_error))
		return 0;
	if (atomic_load(&ctx->notifier_dead))
		r = imm_notifier_start(ctx);
	e = atomic_exchange(&ctx->notifier_error, 0);
	if (e < 0) {
		err(ctx, "%s: the notifier had stopped: %s; %s", what,
		    strerror(-e), r < 0 ? "restarting it failed" :
		    "restarted it and checked every seal");
		return e;
	}
	return r;
}

/* In a forked child the threads do not exist: just close the fd copies. */
void imm_notifier_stop(struct imm_ctx *ctx)
{
	if (imm_forked(ctx)) {
		int fds[4] = { ctx->wake_fd, ctx->sig_fd, ctx->sigio_fd,
			       ctx->status_fd };

		for (int i = 0; i < 4; i++)
			if (fds[i] >= 0)
				close(fds[i]);
		ctx->wake_fd = ctx->sig_fd = ctx->sigio_fd = ctx->status_fd = -1;
	} else if (ctx->notifier_running) {
		pthread_mutex_lock(&ctx->lock);
		stop_locked(ctx);
		pthread_mutex_unlock(&ctx->lock);
	}
	ctx->notifier_running = ctx->revoker_running = false;
}

bool imm_notifier_is_self(const struct imm_ctx *ctx)
{
	return (ctx->notifier_running &&
		pthread_equal(pthread_self(), ctx->notifier)) ||
	       (ctx->revoker_running && pthread_equal(pthread_self(), ctx->revoker));
}
