/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* The API-sequence fuzzer: its world (env.c) and its checks. */
#ifndef IMM_FUZZ_H
#define IMM_FUZZ_H

#include <stdbool.h>
#include <stdint.h>

/* Regular files reused by every input: 0, 1 on tmpfs, 2, 3 on ext4. */
#define FZ_FILES 4
/* Paths that are not regular files: a directory, nothing, a FIFO, a
 * symlink to file 0, /dev/null. */
#define FZ_ODD 5

const char *fz_file(int i);
const char *fz_odd(int i);
/* The input's first use of file i: back to size bytes, first block written. */
void fz_file_reset(int i, uint64_t size);

/* The breaker: a process of its own that opens, truncates, punches. */
enum fz_break_op {
	FZ_BRK_OPEN_RD,		/* open(O_RDONLY|O_NONBLOCK), close */
	FZ_BRK_OPEN_RW,		/* open(O_RDWR|O_NONBLOCK), close */
	FZ_BRK_OPEN_TRUNC,	/* open(O_WRONLY|O_TRUNC|O_NONBLOCK), close */
	FZ_BRK_HOLD,		/* open(O_RDWR|O_NONBLOCK) and keep it */
	FZ_BRK_PUNCH,		/* punch a hole through the kept fd */
	FZ_BRK_FTRUNCATE,	/* ftruncate the kept fd */
	FZ_BRK_WRITE,		/* pwrite through the kept fd */
	FZ_BRK_CLOSE,		/* close the kept fd */
	FZ_BRK_RESET,		/* close every kept fd */
	FZ_BRK_NR
};
/* The operation's result (0 or -errno); dies if the breaker hangs. */
int fz_breaker(enum fz_break_op op, int file, uint64_t off, uint64_t len);

/* Once per process, before any thread: filesystems, files, breaker. */
void fz_env_init(void);

/* Counts fds and threads as the state every input must return to: after
 * a warm-up, so that what libraries open once and keep is not a leak. */
void fz_env_baseline(void);

/* After each input: every fd and thread gone (bounded wait for the
 * notifier's asynchronous teardown), no mapping of the files left.
 * Aborts with what leaked, so that libFuzzer keeps the input. */
void fz_check_clean(bool maps_made);
/* An address range imm_unmap() returned must be gone at once. */
void fz_check_unmapped(const void *addr, uint64_t len);

/* poll() of one fd, restarted after signals (libFuzzer's SIGALRM). */
int fz_poll(int fd, short events, int timeout_ms);

void fz_die(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));

#endif
