/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Shared pieces of the benchmarks: clocks and percentiles, the result
 * table and its JSON lines, a cleanup stack that also runs on signals, temp
 * directories, and the forked "breaker" process that opens a sealed file.
 *
 * Output convention (every program): a human table, then one JSON line per
 * figure.  A figure with a "baseline" has its goal on "ratio"
 * (value / baseline); a figure without one has its goal on "value".
 * Benchmarks never assert: a missed goal is printed, the exit status is 0.
 * Exit status 2 means the setup failed, with a message on stderr.
 */
#ifndef IMM_BENCH_COMMON_H
#define IMM_BENCH_COMMON_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include <libimmutable/libimmutable.h>

#define BENCH_PRINTF(a, b) __attribute__((format(printf, a, b)))
#define BENCH_NORETURN __attribute__((noreturn))

/* ------------------------------------------------------------ basics */

/* Names the program in messages and JSON lines; call first in main(). */
void bench_init(const char *bench_name, const char *prog);
const char *bench_name(void);
uint64_t bench_now_ns(void);

/* Setup failure: message, cleanup (atexit), exit status 2. */
void bench_fail(const char *fmt, ...) BENCH_PRINTF(1, 2) BENCH_NORETURN;
void bench_note(const char *fmt, ...) BENCH_PRINTF(1, 2);

/* Strict unsigned parse; false on garbage or overflow. */
bool bench_parse_u64(const char *s, uint64_t *ret);

/* ------------------------------------------------------------ stats */

struct bench_stats {
	size_t n;
	double min, median, p90, p99, max, mean;	/* same unit as input */
};

/* The median over i of lib[i] / raw[i]: pairs measured back to back, so a
 * slow spell of the machine weighs on both.  Call before sorting. */
double bench_paired_ratio(const uint64_t *lib, const uint64_t *raw, size_t n);

/* Sorts v in place. */
void bench_stats_u64(uint64_t *v, size_t n, struct bench_stats *s);
void bench_stats_double(double *v, size_t n, struct bench_stats *s);

/* ------------------------------------------------------------ figures */

enum bench_goal_op { GOAL_NONE = 0, GOAL_LE, GOAL_LT };

/* A figure with no baseline; a goal, if any, applies to value. */
void bench_fig(const char *metric, const char *label, const char *unit,
	       double value, enum bench_goal_op op, double limit);
/* A figure compared with a baseline; a goal, if any, applies to the ratio. */
void bench_fig_cmp(const char *metric, const char *label, const char *unit,
		   double value, double baseline, enum bench_goal_op op,
		   double limit);
/* The table, then the JSON lines. */
void bench_report(void);
/* A variant of the run (e.g. "pinned-cpu0"), added to every JSON line as
 * "config", so that two runs of one program never share a metric name. */
void bench_set_config(const char *config);

/* ------------------------------------------------------------ cleanup */

/*
 * A LIFO stack of undo actions, run at exit, on SIGINT/SIGTERM/SIGHUP/
 * SIGQUIT and on the watchdog (SIGALRM) -- only in the process that
 * created it, never in a forked child.  Each push returns an id for
 * bench_cleanup_run() (undo now) or bench_cleanup_forget() (nothing left
 * to undo).
 */
void bench_cleanup_init(void);
int bench_cleanup_unlink(const char *path);
int bench_cleanup_rmdir(const char *path);
int bench_cleanup_umount(const char *path);
int bench_cleanup_loop(int loop_fd);	/* LOOP_CLR_FD, close */
int bench_cleanup_child(pid_t pid);	/* SIGKILL, reap */
/* dir/<prefix>NNNNN for 0 <= NNNNN < count (zero-padded to 5 digits) */
int bench_cleanup_fileset(const char *dir, const char *prefix, unsigned count);
void bench_cleanup_run(int id);
void bench_cleanup_forget(int id);
void bench_cleanup_all(void);
/* Watchdog: if not cancelled (seconds 0) in time, clean up and exit 2. */
void bench_watchdog(unsigned seconds, const char *what);

/* ------------------------------------------------------------ files */

/* $IMM_BENCH_DIR, or /tmp. */
const char *bench_base_dir(void);
/* mkdtemp under base, registered for removal; out must hold PATH_MAX. */
void bench_make_tmpdir(const char *base, const char *tag, char *out,
		       size_t outsz);
/* out = dir/name; fails the setup if it does not fit. */
void bench_path(char *out, size_t outsz, const char *dir, const char *name);
const char *bench_fs_name(const char *path);
/* statx says the file is accessed directly (not just the mask). */
bool bench_fd_is_dax(int fd);
/* Setup failure unless h still holds its seal: a break voids the figures. */
void bench_check_sealed(struct imm_handle *h, const char *when);
uint64_t bench_free_bytes(const char *path);
/* Create (O_EXCL) and fully write size bytes, fsync; registered for unlink. */
int bench_create_written(const char *path, uint64_t size, bool register_it);
/* dir/name created fully written (size bytes, with slack bytes to spare on
 * the filesystem) and opened O_RDWR; fails the setup otherwise.  path
 * receives the name. */
int bench_open_written(const char *dir, const char *name, uint64_t size,
		       uint64_t slack, char *path, size_t pathsz);
/*
 * A file of `extents` one-block extents that survives preparation: no
 * holes, nothing unwritten, every extent two blocks away from the next on
 * disk.  Allocates 2E contiguous blocks, FALLOC_FL_COLLAPSE_RANGE's every
 * other block away (low to high, so each collapse shifts one tail extent),
 * then writes every byte and fsyncs.  ext4 and xfs; registered for unlink.
 */
enum bench_frag_result { FRAG_OK, FRAG_UNSUPPORTED, FRAG_TOO_SLOW };
enum bench_frag_result bench_create_fragmented(const char *path,
					       uint64_t extents,
					       uint64_t budget_ns,
					       double *ret_seconds);
/* A fresh kind ("ext4", "xfs") of image_bytes in a loop-attached image
 * under base, mounted on mnt; its loop device in dev.  All undone at exit. */
void bench_make_loop_fs(const char *base, const char *kind,
			uint64_t image_bytes, char *mnt, size_t mntsz,
			char *dev, size_t devsz);
/* Raise RLIMIT_NOFILE to at least want (root may raise the hard limit). */
void bench_raise_nofile(uint64_t want);
/* Pin this process (and what it forks and starts later) to one CPU. */
void bench_pin_cpu(uint64_t cpu);
/* A context that logs warnings and errors to stderr. */
struct imm_ctx *bench_ctx_new(void);
const char *bench_kernel(void);

/* ------------------------------------------------------------ breaker */

/*
 * A child process forked before any libimmutable object exists.  On each
 * command it stores its CLOCK_MONOTONIC time in shared memory, open()s
 * the path (blocking in the kernel's lease break), stores the time open()
 * returned, closes the fd, and acknowledges through a pipe: after the ack
 * the file has no open of the breaker's left, so an exclusive seal can be
 * taken again.
 */
struct bench_shared {
	uint64_t t_start;	/* just before open() */
	uint64_t t_return;	/* just after open() returned */
	int open_errno;
};

struct bench_breaker {
	pid_t pid;
	int cmd_fd;
	int ack_fd;
	int cleanup_id;
	volatile struct bench_shared *shm;
};

void bench_breaker_start(struct bench_breaker *b);
void bench_breaker_go(struct bench_breaker *b, const char *path, int oflags);
/* Waits for the ack; returns the breaker's open() errno (0: it opened). */
int bench_breaker_wait(struct bench_breaker *b, int timeout_ms);
void bench_breaker_stop(struct bench_breaker *b);

#endif /* IMM_BENCH_COMMON_H */
