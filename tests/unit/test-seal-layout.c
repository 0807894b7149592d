// SPDX-License-Identifier: LGPL-2.1-or-later
/*
 * The layout seal backend against a fake kernel.  The host's kernel has no
 * F_SETLAYOUT, so fcntl() and open() are wrapped (-Wl,--wrap): F_GETLAYOUT
 * and F_SETLAYOUT act on a table here, /proc/sys/fs/layout-seal-version
 * opens a file here; every other call, and the files, the notifier thread
 * and its signals, are real.  What is checked is the library's side of the
 * contract: the probe, the argument mapping, the signal aimed before the
 * seal, the errno mapping and its log lines, the backend-aware rules of
 * imm_seal(), and the notifier's reading of a signal under each kind of
 * seal.  The kernel's side is tests/vm/vm-layout.c, in the patched guest.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <syslog.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "layout-uapi.h"
#include "private.h"

#define MAX_FD 4096
#define FILE_SIZE (256 * 1024)

/* The fake kernel: off (unpatched: EINVAL), or a seal state per fd. */
static struct {
	pthread_mutex_t lock;
	bool patched;
	bool fs_has_seals;		/* else F_SETLAYOUT says EINVAL */
	const char *version;		/* what the sysctl reads */
	int state[MAX_FD];		/* F_LAYOUT_* */
	bool aimed[MAX_FD];		/* F_SETOWN_EX and F_SETSIG seen */
	int setlayout_calls;
	int last_arg;
	bool aimed_at_seal;		/* the signal was aimed first */
	int fail_errno;			/* next F_SETLAYOUT fails with it */
} fk = { .lock = PTHREAD_MUTEX_INITIALIZER };

static char version_path[64];

int __real_open(const char *path, int flags, ...);
int __wrap_open(const char *path, int flags, ...);
int __wrap_open(const char *path, int flags, ...)
{
	va_list ap;
	mode_t mode;

	va_start(ap, flags);
	mode = (flags & (O_CREAT | O_TMPFILE)) ? va_arg(ap, mode_t) : 0;
	va_end(ap);
	if (!strcmp(path, LAYOUT_SEAL_VERSION_PATH)) {
		if (!fk.patched) {
			errno = ENOENT;
			return -1;
		}
		path = version_path;
	}
	return __real_open(path, flags, mode);
}

static int fake_setlayout(int fd, int arg)
{
	fk.setlayout_calls++;
	fk.last_arg = arg;
	if (arg != F_LAYOUT_UNSEAL && !fk.fs_has_seals) {
		errno = EINVAL;
		return -1;
	}
	if (fk.fail_errno) {
		errno = fk.fail_errno;
		fk.fail_errno = 0;
		return -1;
	}
	if (arg != F_LAYOUT_UNSEAL)
		fk.aimed_at_seal = fk.aimed[fd];
	fk.state[fd] = arg;
	return 0;
}

int __real_fcntl(int fd, int cmd, ...);
int __wrap_fcntl(int fd, int cmd, ...);
int __wrap_fcntl(int fd, int cmd, ...)
{
	va_list ap;
	void *arg;
	int r;

	va_start(ap, cmd);
	arg = va_arg(ap, void *);	/* an int or a pointer: one slot */
	va_end(ap);
	if (fd < 0 || fd >= MAX_FD || (cmd != F_GETLAYOUT && cmd != F_SETLAYOUT)) {
		r = __real_fcntl(fd, cmd, arg);
		if (r == 0 && fd >= 0 && fd < MAX_FD &&
		    (cmd == F_SETOWN_EX || cmd == F_SETSIG)) {
			pthread_mutex_lock(&fk.lock);
			fk.aimed[fd] = true;
			pthread_mutex_unlock(&fk.lock);
		}
		return r;
	}
	pthread_mutex_lock(&fk.lock);
	if (!fk.patched) {
		errno = EINVAL;
		r = -1;
	} else if (cmd == F_GETLAYOUT) {
		r = fk.state[fd];
	} else {
		r = fake_setlayout(fd, (int)(intptr_t)arg);
	}
	pthread_mutex_unlock(&fk.lock);
	return r;
}

static void fake_kernel(bool patched, const char *version)
{
	FILE *f;

	pthread_mutex_lock(&fk.lock);
	fk.patched = patched;
	fk.fs_has_seals = true;
	fk.version = version;
	memset(fk.state, 0, sizeof(fk.state));
	memset(fk.aimed, 0, sizeof(fk.aimed));
	fk.setlayout_calls = fk.last_arg = fk.fail_errno = 0;
	fk.aimed_at_seal = false;
	pthread_mutex_unlock(&fk.lock);
	f = fopen(version_path, "we");
	assert_non_null(f);
	fprintf(f, "%s\n", version);
	assert_int_equal(fclose(f), 0);
}

static void set_state(int fd, int state)
{
	pthread_mutex_lock(&fk.lock);
	fk.state[fd] = state;
	pthread_mutex_unlock(&fk.lock);
}

/* ------------------------------------------------------------ fixture */

static char last_log[1024];
static int last_priority;
static pthread_mutex_t log_lock = PTHREAD_MUTEX_INITIALIZER;

static void log_fn(void *data, int priority, const char *file, int line,
		   const char *fn, const char *format, va_list args)
{
	(void)data; (void)file; (void)line; (void)fn;
	pthread_mutex_lock(&log_lock);
	vsnprintf(last_log, sizeof(last_log), format, args);
	last_priority = priority;
	pthread_mutex_unlock(&log_lock);
}

static bool logged(const char *needle)
{
	bool r;

	pthread_mutex_lock(&log_lock);
	r = strstr(last_log, needle) != NULL;
	pthread_mutex_unlock(&log_lock);
	return r;
}

static struct imm_ctx *ctx_new(void)
{
	struct imm_ctx *ctx;

	assert_int_equal(imm_ctx_new(&ctx), 0);
	imm_ctx_set_log_fn(ctx, log_fn, NULL);
	imm_ctx_set_log_priority(ctx, LOG_INFO);
	return ctx;
}

static char file_path[PATH_MAX];

/* A fully written file, so that a seal has nothing to prepare. */
static int group_setup(void **state)
{
	const char *dir = getenv("TMPDIR") ? getenv("TMPDIR") : "/var/tmp";
	char buf[4096];
	int fd;

	(void)state;
	snprintf(version_path, sizeof(version_path), "%s/imm-lsv-%d", dir,
		 (int)getpid());
	snprintf(file_path, sizeof(file_path), "%s/imm-layout-%d", dir,
		 (int)getpid());
	fd = open(file_path, O_CREAT | O_TRUNC | O_RDWR | O_CLOEXEC, 0644);
	if (fd < 0)
		return -1;
	memset(buf, 'x', sizeof(buf));
	for (int off = 0; off < FILE_SIZE; off += (int)sizeof(buf))
		if (pwrite(fd, buf, sizeof(buf), off) != (ssize_t)sizeof(buf))
			return -1;
	fsync(fd);
	close(fd);
	return 0;
}

static int group_teardown(void **state)
{
	(void)state;
	unlink(file_path);
	unlink(version_path);
	return 0;
}

/* -------------------------------------------------------------- tests */

static void probe(void **state)
{
	struct imm_ctx *ctx = NULL;

	(void)state;
	fake_kernel(true, "1");
	ctx = ctx_new();
	assert_int_equal(imm_ctx_get_backend(ctx), IMM_BACKEND_LAYOUT);
	imm_ctx_unref(ctx);

	/* lease still wins where asked for */
	setenv("LIBIMMUTABLE_BACKEND", "lease", 1);
	ctx = ctx_new();
	assert_int_equal(imm_ctx_get_backend(ctx), IMM_BACKEND_LEASE);
	imm_ctx_unref(ctx);
	unsetenv("LIBIMMUTABLE_BACKEND");

	/* a version this library does not speak: leases */
	fake_kernel(true, "2");
	ctx = ctx_new();
	assert_int_equal(imm_ctx_get_backend(ctx), IMM_BACKEND_LEASE);
	imm_ctx_unref(ctx);

	/* unpatched: leases; forcing layout fails and says why */
	fake_kernel(false, "1");
	ctx = ctx_new();
	assert_int_equal(imm_ctx_get_backend(ctx), IMM_BACKEND_LEASE);
	imm_ctx_unref(ctx);
	setenv("LIBIMMUTABLE_BACKEND", "layout", 1);
	ctx = NULL;
	assert_int_equal(imm_ctx_new(&ctx), -EOPNOTSUPP);
	assert_null(ctx);
	unsetenv("LIBIMMUTABLE_BACKEND");
}

static struct imm_handle *open_handle(struct imm_ctx *ctx, uint32_t mode)
{
	struct imm_handle *h;

	assert_int_equal(imm_handle_open(ctx, file_path, mode, &h), 0);
	return h;
}

/* Exclusive maps to F_LAYOUT_SEAL_EXCL, shared to F_LAYOUT_SEAL; neither
 * needs what a lease needs (the only open; no writer anywhere). */
static void seal_kinds(void **state)
{
	struct imm_handle *h;
	struct imm_ctx *ctx;
	int other;

	(void)state;
	fake_kernel(true, "1");
	ctx = ctx_new();
	other = open(file_path, O_RDWR | O_CLOEXEC);	/* a lease would EAGAIN */
	assert_true(other >= 0);
	h = open_handle(ctx, IMM_RDWR);
	assert_int_equal(imm_seal(h, 0, FILE_SIZE, IMM_SEAL_EXCLUSIVE, NULL), 0);
	assert_int_equal(fk.last_arg, F_LAYOUT_SEAL_EXCL);
	assert_true(fk.aimed_at_seal);
	assert_int_equal(imm_handle_get_state(h), IMM_STATE_SEALED);
	assert_int_equal(imm_release(h), 0);
	assert_int_equal(fk.last_arg, F_LAYOUT_UNSEAL);

	/* a shared (breakable) seal on a writable handle, with a writer */
	assert_int_equal(imm_seal(h, 0, FILE_SIZE, IMM_SEAL_SHARED, NULL), 0);
	assert_int_equal(fk.last_arg, F_LAYOUT_SEAL);
	assert_int_equal(imm_handle_close(h), 0);
	assert_int_equal(fk.last_arg, F_LAYOUT_UNSEAL);

	/* exclusive needs a writable open: refused before the kernel is asked */
	h = open_handle(ctx, IMM_RDONLY);
	assert_int_equal(imm_handle_get_backend(h), IMM_BACKEND_LAYOUT);
	fk.setlayout_calls = 0;
	assert_int_equal(imm_seal(h, 0, FILE_SIZE, IMM_SEAL_EXCLUSIVE, NULL), -EBADF);
	assert_true(logged("IMM_RDWR"));
	assert_int_equal(fk.setlayout_calls, 0);
	/* shared on a read-only handle is fine */
	assert_int_equal(imm_seal(h, 0, FILE_SIZE, IMM_SEAL_SHARED, NULL), 0);
	assert_int_equal(fk.last_arg, F_LAYOUT_SEAL);
	assert_int_equal(imm_handle_close(h), 0);
	close(other);
	imm_ctx_unref(ctx);
}

/*
 * The kernel's errors: an errno and a line that says what to do, at error
 * level unless it is the retry a server expects to meet (a recall still
 * owed its unseal), which is not the application's error.
 */
static void seal_errors(void **state)
{
	static const struct {
		int kernel, want;
		const char *says;
		int priority;
	} e[] = {
		{ EACCES, -EACCES, "CAP_LEASE", LOG_ERR },
		{ EAGAIN, -EAGAIN, "recalling a seal", LOG_INFO },
		{ EINVAL, -EOPNOTSUPP, "refused the layout seal", LOG_ERR },
		{ EBADF, -EBADF, "open for writing", LOG_ERR },
		{ EIO, -EIO, "F_SETLAYOUT", LOG_ERR },
	};
	struct imm_handle *h;
	struct imm_ctx *ctx;

	(void)state;
	fake_kernel(true, "1");
	ctx = ctx_new();
	h = open_handle(ctx, IMM_RDWR);
	assert_int_equal(imm_handle_get_backend(h), IMM_BACKEND_LAYOUT);
	for (size_t i = 0; i < sizeof(e) / sizeof(e[0]); i++) {
		fk.fail_errno = e[i].kernel;
		assert_int_equal(imm_seal(h, 0, FILE_SIZE, IMM_SEAL_EXCLUSIVE,
					  NULL), e[i].want);
		assert_true(logged(e[i].says));
		assert_int_equal(last_priority, e[i].priority);
		assert_int_equal(imm_handle_get_state(h), IMM_STATE_OPEN);
	}
	/* a pin the library does not know keeps the kernel's seal */
	assert_int_equal(imm_seal(h, 0, FILE_SIZE, IMM_SEAL_EXCLUSIVE, NULL), 0);
	fk.fail_errno = EBUSY;
	assert_int_equal(imm_release(h), -EBUSY);
	assert_true(logged("outside the library"));
	/* ... and so does the handle's state: the release can be retried */
	assert_int_equal(imm_handle_get_state(h), IMM_STATE_SEALED);
	assert_int_equal(fk.state[imm_handle_get_fd(h)], F_LAYOUT_SEAL_EXCL);
	assert_int_equal(imm_seal(h, 0, FILE_SIZE, IMM_SEAL_EXCLUSIVE, NULL),
			 -EBUSY);
	assert_int_equal(imm_release(h), 0);
	assert_int_equal(fk.state[imm_handle_get_fd(h)], F_LAYOUT_UNSEAL);
	assert_int_equal(imm_handle_get_state(h), IMM_STATE_OPEN);
	assert_int_equal(imm_handle_close(h), 0);
	imm_ctx_unref(ctx);
}

/*
 * What the kernel would send: the seal's signal with si_fd naming it.  No
 * process may forge a kernel si_code aimed at another of its threads, and
 * the notifier leaves process-directed signals to the application: hand
 * the notifier's signal path the fd directly.
 */
static void kernel_signal(struct imm_ctx *ctx, int fd)
{
	imm_notifier_on_break_fd(ctx, fd);
}

static int count[8];

static void on_event(struct imm_event *ev, void *data)
{
	(void)data;
	count[imm_event_get_type(ev) & 7]++;
}

static void settle(struct imm_ctx *ctx, int ms)
{
	struct timespec ts = { 0, 10 * 1000 * 1000 };

	for (int i = 0; i < ms / 10; i++) {
		nanosleep(&ts, NULL);
		imm_ctx_dispatch(ctx);
	}
}

/*
 * Under an exclusive seal a signal reports a refused layout change: a log
 * line, no recall, no revoke, the seal holds.  Under a breakable one with
 * F_GETLAYOUT saying F_LAYOUT_BREAKING it is a recall.
 */
static void signals(void **state)
{
	struct imm_handle *h;
	struct imm_ctx *ctx;
	int fd;

	(void)state;
	fake_kernel(true, "1");
	ctx = ctx_new();
	memset(count, 0, sizeof(count));
	assert_int_equal(imm_ctx_set_event_fn(ctx, on_event, NULL, 0), 0);
	h = open_handle(ctx, IMM_RDWR);
	fd = imm_handle_get_fd(h);

	assert_int_equal(imm_seal(h, 0, FILE_SIZE, IMM_SEAL_EXCLUSIVE, NULL), 0);
	kernel_signal(ctx, fd);
	for (int i = 0; i < 100 && !logged("ETXTBSY"); i++)
		settle(ctx, 10);
	assert_true(logged("exclusive layout seal"));
	settle(ctx, 100);
	assert_int_equal(count[IMM_EVENT_RECALL], 0);
	assert_int_equal(count[IMM_EVENT_REVOKED], 0);
	assert_int_equal(imm_handle_get_state(h), IMM_STATE_SEALED);
	assert_int_equal(imm_release(h), 0);

	assert_int_equal(imm_seal(h, 0, FILE_SIZE, IMM_SEAL_SHARED, NULL), 0);
	kernel_signal(ctx, fd);		/* no break pending: stale, ignored */
	settle(ctx, 100);
	assert_int_equal(count[IMM_EVENT_RECALL], 0);
	assert_int_equal(imm_handle_get_state(h), IMM_STATE_SEALED);
	set_state(fd, F_LAYOUT_BREAKING);
	kernel_signal(ctx, fd);
	for (int i = 0; i < 100 && !count[IMM_EVENT_RECALL]; i++)
		settle(ctx, 10);
	assert_int_equal(count[IMM_EVENT_RECALL], 1);
	assert_int_equal(imm_handle_get_state(h), IMM_STATE_BREAKING);
	assert_int_equal(imm_release(h), 0);
	assert_int_equal(fk.last_arg, F_LAYOUT_UNSEAL);
	assert_int_equal(imm_handle_close(h), 0);
	imm_ctx_unref(ctx);
}

/* A fully written file on tmpfs, a filesystem without layout seals. */
static void tmpfs_file(char *path, size_t size)
{
	char buf[4096];
	int fd;

	snprintf(path, size, "/dev/shm/imm-layout-%d", (int)getpid());
	fd = open(path, O_CREAT | O_TRUNC | O_RDWR | O_CLOEXEC, 0644);
	assert_true(fd >= 0);
	memset(buf, 'x', sizeof(buf));
	for (int off = 0; off < FILE_SIZE; off += (int)sizeof(buf))
		assert_int_equal(pwrite(fd, buf, sizeof(buf), off),
				 (ssize_t)sizeof(buf));
	close(fd);
}

/*
 * A filesystem without layout seals (tmpfs: the kernel patch gives them
 * to xfs and ext4 only): the handle is sealed with a lease instead --
 * unless layout was forced, which then says why it cannot seal.
 */
static void lease_fallback(void **state)
{
	char shm[64];
	struct imm_handle *h;
	struct imm_ctx *ctx;
	int calls;

	(void)state;
	fake_kernel(true, "1");
	fk.fs_has_seals = false;
	tmpfs_file(shm, sizeof(shm));
	ctx = ctx_new();
	assert_int_equal(imm_ctx_get_backend(ctx), IMM_BACKEND_LAYOUT);
	assert_int_equal(imm_handle_open(ctx, shm, IMM_RDWR, &h), 0);
	assert_int_equal(imm_handle_get_backend(h), IMM_BACKEND_LEASE);
	assert_true(logged("sealing it with a lease"));
	calls = fk.setlayout_calls;
	assert_int_equal(imm_handle_get_backend(h), IMM_BACKEND_LEASE);
	/* a write lease, for real: the lease rules apply */
	assert_int_equal(imm_seal(h, 0, FILE_SIZE, IMM_SEAL_SHARED, NULL), -EBADF);
	assert_int_equal(imm_seal(h, 0, FILE_SIZE, IMM_SEAL_EXCLUSIVE, NULL), 0);
	assert_int_equal(fcntl(imm_handle_get_fd(h), F_GETLEASE), F_WRLCK);
	assert_int_equal(fk.setlayout_calls, calls);
	assert_int_equal(imm_release(h), 0);
	assert_int_equal(fcntl(imm_handle_get_fd(h), F_GETLEASE), F_UNLCK);
	assert_int_equal(imm_handle_close(h), 0);
	imm_ctx_unref(ctx);

	setenv("LIBIMMUTABLE_BACKEND", "layout", 1);
	ctx = ctx_new();
	unsetenv("LIBIMMUTABLE_BACKEND");
	assert_int_equal(imm_handle_open(ctx, shm, IMM_RDWR, &h), 0);
	assert_int_equal(imm_handle_get_backend(h), IMM_BACKEND_LAYOUT);
	assert_int_equal(imm_seal(h, 0, FILE_SIZE, IMM_SEAL_EXCLUSIVE, NULL),
			 -EOPNOTSUPP);
	assert_true(logged("LIBIMMUTABLE_BACKEND"));
	assert_int_equal(imm_handle_close(h), 0);
	imm_ctx_unref(ctx);
	unlink(shm);
}

/*
 * imm_handle_get_backend() is a getter: on an fd whose open file the
 * application has aimed at itself and leased, it changes neither the
 * owner, nor the signal, nor the lease, and asks the kernel for no seal.
 */
static void get_backend_has_no_side_effects(void **state)
{
	struct f_owner_ex own = { F_OWNER_PID, getpid() }, now;
	struct imm_handle *h;
	struct imm_ctx *ctx;
	int fd, calls;

	(void)state;
	fake_kernel(true, "1");
	ctx = ctx_new();
	fd = open(file_path, O_RDONLY | O_CLOEXEC);
	assert_true(fd >= 0);
	assert_int_equal(fcntl(fd, F_SETOWN_EX, &own), 0);
	assert_int_equal(fcntl(fd, F_SETSIG, SIGURG), 0);
	assert_int_equal(fcntl(fd, F_SETLEASE, F_RDLCK), 0);
	assert_int_equal(imm_handle_from_fd(ctx, fd, 0, &h), 0);
	calls = fk.setlayout_calls;

	assert_int_equal(imm_handle_get_backend(h), IMM_BACKEND_LAYOUT);
	assert_int_equal(imm_handle_get_backend(h), IMM_BACKEND_LAYOUT);
	assert_int_equal(fk.setlayout_calls, calls);
	assert_int_equal(fcntl(fd, F_GETOWN_EX, &now), 0);
	assert_int_equal(now.type, F_OWNER_PID);
	assert_int_equal(now.pid, getpid());
	assert_int_equal(fcntl(fd, F_GETSIG), SIGURG);
	assert_int_equal(fcntl(fd, F_GETLEASE), F_RDLCK);

	assert_int_equal(imm_handle_close(h), 0);
	assert_int_equal(fcntl(fd, F_GETLEASE), F_RDLCK);
	assert_int_equal(fcntl(fd, F_SETLEASE, F_UNLCK), 0);
	close(fd);
	imm_ctx_unref(ctx);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(probe),
		cmocka_unit_test(seal_kinds),
		cmocka_unit_test(seal_errors),
		cmocka_unit_test(signals),
		cmocka_unit_test(lease_fallback),
		cmocka_unit_test(get_backend_has_no_side_effects),
	};

	return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
