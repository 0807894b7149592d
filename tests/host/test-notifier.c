// SPDX-License-Identifier: LGPL-2.1-or-later
/*
 * The notifier's contract with its host: it takes only the signals the
 * kernel aimed at its own thread (never the application's, even of the
 * same numbers), revokes before the kernel's deadline even when it is late
 * itself, and a context knows it was forked even when pids repeat.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "fixture.h"

#define SEC 1000000000ull
#define FILE_SIZE (1u << 20)

static void make_file(const char *name, char *path)
{
	fx_path(&fx_ext4, name, path);
	unlink(path);
	fx_write_pattern(path, 0, FILE_SIZE, 7);
}

struct seen {
	int recalls;
	int release_rc;
};

static void release_on_recall(struct imm_event *ev, void *data)
{
	struct seen *s = data;

	if (imm_event_get_type(ev) != IMM_EVENT_RECALL)
		return;
	s->release_rc |= imm_release(imm_event_get_handle(ev));
	__atomic_add_fetch(&s->recalls, 1, __ATOMIC_SEQ_CST);
}

/* Wait (bounded) for one signal the application sent itself. */
static bool got_(int sig, int code)
{
	struct timespec ts = { 1, 0 };
	siginfo_t si;
	sigset_t set;

	sigemptyset(&set);
	sigaddset(&set, sig);
	return sigtimedwait(&set, &si, &ts) == sig && si.si_code == code;
}

static bool got(int sig, int code)
{
	bool ok = got_(sig, code);

	if (!ok)
		printf("# missed signal %d code %d\n", sig, code);
	return ok;
}

/*
 * While seals break around it, the application blocks SIGIO and the
 * context's own signal and takes them itself: its kill(), an O_ASYNC pipe's
 * SIGIO, a sigqueue() of the library's number.  Every one reaches it, and
 * every break is still delivered.  Both ways the notifier finds a break:
 * with one handle it asks that seal first, with two it must read the
 * signal to know which.
 */
static void application_signals(bool second_handle)
{
	enum { ROUNDS = 10 };
	struct seen s = { 0 };
	struct imm_handle *h, *h2 = NULL;
	struct imm_ctx *ctx;
	struct fx_log log;
	int pfd[2], mine = 0, signo;
	char p[PATH_MAX], p2[PATH_MAX], c;
	sigset_t set, old;

	fx_need_root("a scratch ext4 on a loop device");
	make_file("signals", p);
	ctx = fx_ctx(&log);
	if (second_handle) {
		make_file("signals-2", p2);
		h2 = fx_seal(ctx, p2, IMM_SEAL_EXCLUSIVE, FILE_SIZE);
	}
	signo = imm_ctx_get_signal(ctx);
	sigemptyset(&set);
	sigaddset(&set, SIGIO);
	sigaddset(&set, signo);
	assert_int_equal(pthread_sigmask(SIG_BLOCK, &set, &old), 0);
	assert_int_equal(pipe2(pfd, O_CLOEXEC | O_NONBLOCK), 0);
	assert_int_equal(fcntl(pfd[0], F_SETOWN, getpid()), 0);
	assert_int_equal(fcntl(pfd[0], F_SETFL, O_ASYNC | O_NONBLOCK), 0);
	assert_int_equal(imm_ctx_set_event_fn(ctx, release_on_recall, &s, 0), 0);
	h = fx_seal(ctx, p, IMM_SEAL_EXCLUSIVE, FILE_SIZE);
	for (int i = 0; i < ROUNDS; i++) {
		pid_t pid = fx_breaker_start(p, i % 2 ? FX_OPEN_RDONLY :
						    FX_OPEN_RDWR);
		union sigval v = { .sival_int = i };
		uint64_t end = fx_now_ns() + 20 * SEC;

		/* sent while the break is under way, taken only after the
		 * library had every chance to take it (a signal wakes a thread
		 * that waits for it: here only the notifier could) */
		kill(getpid(), SIGIO);
		while (__atomic_load_n(&s.recalls, __ATOMIC_SEQ_CST) < i + 1) {
			assert_true(fx_now_ns() < end);
			assert_true(fx_dispatch_wait(ctx, 100) >= 0);
		}
		mine += got(SIGIO, SI_USER);
		assert_int_equal(write(pfd[1], "x", 1), 1);
		fx_breaker_wait(pid);
		mine += got(SIGIO, SI_KERNEL);	/* no F_SETSIG: plain SIGIO */
		assert_int_equal(read(pfd[0], &c, 1), 1);
		assert_int_equal(sigqueue(getpid(), signo, v), 0);
		assert_int_equal(imm_seal(h, 0, FILE_SIZE, IMM_SEAL_EXCLUSIVE,
					  NULL), 0);
		mine += got(signo, SI_QUEUE);
	}
	printf("# application received %d of %d of its own signals; "
	       "%d of %d breaks delivered\n", mine, 3 * ROUNDS, s.recalls, ROUNDS);
	assert_int_equal(mine, 3 * ROUNDS);
	assert_int_equal(s.recalls, ROUNDS);
	assert_int_equal(s.release_rc, 0);
	assert_int_equal(log.errors, 0);
	imm_handle_close(h);
	if (h2)
		imm_handle_close(h2);
	imm_ctx_unref(ctx);
	close(pfd[0]);
	close(pfd[1]);
	assert_int_equal(pthread_sigmask(SIG_SETMASK, &old, NULL), 0);
}

static void application_signals_stay_the_applications(void **state)
{
	(void)state;
	application_signals(false);
}

static void application_signals_stay_theirs_with_two_handles(void **state)
{
	(void)state;
	application_signals(true);
}

/* Break @h's seal from another process; true when the recall came. */
static bool recalled_once(struct imm_ctx *ctx, const char *p, struct seen *s)
{
	int want = __atomic_load_n(&s->recalls, __ATOMIC_SEQ_CST) + 1;
	pid_t pid = fx_breaker_start(p, FX_OPEN_RDWR);
	uint64_t end = fx_now_ns() + 10 * SEC;

	while (__atomic_load_n(&s->recalls, __ATOMIC_SEQ_CST) < want &&
	       fx_now_ns() < end)
		assert_true(fx_dispatch_wait(ctx, 100) >= 0);
	fx_breaker_wait(pid);
	return __atomic_load_n(&s->recalls, __ATOMIC_SEQ_CST) >= want;
}

/*
 * The application has its own instance of the context's signal pending
 * (queued before the break, taken only after the recall): the break is
 * still seen, within the notifier's back-off, and the application's
 * signal, value and all, stays the application's.  A notifier that reads
 * only what its status file shows pending on its thread alone never sees
 * this break: it waits for the application, which waits for the recall.
 */
static void break_seen_while_application_signal_pending(void **state)
{
	struct seen s = { 0 };
	struct imm_handle *h;
	struct imm_ctx *ctx;
	struct fx_log log;
	char p[PATH_MAX];
	struct timespec ts = { 1, 0 };
	sigset_t set, old;
	siginfo_t si;
	int signo;

	(void)state;
	fx_need_root("a scratch ext4 on a loop device");
	make_file("pending", p);
	ctx = fx_ctx(&log);
	signo = imm_ctx_get_signal(ctx);
	sigemptyset(&set);
	sigaddset(&set, signo);
	assert_int_equal(pthread_sigmask(SIG_BLOCK, &set, &old), 0);
	assert_int_equal(imm_ctx_set_event_fn(ctx, release_on_recall, &s, 0), 0);
	h = fx_seal(ctx, p, IMM_SEAL_EXCLUSIVE, FILE_SIZE);
	assert_int_equal(sigqueue(getpid(), signo, (union sigval){ .sival_int = 42 }), 0);
	assert_true(recalled_once(ctx, p, &s));
	assert_int_equal(sigtimedwait(&set, &si, &ts), signo);
	assert_int_equal(si.si_code, SI_QUEUE);
	assert_int_equal(si.si_value.sival_int, 42);
	assert_int_equal(s.release_rc, 0);
	assert_int_equal(log.errors, 0);
	imm_handle_close(h);
	imm_ctx_unref(ctx);
	assert_int_equal(pthread_sigmask(SIG_SETMASK, &old, NULL), 0);
}

/*
 * With RLIMIT_SIGPENDING at 0 the notifier cannot queue the marker that
 * bounds its reads; it falls back on its status file, and breaks are still
 * delivered while the application's own kill() stays the application's.
 */
static void breaks_seen_when_the_marker_is_refused(void **state)
{
	struct rlimit lim, zero = { 0, 0 };
	struct seen s = { 0 };
	struct imm_handle *h;
	struct imm_ctx *ctx;
	struct fx_log log;
	char p[PATH_MAX];
	sigset_t set, old;
	int signo;

	(void)state;
	fx_need_root("a scratch ext4 on a loop device");
	make_file("rlimit", p);
	ctx = fx_ctx(&log);
	signo = imm_ctx_get_signal(ctx);
	sigemptyset(&set);
	sigaddset(&set, signo);
	assert_int_equal(pthread_sigmask(SIG_BLOCK, &set, &old), 0);
	assert_int_equal(imm_ctx_set_event_fn(ctx, release_on_recall, &s, 0), 0);
	h = fx_seal(ctx, p, IMM_SEAL_EXCLUSIVE, FILE_SIZE);
	assert_int_equal(getrlimit(RLIMIT_SIGPENDING, &lim), 0);
	zero.rlim_max = lim.rlim_max;
	assert_int_equal(setrlimit(RLIMIT_SIGPENDING, &zero), 0);
	/* the limit is real: a sigqueue() of our own fails */
	assert_int_equal(sigqueue(getpid(), signo, (union sigval){ 0 }), -1);
	assert_int_equal(errno, EAGAIN);
	for (int i = 0; i < 5; i++) {
		assert_true(recalled_once(ctx, p, &s));
		assert_int_equal(imm_seal(h, 0, FILE_SIZE, IMM_SEAL_EXCLUSIVE, NULL), 0);
	}
	/* a kill() overrides the limit; the fallback leaves it alone too */
	assert_int_equal(kill(getpid(), signo), 0);
	assert_true(got(signo, SI_USER));
	assert_int_equal(setrlimit(RLIMIT_SIGPENDING, &lim), 0);
	assert_int_equal(s.release_rc, 0);
	assert_int_equal(log.errors, 0);
	imm_handle_close(h);
	imm_ctx_unref(ctx);
	assert_int_equal(pthread_sigmask(SIG_SETMASK, &old, NULL), 0);
}

struct late {
	struct imm_handle *slow;	/* its recall callback takes 3 s */
	int entered;
	int revoked;
};

static void slow_callback(struct imm_event *ev, void *data)
{
	struct late *l = data;
	struct timespec ts = { 3, 0 };	/* > lease-break-time: the scenario */

	if (imm_event_get_type(ev) == IMM_EVENT_REVOKED)
		__atomic_add_fetch(&l->revoked, 1, __ATOMIC_SEQ_CST);
	if (imm_event_get_type(ev) != IMM_EVENT_RECALL ||
	    imm_event_get_handle(ev) != l->slow)
		return;
	__atomic_store_n(&l->entered, 1, __ATOMIC_SEQ_CST);
	nanosleep(&ts, NULL);
}

/*
 * A notifier made late: an async callback sleeps longer than
 * lease-break-time for one handle's recall while another handle breaks.
 * Both seals are revoked by the library (the breakers return before the
 * kernel's 2 s deadline, not at it), never dropped by the kernel under us.
 */
static void late_notifier_still_revokes_in_time(void **state)
{
	struct late l = { 0 };
	struct imm_handle *a, *b;
	struct imm_ctx *ctx;
	struct fx_log log;
	char pa[PATH_MAX], pb[PATH_MAX];
	uint64_t blocked_a, blocked_b, end;
	pid_t ba, bb;

	(void)state;
	fx_need_root("writing /proc/sys/fs/lease-break-time");
	make_file("late-a", pa);
	make_file("late-b", pb);
	fx_sysctl_set("/proc/sys/fs/lease-break-time", 2);
	ctx = fx_ctx(&log);
	assert_int_equal(imm_ctx_set_revoke_margin(ctx, 500), 0);
	a = fx_seal(ctx, pa, IMM_SEAL_EXCLUSIVE, FILE_SIZE);
	b = fx_seal(ctx, pb, IMM_SEAL_EXCLUSIVE, FILE_SIZE);
	l.slow = a;
	assert_int_equal(imm_ctx_set_event_fn(ctx, slow_callback, &l,
					      IMM_EVENT_FN_ASYNC), 0);
	ba = fx_breaker_start(pa, FX_OPEN_RDWR);
	end = fx_now_ns() + 10 * SEC;
	while (!__atomic_load_n(&l.entered, __ATOMIC_SEQ_CST)) {
		assert_true(fx_now_ns() < end);
		usleep(1000);
	}
	bb = fx_breaker_start(pb, FX_TRUNCATE);
	blocked_a = fx_breaker_wait(ba);
	blocked_b = fx_breaker_wait(bb);
	printf("# breakers blocked %.3f s (slow handle), %.3f s (other); "
	       "the kernel's deadline is 2 s\n", blocked_a / 1e9, blocked_b / 1e9);
	/* revoked by the library at 1.5 s, not dropped by the kernel at 2 s */
	assert_true(blocked_a < 1800000000ull);
	assert_true(blocked_b < 1800000000ull);
	assert_int_equal(imm_handle_get_state(a), IMM_STATE_REVOKED);
	assert_int_equal(imm_handle_get_state(b), IMM_STATE_REVOKED);
	assert_int_equal(fx_size(pb), 0);
	imm_handle_close(a);
	imm_handle_close(b);
	imm_ctx_unref(ctx);
}

/* what a child exits with when the kernel has no CONFIG_PID_NS */
#define NO_PIDNS 107

/* Fork, then fork into a new PID namespace: return what f exits with. */
static int in_new_pidns(int (*f)(struct imm_ctx *), struct imm_ctx *ctx)
{
	int st;
	pid_t pid;

	if (unshare(CLONE_NEWPID) < 0)
		return errno == EINVAL ? NO_PIDNS : 100;
	pid = fork();
	if (pid < 0)
		return 101;
	if (pid == 0)
		_exit(f(ctx));
	if (waitpid(pid, &st, 0) != pid || !WIFEXITED(st))
		return 102;
	return WEXITSTATUS(st);
}

/* pid 1 again, in a grandchild of the context's creator */
static int grandchild(struct imm_ctx *ctx)
{
	if (getpid() != 1)
		return 103;
	return imm_ctx_get_fd(ctx) == -ECHILD ? 0 : 1;
}

static int creator_child(struct imm_ctx *ctx)
{
	pid_t pid;
	int st;

	(void)ctx;
	if (getpid() != 1 || imm_ctx_new(&ctx) < 0)
		return 104;
	if (imm_ctx_get_fd(ctx) < 0)
		return 105;	/* not forked yet */
	pid = fork();	/* pid 2, which makes pid 1 again below */
	if (pid == 0)
		_exit(in_new_pidns(grandchild, ctx));
	if (pid < 0 || waitpid(pid, &st, 0) != pid || !WIFEXITED(st))
		return 106;
	return WEXITSTATUS(st);
}

/* A child with the creator's very pid is still a child. */
static void fork_detected_despite_same_pid(void **state)
{
	int st;
	pid_t pid;

	(void)state;
	fx_need_root("PID namespaces (CLONE_NEWPID)");
	pid = fork();
	if (pid == 0)
		_exit(in_new_pidns(creator_child, NULL));
	assert_int_equal(waitpid(pid, &st, 0), pid);
	assert_true(WIFEXITED(st));
	if (WEXITSTATUS(st) == NO_PIDNS) {
		/* the tinyconfig guest kernel; the host and stock guests run it */
		fprintf(stderr, "SKIP: this kernel has no PID namespaces "
			"(CONFIG_PID_NS=n): a child cannot get its parent's pid\n");
		skip();
	}
	if (WEXITSTATUS(st) == 1)
		fail_msg("a grandchild with pid 1, like the context's creator, "
			 "was not detected as forked");
	assert_int_equal(WEXITSTATUS(st), 0);
}

/* A recall of h's seal by an open that fails at once (O_NONBLOCK), taken
 * with imm_ctx_next_event() when poll() says so; then the queue is empty. */
static void recall_through_a_poll_loop(struct imm_ctx *ctx, struct imm_handle *h,
				       const char *path)
{
	struct pollfd p = { .fd = imm_ctx_get_fd(ctx), .events = POLLIN };
	struct imm_event *ev;

	assert_int_equal(imm_seal(h, 0, FILE_SIZE, IMM_SEAL_EXCLUSIVE, NULL), 0);
	assert_int_equal(poll(&p, 1, 0), 0);
	assert_int_equal(open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC), -1);
	assert_int_equal(errno, EWOULDBLOCK);
	assert_int_equal(poll(&p, 1, 10000), 1);
	assert_int_equal(imm_ctx_next_event(ctx, &ev), 0);
	assert_int_equal(imm_event_get_type(ev), IMM_EVENT_RECALL);
	assert_int_equal(imm_release(h), 0);
	imm_event_unref(ev);
	assert_int_equal(imm_ctx_next_event(ctx, &ev), -EAGAIN);
}

/*
 * An application may poll the descriptor and take events with
 * imm_ctx_next_event() alone.  Once it has -EAGAIN the descriptor is not
 * readable, so its poll() sleeps: nothing reset it, and such a loop spun.
 */
static void next_event_loop_sleeps_when_empty(void **state)
{
	struct pollfd p;
	struct imm_handle *h;
	struct imm_ctx *ctx;
	struct fx_log log;
	char path[PATH_MAX];

	(void)state;
	fx_need_root("a scratch ext4 on a loop device");
	make_file("poll-loop", path);
	ctx = fx_ctx(&log);
	p = (struct pollfd){ .fd = imm_ctx_get_fd(ctx), .events = POLLIN };
	assert_int_equal(imm_handle_open(ctx, path, IMM_RDWR, &h), 0);
	for (int i = 0; i < 3; i++) {	/* and the next recall still wakes it */
		recall_through_a_poll_loop(ctx, h, path);
		assert_int_equal(poll(&p, 1, 0), 0);
	}
	assert_int_equal(log.errors, 0);
	imm_handle_close(h);
	imm_ctx_unref(ctx);
}

struct reseal {
	struct seen seen;
	int reseal_rc;
	int done;		/* rounds whose callback has returned */
};

/* Release, and seal again as soon as the breaker has closed the file. */
static void release_and_reseal(struct imm_event *ev, void *data)
{
	struct reseal *rs = data;
	struct imm_handle *h = imm_event_get_handle(ev);
	uint64_t end = fx_now_ns() + 10 * SEC;
	int r;

	if (imm_event_get_type(ev) != IMM_EVENT_RECALL)
		return;
	__atomic_add_fetch(&rs->seen.recalls, 1, __ATOMIC_SEQ_CST);
	rs->seen.release_rc |= imm_release(h);
	do {
		r = imm_seal(h, 0, FILE_SIZE, IMM_SEAL_EXCLUSIVE, NULL);
		if (r == -EAGAIN)
			fx_pause_ms(1);
	} while (r == -EAGAIN && fx_now_ns() < end);
	rs->reseal_rc |= r;
	__atomic_add_fetch(&rs->done, 1, __ATOMIC_SEQ_CST);
}

/*
 * One handle: the notifier asks its seal before it reads the signal, so
 * an async callback that releases and seals again runs before the signal
 * of the break it answers is read.  That signal must not recall the new
 * seal: one recall per break, and the last seal is left alone.
 */
static void sole_handle_signal_read_after_reseal_is_stale(void **state)
{
	enum { ROUNDS = 30 };
	struct reseal rs = { .seen = { 0 } };
	struct imm_handle *h;
	struct imm_ctx *ctx;
	struct fx_log log;
	char p[PATH_MAX];

	(void)state;
	fx_need_root("a scratch ext4 on a loop device");
	make_file("reseal", p);
	ctx = fx_ctx(&log);
	assert_int_equal(imm_ctx_set_event_fn(ctx, release_and_reseal, &rs,
					      IMM_EVENT_FN_ASYNC), 0);
	h = fx_seal(ctx, p, IMM_SEAL_EXCLUSIVE, FILE_SIZE);
	for (int i = 0; i < ROUNDS; i++) {
		pid_t pid = fx_breaker_start(p, FX_OPEN_RDONLY);

		assert_until(__atomic_load_n(&rs.done, __ATOMIC_SEQ_CST) == i + 1,
			     20000);
		fx_breaker_wait(pid);
	}
	/* a late false recall would come within the notifier's next look */
	fx_pause_ms(200);
	printf("# %d breaks, %d recalls\n", ROUNDS, rs.seen.recalls);
	assert_int_equal(rs.seen.recalls, ROUNDS);
	assert_int_equal(rs.seen.release_rc, 0);
	assert_int_equal(rs.reseal_rc, 0);
	assert_int_equal(imm_handle_get_state(h), IMM_STATE_SEALED);
	assert_true(fx_leased(p));
	assert_int_equal(log.errors, 0);
	imm_handle_close(h);
	imm_ctx_unref(ctx);
}

struct second {
	struct seen seen;
	const char *path_b;
	struct imm_handle *b;
	pid_t breaker;
};

/* On the first recall, break the other seal and return only once its
 * recall is queued: the notifier queues it right after it marks the seal
 * BREAKING (the descriptor cannot tell: it is still readable from the
 * first recall, as dispatch resets it after the callbacks). */
static void recall_breaks_the_other(struct imm_event *ev, void *data)
{
	struct second *sc = data;

	release_on_recall(ev, &sc->seen);
	if (sc->breaker)
		return;
	sc->breaker = fx_breaker_start(sc->path_b, FX_OPEN_RDONLY);
	assert_until(imm_handle_get_state(sc->b) == IMM_STATE_BREAKING, 10000);
	fx_pause_ms(200);
}

/*
 * imm_ctx_dispatch() resets the descriptor after its callbacks, then takes
 * the queue once more: a recall queued while a callback ran is handled in
 * the same call, and nothing is left behind an unreadable descriptor.
 */
static void dispatch_handles_what_its_callbacks_let_in(void **state)
{
	struct second sc = { .seen = { 0 } };
	struct pollfd p;
	struct imm_handle *a, *b;
	struct imm_ctx *ctx;
	struct fx_log log;
	char pa[PATH_MAX], pb[PATH_MAX];
	pid_t pid;
	int n;

	(void)state;
	fx_need_root("a scratch ext4 on a loop device");
	make_file("second-a", pa);
	make_file("second-b", pb);
	sc.path_b = pb;
	ctx = fx_ctx(&log);
	p = (struct pollfd){ .fd = imm_ctx_get_fd(ctx), .events = POLLIN };
	assert_int_equal(imm_ctx_set_event_fn(ctx, recall_breaks_the_other, &sc,
					      0), 0);
	a = fx_seal(ctx, pa, IMM_SEAL_EXCLUSIVE, FILE_SIZE);
	b = fx_seal(ctx, pb, IMM_SEAL_EXCLUSIVE, FILE_SIZE);
	sc.b = b;
	pid = fx_breaker_start(pa, FX_OPEN_RDONLY);
	assert_int_equal(poll(&p, 1, 10000), 1);
	n = imm_ctx_dispatch(ctx);
	assert_int_equal(n, 2);
	assert_int_equal(sc.seen.recalls, 2);
	assert_int_equal(imm_handle_get_state(a), IMM_STATE_OPEN);
	assert_int_equal(imm_handle_get_state(b), IMM_STATE_OPEN);
	fx_breaker_wait(pid);
	fx_breaker_wait(sc.breaker);
	assert_int_equal(imm_ctx_dispatch(ctx), 0);
	assert_int_equal(poll(&p, 1, 0), 0);
	assert_int_equal(sc.seen.release_rc, 0);
	assert_int_equal(log.errors, 0);
	imm_handle_close(a);
	imm_handle_close(b);
	imm_ctx_unref(ctx);
}

static void keep_event(struct imm_event *ev, void *data)
{
	struct imm_event **kept = data;

	if (imm_event_get_type(ev) == IMM_EVENT_RECALL && !*kept)
		*kept = imm_event_ref(ev);
}

/*
 * A callback may keep its event past its return with imm_event_ref(): it
 * stays readable (under ASan, a use after free otherwise) and holds its
 * handle until the matching imm_event_unref().
 */
static void callback_keeps_its_event_with_ref(void **state)
{
	struct imm_event *kept = NULL;
	struct imm_handle *h;
	struct imm_ctx *ctx;
	struct fx_log log;
	char p[PATH_MAX];
	pid_t pid;

	(void)state;
	fx_need_root("a scratch ext4 on a loop device");
	make_file("keep", p);
	ctx = fx_ctx(&log);
	assert_null(imm_event_ref(NULL));
	assert_int_equal(imm_ctx_set_event_fn(ctx, keep_event, &kept, 0), 0);
	h = fx_seal(ctx, p, IMM_SEAL_EXCLUSIVE, FILE_SIZE);
	pid = fx_breaker_start(p, FX_OPEN_RDONLY);
	assert_until(kept || fx_dispatch_wait(ctx, 100) < 0, 20000);
	assert_non_null(kept);
	/* the dispatch that ran the callback has returned: ours is the
	 * reference left, and the handle is still the event's */
	assert_int_equal(imm_event_get_type(kept), IMM_EVENT_RECALL);
	assert_ptr_equal(imm_event_get_handle(kept), h);
	assert_int_equal(imm_event_get_generation(kept), imm_handle_get_generation(h));
	assert_int_equal(imm_release(h), 0);
	fx_breaker_wait(pid);
	assert_null(imm_event_unref(kept));
	assert_int_equal(log.errors, 0);
	imm_handle_close(h);
	imm_ctx_unref(ctx);
}

struct last_ref {
	struct imm_ctx *ctx;
	int recalls;
};

/* Close the handle and drop the application's only context reference:
 * the event being dispatched holds the last one. */
static void close_and_drop_ctx(struct imm_event *ev, void *data)
{
	struct last_ref *lr = data;

	if (imm_event_get_type(ev) != IMM_EVENT_RECALL || !lr->ctx)
		return;
	lr->recalls++;
	imm_handle_close(imm_event_get_handle(ev));
	imm_ctx_unref(lr->ctx);
	lr->ctx = NULL;
}

/*
 * A dispatch callback that closes the last handle and drops the last
 * reference the application had: the context lives until dispatch
 * returns, and goes then (the fuzzer found dispatch reading the freed
 * context when it reset the descriptor after its callbacks; ASan, in
 * scripts/test-all's third step, fails this test on that code).
 */
static void dispatch_survives_a_callback_dropping_the_last_ref(void **state)
{
	struct last_ref lr = { 0 };
	struct pollfd p;
	struct imm_ctx *ctx;
	char path[PATH_MAX];
	unsigned fds;
	pid_t pid;
	int n;

	(void)state;
	fx_need_root("a scratch ext4 on a loop device");
	make_file("last-ref", path);
	fds = fx_count_fds();
	ctx = fx_ctx(NULL);
	lr.ctx = ctx;
	assert_int_equal(imm_ctx_set_event_fn(ctx, close_and_drop_ctx, &lr, 0), 0);
	(void)fx_seal(ctx, path, IMM_SEAL_EXCLUSIVE, FILE_SIZE);
	p = (struct pollfd){ .fd = imm_ctx_get_fd(ctx), .events = POLLIN };
	pid = fx_breaker_start(path, FX_OPEN_RDONLY);
	assert_int_equal(poll(&p, 1, 10000), 1);
	/* the notifier holds the handle while it verifies the map after the
	 * recall: let it finish, so that the event's reference is the last
	 * (on a slow machine it may not be yet, and the test proves less) */
	fx_pause_ms(300);
	n = imm_ctx_dispatch(ctx);	/* the last reference goes in here */
	assert_int_equal(n, 1);
	assert_int_equal(lr.recalls, 1);
	fx_breaker_wait(pid);
	/* its fds went with it (the notifier's exit is joined by the free) */
	assert_until(fx_count_fds() == fds, 5000);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(application_signals_stay_the_applications),
		cmocka_unit_test(application_signals_stay_theirs_with_two_handles),
		cmocka_unit_test(break_seen_while_application_signal_pending),
		cmocka_unit_test(breaks_seen_when_the_marker_is_refused),
		cmocka_unit_test(late_notifier_still_revokes_in_time),
		cmocka_unit_test(fork_detected_despite_same_pid),
		cmocka_unit_test(next_event_loop_sleeps_when_empty),
		cmocka_unit_test(sole_handle_signal_read_after_reseal_is_stale),
		cmocka_unit_test(dispatch_handles_what_its_callbacks_let_in),
		cmocka_unit_test(callback_keeps_its_event_with_ref),
		cmocka_unit_test(dispatch_survives_a_callback_dropping_the_last_ref),
	};

	return cmocka_run_group_tests(tests, fx_group_ext4_setup,
				      fx_group_ext4_teardown);
}
