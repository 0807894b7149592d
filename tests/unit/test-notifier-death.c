// SPDX-License-Identifier: LGPL-2.1-or-later
/*
 * A notifier whose wait fails with an errno it cannot handle stops; it must
 * not stay "running" with breaks unserviced.  The failure is injected once
 * (--wrap of the notifier's wait, old and new), then a real lease break on
 * tmpfs must still be delivered, and the error seen by dispatch, or by
 * imm_ctx_next_event() in a loop that never dispatches.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "private.h"

static atomic_int fail_next;	/* the notifier's next wait fails */

int __real_poll(struct pollfd *fds, nfds_t n, int timeout);
int __wrap_poll(struct pollfd *fds, nfds_t n, int timeout);
int __wrap_poll(struct pollfd *fds, nfds_t n, int timeout)
{
	if (atomic_exchange(&fail_next, 0)) {
		errno = ENOMEM;
		return -1;
	}
	return __real_poll(fds, n, timeout);
}

int __real_sigtimedwait(const sigset_t *set, siginfo_t *info,
			const struct timespec *ts);
int __wrap_sigtimedwait(const sigset_t *set, siginfo_t *info,
			const struct timespec *ts);
int __wrap_sigtimedwait(const sigset_t *set, siginfo_t *info,
			const struct timespec *ts)
{
	if (atomic_exchange(&fail_next, 0)) {
		errno = ENOMEM;
		return -1;
	}
	return __real_sigtimedwait(set, info, ts);
}

/*
 * With hold_aim set, the seal's F_SETOWN_EX waits until the notifier thread
 * that imm_seal() started has died and is gone: the order a busy machine
 * gives now and then, made certain.
 */
static atomic_int hold_aim;
static struct imm_ctx *held_ctx;

static bool task_gone(pid_t tid)
{
	char p[64];

	snprintf(p, sizeof(p), "/proc/self/task/%d", (int)tid);
	return access(p, F_OK) < 0;
}

int __real_fcntl(int fd, int cmd, ...);
int __wrap_fcntl(int fd, int cmd, ...);
int __wrap_fcntl(int fd, int cmd, ...)
{
	va_list ap;
	void *arg;

	va_start(ap, cmd);
	arg = va_arg(ap, void *);	/* an int or a pointer: one slot */
	va_end(ap);
	if (cmd == F_SETOWN_EX && atomic_exchange(&hold_aim, 0)) {
		for (int i = 0; i < 2000; i++) {
			if (atomic_load(&held_ctx->notifier_dead) &&
			    task_gone(held_ctx->notifier_tid))
				break;
			usleep(1000);
		}
	}
	return __real_fcntl(fd, cmd, arg);
}

static atomic_int recalls;

static void on_event(struct imm_event *ev, void *data)
{
	(void)data;
	if (imm_event_get_type(ev) == IMM_EVENT_RECALL) {
		imm_release(imm_event_get_handle(ev));
		atomic_fetch_add(&recalls, 1);
	}
}

static uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* One round of the application's loop: 1 per recall, -errno once. */
static int next_events(struct imm_ctx *ctx)
{
	struct imm_event *ev;
	int r, n = 0;

	while ((r = imm_ctx_next_event(ctx, &ev)) == 0) {
		on_event(ev, NULL);
		imm_event_unref(ev);
		n++;
	}
	return r == -EAGAIN ? n : r;
}

/* poll_loop: the application fetches events with imm_ctx_next_event()
 * alone, never calling imm_ctx_dispatch() */
static void notifier_dies(bool before_aim, bool poll_loop)
{
	char path[] = "/dev/shm/imm-death-XXXXXX";
	struct imm_handle *h;
	struct imm_ctx *ctx;
	int fd, st, err_seen = 0;
	uint64_t end;
	pid_t pid;

	if (geteuid() != 0) {
		fprintf(stderr, "# skipped: leases on another's file need root\n");
		skip();
	}
	fd = mkstemp(path);
	assert_true(fd >= 0);
	assert_int_equal(ftruncate(fd, 65536), 0);
	close(fd);
	assert_int_equal(imm_ctx_new(&ctx), 0);
	if (!poll_loop)
		assert_int_equal(imm_ctx_set_event_fn(ctx, on_event, NULL, 0), 0);
	assert_int_equal(imm_handle_open(ctx, path, IMM_RDWR, &h), 0);
	atomic_store(&recalls, 0);
	held_ctx = ctx;
	atomic_store(&hold_aim, before_aim);
	atomic_store(&fail_next, 1);	/* the notifier's first wait */
	/* a notifier that died before the seal was aimed at it is replaced,
	 * not aimed at (the old code: -ESRCH) */
	assert_int_equal(imm_seal(h, 0, 65536, IMM_SEAL_EXCLUSIVE, NULL), 0);
	assert_int_equal(atomic_load(&hold_aim), 0);
	end = now_ns() + 2000000000ull;
	while (atomic_load(&fail_next) && now_ns() < end)
		usleep(1000);
	assert_int_equal(atomic_load(&fail_next), 0);	/* it was hit */

	pid = fork();
	if (pid == 0) {
		int b = open(path, O_RDWR);	/* blocks until released */

		_exit(b < 0 ? 1 : 0);
	}
	end = now_ns() + 10000000000ull;
	while (atomic_load(&recalls) == 0 && now_ns() < end) {
		struct pollfd p = { .fd = imm_ctx_get_fd(ctx), .events = POLLIN };
		int r;

		__real_poll(&p, 1, 100);
		r = poll_loop ? next_events(ctx) : imm_ctx_dispatch(ctx);
		if (r == -ENOMEM)
			err_seen++;
	}
	assert_int_equal(waitpid(pid, &st, 0), pid);
	printf("# recalls %d, %s saw the error %d time(s)\n",
	       atomic_load(&recalls), poll_loop ? "imm_ctx_next_event" :
	       "imm_ctx_dispatch", err_seen);
	assert_int_equal(err_seen, 1);
	assert_int_equal(atomic_load(&recalls), 1);
	assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 0);
	imm_handle_close(h);
	imm_ctx_unref(ctx);
	unlink(path);
}

static void dead_notifier_restarts_and_breaks_arrive(void **state)
{
	(void)state;
	notifier_dies(false, false);
}

static void notifier_dead_before_the_seal_is_aimed(void **state)
{
	(void)state;
	notifier_dies(true, false);
}

/* Such a loop once never learnt of the death: no recall ever came. */
static void dead_notifier_seen_by_a_next_event_loop(void **state)
{
	(void)state;
	notifier_dies(false, true);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(dead_notifier_restarts_and_breaks_arrive),
		cmocka_unit_test(notifier_dead_before_the_seal_is_aimed),
		cmocka_unit_test(dead_notifier_seen_by_a_next_event_loop),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
