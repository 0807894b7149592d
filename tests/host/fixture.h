/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* Shared pieces of the host tests: real filesystems, logs, processes. */
#ifndef IMM_TEST_FIXTURE_H
#define IMM_TEST_FIXTURE_H

#include <limits.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include <cmocka.h>

#include <libimmutable/libimmutable.h>

/* A filesystem of its own for a test: loop-mounted image or tmpfs. */
struct fx_fs {
	char dir[PATH_MAX];	/* mkdtemp'd holder of image + mount point */
	char mnt[PATH_MAX];
	char img[PATH_MAX];
	bool mounted;
};

/*
 * Root and loop devices are needed for real filesystems.  Without them the
 * test is skipped with the reason on stderr -- unless IMM_REQUIRE_ROOT=1
 * (set by CI), where a skip would hide a missing feature: then it fails.
 */
void fx_need_root(const char *why);

/* kind: ext4, xfs, tmpfs, ramfs; mkfs_opts may be NULL. */
void fx_mount(struct fx_fs *fs, const char *kind, unsigned size_mb,
	      const char *mkfs_opts);
/* the same, mounted with mount_opts (NULL: none) */
void fx_mount_opts(struct fx_fs *fs, const char *kind, unsigned size_mb,
		   const char *mkfs_opts, const char *mount_opts);
void fx_umount(struct fx_fs *fs);
/* system() of the formatted command: its exit status, -1 if signalled */
int fx_run(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void fx_path(const struct fx_fs *fs, const char *name, char *out);

/* One scratch ext4 for a whole test group: cmocka group setup/teardown
 * (it mounts only as root; the tests call fx_need_root() themselves). */
extern struct fx_fs fx_ext4;
int fx_group_ext4_setup(void **state);
int fx_group_ext4_teardown(void **state);

/* Files */
void fx_sparse_file(const char *path, uint64_t size);	/* all hole */
void fx_write_pattern(const char *path, uint64_t off, uint64_t len, unsigned seed);
uint64_t fx_checksum(const char *path);	/* content + size */
/* The same through an fd: opening a sealed file would break its seal. */
uint64_t fx_checksum_fd(int fd);
uint64_t fx_size(const char *path);
bool fx_leased(const char *path);	/* a lease on it in /proc/locks */

/* sysctls, restored by fx_sysctl_restore_all() (also registered atexit) */
void fx_sysctl_set(const char *path, int value);

/* Log capture through the context's hook */
struct fx_log {
	int count;
	int errors;
	char last[1024];	/* the last error */
	char any[1024];		/* the last message of any priority ... */
	int any_priority;	/* ... and its priority */
};
void fx_log_attach(struct imm_ctx *ctx, struct fx_log *log);
#define assert_logged(log) assert_true((log)->errors > 0 && (log)->last[0])

/* Contexts */
struct imm_ctx *fx_ctx(struct fx_log *log);

/* A handle on path sealed over [0, length) in mode (IMM_SEAL_SHARED opens
 * it read-only, as a shared seal needs); asserts success. */
struct imm_handle *fx_seal(struct imm_ctx *ctx, const char *path,
			   uint32_t mode, uint64_t length);

/* Wait for the context's fd and dispatch; returns events dispatched. */
int fx_dispatch_wait(struct imm_ctx *ctx, int timeout_ms);

/* A process that does one thing to a file, timed; see fx_breaker_wait(). */
enum fx_break_op {
	FX_OPEN_RDONLY,
	FX_OPEN_RDWR,
	FX_OPEN_TRUNC,
	FX_TRUNCATE,	/* truncate(path, 0) */
};
pid_t fx_breaker_start(const char *path, enum fx_break_op op);
#define FX_BREAKER_TIMEOUT_MS 60000	/* lease-break-time (45 s) + slack */
/* Waits; returns how long the operation blocked (ns); asserts success.
 * With ret_end, also when it returned (CLOCK_MONOTONIC ns). */
uint64_t fx_breaker_wait(pid_t pid);
uint64_t fx_breaker_wait_end(pid_t pid, uint64_t *ret_end);

uint64_t fx_now_ns(void);
unsigned fx_count_fds(void);	/* open now, not counting the reader's */

/*
 * Bounded waits on conditions, never sleeps as synchronisation.
 * fx_wait_until() polls cond(arg) every millisecond and returns whether it
 * held within timeout_ms; assert_until() fails the test, naming the
 * condition, if expr is still false after timeout_ms.
 */
bool fx_wait_until(bool (*cond)(void *arg), void *arg, int timeout_ms);
void fx_pause_ms(int ms);
#define assert_until(expr, timeout_ms)                                        \
	do {                                                                  \
		uint64_t fx_end_ = fx_now_ns() +                              \
				   (uint64_t)(timeout_ms) * 1000000ull;       \
		while (!(expr)) {                                             \
			if (fx_now_ns() >= fx_end_)                           \
				fail_msg("%s:%d: not true within %d ms: %s",  \
					 __FILE__, __LINE__, (int)(timeout_ms), \
					 #expr);                              \
			fx_pause_ms(1);                                       \
		}                                                             \
	} while (0)

/* waitpid() with a bound: the pid, or 0 when it had not exited within
 * timeout_ms -- then it is SIGKILLed and reaped, and *status is not set;
 * -1 for no such process. */
pid_t fx_waitpid_timeout(pid_t pid, int *status, int timeout_ms);
/* fork() once no thread of the library runs (asserted within 10 s): for
 * children that start contexts of their own.  A context freed after an
 * asynchronous callback loses its notifier just after the last unref
 * (libimmutable(7)), and ThreadSanitizer kills a child that starts
 * threads after a multi-threaded fork. */
pid_t fx_fork_alone(void);
/* Asserts the child exits with status 0 within timeout_ms. */
void fx_assert_child_ok(pid_t pid, int timeout_ms);
/* One line (up to and including '\n') from fd, unbuffered, within
 * timeout_ms; false on timeout, EOF or error. */
bool fx_read_line(int fd, char *buf, size_t size, int timeout_ms);

/* The state /proc/locks gives path's lease ("ACTIVE", "BREAKING"; "none"
 * without one), and how many openers are blocked on it. */
const char *fx_lease_state(const char *path, char *buf, size_t size);
int fx_lease_waiters(const char *path);

#endif
