// SPDX-License-Identifier: LGPL-2.1-or-later
/* Seals: arguments, states, permissions, verification, fork, fds. */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <stddef.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <syslog.h>
#include <sys/wait.h>
#include <unistd.h>
#include <linux/audit.h>
#include <linux/falloc.h>
#include <linux/filter.h>
#include <linux/seccomp.h>

#include "fixture.h"

#define MiB (1u << 20)

/* A fully written file of size bytes, named name. */
static void make_file(const char *name, uint64_t size, char *path)
{
	fx_path(&fx_ext4, name, path);
	unlink(path);
	fx_write_pattern(path, 0, size, 21);
}

static void range_errors(void **state)
{
	struct imm_handle *h;
	struct imm_ctx *ctx;
	struct fx_log log;
	char p[PATH_MAX];

	(void)state;
	fx_need_root("a scratch ext4 on a loop device");
	make_file("range", MiB, p);
	ctx = fx_ctx(&log);
	assert_int_equal(imm_handle_open(ctx, p, IMM_RDWR, &h), 0);
	assert_int_equal(imm_seal(h, 0, 0, IMM_SEAL_EXCLUSIVE, NULL), -EINVAL);
	assert_non_null(strstr(log.last, "empty"));
	assert_int_equal(imm_seal(h, MiB - 1, 2, IMM_SEAL_EXCLUSIVE, NULL), -EINVAL);
	assert_non_null(strstr(log.last, "past EOF"));
	assert_int_equal(imm_seal(h, UINT64_MAX - 10, 100, IMM_SEAL_EXCLUSIVE,
				  NULL), -EOVERFLOW);
	/* says which limit, not just "overflows" */
	assert_non_null(strstr(log.last, "past the largest file offset, 2^63 - 1"));
	assert_int_equal(imm_seal(h, 1ull << 62, 1ull << 62, IMM_SEAL_EXCLUSIVE,
				  NULL), -EOVERFLOW);
	assert_non_null(strstr(log.last, "past the largest file offset"));
	assert_int_equal(imm_seal(h, 0, MiB, 0, NULL), -EINVAL);
	assert_int_equal(imm_seal(h, 0, MiB, IMM_SEAL_SHARED | IMM_SEAL_EXCLUSIVE,
				  NULL), -EINVAL);
	assert_int_equal(imm_seal(h, 0, MiB, IMM_SEAL_EXCLUSIVE | 0x100, NULL),
			 -EINVAL);
	assert_int_equal(imm_seal(NULL, 0, MiB, IMM_SEAL_EXCLUSIVE, NULL), -EINVAL);
	/* none of that left anything */
	assert_int_equal(imm_handle_get_state(h), IMM_STATE_OPEN);
	assert_false(fx_leased(p));
	/* the whole file, exactly up to EOF, is fine */
	assert_int_equal(imm_seal(h, 0, MiB, IMM_SEAL_EXCLUSIVE, NULL), 0);
	imm_handle_close(h);
	imm_ctx_unref(ctx);
}

static void opts_struct(void **state)
{
	struct {
		struct imm_seal_opts o;
		uint64_t future;
	} big = { .o = IMM_SEAL_OPTS_INIT };
	struct imm_seal_opts o = IMM_SEAL_OPTS_INIT;
	struct imm_handle *h;
	struct imm_ctx *ctx;
	struct fx_log log;
	char p[PATH_MAX];

	(void)state;
	fx_need_root("a scratch ext4 on a loop device");
	make_file("opts", MiB, p);
	ctx = fx_ctx(&log);
	assert_int_equal(imm_handle_open(ctx, p, IMM_RDWR, &h), 0);
	/* a newer caller's unknown field, non-zero: refused */
	big.o.sz = sizeof(big);
	big.future = 1;
	assert_int_equal(imm_seal(h, 0, MiB, IMM_SEAL_EXCLUSIVE, &big.o), -E2BIG);
	assert_non_null(strstr(log.last, "built against a newer header"));
	/* each mistake is named, not "unknown fields" for all three */
	o.reserved = 1;
	assert_int_equal(imm_seal(h, 0, MiB, IMM_SEAL_EXCLUSIVE, &o), -EINVAL);
	assert_non_null(strstr(log.last, "reserved is 1: it must be 0"));
	o.sz = 1;
	o.reserved = 0;
	assert_int_equal(imm_seal(h, 0, MiB, IMM_SEAL_EXCLUSIVE, &o), -EINVAL);
	assert_non_null(strstr(log.last, "too small to hold sz itself"));
	/* a seal's own revoke margin has the context's limit (it had none) */
	o.sz = sizeof(o);
	o.revoke_margin_ms = 3600u * 1000u + 1;
	assert_int_equal(imm_seal(h, 0, MiB, IMM_SEAL_EXCLUSIVE, &o), -EINVAL);
	assert_non_null(strstr(log.last, "imm_seal: revoke margin 3600001 ms"));
	assert_non_null(strstr(log.last, "at most one hour"));
	assert_false(fx_leased(p));
	o.revoke_margin_ms = 3600u * 1000u;
	assert_int_equal(imm_seal(h, 0, MiB, IMM_SEAL_EXCLUSIVE, &o), 0);
	assert_int_equal(imm_release(h), 0);
	o.revoke_margin_ms = 0;
	/* zero there: fine; an older, smaller struct: fine */
	big.future = 0;
	assert_int_equal(imm_seal(h, 0, MiB, IMM_SEAL_EXCLUSIVE, &big.o), 0);
	assert_int_equal(imm_release(h), 0);
	o.sz = sizeof(size_t);
	assert_int_equal(imm_seal(h, 0, MiB, IMM_SEAL_EXCLUSIVE, &o), 0);
	imm_handle_close(h);
	imm_ctx_unref(ctx);
}

/* What the calls below got from inside imm_seal(), after its preparation. */
struct mid_seal {
	struct imm_handle *h;
	bool hit;
	int seal, release, close, map, state;
	char last[512];		/* the last error logged */
	char close_msg[512];	/* ... by imm_handle_close() */
	char map_msg[512];	/* ... by imm_map() */
};

/* The log hook runs on the sealing thread, between preparation and commit,
 * where the handle's lock is not held: the window another thread meets. */
static void call_mid_seal(void *data, int priority, const char *file, int line,
			  const char *fn, const char *format, va_list args)
{
	struct mid_seal *m = data;
	struct imm_map *map;
	char msg[512];

	(void)file;
	(void)line;
	(void)fn;
	vsnprintf(msg, sizeof(msg), format, args);
	if (priority <= LOG_ERR)
		snprintf(m->last, sizeof(m->last), "%s", msg);
	if (m->hit || strncmp(msg, "prepared [", 10))
		return;
	m->hit = true;
	m->seal = imm_seal(m->h, 0, MiB, IMM_SEAL_EXCLUSIVE, NULL);
	m->release = imm_release(m->h);
	m->close = imm_handle_close(m->h);
	memcpy(m->close_msg, m->last, sizeof(m->last));
	m->map = imm_map(m->h, 0, MiB, IMM_MAP_PAGE_OK, &map);
	memcpy(m->map_msg, m->last, sizeof(m->last));
	m->state = imm_handle_get_state(m->h);
}

/*
 * imm_seal() holds no lock while it prepares, as imm_seal(3) says; other
 * calls on the handle meanwhile are refused with -EBUSY and a reason, and
 * the seal then completes as if they had not been made.
 */
static void calls_while_sealing_are_refused(void **state)
{
	struct mid_seal m = { 0 };
	struct imm_ctx *ctx;
	char p[PATH_MAX];

	(void)state;
	fx_need_root("a scratch ext4 on a loop device");
	fx_path(&fx_ext4, "mid-seal", p);
	unlink(p);
	fx_sparse_file(p, MiB);		/* holes: the seal prepares them */
	ctx = fx_ctx(NULL);
	imm_ctx_set_log_fn(ctx, call_mid_seal, &m);
	imm_ctx_set_log_priority(ctx, LOG_DEBUG);
	assert_int_equal(imm_handle_open(ctx, p, IMM_RDWR, &m.h), 0);
	assert_int_equal(imm_seal(m.h, 0, MiB, IMM_SEAL_EXCLUSIVE, NULL), 0);
	assert_true(m.hit);
	assert_int_equal(m.seal, -EBUSY);
	assert_int_equal(m.release, -EBUSY);
	assert_int_equal(m.close, -EBUSY);
	assert_non_null(strstr(m.close_msg, "imm_handle_close: imm_seal() is "
					    "in progress on another thread"));
	assert_int_equal(m.map, -EBUSY);	/* it said "imm_seal() it first" */
	assert_non_null(strstr(m.map_msg, "imm_map: imm_seal() is in progress"));
	assert_int_equal(m.state, IMM_STATE_OPEN);
	/* none of them changed the seal that was being taken */
	assert_int_equal(imm_handle_get_state(m.h), IMM_STATE_SEALED);
	assert_true(fx_leased(p));
	assert_int_equal(imm_release(m.h), 0);
	assert_false(fx_leased(p));
	imm_handle_close(m.h);
	imm_ctx_unref(ctx);
}

static void state_errors(void **state)
{
	struct imm_handle *h;
	struct imm_ctx *ctx;
	struct fx_log log;
	char p[PATH_MAX];

	(void)state;
	fx_need_root("a scratch ext4 on a loop device");
	make_file("states", MiB, p);
	ctx = fx_ctx(&log);
	assert_int_equal(imm_handle_open(ctx, p, IMM_RDWR, &h), 0);
	assert_int_equal(imm_release(h), -EINVAL);
	assert_int_equal(imm_verify(h), -EINVAL);
	assert_int_equal(imm_seal(h, 0, MiB, IMM_SEAL_EXCLUSIVE, NULL), 0);
	assert_int_equal(imm_seal(h, 0, MiB, IMM_SEAL_EXCLUSIVE, NULL), -EBUSY);
	assert_int_equal(imm_handle_get_state(h), IMM_STATE_SEALED);
	assert_int_equal(imm_release(h), 0);
	assert_int_equal(imm_handle_get_state(h), IMM_STATE_OPEN);
	/* re-seal after release: each cycle re-arms the signal routing */
	for (int i = 0; i < 5; i++) {
		assert_int_equal(imm_seal(h, 0, MiB, IMM_SEAL_EXCLUSIVE, NULL), 0);
		assert_int_equal(imm_release(h), 0);
	}
	/* close while sealed drops the lease */
	assert_int_equal(imm_seal(h, 0, MiB, IMM_SEAL_EXCLUSIVE, NULL), 0);
	assert_true(fx_leased(p));
	assert_int_equal(imm_handle_close(h), 0);
	assert_false(fx_leased(p));
	assert_int_equal(log.errors, 3);	/* each refusal above said why */
	imm_ctx_unref(ctx);
}

static void shared_and_exclusive_rules(void **state)
{
	struct imm_handle *h, *h2;
	struct imm_ctx *ctx;
	struct fx_log log;
	char p[PATH_MAX];
	int other;

	(void)state;
	fx_need_root("a scratch ext4 on a loop device");
	make_file("modes", MiB, p);
	ctx = fx_ctx(&log);
	/* shared needs a read-only handle */
	assert_int_equal(imm_handle_open(ctx, p, IMM_RDWR, &h), 0);
	assert_int_equal(imm_seal(h, 0, MiB, IMM_SEAL_SHARED, NULL), -EBADF);
	assert_logged(&log);
	/* exclusive needs the only open: a second one makes it -EAGAIN */
	other = open(p, O_RDONLY | O_CLOEXEC);
	assert_int_equal(imm_seal(h, 0, MiB, IMM_SEAL_EXCLUSIVE, NULL), -EAGAIN);
	assert_non_null(strstr(log.last, "only"));
	assert_int_equal(imm_handle_get_state(h), IMM_STATE_OPEN);
	close(other);
	imm_handle_close(h);
	/* two read-only handles can both hold shared seals */
	assert_int_equal(imm_handle_open(ctx, p, IMM_RDONLY, &h), 0);
	assert_int_equal(imm_handle_open(ctx, p, IMM_RDONLY, &h2), 0);
	assert_int_equal(imm_seal(h, 0, MiB, IMM_SEAL_SHARED, NULL), 0);
	assert_int_equal(imm_seal(h2, 0, MiB / 2, IMM_SEAL_SHARED, NULL), 0);
	/* ...and a writer elsewhere blocks a new one */
	imm_release(h2);
	other = open(p, O_RDWR | O_NONBLOCK | O_CLOEXEC);	/* breaks h */
	assert_true(other < 0 && errno == EWOULDBLOCK);
	imm_handle_close(h);
	imm_handle_close(h2);
	imm_ctx_unref(ctx);
}

/* Leases need ownership or CAP_LEASE: a nobody process gets EACCES. */
static void not_the_owner(void **state)
{
	char p[PATH_MAX];
	pid_t pid;
	int st;

	(void)state;
	fx_need_root("dropping to uid 65534 to be a non-owner");
	make_file("owned", MiB, p);
	assert_int_equal(chmod(p, 0644), 0);
	assert_int_equal(chmod(fx_ext4.dir, 0755), 0);	/* mkdtemp made it 0700 */
	assert_int_equal(chmod(fx_ext4.mnt, 0755), 0);
	pid = fork();
	if (pid == 0) {
		struct imm_handle *h;
		struct imm_ctx *ctx;
		struct fx_log log;
		int r;

		if (setgid(65534) || setuid(65534))
			_exit(10);
		ctx = fx_ctx(&log);
		if (imm_handle_open(ctx, p, IMM_RDONLY, &h))
			_exit(11);
		r = imm_seal(h, 0, MiB, IMM_SEAL_SHARED, NULL);
		if (r != -EACCES)
			_exit(12);
		if (!strstr(log.last, "CAP_LEASE"))
			_exit(13);
		if (fx_leased(p))
			_exit(14);
		_exit(0);
	}
	assert_int_equal(fx_waitpid_timeout(pid, &st, 10000), pid);
	assert_true(WIFEXITED(st));
	assert_int_equal(WEXITSTATUS(st), 0);
}

static void leases_disabled(void **state)
{
	struct imm_handle *h;
	struct imm_ctx *ctx;
	struct fx_log log;
	char p[PATH_MAX];

	(void)state;
	fx_need_root("writing /proc/sys/fs/leases-enable");
	make_file("noleases", MiB, p);
	ctx = fx_ctx(&log);
	assert_int_equal(imm_handle_open(ctx, p, IMM_RDWR, &h), 0);
	fx_sysctl_set("/proc/sys/fs/leases-enable", 0);
	assert_int_equal(imm_ctx_get_leases_enabled(ctx), 0);
	assert_int_equal(imm_seal(h, 0, MiB, IMM_SEAL_EXCLUSIVE, NULL), -EOPNOTSUPP);
	assert_non_null(strstr(log.last, "leases-enable"));
	assert_int_equal(imm_handle_get_state(h), IMM_STATE_OPEN);
	fx_sysctl_set("/proc/sys/fs/leases-enable", 1);
	assert_int_equal(imm_ctx_get_leases_enabled(ctx), 1);
	assert_int_equal(imm_seal(h, 0, MiB, IMM_SEAL_EXCLUSIVE, NULL), 0);
	imm_handle_close(h);
	imm_ctx_unref(ctx);
}

/*
 * The honest limit of the lease backend: a process sharing the open file
 * (here a child forked before the seal) punches a hole without breaking
 * anything.  imm_verify() finds it, and says so with an event.
 */
static void verify_mismatch_after_punch_by_earlier_opener(void **state)
{
	struct imm_handle *h;
	struct imm_event *ev;
	struct imm_ctx *ctx;
	struct fx_log log;
	char p[PATH_MAX];
	int fd, go[2], st;
	pid_t pid;

	(void)state;
	fx_need_root("a scratch ext4 on a loop device");
	make_file("punched", 4 * MiB, p);
	fd = open(p, O_RDWR | O_CLOEXEC);
	assert_true(fd >= 0);
	assert_int_equal(pipe2(go, O_CLOEXEC), 0);
	pid = fork();
	if (pid == 0) {
		char x;

		if (read(go[0], &x, 1) != 1)
			_exit(1);
		_exit(fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
				MiB, 64 << 10) ? 2 : 0);
	}
	ctx = fx_ctx(&log);
	assert_int_equal(imm_handle_from_fd(ctx, fd, 0, &h), 0);
	close(fd);
	assert_int_equal(imm_seal(h, 0, 4 * MiB, IMM_SEAL_EXCLUSIVE, NULL), 0);
	assert_int_equal(imm_verify(h), 0);
	assert_int_equal(write(go[1], "x", 1), 1);
	assert_int_equal(fx_waitpid_timeout(pid, &st, 10000), pid);
	assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 0);
	/* no break happened: the lease backend cannot see a punch */
	assert_int_equal(imm_handle_get_state(h), IMM_STATE_SEALED);
	assert_int_equal(imm_verify(h), -ESTALE);
	assert_int_equal(imm_handle_get_state(h), IMM_STATE_DEFEATED);
	assert_non_null(strstr(log.last, "changed under the seal"));
	assert_int_equal(imm_ctx_dispatch(ctx), 1);	/* queued, no callback */
	assert_int_equal(imm_ctx_next_event(ctx, &ev), 0);
	assert_int_equal(imm_event_get_type(ev), IMM_EVENT_VERIFY_MISMATCH);
	assert_ptr_equal(imm_event_get_handle(ev), h);
	assert_int_equal(imm_event_get_offset(ev), MiB);
	assert_true(imm_event_get_time_ns(ev) > 0);
	assert_string_equal(imm_event_type_name(imm_event_get_type(ev)),
			    "verify-mismatch");
	/* named as the enum is, not "break" */
	assert_string_equal(imm_event_type_name(IMM_EVENT_RECALL), "recall");
	assert_string_equal(imm_event_type_name(IMM_EVENT_REVOKED), "revoked");
	assert_null(imm_event_type_name(0));
	imm_event_unref(ev);
	/* one event per defeated seal, however often it is verified */
	assert_int_equal(imm_verify(h), -ESTALE);
	assert_int_equal(imm_ctx_next_event(ctx, &ev), -EAGAIN);
	/* release clears it; a new seal prepares the hole away */
	assert_int_equal(imm_release(h), 0);
	assert_int_equal(imm_seal(h, 0, 4 * MiB, IMM_SEAL_EXCLUSIVE, NULL), 0);
	assert_int_equal(imm_verify(h), 0);
	close(go[0]);
	close(go[1]);
	imm_handle_close(h);
	imm_ctx_unref(ctx);
}

struct seen {
	int n;
	int type[4];
	uint64_t offset[4];
	uint64_t deadline[4];
};

static void record(struct imm_event *ev, void *data)
{
	struct seen *s = data;

	if (s->n < 4) {
		s->type[s->n] = imm_event_get_type(ev);
		s->offset[s->n] = imm_event_get_offset(ev);
		s->deadline[s->n] = imm_event_get_deadline_ns(ev);
	}
	s->n++;
}

/* The same kind of punch, found by the verification that every break
 * runs: the recall comes first, the mismatch right after it. */
static void verify_at_break_reports_mismatch(void **state)
{
	struct seen s = { 0 };
	struct imm_handle *h;
	struct imm_ctx *ctx;
	char p[PATH_MAX];
	int fd;
	pid_t pid;

	(void)state;
	fx_need_root("a scratch ext4 on a loop device");
	make_file("punched2", 4 * MiB, p);
	fd = open(p, O_RDWR | O_CLOEXEC);
	ctx = fx_ctx(NULL);
	imm_ctx_set_event_fn(ctx, record, &s, 0);
	assert_int_equal(imm_handle_from_fd(ctx, fd, 0, &h), 0);
	assert_int_equal(imm_seal(h, 0, 4 * MiB, IMM_SEAL_EXCLUSIVE, NULL), 0);
	/* the caller's fd shares the sealed open file: no break */
	assert_int_equal(fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
				   2 * MiB + 8192, 4096), 0);
	assert_int_equal(imm_handle_get_state(h), IMM_STATE_SEALED);
	pid = fx_breaker_start(p, FX_OPEN_RDONLY);
	while (s.n < 2)
		assert_true(fx_dispatch_wait(ctx, 10000) > 0);
	assert_int_equal(s.type[0], IMM_EVENT_RECALL);
	assert_int_equal(s.type[1], IMM_EVENT_VERIFY_MISMATCH);
	assert_int_equal(s.offset[1], 2 * MiB + 8192);
	assert_int_equal(s.deadline[1], s.deadline[0]);	/* same break */
	assert_int_equal(imm_handle_get_state(h), IMM_STATE_BREAKING);
	assert_int_equal(imm_release(h), 0);
	fx_breaker_wait(pid);
	close(fd);
	imm_handle_close(h);
	imm_ctx_unref(ctx);
}

/*
 * fork(): in the child every inherited handle refuses with -ECHILD, close
 * and unref only free the child's copies, and the parent's seal survives
 * the child's exit.
 */
static void fork_child_is_inert(void **state)
{
	struct imm_handle *h;
	struct imm_ctx *ctx;
	struct fx_log log;
	char p[PATH_MAX];
	pid_t pid;
	int st;

	(void)state;
	fx_need_root("a scratch ext4 on a loop device");
	make_file("forked", MiB, p);
	ctx = fx_ctx(&log);
	assert_int_equal(imm_handle_open(ctx, p, IMM_RDWR, &h), 0);
	assert_int_equal(imm_seal(h, 0, MiB, IMM_SEAL_EXCLUSIVE, NULL), 0);
	pid = fork();
	if (pid == 0) {
		struct imm_handle *h2;
		struct imm_event *ev;
		int bad = 0;

		bad |= imm_seal(h, 0, MiB, IMM_SEAL_EXCLUSIVE, NULL) != -ECHILD;
		bad |= (imm_release(h) != -ECHILD) << 1;
		bad |= (imm_verify(h) != -ECHILD) << 2;
		bad |= (imm_ctx_dispatch(ctx) != -ECHILD) << 3;
		bad |= (imm_ctx_get_fd(ctx) != -ECHILD) << 4;
		bad |= (imm_ctx_next_event(ctx, &ev) != -ECHILD) << 5;
		bad |= (imm_handle_open(ctx, p, IMM_RDONLY, &h2) != -ECHILD) << 6;
		bad |= (!strstr(log.last, "fork")) << 7;
		bad |= (imm_handle_close(h) != 0) << 8;
		imm_ctx_unref(ctx);
		/* an exit status keeps 8 bits: report the first failed check
		 * by number (1..9), not the bitmap, whose bit 8 would be lost */
		_exit(bad ? __builtin_ctz((unsigned)bad) + 1 : 0);
	}
	assert_int_equal(fx_waitpid_timeout(pid, &st, 10000), pid);
	assert_true(WIFEXITED(st));
	assert_int_equal(WEXITSTATUS(st), 0);
	/* the parent's seal is intact and still breakable */
	assert_true(fx_leased(p));
	assert_int_equal(imm_handle_get_state(h), IMM_STATE_SEALED);
	assert_int_equal(imm_verify(h), 0);
	pid = fx_breaker_start(p, FX_OPEN_RDONLY);
	while (imm_handle_get_state(h) != IMM_STATE_BREAKING)
		assert_true(fx_dispatch_wait(ctx, 10000) >= 0);
	assert_int_equal(imm_release(h), 0);
	fx_breaker_wait(pid);
	imm_handle_close(h);
	imm_ctx_unref(ctx);
}

/* Dispatch until h is in state, for at most 10 s. */
static void wait_state(struct imm_ctx *ctx, struct imm_handle *h, int state)
{
	uint64_t deadline = fx_now_ns() + 10ull * 1000000000ull;

	while (imm_handle_get_state(h) != state) {
		assert_true(fx_now_ns() < deadline);
		assert_true(fx_dispatch_wait(ctx, 100) >= 0);
	}
}

/*
 * Two handles on one open file description share one kernel lease: the
 * second seal must be refused, whether the handles come from one fd, from
 * dups of it, or from two contexts, and the first seal must still hold
 * and still hear its recall.
 */
static void second_seal_of_one_open_file_refused(void **state)
{
	static const char *const how[] = { "same fd", "dup", "two contexts" };
	struct imm_handle *a, *b;
	struct imm_ctx *ctx, *ctx2;
	struct fx_log log, log2;
	char p[PATH_MAX];
	int fd, fd2;
	pid_t pid;

	(void)state;
	fx_need_root("a scratch ext4 on a loop device");
	make_file("one-description", MiB, p);
	for (int v = 0; v < 3; v++) {
		ctx = fx_ctx(&log);
		ctx2 = v == 2 ? fx_ctx(&log2) : ctx;
		fd = open(p, O_RDWR | O_CLOEXEC);
		assert_true(fd >= 0);
		fd2 = v == 1 ? dup(fd) : fd;
		assert_int_equal(imm_handle_from_fd(ctx, fd, 0, &a), 0);
		assert_int_equal(imm_handle_from_fd(ctx2, fd2, 0, &b), 0);
		assert_int_equal(imm_seal(a, 0, MiB, IMM_SEAL_EXCLUSIVE, NULL), 0);
		print_message("%s\n", how[v]);
		assert_int_equal(imm_seal(b, 0, MiB, IMM_SEAL_EXCLUSIVE, NULL),
				 -EBUSY);
		assert_non_null(strstr((v == 2 ? &log2 : &log)->last,
				       "shares its open file description"));
		assert_int_equal(imm_handle_get_state(b), IMM_STATE_OPEN);
		assert_int_equal(imm_handle_get_state(a), IMM_STATE_SEALED);
		assert_true(fx_leased(p));

		/* a still hears its recall; while it is being recalled the
		 * kernel shows no lease type, and b is refused all the same */
		pid = fx_breaker_start(p, FX_OPEN_RDONLY);
		wait_state(ctx, a, IMM_STATE_BREAKING);
		if (v < 2)
			assert_int_equal(imm_seal(b, 0, MiB, IMM_SEAL_EXCLUSIVE,
						  NULL), -EBUSY);
		assert_int_equal(imm_handle_get_state(b), IMM_STATE_OPEN);
		assert_int_equal(imm_release(a), 0);
		fx_breaker_wait(pid);

		/* once a has let go, b may seal the open file */
		assert_int_equal(imm_seal(b, 0, MiB, IMM_SEAL_EXCLUSIVE, NULL), 0);
		assert_int_equal(imm_seal(a, 0, MiB, IMM_SEAL_EXCLUSIVE, NULL),
				 -EBUSY);
		assert_int_equal(imm_release(b), 0);
		assert_int_equal(imm_handle_close(a), 0);
		assert_int_equal(imm_handle_close(b), 0);
		if (fd2 != fd)
			close(fd2);
		close(fd);
		if (ctx2 != ctx)
			imm_ctx_unref(ctx2);
		imm_ctx_unref(ctx);
	}
}

#if defined(__x86_64__)
#define TEST_AUDIT_ARCH AUDIT_ARCH_X86_64
#elif defined(__aarch64__)
#define TEST_AUDIT_ARCH AUDIT_ARCH_AARCH64
#endif

/* Make kcmp(2) fail with ENOSYS in this process, as on a kernel built
 * without CONFIG_CHECKPOINT_RESTORE (tinyconfig, our patched guest). */
static bool kcmp_disable(void)
{
#ifdef TEST_AUDIT_ARCH
	struct sock_filter insn[] = {
		BPF_STMT(BPF_LD | BPF_W | BPF_ABS,
			 offsetof(struct seccomp_data, arch)),
		BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, TEST_AUDIT_ARCH, 0, 3),
		BPF_STMT(BPF_LD | BPF_W | BPF_ABS,
			 offsetof(struct seccomp_data, nr)),
		BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SYS_kcmp, 0, 1),
		BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | ENOSYS),
		BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
	};
	struct sock_fprog prog = { sizeof(insn) / sizeof(insn[0]), insn };

	return prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) == 0 &&
	       prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog) == 0;
#else
	return false;
#endif
}

/* Child of seals_without_kcmp: its exit code says which step failed. */
static int without_kcmp(const char *p)
{
	struct imm_handle *h1, *h2, *a, *b;
	struct imm_ctx *ctx;
	struct fx_log log;
	int fd, fd2;

	if (syscall(SYS_kcmp, getpid(), getpid(), 0, 0, 0) != -1 ||
	    errno != ENOSYS)
		return 10;
	ctx = fx_ctx(&log);
	/* two imm_handle_open()s are two open files, kcmp or not */
	if (imm_handle_open(ctx, p, IMM_RDONLY, &h1) ||
	    imm_handle_open(ctx, p, IMM_RDONLY, &h2))
		return 11;
	if (imm_seal(h1, 0, MiB, IMM_SEAL_SHARED, NULL) != 0)
		return 12;
	if (imm_seal(h2, 0, MiB, IMM_SEAL_SHARED, NULL) != 0)
		return 13;
	imm_handle_close(h1);
	imm_handle_close(h2);
	/* two caller's fds cannot be told apart: taken for one, refused */
	fd = open(p, O_RDONLY | O_CLOEXEC);
	fd2 = open(p, O_RDONLY | O_CLOEXEC);
	if (imm_handle_from_fd(ctx, fd, 0, &a) ||
	    imm_handle_from_fd(ctx, fd2, 0, &b))
		return 14;
	if (imm_seal(a, 0, MiB, IMM_SEAL_SHARED, NULL) != 0)
		return 15;
	if (imm_seal(b, 0, MiB, IMM_SEAL_SHARED, NULL) != -EBUSY ||
	    !strstr(log.last, "shares its open file description"))
		return 16;
	imm_handle_close(a);
	imm_handle_close(b);
	imm_ctx_unref(ctx);
	return 0;
}

/*
 * On a kernel without kcmp (CI's patched guest is built from tinyconfig)
 * the second of two read-only handles could not take its shared seal:
 * the claim check took every pair of handles on one file for one open
 * file description.
 */
static void seals_without_kcmp(void **state)
{
	char p[PATH_MAX];
	pid_t pid;
	int st;

	(void)state;
	fx_need_root("a scratch ext4 on a loop device");
	make_file("no-kcmp", MiB, p);
	pid = fork();
	if (pid == 0)
		_exit(kcmp_disable() ? without_kcmp(p) : 9);
	assert_int_equal(fx_waitpid_timeout(pid, &st, 10000), pid);
	assert_true(WIFEXITED(st));
	if (WEXITSTATUS(st) == 9) {
		print_message("skipped: no seccomp filter to hide kcmp "
			      "(unknown arch, or the filter was refused)\n");
		skip();
	}
	assert_int_equal(WEXITSTATUS(st), 0);
}

struct churn {
	struct imm_handle *h;
	atomic_bool stop;
	atomic_int cycles;
	int error;
};

/* Release and re-seal, as fast as it goes, until told to stop. */
static void *churn_seal(void *arg)
{
	struct churn *c = arg;

	while (!atomic_load(&c->stop)) {
		int r = imm_release(c->h);

		if (r == 0)
			r = imm_seal(c->h, 0, MiB, IMM_SEAL_EXCLUSIVE, NULL);
		if (r < 0) {
			c->error = r;
			break;
		}
		atomic_fetch_add(&c->cycles, 1);
	}
	return NULL;
}

/*
 * libimmutable(7) tells a child to close what it inherited.  A child forked
 * while another thread of the parent was releasing the seal inherits the
 * handle mid-teardown: its close must free only what is still its own (run
 * under ASan on tmpfs, the old code freed the extent snapshot twice in 9 of
 * 2,000 children), and must not touch the parent's seal.
 */
static void fork_during_release(void **state)
{
	struct churn c = { 0 };
	struct imm_ctx *ctx;
	struct fx_log log;
	char p[PATH_MAX];
	pthread_t t;
	uint64_t deadline;
	int i, bad = 0, forks = 0;

	(void)state;
	fx_need_root("a scratch ext4 on a loop device");
	/* on tmpfs, where fsync costs nothing: the seal cycles fast, and the
	 * forks land inside a teardown often */
	snprintf(p, sizeof(p), "/dev/shm/imm-fork-churn-%d", (int)getpid());
	fx_write_pattern(p, 0, MiB, 3);
	ctx = fx_ctx(&log);
	assert_int_equal(imm_handle_open(ctx, p, IMM_RDWR, &c.h), 0);
	assert_int_equal(imm_seal(c.h, 0, MiB, IMM_SEAL_EXCLUSIVE, NULL), 0);
	assert_int_equal(pthread_create(&t, NULL, churn_seal, &c), 0);
	deadline = fx_now_ns() + 90ull * 1000000000ull;
	for (i = 0; i < 2000 && fx_now_ns() < deadline; i++) {
		pid_t pid = fork();
		int st;

		if (pid == 0)
			_exit(imm_handle_close(c.h) == 0 &&
			      imm_ctx_unref(ctx) == NULL ? 0 : 3);
		assert_true(pid > 0);
		forks++;
		assert_int_equal(fx_waitpid_timeout(pid, &st, 10000), pid);
		if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
			bad++;
	}
	atomic_store(&c.stop, true);
	assert_int_equal(pthread_join(t, NULL), 0);
	print_message("%d forks, %d seal cycles meanwhile, %d children failed\n",
		      forks, atomic_load(&c.cycles), bad);
	assert_int_equal(c.error, 0);
	assert_int_equal(bad, 0);
	assert_true(forks >= 2000);
	assert_true(atomic_load(&c.cycles) > 100);	/* they did overlap */
	/* the parent's seal is its own still */
	assert_int_equal(imm_handle_get_state(c.h), IMM_STATE_SEALED);
	assert_true(fx_leased(p));
	assert_int_equal(imm_verify(c.h), 0);
	assert_int_equal(imm_handle_close(c.h), 0);
	imm_ctx_unref(ctx);
	unlink(p);
}

/* fds open now, as a bitmap of the first 1024 */
static void open_fds(unsigned char *set)
{
	struct dirent *d;
	DIR *dir = opendir("/proc/self/fd");

	assert_non_null(dir);
	memset(set, 0, 1024);
	while ((d = readdir(dir))) {
		int fd = atoi(d->d_name);

		if (d->d_name[0] != '.' && fd != dirfd(dir) && fd < 1024)
			set[fd] = 1;
	}
	closedir(dir);
}

/* Every fd the library makes is close-on-exec. */
static void library_fds_are_cloexec(void **state)
{
	unsigned char before[1024], after[1024];
	struct imm_handle *h;
	struct imm_ctx *ctx;
	char p[PATH_MAX];
	int n = 0;

	(void)state;
	fx_need_root("a scratch ext4 on a loop device");
	make_file("fds", MiB, p);
	open_fds(before);
	ctx = fx_ctx(NULL);
	assert_int_equal(imm_handle_open(ctx, p, IMM_RDWR, &h), 0);
	assert_int_equal(imm_seal(h, 0, MiB, IMM_SEAL_EXCLUSIVE, NULL), 0);
	open_fds(after);
	for (int fd = 0; fd < 1024; fd++) {
		if (!after[fd] || before[fd])
			continue;
		assert_true(fcntl(fd, F_GETFD) & FD_CLOEXEC);
		n++;
	}
	/* the context's eventfd, the handle's open, the notifier's wake-up
	 * eventfd, its two signalfds and its /proc status */
	assert_int_equal(n, 6);
	imm_handle_close(h);
	imm_ctx_unref(ctx);
}

static void context_settings(void **state)
{
	struct imm_ctx *ctx, *r;
	struct fx_log log;
	int x;

	(void)state;
	ctx = fx_ctx(&log);
	assert_int_equal(imm_ctx_get_backend(ctx), IMM_BACKEND_LEASE);
	assert_string_equal(imm_backend_name(IMM_BACKEND_LEASE), "lease");
	assert_string_equal(imm_backend_name(IMM_BACKEND_LAYOUT), "layout");
	assert_null(imm_backend_name(42));
	assert_true(imm_ctx_get_lease_break_time(ctx) >= 0);
	assert_true(imm_ctx_get_leases_enabled(ctx) >= 0);
	imm_ctx_set_userdata(ctx, &x);
	assert_ptr_equal(imm_ctx_get_userdata(ctx), &x);
	r = imm_ctx_ref(ctx);
	assert_ptr_equal(r, ctx);
	assert_null(imm_ctx_unref(r));
	assert_int_equal(imm_ctx_set_signal(ctx, SIGUSR1), -EINVAL);
	assert_int_equal(imm_ctx_set_signal(ctx, SIGRTMAX + 1), -EINVAL);
	assert_int_equal(imm_ctx_set_signal(ctx, SIGRTMIN + 4), 0);
	assert_int_equal(imm_ctx_get_signal(ctx), SIGRTMIN + 4);
	assert_int_equal(imm_ctx_set_revoke_margin(ctx, 250), 0);
	assert_int_equal(imm_ctx_get_revoke_margin(ctx), 250);
	assert_int_equal(imm_ctx_set_revoke_margin(ctx, 4000000), -EINVAL);
	assert_int_equal(imm_ctx_set_event_fn(ctx, NULL, NULL, IMM_EVENT_FN_ASYNC),
			 -EINVAL);
	assert_int_equal(imm_ctx_set_event_fn(ctx, NULL, NULL, 0x10), -EINVAL);
	imm_ctx_unref(ctx);
}

/* Once the notifier runs, its signal is fixed. */
static void signal_fixed_once_notifier_runs(void **state)
{
	struct imm_handle *h;
	struct imm_ctx *ctx;
	char p[PATH_MAX];

	(void)state;
	fx_need_root("a scratch ext4 on a loop device");
	ctx = fx_ctx(NULL);
	assert_int_equal(imm_ctx_set_signal(ctx, SIGRTMIN + 4), 0);
	make_file("settings", MiB, p);
	assert_int_equal(imm_handle_open(ctx, p, IMM_RDWR, &h), 0);
	assert_int_equal(imm_seal(h, 0, MiB, IMM_SEAL_EXCLUSIVE, NULL), 0);
	assert_int_equal(imm_ctx_set_signal(ctx, SIGRTMIN + 5), -EBUSY);
	assert_int_equal(imm_ctx_set_signal(ctx, SIGRTMIN + 4), 0);
	assert_int_equal(imm_ctx_get_signal(ctx), SIGRTMIN + 4);
	/* breaks still arrive on the chosen signal */
	pid_t pid = fx_breaker_start(p, FX_OPEN_RDONLY);

	while (imm_handle_get_state(h) != IMM_STATE_BREAKING)
		assert_true(fx_dispatch_wait(ctx, 10000) >= 0);
	assert_int_equal(imm_release(h), 0);
	fx_breaker_wait(pid);
	imm_handle_close(h);
	imm_ctx_unref(ctx);
}

static void backend_override(void **state)
{
	struct imm_ctx *ctx = NULL;
	struct imm_handle *h;
	struct fx_log log;
	char p[PATH_MAX];

	/* the kernel decides what "automatic" means: layout seals where the
	 * companion patch is (the loop ext4 takes them), leases elsewhere */
	bool patched = access("/proc/sys/fs/layout-seal-version", F_OK) == 0;
	int want = patched ? IMM_BACKEND_LAYOUT : IMM_BACKEND_LEASE;
	const char *outer = getenv("LIBIMMUTABLE_BACKEND");
	char saved[16] = "";

	(void)state;
	fx_need_root("a scratch ext4 on a loop device");
	if (outer)
		snprintf(saved, sizeof(saved), "%s", outer);
	unsetenv("LIBIMMUTABLE_BACKEND");
	make_file("backend", MiB, p);
	ctx = fx_ctx(&log);
	assert_int_equal(imm_ctx_get_backend(ctx), want);
	assert_int_equal(imm_handle_open(ctx, p, IMM_RDWR, &h), 0);
	assert_int_equal(imm_handle_get_backend(h), want);
	assert_int_equal(imm_handle_get_backend(NULL), -EINVAL);
	assert_int_equal(imm_handle_close(h), 0);
	imm_ctx_unref(ctx);
	ctx = NULL;

	setenv("LIBIMMUTABLE_BACKEND", "lease", 1);
	assert_int_equal(imm_ctx_new(&ctx), 0);
	assert_int_equal(imm_ctx_get_backend(ctx), IMM_BACKEND_LEASE);
	imm_ctx_unref(ctx);
	ctx = NULL;
	setenv("LIBIMMUTABLE_BACKEND", "layout", 1);
	if (patched) {
		assert_int_equal(imm_ctx_new(&ctx), 0);
		assert_int_equal(imm_ctx_get_backend(ctx), IMM_BACKEND_LAYOUT);
		imm_ctx_unref(ctx);
		ctx = NULL;
	} else {
		assert_int_equal(imm_ctx_new(&ctx), -EOPNOTSUPP);
		assert_null(ctx);
	}
	setenv("LIBIMMUTABLE_BACKEND", "bogus", 1);
	assert_int_equal(imm_ctx_new(&ctx), -EINVAL);
	if (*saved)
		setenv("LIBIMMUTABLE_BACKEND", saved, 1);
	else
		unsetenv("LIBIMMUTABLE_BACKEND");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(range_errors),
		cmocka_unit_test(opts_struct),
		cmocka_unit_test(state_errors),
		cmocka_unit_test(calls_while_sealing_are_refused),
		cmocka_unit_test(shared_and_exclusive_rules),
		cmocka_unit_test(not_the_owner),
		cmocka_unit_test(leases_disabled),
		cmocka_unit_test(verify_mismatch_after_punch_by_earlier_opener),
		cmocka_unit_test(verify_at_break_reports_mismatch),
		cmocka_unit_test(fork_child_is_inert),
		cmocka_unit_test(fork_during_release),
		cmocka_unit_test(second_seal_of_one_open_file_refused),
		cmocka_unit_test(seals_without_kcmp),
		cmocka_unit_test(library_fds_are_cloexec),
		cmocka_unit_test(context_settings),
		cmocka_unit_test(signal_fixed_once_notifier_runs),
		cmocka_unit_test(backend_override),
	};

	return cmocka_run_group_tests(tests, fx_group_ext4_setup,
				      fx_group_ext4_teardown);
}
