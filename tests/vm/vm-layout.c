// SPDX-License-Identifier: LGPL-2.1-or-later
/*
 * The layout seal backend, inside the qemu guest on the patched kernel, on
 * fsdax xfs and ext4, through the public API:
 *
 *   - an exclusive seal makes truncate, hole punch and O_TRUNC fail with
 *     ETXTBSY at once, for everyone, and no open or write breaks it;
 *   - a breakable (shared) seal ignores opens and writes, and a truncate
 *     recalls it: released, or revoked by the library at the deadline, the
 *     truncate proceeds;
 *   - a sealed DAX mapping registers pinned (IMM_MR_PINNED_SEALED, and
 *     IMM_MR_AUTO chooses it); a loopback RDMA WRITE lands in the file;
 *     with the MR live a truncate fails and the data stays; a holder
 *     killed with a live MR lets the truncate through once reaped;
 *   - a raw long-term pin of a DAX mapping is refused without a seal, and
 *     with a seal held by another open of the file.
 *
 * Skips (exit 77) where the context does not get the layout backend.
 *
 *   vm-layout              the cmocka suite
 *   vm-layout hold FILE    (internal) seal, map and register FILE, print
 *                          "ready", wait to be killed
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <syslog.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include <libimmutable/verbs.h>

#include "rdma-loop.h"

#define KiB 1024u
#define MiB (1024u * KiB)
#define FILE_SIZE (2 * MiB)
#define IO (64 * KiB)
#define RW (IBV_ACCESS_LOCAL_WRITE | IBV_ACCESS_REMOTE_WRITE | \
	    IBV_ACCESS_REMOTE_READ)

static const char *const fsdax[] = { "/mnt/pmem-xfs", "/mnt/pmem-ext4" };

static struct rdma_loop L;
static unsigned char *local;	/* the "remote" side's buffer */
static struct ibv_mr *local_mr;
static char logbuf[2048];
static pthread_mutex_t log_lock = PTHREAD_MUTEX_INITIALIZER;

/* The notifier logs from its own thread: keep the last line whole. */
static void log_fn(void *data, int priority, const char *file, int line,
		   const char *fn, const char *format, va_list args)
{
	char line_buf[sizeof(logbuf)];

	(void)data; (void)file; (void)line; (void)fn;
	vsnprintf(line_buf, sizeof(line_buf), format, args);
	pthread_mutex_lock(&log_lock);
	memcpy(logbuf, line_buf, sizeof(logbuf));
	pthread_mutex_unlock(&log_lock);
	if (priority <= LOG_WARNING)
		fprintf(stderr, "  log: %s\n", line_buf);
}

static bool logged(const char *needle)
{
	bool r;

	pthread_mutex_lock(&log_lock);
	r = strstr(logbuf, needle) != NULL;
	pthread_mutex_unlock(&log_lock);
	return r;
}

static double now(void)
{
	struct timespec t;

	clock_gettime(CLOCK_MONOTONIC, &t);
	return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

static void fill(unsigned char *p, size_t n, unsigned seed)
{
	for (size_t i = 0; i < n; i++)
		p[i] = (unsigned char)(seed * 31 + i * 13 + (i >> 12));
}

static void make_file(const char *dir, const char *name, char *path,
		      unsigned seed)
{
	unsigned char buf[4096];
	int fd;

	snprintf(path, PATH_MAX, "%s/%s", dir, name);
	unlink(path);
	fd = open(path, O_CREAT | O_RDWR | O_CLOEXEC, 0644);
	assert_true(fd >= 0);
	for (unsigned off = 0; off < FILE_SIZE; off += sizeof(buf)) {
		fill(buf, sizeof(buf), seed + off / 4096);
		assert_int_equal(pwrite(fd, buf, sizeof(buf), off), sizeof(buf));
	}
	assert_int_equal(fsync(fd), 0);
	close(fd);
}

/* The file still holds what make_file() wrote, at its full size. */
static void assert_intact(const char *path, unsigned seed)
{
	unsigned char *want = malloc(4096), *got = malloc(4096);
	struct stat st;
	int fd = open(path, O_RDONLY | O_CLOEXEC);

	assert_true(fd >= 0);
	assert_int_equal(fstat(fd, &st), 0);
	assert_int_equal(st.st_size, FILE_SIZE);
	for (unsigned off = 0; off < FILE_SIZE; off += 4096) {
		fill(want, 4096, seed + off / 4096);
		assert_int_equal(pread(fd, got, 4096, off), 4096);
		assert_memory_equal(got, want, 4096);
	}
	close(fd);
	free(want);
	free(got);
}

static off_t file_size(const char *path)
{
	struct stat st;

	assert_int_equal(stat(path, &st), 0);
	return st.st_size;
}

/* ---------------------------------------------- layout changes, elsewhere */

enum change { TRUNCATE, PUNCH, OPEN_TRUNC, OPEN_WRITE, APPEND, PREALLOC };

static const char *change_name(enum change c)
{
	static const char *const names[] = {
		"truncate(2)", "fallocate punch", "open O_TRUNC",
		"open O_RDWR + pwrite", "O_APPEND write", "fallocate KEEP_SIZE",
	};
	return names[c];
}

struct outcome {
	int err;	/* 0 or the errno of the change */
	double secs;	/* how long the call took */
};

static int do_change(const char *path, enum change c)
{
	char b[4096];
	int fd, e, r = 0;

	memset(b, 'W', sizeof(b));
	switch (c) {
	case TRUNCATE:	/* by path: waits for a breakable seal, as it must */
		return truncate(path, 0);
	case OPEN_TRUNC:
		fd = open(path, O_RDWR | O_TRUNC | O_CLOEXEC);
		break;
	case APPEND:
		fd = open(path, O_WRONLY | O_APPEND | O_CLOEXEC);
		break;
	default:
		fd = open(path, O_RDWR | O_CLOEXEC);
	}
	if (fd < 0)
		return -1;
	if (c == PUNCH)
		r = fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
			      0, 64 * KiB);
	else if (c == OPEN_WRITE)
		r = pwrite(fd, b, sizeof(b), 4096) == (ssize_t)sizeof(b) ? 0 : -1;
	else if (c == APPEND)
		r = write(fd, b, sizeof(b)) == (ssize_t)sizeof(b) ? 0 : -1;
	else if (c == PREALLOC)
		r = fallocate(fd, FALLOC_FL_KEEP_SIZE, FILE_SIZE, MiB);
	if (r == 0)
		r = fsync(fd);
	e = r < 0 ? errno : 0;
	close(fd);
	errno = e;
	return r;
}

struct changer {
	pid_t pid;
	int fd;		/* reads the outcome */
};

/* The change in a child process: another process than the holder. */
static struct changer change_start(const char *path, enum change c)
{
	struct changer ch;
	int p[2];

	assert_int_equal(pipe2(p, O_CLOEXEC), 0);
	ch.pid = fork();
	assert_true(ch.pid >= 0);
	if (ch.pid == 0) {
		struct outcome o;
		double t0 = now();

		o.err = do_change(path, c) < 0 ? errno : 0;
		o.secs = now() - t0;
		_exit(write(p[1], &o, sizeof(o)) == sizeof(o) ? 0 : 1);
	}
	close(p[1]);
	ch.fd = p[0];
	return ch;
}

static struct outcome change_wait(struct changer ch)
{
	struct outcome o = { .err = -1 };
	int status;

	assert_int_equal(read(ch.fd, &o, sizeof(o)), sizeof(o));
	close(ch.fd);
	assert_int_equal(waitpid(ch.pid, &status, 0), ch.pid);
	assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
	return o;
}

static struct outcome change(const char *path, enum change c)
{
	struct outcome o = change_wait(change_start(path, c));

	printf("    %-22s -> %s after %.3f s\n", change_name(c),
	       o.err ? strerror(o.err) : "ok", o.secs);
	return o;
}

/* ---------------------------------------------------------- the library */

struct events {
	int n[8];		/* by type */
	bool release_on_recall;
};

static void on_event(struct imm_event *ev, void *data)
{
	struct events *e = data;
	int t = imm_event_get_type(ev);

	e->n[t & 7]++;
	if (t == IMM_EVENT_RECALL && e->release_on_recall)
		assert_int_equal(imm_release(imm_event_get_handle(ev)), 0);
}

struct sealed {
	struct imm_ctx *ctx;
	struct imm_handle *h;
	struct imm_map *m;
	struct events ev;
	char path[PATH_MAX];
	unsigned seed;
};

static void seal_file(struct sealed *s, const char *dir, const char *name,
		      uint32_t kind, unsigned seed)
{
	memset(s, 0, sizeof(*s));
	s->seed = seed;
	make_file(dir, name, s->path, seed);
	assert_int_equal(imm_ctx_new(&s->ctx), 0);
	imm_ctx_set_log_fn(s->ctx, log_fn, NULL);
	imm_ctx_set_log_priority(s->ctx, LOG_INFO);
	assert_int_equal(imm_ctx_get_backend(s->ctx), IMM_BACKEND_LAYOUT);
	assert_int_equal(imm_ctx_set_event_fn(s->ctx, on_event, &s->ev, 0), 0);
	/* a writable handle: a breakable layout seal allows it */
	assert_int_equal(imm_handle_open(s->ctx, s->path, IMM_RDWR, &s->h), 0);
	assert_int_equal(imm_handle_get_backend(s->h), IMM_BACKEND_LAYOUT);
	assert_int_equal(imm_seal(s->h, 0, FILE_SIZE, kind, NULL), 0);
}

static void seal_map(struct sealed *s, const char *dir, const char *name,
		     uint32_t kind, unsigned seed)
{
	seal_file(s, dir, name, kind, seed);
	assert_int_equal(imm_map(s->h, 0, FILE_SIZE, IMM_MAP_SYNC |
				 IMM_MAP_POPULATE, &s->m), 0);
}

static void done(struct sealed *s)
{
	if (s->m)
		assert_int_equal(imm_unmap(s->m), 0);
	assert_int_equal(imm_handle_close(s->h), 0);
	imm_ctx_unref(s->ctx);
}

/* Dispatch events for about ms milliseconds. */
static void dispatch_for(struct sealed *s, int ms)
{
	double end = now() + ms / 1000.0;

	while (now() < end) {
		struct pollfd p = { imm_ctx_get_fd(s->ctx), POLLIN, 0 };

		if (poll(&p, 1, 20) > 0)
			assert_true(imm_ctx_dispatch(s->ctx) >= 0);
	}
}

/* Dispatch until the changer reports, within limit seconds. */
static struct outcome dispatch_until_done(struct sealed *s, struct changer ch,
					  enum change c, double limit)
{
	double end = now() + limit;
	struct outcome o;

	for (;;) {
		struct pollfd p[2] = { { imm_ctx_get_fd(s->ctx), POLLIN, 0 },
				       { ch.fd, POLLIN, 0 } };

		assert_true(now() < end);
		if (poll(p, 2, 50) < 0)
			continue;
		if (p[0].revents)
			assert_true(imm_ctx_dispatch(s->ctx) >= 0);
		if (p[1].revents)
			break;
	}
	o = change_wait(ch);
	printf("    %-22s -> %s after %.3f s\n", change_name(c),
	       o.err ? strerror(o.err) : "ok", o.secs);
	return o;
}

static void set_lease_break_time(int seconds)
{
	FILE *f = fopen("/proc/sys/fs/lease-break-time", "we");

	assert_non_null(f);
	fprintf(f, "%d\n", seconds);
	assert_int_equal(fclose(f), 0);
}

/* ---------------------------------------------------------------- tests */

/*
 * Which backend seals a file where: layout on the fsdax filesystems (the
 * patch's targets); elsewhere whatever the kernel takes, leases otherwise.
 */
static void backend_per_filesystem(void **state)
{
	static const char *const dirs[] = {
		"/mnt/pmem-xfs", "/mnt/pmem-ext4", "/mnt/plain", "/tmp",
	};
	struct imm_ctx *ctx;

	(void)state;
	assert_int_equal(imm_ctx_new(&ctx), 0);
	imm_ctx_set_log_fn(ctx, log_fn, NULL);
	for (size_t i = 0; i < sizeof(dirs) / sizeof(dirs[0]); i++) {
		char path[PATH_MAX];
		struct imm_handle *h;
		int b;

		make_file(dirs[i], "backend", path, 1);
		assert_int_equal(imm_handle_open(ctx, path, IMM_RDONLY, &h), 0);
		b = imm_handle_get_backend(h);
		printf("  %-16s %s\n", dirs[i], b < 0 ? strerror(-b) :
		       imm_backend_name(b));
		if (i < 2)
			assert_int_equal(b, IMM_BACKEND_LAYOUT);
		else
			assert_true(b == IMM_BACKEND_LAYOUT || b == IMM_BACKEND_LEASE);
		assert_int_equal(imm_handle_close(h), 0);
		unlink(path);
	}
	imm_ctx_unref(ctx);
}

/*
 * Exclusive: every layout change fails with ETXTBSY at once -- the holder's
 * own included -- and is only reported to the holder: no recall, no
 * revoke.  Opens and writes elsewhere are no layout change at all.
 */
static void exclusive_refuses(void **state)
{
	(void)state;
	for (size_t i = 0; i < 2; i++) {
		static const enum change refused[] = { TRUNCATE, PUNCH, OPEN_TRUNC };
		struct sealed s;

		printf("  %s\n", fsdax[i]);
		seal_file(&s, fsdax[i], "excl", IMM_SEAL_EXCLUSIVE, 10 + (unsigned)i);
		for (size_t c = 0; c < 3; c++) {
			struct outcome o = change(s.path, refused[c]);

			assert_int_equal(o.err, ETXTBSY);
			assert_true(o.secs < 1.0);
		}
		assert_int_equal(ftruncate(imm_handle_get_fd(s.h), 0), -1);
		assert_int_equal(errno, ETXTBSY);
		/* the kernel told the holder; the library logs it, and keeps
		 * the seal */
		for (int t = 0; t < 50 && !logged("ETXTBSY"); t++)
			dispatch_for(&s, 20);
		assert_true(logged("exclusive layout seal"));
		dispatch_for(&s, 200);
		assert_int_equal(s.ev.n[IMM_EVENT_RECALL], 0);
		assert_int_equal(s.ev.n[IMM_EVENT_REVOKED], 0);
		assert_int_equal(imm_handle_get_state(s.h), IMM_STATE_SEALED);
		assert_intact(s.path, s.seed);
		assert_int_equal(imm_verify(s.h), 0);

		/* unlike a write lease: another process opens the file for
		 * writing and writes, and the seal stays */
		assert_int_equal(change(s.path, OPEN_WRITE).err, 0);
		dispatch_for(&s, 300);
		assert_int_equal(s.ev.n[IMM_EVENT_RECALL], 0);
		assert_int_equal(imm_handle_get_state(s.h), IMM_STATE_SEALED);
		assert_int_equal(imm_verify(s.h), 0);

		/* released, the same truncate goes through */
		assert_int_equal(imm_release(s.h), 0);
		assert_int_equal(change(s.path, TRUNCATE).err, 0);
		assert_int_equal(file_size(s.path), 0);
		done(&s);
	}
}

/*
 * A truncate elsewhere recalls the breakable seal; once the holder has
 * released, or the library has revoked the seal, it proceeds.
 */
static void truncate_recalls(struct sealed *s, bool revoked)
{
	struct outcome o;

	o = dispatch_until_done(s, change_start(s->path, TRUNCATE), TRUNCATE, 30);
	assert_int_equal(o.err, 0);
	/* the seal goes before the notifier queues the REVOKED event: the
	 * truncate may finish first */
	for (int i = 0; i < 250 && s->ev.n[IMM_EVENT_REVOKED] < (int)revoked; i++)
		dispatch_for(s, 20);
	assert_int_equal(s->ev.n[IMM_EVENT_RECALL], 1);
	assert_int_equal(s->ev.n[IMM_EVENT_REVOKED], revoked);
	assert_int_equal(imm_handle_get_state(s->h),
			 revoked ? IMM_STATE_REVOKED : IMM_STATE_OPEN);
	assert_int_equal(file_size(s->path), 0);
}

/*
 * Breakable: opens, writes, appends and preallocation beyond EOF pass and
 * break nothing; a truncate recalls the seal, the holder releases in its
 * callback, and the truncate proceeds.
 */
static void breakable_recall(void **state)
{
	(void)state;
	for (size_t i = 0; i < 2; i++) {
		static const enum change harmless[] = { OPEN_WRITE, APPEND, PREALLOC };
		struct sealed s;

		printf("  %s\n", fsdax[i]);
		seal_file(&s, fsdax[i], "breakable", IMM_SEAL_SHARED, 20 + (unsigned)i);
		for (size_t c = 0; c < 3; c++)
			assert_int_equal(change(s.path, harmless[c]).err, 0);
		dispatch_for(&s, 300);
		assert_int_equal(s.ev.n[IMM_EVENT_RECALL], 0);
		assert_int_equal(imm_handle_get_state(s.h), IMM_STATE_SEALED);

		s.ev.release_on_recall = true;
		truncate_recalls(&s, false);
		done(&s);
	}
}

/* RDMA WRITE a fresh pattern at file offset off through mr, check pread. */
static void rdma_write_lands(struct sealed *s, struct imm_mr *mr, uint64_t off,
			     unsigned seed)
{
	unsigned char *file = malloc(IO);
	uint64_t raddr = (uintptr_t)imm_mr_get_addr(mr) + (off - imm_mr_get_offset(mr));

	fill(local, IO, seed);
	assert_int_equal(rdma_loop_op(&L, IBV_WR_RDMA_WRITE, local, local_mr->lkey,
				      IO, raddr, imm_mr_get_rkey(mr)),
			 IBV_WC_SUCCESS);
	assert_int_equal(pread(imm_handle_get_fd(s->h), file, IO, (off_t)off), IO);
	assert_memory_equal(file, local, IO);
	free(file);
}

static void pinned_sealed(void **state)
{
	(void)state;
	for (size_t i = 0; i < 2; i++) {
		unsigned char *before = malloc(FILE_SIZE), *after = malloc(FILE_SIZE);
		struct imm_mr *mr;
		struct sealed s;

		printf("  %s\n", fsdax[i]);
		seal_map(&s, fsdax[i], "pinned", IMM_SEAL_EXCLUSIVE, 30 + (unsigned)i);
		assert_int_equal(imm_reg_mr(s.m, L.pd, 0, FILE_SIZE, RW,
					    IMM_MR_PINNED_SEALED, &mr), 0);
		assert_int_equal(imm_mr_get_mode(mr), IMM_MR_PINNED_SEALED);
		rdma_write_lands(&s, mr, 128 * KiB, 1);
		assert_int_equal(imm_dereg_mr(mr), 0);

		assert_int_equal(imm_reg_mr(s.m, L.pd, 0, FILE_SIZE, RW,
					    IMM_MR_AUTO, &mr), 0);
		printf("    IMM_MR_AUTO -> %s\n", imm_mr_mode_name(imm_mr_get_mode(mr)));
		assert_int_equal(imm_mr_get_mode(mr), IMM_MR_PINNED_SEALED);
		rdma_write_lands(&s, mr, 512 * KiB, 2);

		/* with the MR live, a truncate elsewhere fails, data intact */
		assert_int_equal(pread(imm_handle_get_fd(s.h), before, FILE_SIZE, 0),
				 FILE_SIZE);
		assert_int_equal(change(s.path, TRUNCATE).err, ETXTBSY);
		assert_int_equal(change(s.path, PUNCH).err, ETXTBSY);
		assert_int_equal(pread(imm_handle_get_fd(s.h), after, FILE_SIZE, 0),
				 FILE_SIZE);
		assert_memory_equal(before, after, FILE_SIZE);
		rdma_write_lands(&s, mr, 0, 3);

		/* the release deregisters before it unseals: no EBUSY */
		assert_int_equal(imm_release(s.h), 0);
		assert_null(imm_mr_get_ibv_mr(mr));
		assert_int_equal(imm_dereg_mr(mr), 0);
		assert_int_equal(change(s.path, TRUNCATE).err, 0);
		done(&s);
		free(before);
		free(after);
	}
}

/*
 * A breakable seal under a live pinned MR whose holder ignores the recall:
 * the library revokes before the kernel's deadline -- MR, mapping, seal --
 * and the truncate proceeds; the old rkey is dead.
 */
static void breakable_revoke_with_mr(void **state)
{
	(void)state;
	set_lease_break_time(3);
	for (size_t i = 0; i < 2; i++) {
		struct imm_mr *mr;
		struct sealed s;
		uint64_t raddr;
		uint32_t rkey;
		int st;

		printf("  %s\n", fsdax[i]);
		seal_map(&s, fsdax[i], "revoke", IMM_SEAL_SHARED, 40 + (unsigned)i);
		assert_int_equal(imm_ctx_set_revoke_margin(s.ctx, 1000), 0);
		assert_int_equal(imm_reg_mr(s.m, L.pd, 0, FILE_SIZE, RW,
					    IMM_MR_AUTO, &mr), 0);
		assert_int_equal(imm_mr_get_mode(mr), IMM_MR_PINNED_SEALED);
		rdma_write_lands(&s, mr, 0, 4);
		raddr = (uintptr_t)imm_mr_get_addr(mr);
		rkey = imm_mr_get_rkey(mr);

		truncate_recalls(&s, true);
		assert_null(imm_mr_get_ibv_mr(mr));

		fill(local, IO, 99);
		st = rdma_loop_op(&L, IBV_WR_RDMA_WRITE, local, local_mr->lkey, IO,
				  raddr, rkey);
		printf("    RDMA WRITE with the revoked rkey: %s\n",
		       ibv_wc_status_str((enum ibv_wc_status)st));
		assert_int_equal(st, IBV_WC_REM_ACCESS_ERR);
		assert_int_equal(rdma_loop_reconnect(&L), 0);
		assert_int_equal(file_size(s.path), 0);
		assert_int_equal(imm_dereg_mr(mr), 0);
		done(&s);
	}
	set_lease_break_time(45);
}

/* The "hold" mode: a holder process with a live pinned MR. */
static int hold(const char *path)
{
	struct rdma_loop l;
	struct imm_ctx *ctx;
	struct imm_handle *h;
	struct imm_map *m;
	struct imm_mr *mr;

	if (rdma_loop_open(&l, "rxe0") < 0 || imm_ctx_new(&ctx) < 0 ||
	    imm_handle_open(ctx, path, IMM_RDWR, &h) < 0 ||
	    imm_seal(h, 0, FILE_SIZE, IMM_SEAL_EXCLUSIVE, NULL) < 0 ||
	    imm_map(h, 0, FILE_SIZE, IMM_MAP_SYNC | IMM_MAP_POPULATE, &m) < 0 ||
	    imm_reg_mr(m, l.pd, 0, FILE_SIZE, RW, IMM_MR_PINNED_SEALED, &mr) < 0)
		return 1;
	printf("ready %s\n", imm_mr_mode_name(imm_mr_get_mode(mr)));
	fflush(stdout);
	for (;;)
		pause();
}

static pid_t holder_start(const char *path)
{
	char line[64] = "";
	FILE *f;
	pid_t pid;
	int p[2];

	assert_int_equal(pipe2(p, O_CLOEXEC), 0);
	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		/* a fresh process image: no verbs state shared with ours */
		dup2(p[1], STDOUT_FILENO);
		execl("/proc/self/exe", "vm-layout", "hold", path, (char *)NULL);
		_exit(127);
	}
	close(p[1]);
	f = fdopen(p[0], "r");
	assert_non_null(fgets(line, sizeof(line), f));
	fclose(f);
	printf("    holder %d: %s", (int)pid, line);
	assert_string_equal(line, "ready pinned-sealed\n");
	return pid;
}

static void holder_killed(void **state)
{
	(void)state;
	for (size_t i = 0; i < 2; i++) {
		char path[PATH_MAX];
		struct outcome o;
		double t0;
		pid_t pid;
		int st;

		printf("  %s\n", fsdax[i]);
		make_file(fsdax[i], "killed", path, 50 + (unsigned)i);
		pid = holder_start(path);
		assert_int_equal(change(path, TRUNCATE).err, ETXTBSY);
		assert_intact(path, 50 + (unsigned)i);
		assert_int_equal(kill(pid, SIGKILL), 0);
		assert_int_equal(waitpid(pid, &st, 0), pid);
		assert_true(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL);
		/* the seal went with the holder's last reference to its open
		 * file; allow the kernel a moment for deferred releases */
		t0 = now();
		do {
			o = change(path, TRUNCATE);
		} while (o.err == ETXTBSY && now() - t0 < 5 && !usleep(100000));
		printf("    truncate proceeded %.3f s after the holder was reaped\n",
		       now() - t0);
		assert_int_equal(o.err, 0);
		assert_int_equal(file_size(path), 0);
	}
}

/* A raw long-term pin of a DAX mapping of path's fd, as an application
 * would do without the library: 0 or the errno of ibv_reg_mr. */
static int raw_pin(int fd, bool keep, struct ibv_mr **ret, void **ret_addr)
{
	void *a = mmap(NULL, FILE_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	struct ibv_mr *mr;
	int e = 0;

	assert_true(a != MAP_FAILED);
	errno = 0;
	mr = ibv_reg_mr(L.pd, a, FILE_SIZE, RW);
	if (!mr)
		e = errno ? errno : EIO;
	if (mr && keep) {
		*ret = mr;
		*ret_addr = a;
		return 0;
	}
	if (mr)
		ibv_dereg_mr(mr);
	munmap(a, FILE_SIZE);
	return e;
}

static void raw_pins(void **state)
{
	(void)state;
	for (size_t i = 0; i < 2; i++) {
		struct ibv_mr *mr;
		struct sealed s;
		void *addr;
		int fd, e;

		printf("  %s\n", fsdax[i]);
		seal_file(&s, fsdax[i], "raw", IMM_SEAL_EXCLUSIVE, 60 + (unsigned)i);
		assert_int_equal(imm_release(s.h), 0);

		/* no seal: refused */
		fd = open(s.path, O_RDWR | O_CLOEXEC);
		assert_true(fd >= 0);
		e = raw_pin(fd, false, NULL, NULL);
		printf("    no seal: %s\n", e ? strerror(e) : "pinned");
		assert_int_equal(e, EOPNOTSUPP);

		/* sealed through another open of the file: still refused */
		assert_int_equal(imm_seal(s.h, 0, FILE_SIZE, IMM_SEAL_EXCLUSIVE,
					  NULL), 0);
		e = raw_pin(fd, false, NULL, NULL);
		printf("    sealed by another open: %s\n", e ? strerror(e) : "pinned");
		assert_int_equal(e, EOPNOTSUPP);
		close(fd);

		/* the sealed open itself (a dup shares it): allowed */
		fd = dup(imm_handle_get_fd(s.h));
		assert_true(fd >= 0);
		e = raw_pin(fd, true, &mr, &addr);
		printf("    the sealed open: %s\n", e ? strerror(e) : "pinned");
		assert_int_equal(e, 0);
		close(fd);
		/* a pin the library does not know keeps the kernel's seal:
		 * the release says so */
		assert_int_equal(imm_release(s.h), -EBUSY);
		assert_true(logged("outside the library"));
		assert_int_equal(change(s.path, TRUNCATE).err, ETXTBSY);
		assert_int_equal(ibv_dereg_mr(mr), 0);
		munmap(addr, FILE_SIZE);
		done(&s);	/* the last close drops the kernel's seal */
		assert_int_equal(change(s.path, TRUNCATE).err, 0);
	}
}

static int group_setup(void **state)
{
	(void)state;
	if (rdma_loop_open(&L, "rxe0") < 0)
		return -1;
	return rdma_loop_buffer(&L, 2 * IO, (void **)&local, &local_mr);
}

static int group_teardown(void **state)
{
	(void)state;
	ibv_dereg_mr(local_mr);
	rdma_loop_close(&L);
	free(local);
	return 0;
}

/* 0: the layout backend is there; else why not, for the SKIP line. */
static const char *no_layout_backend(void)
{
	struct imm_ctx *ctx;
	int b;

	if (imm_ctx_new(&ctx) < 0)
		return "no seal backend at all";
	b = imm_ctx_get_backend(ctx);
	imm_ctx_unref(ctx);
	return b == IMM_BACKEND_LAYOUT ? NULL :
	       "the kernel has no layout seals (F_GETLAYOUT, "
	       "/proc/sys/fs/layout-seal-version): not the patched kernel";
}

int main(int argc, char **argv)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(backend_per_filesystem),
		cmocka_unit_test(exclusive_refuses),
		cmocka_unit_test(breakable_recall),
		cmocka_unit_test(pinned_sealed),
		cmocka_unit_test(breakable_revoke_with_mr),
		cmocka_unit_test(holder_killed),
		cmocka_unit_test(raw_pins),
	};
	const char *why;

	if (argc == 3 && !strcmp(argv[1], "hold"))
		return hold(argv[2]);
	why = no_layout_backend();
	if (why) {
		printf("SKIP: vm-layout: %s\n", why);
		return 77;
	}
	setvbuf(stdout, NULL, _IOLBF, 0);
	return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
