// SPDX-License-Identifier: LGPL-2.1-or-later
/*
 * Cross-process breaks on a real ext4: another process opens, truncates or
 * opens with O_TRUNC; the holder hears of it, releases, and the other side
 * proceeds.  Holders that die or never answer; a host with default signal
 * dispositions; a lost-signal rescan.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <syslog.h>
#include <unistd.h>

#include "fixture.h"

#define SEC 1000000000ull
#define FILE_SIZE (1u << 20)

static void make_file(const char *name, char *path)
{
	fx_path(&fx_ext4, name, path);
	unlink(path);
	fx_write_pattern(path, 0, FILE_SIZE, 31);
}

/* What a callback saw, for the test to check afterwards. */
struct seen {
	int n;
	int types[8];
	uint64_t time[8];
	uint64_t deadline[8];
	uint64_t revoke[8];
	struct imm_handle *handle[8];
	pid_t tid[8];
	bool release;	/* release on RECALL */
	int release_rc;
};

static void record(struct imm_event *ev, void *data)
{
	struct seen *s = data;
	int i = s->n < 8 ? s->n : 7;

	s->types[i] = imm_event_get_type(ev);
	s->time[i] = imm_event_get_time_ns(ev);
	s->deadline[i] = imm_event_get_deadline_ns(ev);
	s->revoke[i] = imm_event_get_revoke_ns(ev);
	s->handle[i] = imm_event_get_handle(ev);
	s->tid[i] = gettid();
	if (s->release && s->types[i] == IMM_EVENT_RECALL)
		s->release_rc = imm_release(s->handle[i]);
	__atomic_add_fetch(&s->n, 1, __ATOMIC_SEQ_CST);
}

/* Dispatch until the callback has seen n events (or 20 s pass). */
static void dispatch_until(struct imm_ctx *ctx, struct seen *s, int n)
{
	uint64_t end = fx_now_ns() + 20 * SEC;

	while (__atomic_load_n(&s->n, __ATOMIC_SEQ_CST) < n) {
		assert_true(fx_now_ns() < end);
		assert_true(fx_dispatch_wait(ctx, 100) >= 0);
	}
}

static void break_and_release(enum fx_break_op op, uint32_t mode)
{
	struct seen s = { .release = true };
	struct imm_handle *h;
	struct imm_ctx *ctx;
	struct fx_log log;
	char p[PATH_MAX];
	uint64_t blocked;
	int lbt;
	pid_t pid;

	make_file("victim", p);
	ctx = fx_ctx(&log);
	lbt = imm_ctx_get_lease_break_time(ctx);
	assert_int_equal(imm_ctx_set_event_fn(ctx, record, &s, 0), 0);
	h = fx_seal(ctx, p, mode, FILE_SIZE);
	pid = fx_breaker_start(p, op);
	dispatch_until(ctx, &s, 1);
	blocked = fx_breaker_wait(pid);

	assert_int_equal(s.types[0], IMM_EVENT_RECALL);
	assert_ptr_equal(s.handle[0], h);
	assert_int_equal(s.release_rc, 0);
	assert_int_equal(s.tid[0], gettid());	/* dispatch runs in our thread */
	assert_int_equal(s.deadline[0] - s.time[0], (uint64_t)lbt * SEC);
	assert_true(s.revoke[0] < s.deadline[0]);
	assert_true(s.revoke[0] > s.time[0]);
	/* released at once, so the breaker waited nowhere near the deadline */
	assert_true(blocked < (uint64_t)lbt * SEC / 4);
	assert_int_equal(imm_handle_get_state(h), IMM_STATE_OPEN);
	assert_false(fx_leased(p));
	if (op == FX_OPEN_TRUNC || op == FX_TRUNCATE)
		assert_int_equal(fx_size(p), 0);	/* it went through */
	assert_int_equal(log.errors, 0);
	imm_handle_close(h);
	imm_ctx_unref(ctx);
}

static void open_for_write_breaks_exclusive(void **state)
{
	(void)state;
	fx_need_root("a scratch ext4 on a loop device");
	break_and_release(FX_OPEN_RDWR, IMM_SEAL_EXCLUSIVE);
}

static void open_for_read_breaks_exclusive(void **state)
{
	(void)state;
	fx_need_root("a scratch ext4 on a loop device");
	break_and_release(FX_OPEN_RDONLY, IMM_SEAL_EXCLUSIVE);
}

static void truncate_breaks_exclusive(void **state)
{
	(void)state;
	fx_need_root("a scratch ext4 on a loop device");
	break_and_release(FX_TRUNCATE, IMM_SEAL_EXCLUSIVE);
}

static void open_trunc_breaks_exclusive(void **state)
{
	(void)state;
	fx_need_root("a scratch ext4 on a loop device");
	break_and_release(FX_OPEN_TRUNC, IMM_SEAL_EXCLUSIVE);
}

static void writers_and_truncate_break_shared(void **state)
{
	(void)state;
	fx_need_root("a scratch ext4 on a loop device");
	break_and_release(FX_OPEN_RDWR, IMM_SEAL_SHARED);
	break_and_release(FX_TRUNCATE, IMM_SEAL_SHARED);
}

/* Readers do not break a shared seal. */
static void readers_do_not_break_shared(void **state)
{
	struct seen s = { 0 };
	struct imm_handle *h;
	struct imm_ctx *ctx;
	char p[PATH_MAX];

	(void)state;
	fx_need_root("a scratch ext4 on a loop device");
	make_file("readers", p);
	ctx = fx_ctx(NULL);
	imm_ctx_set_event_fn(ctx, record, &s, 0);
	h = fx_seal(ctx, p, IMM_SEAL_SHARED, FILE_SIZE);
	for (int i = 0; i < 3; i++) {
		char st[32];

		/* a break would block the unanswered reader for lease-break-time */
		assert_true(fx_breaker_wait(fx_breaker_start(p, FX_OPEN_RDONLY)) <
			    (uint64_t)imm_ctx_get_lease_break_time(ctx) * SEC / 2);
		/* and would have left the lease BREAKING before open returned */
		assert_string_equal(fx_lease_state(p, st, sizeof(st)), "ACTIVE");
	}
	assert_int_equal(fx_dispatch_wait(ctx, 200), 0);
	assert_int_equal(s.n, 0);
	assert_int_equal(imm_handle_get_state(h), IMM_STATE_SEALED);
	assert_true(fx_leased(p));
	imm_handle_close(h);
	imm_ctx_unref(ctx);
}

/* IMM_EVENT_FN_ASYNC: the callback runs on the notifier thread at once. */
static void async_callback_releases_on_notifier(void **state)
{
	struct seen s = { .release = true };
	struct imm_handle *h;
	struct imm_ctx *ctx;
	char p[PATH_MAX];
	uint64_t blocked;

	(void)state;
	fx_need_root("a scratch ext4 on a loop device");
	make_file("async", p);
	ctx = fx_ctx(NULL);
	assert_int_equal(imm_ctx_set_event_fn(ctx, record, &s,
					      IMM_EVENT_FN_ASYNC), 0);
	h = fx_seal(ctx, p, IMM_SEAL_EXCLUSIVE, FILE_SIZE);
	/* nobody dispatches: the breaker proceeds anyway */
	blocked = fx_breaker_wait(fx_breaker_start(p, FX_OPEN_RDWR));
	/* the breaker may return between imm_release() and s.n++ */
	assert_until(__atomic_load_n(&s.n, __ATOMIC_SEQ_CST) == 1, 10000);
	assert_int_equal(s.types[0], IMM_EVENT_RECALL);
	assert_int_not_equal(s.tid[0], gettid());
	assert_int_equal(s.release_rc, 0);
	assert_true(blocked < 5 * SEC);
	assert_int_equal(imm_ctx_dispatch(ctx), 0);	/* nothing queued */
	imm_handle_close(h);
	imm_ctx_unref(ctx);
}

/* The holder is SIGKILLed mid-break: the blocked breaker goes on at once. */
static void holder_killed_breaker_proceeds(void **state)
{
	char p[PATH_MAX], x;
	uint64_t t_kill, t_end;
	int ready[2], st;
	pid_t holder, breaker;

	(void)state;
	fx_need_root("a scratch ext4 on a loop device");
	make_file("killed", p);
	assert_int_equal(pipe2(ready, O_CLOEXEC), 0);
	holder = fx_fork_alone();
	if (holder == 0) {
		struct imm_handle *h;
		struct imm_ctx *ctx;

		if (imm_ctx_new(&ctx) || imm_handle_open(ctx, p, IMM_RDWR, &h) ||
		    imm_seal(h, 0, FILE_SIZE, IMM_SEAL_EXCLUSIVE, NULL))
			_exit(1);
		if (write(ready[1], "r", 1) != 1)
			_exit(1);
		/* never dispatches, never releases; killed below, gone
		 * within a minute should the test fail first */
		for (int i = 0; i < 60; i++)
			sleep(1);
		_exit(0);
	}
	close(ready[1]);
	assert_int_equal(read(ready[0], &x, 1), 1);
	close(ready[0]);
	breaker = fx_breaker_start(p, FX_OPEN_RDWR);
	/* the breaker is blocked on the lease when /proc/locks says so */
	assert_until(fx_lease_waiters(p) == 1, 10000);
	assert_int_equal(waitpid(breaker, &st, WNOHANG), 0);	/* still blocked */
	t_kill = fx_now_ns();
	kill(holder, SIGKILL);
	assert_int_equal(fx_waitpid_timeout(holder, &st, 10000), holder);
	fx_breaker_wait_end(breaker, &t_end);
	/* it waited for the kill, and not much longer (lbt is 45 s) */
	assert_true(t_end >= t_kill);
	assert_true(t_end - t_kill < 5 * SEC);
	assert_false(fx_leased(p));
	assert_int_equal(fx_lease_waiters(p), 0);
}

/*
 * A holder that never releases: the library revokes before the kernel's
 * deadline (lease-break-time lowered to 2 s for the test, then restored).
 */
static void unresponsive_holder_is_revoked_before_deadline(void **state)
{
	struct seen s = { .release = false };
	struct imm_handle *h;
	struct imm_ctx *ctx;
	struct fx_log log;
	char p[PATH_MAX];
	uint64_t blocked;
	pid_t pid;

	(void)state;
	fx_need_root("writing /proc/sys/fs/lease-break-time");
	make_file("revoked", p);
	fx_sysctl_set("/proc/sys/fs/lease-break-time", 2);
	ctx = fx_ctx(&log);
	assert_int_equal(imm_ctx_set_revoke_margin(ctx, 500), 0);
	imm_ctx_set_event_fn(ctx, record, &s, 0);
	h = fx_seal(ctx, p, IMM_SEAL_EXCLUSIVE, FILE_SIZE);
	pid = fx_breaker_start(p, FX_OPEN_RDWR);
	dispatch_until(ctx, &s, 2);
	blocked = fx_breaker_wait(pid);

	assert_int_equal(s.types[0], IMM_EVENT_RECALL);
	assert_int_equal(s.types[1], IMM_EVENT_REVOKED);
	assert_int_equal(s.deadline[0] - s.time[0], 2 * SEC);
	assert_int_equal(s.revoke[0], s.deadline[0] - 500000000ull);
	/* revoked before the kernel's deadline, not after it */
	assert_true(s.time[1] >= s.revoke[0]);
	assert_true(s.time[1] < s.deadline[0]);
	assert_true(blocked < 2 * SEC);
	assert_int_equal(imm_handle_get_state(h), IMM_STATE_REVOKED);
	assert_false(fx_leased(p));
	/* the application acknowledges, and can seal again */
	assert_int_equal(imm_release(h), 0);
	assert_int_equal(imm_handle_get_state(h), IMM_STATE_OPEN);
	assert_int_equal(imm_seal(h, 0, FILE_SIZE, IMM_SEAL_EXCLUSIVE, NULL), 0);
	imm_handle_close(h);
	imm_ctx_unref(ctx);
}

/* A break after which the application released and re-sealed before
 * dispatching: the old recall must not reach the new seal. */
static void stale_events_are_dropped(void **state)
{
	struct seen s = { .release = true };
	struct imm_handle *h;
	struct imm_ctx *ctx;
	char p[PATH_MAX];
	pid_t pid;

	(void)state;
	fx_need_root("a scratch ext4 on a loop device");
	make_file("stale", p);
	ctx = fx_ctx(NULL);
	imm_ctx_set_event_fn(ctx, record, &s, 0);
	h = fx_seal(ctx, p, IMM_SEAL_EXCLUSIVE, FILE_SIZE);
	pid = fx_breaker_start(p, FX_OPEN_RDONLY);
	assert_until(imm_handle_get_state(h) == IMM_STATE_BREAKING, 10000);
	assert_int_equal(imm_release(h), 0);
	fx_breaker_wait(pid);
	assert_int_equal(imm_seal(h, 0, FILE_SIZE, IMM_SEAL_EXCLUSIVE, NULL), 0);
	assert_int_equal(imm_ctx_dispatch(ctx), 0);
	assert_int_equal(s.n, 0);
	assert_int_equal(imm_handle_get_state(h), IMM_STATE_SEALED);
	/* and events of a closed handle vanish with it */
	pid = fx_breaker_start(p, FX_OPEN_RDONLY);
	assert_until(imm_handle_get_state(h) == IMM_STATE_BREAKING, 10000);
	assert_int_equal(imm_handle_close(h), 0);
	fx_breaker_wait(pid);
	assert_int_equal(imm_ctx_dispatch(ctx), 0);
	imm_ctx_unref(ctx);
}

/* Many sealed handles: the break reaches the right one. */
static void break_finds_its_handle_among_many(void **state)
{
	enum { N = 200, VICTIM = 137 };
	struct imm_handle *h[N];
	struct seen s = { .release = true };
	struct imm_ctx *ctx;
	char p[N][PATH_MAX];

	(void)state;
	fx_need_root("a scratch ext4 on a loop device");
	ctx = fx_ctx(NULL);
	imm_ctx_set_event_fn(ctx, record, &s, 0);
	for (int i = 0; i < N; i++) {
		char name[32];

		snprintf(name, sizeof(name), "many-%d", i);
		fx_path(&fx_ext4, name, p[i]);
		fx_write_pattern(p[i], 0, 4096, (unsigned)i);
		assert_int_equal(imm_handle_open(ctx, p[i], IMM_RDWR, &h[i]), 0);
		assert_int_equal(imm_seal(h[i], 0, 4096, IMM_SEAL_EXCLUSIVE, NULL), 0);
	}
	pid_t pid = fx_breaker_start(p[VICTIM], FX_OPEN_RDONLY);

	dispatch_until(ctx, &s, 1);
	fx_breaker_wait(pid);
	assert_int_equal(s.n, 1);
	assert_ptr_equal(s.handle[0], h[VICTIM]);
	for (int i = 0; i < N; i++) {
		assert_int_equal(imm_handle_get_state(h[i]),
				 i == VICTIM ? IMM_STATE_OPEN : IMM_STATE_SEALED);
		imm_handle_close(h[i]);
		unlink(p[i]);
	}
	imm_ctx_unref(ctx);
}

/*
 * With RLIMIT_SIGPENDING at 0 the kernel cannot queue the RT signal and
 * falls back to a plain SIGIO aimed at the notifier, naming no fd: the
 * library must rescan and still report the break.
 */
static void lost_rt_signal_falls_back_to_rescan(void **state)
{
	char p[PATH_MAX], x;
	int ready[2];
	pid_t holder;

	(void)state;
	fx_need_root("a scratch ext4 on a loop device");
	make_file("overflow", p);
	assert_int_equal(pipe2(ready, O_CLOEXEC), 0);
	holder = fx_fork_alone();
	if (holder == 0) {
		struct rlimit rl = { 0, 0 };
		struct seen s = { .release = true };
		struct imm_handle *h;
		struct imm_ctx *ctx;

		if (setrlimit(RLIMIT_SIGPENDING, &rl))
			_exit(10);
		if (imm_ctx_new(&ctx) || imm_handle_open(ctx, p, IMM_RDWR, &h) ||
		    imm_seal(h, 0, FILE_SIZE, IMM_SEAL_EXCLUSIVE, NULL))
			_exit(11);
		imm_ctx_set_event_fn(ctx, record, &s, 0);
		if (write(ready[1], "r", 1) != 1)
			_exit(12);
		for (int i = 0; i < 200 && !s.n; i++)
			fx_dispatch_wait(ctx, 50);
		_exit(s.n == 1 && s.types[0] == IMM_EVENT_RECALL &&
		      s.release_rc == 0 ? 0 : 13);
	}
	close(ready[1]);
	assert_int_equal(read(ready[0], &x, 1), 1);
	close(ready[0]);
	assert_true(fx_breaker_wait(fx_breaker_start(p, FX_OPEN_RDWR)) < 10 * SEC);
	fx_assert_child_ok(holder, 20000);
}

/* A separate process with default dispositions survives many breaks. */
static void default_dispositions_survive(void **state)
{
	enum { ROUNDS = 20 };
	int to[2], from[2];
	char p[PATH_MAX], line[32];
	pid_t pid;

	(void)state;
	fx_need_root("a scratch ext4 on a loop device");
	make_file("dispositions", p);
	assert_int_equal(pipe2(to, O_CLOEXEC), 0);
	assert_int_equal(pipe2(from, O_CLOEXEC), 0);
	pid = fork();
	if (pid == 0) {
		dup2(to[0], 0);
		dup2(from[1], 1);
		execl(DEFAULT_DISPOSITIONS_BIN, "default-dispositions", p, "20",
		      (char *)NULL);
		_exit(127);
	}
	close(to[0]);
	close(from[1]);
	for (int i = 0; i < ROUNDS; i++) {
		assert_true(fx_read_line(from[0], line, sizeof(line), 10000));
		assert_string_equal(line, "sealed\n");
		fx_breaker_wait(fx_breaker_start(p, i % 3 == 2 ? FX_TRUNCATE :
						 FX_OPEN_RDONLY));
		assert_true(fx_read_line(from[0], line, sizeof(line), 10000));
		assert_string_equal(line, "released\n");
		assert_int_equal(write(to[1], "g", 1), 1);
	}
	fx_assert_child_ok(pid, 10000);	/* names a killing signal */
	close(from[0]);
	close(to[1]);
}

/*
 * After a recall, a seal taken again while the breaker still has the file
 * open (it is finishing its open or truncate) is refused by the kernel:
 * -EAGAIN, said at info level as "not done yet", not as an error; once the
 * breaker has closed the file the same call succeeds.
 */
static void reseal_refused_until_the_breaker_is_done(void **state)
{
	struct seen s = { .release = true };
	struct imm_handle *h;
	struct imm_ctx *ctx;
	struct fx_log log;
	char p[PATH_MAX], x;
	int opened[2], go[2], fd;
	pid_t pid;

	(void)state;
	fx_need_root("a scratch ext4 on a loop device");
	make_file("reseal", p);
	ctx = fx_ctx(&log);
	imm_ctx_set_log_priority(ctx, LOG_INFO);
	assert_int_equal(imm_ctx_set_event_fn(ctx, record, &s, 0), 0);
	h = fx_seal(ctx, p, IMM_SEAL_EXCLUSIVE, FILE_SIZE);
	assert_int_equal(pipe2(opened, O_CLOEXEC), 0);
	assert_int_equal(pipe2(go, O_CLOEXEC), 0);
	pid = fork();
	if (pid == 0) {
		alarm(30);	/* gone should the parent fail first */
		fd = open(p, O_RDWR | O_CLOEXEC);	/* blocks: the recall */
		if (fd < 0 || write(opened[1], "o", 1) != 1 ||
		    read(go[0], &x, 1) != 1)
			_exit(1);
		_exit(close(fd) ? 2 : 0);
	}
	close(opened[1]);
	close(go[0]);
	dispatch_until(ctx, &s, 1);
	assert_int_equal(s.release_rc, 0);
	assert_int_equal(read(opened[0], &x, 1), 1);
	/* the breaker's open exists: not yet */
	assert_int_equal(imm_seal(h, 0, FILE_SIZE, IMM_SEAL_EXCLUSIVE, NULL),
			 -EAGAIN);
	assert_int_equal(log.any_priority, LOG_INFO);
	assert_non_null(strstr(log.any, "recalled this handle's seal"));
	assert_int_equal(log.errors, 0);
	assert_int_equal(imm_handle_get_state(h), IMM_STATE_OPEN);
	/* done: the same call seals */
	assert_int_equal(write(go[1], "g", 1), 1);
	fx_assert_child_ok(pid, 10000);
	assert_int_equal(imm_seal(h, 0, FILE_SIZE, IMM_SEAL_EXCLUSIVE, NULL), 0);
	/* no recall since that seal: an open of our own is our error again */
	assert_int_equal(imm_release(h), 0);
	fd = open(p, O_RDONLY | O_CLOEXEC);
	assert_true(fd >= 0);
	assert_int_equal(imm_seal(h, 0, FILE_SIZE, IMM_SEAL_EXCLUSIVE, NULL),
			 -EAGAIN);
	assert_int_equal(log.any_priority, LOG_ERR);
	close(fd);
	close(opened[0]);
	close(go[1]);
	imm_handle_close(h);
	imm_ctx_unref(ctx);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(open_for_write_breaks_exclusive),
		cmocka_unit_test(open_for_read_breaks_exclusive),
		cmocka_unit_test(truncate_breaks_exclusive),
		cmocka_unit_test(open_trunc_breaks_exclusive),
		cmocka_unit_test(writers_and_truncate_break_shared),
		cmocka_unit_test(readers_do_not_break_shared),
		cmocka_unit_test(async_callback_releases_on_notifier),
		cmocka_unit_test(holder_killed_breaker_proceeds),
		cmocka_unit_test(unresponsive_holder_is_revoked_before_deadline),
		cmocka_unit_test(stale_events_are_dropped),
		cmocka_unit_test(break_finds_its_handle_among_many),
		cmocka_unit_test(lost_rt_signal_falls_back_to_rescan),
		cmocka_unit_test(default_dispositions_survive),
		cmocka_unit_test(reseal_refused_until_the_breaker_is_done),
	};

	return cmocka_run_group_tests(tests, fx_group_ext4_setup,
				      fx_group_ext4_teardown);
}
