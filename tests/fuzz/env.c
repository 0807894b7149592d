// SPDX-License-Identifier: LGPL-2.1-or-later
/*
 * The fuzzer's world, built once per process: a tmpfs and a journal-less
 * ext4 (image on /dev/shm, so fsync costs no disk) in a private mount
 * namespace, which the kernel tears down however the process ends; four
 * files reused by every input (truncated, not re-created: creating files
 * is most of what made an earlier harness slow); a breaker process forked
 * before any thread exists, so that no input needs to fork to break a seal.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "../host/fixture.h"
#include "fuzz.h"

#define BREAKER_TIMEOUT_MS 5000
#define SETTLE_TIMEOUT_NS (2ull * 1000000000ull)

static struct fx_fs fs_tmpfs, fs_ext4;
static char files[FZ_FILES][PATH_MAX];
static char odd[FZ_ODD][PATH_MAX];
static int breaker_sock = -1;
static int base_fds, base_threads;

void fz_die(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	fputs("fuzz: ", stderr);
	vfprintf(stderr, fmt, ap);
	fputc('\n', stderr);
	va_end(ap);
	abort();	/* libFuzzer keeps the input that got here */
}

const char *fz_file(int i)
{
	return files[i % FZ_FILES];
}

const char *fz_odd(int i)
{
	return odd[i % FZ_ODD];
}

void fz_file_reset(int i, uint64_t size)
{
	static const char block[4096] = "libimmutable fuzz";
	int fd;

	/* a lease still held blocks the open until its recall is over;
	 * libFuzzer's -timeout alarm interrupts it every second meanwhile */
	do
		fd = open(fz_file(i), O_RDWR | O_TRUNC | O_CLOEXEC);
	while (fd < 0 && errno == EINTR);
	if (fd < 0)
		fz_die("reset %s: %m", fz_file(i));
	if (ftruncate(fd, (off_t)size) < 0)
		fz_die("ftruncate %s: %m", fz_file(i));
	/* One written block, the rest hole: preparation has work to do. */
	if (size && pwrite(fd, block, size < sizeof(block) ? size : sizeof(block),
			   0) < 0)
		fz_die("pwrite %s: %m", fz_file(i));
	close(fd);
}

static uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* poll() that libFuzzer's SIGALRM (-timeout) does not cut short. */
int fz_poll(int fd, short events, int timeout_ms)
{
	uint64_t end = now_ns() + (uint64_t)timeout_ms * 1000000ull, now;
	struct pollfd p = { .fd = fd, .events = events };
	int r;

	while ((r = poll(&p, 1, timeout_ms)) < 0 && errno == EINTR) {
		now = now_ns();
		timeout_ms = now >= end ? 0 : (int)((end - now) / 1000000ull);
	}
	return r;
}

/* ---------------------------------------------------------------- breaker */

struct brk_req {
	int op;
	int file;
	uint64_t off;
	uint64_t len;
};

static int brk_do(int *kept, const struct brk_req *q)
{
	static const char junk[8192];
	const char *path = files[q->file % FZ_FILES];
	int *fd = &kept[q->file % FZ_FILES], f, r = 0;

	switch (q->op) {
	case FZ_BRK_OPEN_RD:
	case FZ_BRK_OPEN_RW:
	case FZ_BRK_OPEN_TRUNC:
		/* O_NONBLOCK: the open breaks a lease and fails with
		 * EWOULDBLOCK at once instead of waiting out the holder. */
		f = open(path, O_NONBLOCK | O_CLOEXEC |
			 (q->op == FZ_BRK_OPEN_RD ? O_RDONLY :
			  q->op == FZ_BRK_OPEN_RW ? O_RDWR : O_WRONLY | O_TRUNC));
		if (f < 0)
			return -errno;
		close(f);
		return 0;
	case FZ_BRK_HOLD:
		if (*fd >= 0)
			return -EEXIST;
		*fd = open(path, O_RDWR | O_NONBLOCK | O_CLOEXEC);
		return *fd < 0 ? -errno : 0;
	case FZ_BRK_PUNCH:
		r = *fd < 0 ? -EBADF :
		    fallocate(*fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
			      (off_t)q->off, (off_t)q->len);
		break;
	case FZ_BRK_FTRUNCATE:
		r = *fd < 0 ? -EBADF : ftruncate(*fd, (off_t)q->off);
		break;
	case FZ_BRK_WRITE:
		r = *fd < 0 ? -EBADF :
		    (int)pwrite(*fd, junk, q->len % sizeof(junk), (off_t)q->off);
		break;
	case FZ_BRK_CLOSE:
		if (*fd < 0)
			return -EBADF;
		close(*fd);
		*fd = -1;
		return 0;
	case FZ_BRK_RESET:
		for (int i = 0; i < FZ_FILES; i++) {
			if (kept[i] >= 0)
				close(kept[i]);
			kept[i] = -1;
		}
		return 0;
	default:
		return -EINVAL;
	}
	return r < 0 ? (r == -EBADF ? r : -errno) : 0;
}

static void __attribute__((noreturn)) brk_main(int sock)
{
	int kept[FZ_FILES] = { -1, -1, -1, -1 };
	struct brk_req q;

	prctl(PR_SET_PDEATHSIG, SIGKILL);
	/* The fuzzer gone, the socket reads EOF: that is the way out. */
	while (recv(sock, &q, sizeof(q), 0) == (ssize_t)sizeof(q)) {
		int r = brk_do(kept, &q);

		if (send(sock, &r, sizeof(r), MSG_NOSIGNAL) != sizeof(r))
			break;
	}
	_exit(0);
}

static void breaker_start(void)
{
	int sv[2];
	pid_t pid;

	if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) < 0)
		fz_die("socketpair: %m");
	pid = fork();
	if (pid < 0)
		fz_die("fork: %m");
	if (pid == 0) {
		close(sv[0]);
		brk_main(sv[1]);
	}
	close(sv[1]);
	breaker_sock = sv[0];
}

int fz_breaker(enum fz_break_op op, int file, uint64_t off, uint64_t len)
{
	struct brk_req q = { .op = op, .file = file, .off = off, .len = len };
	int r;

	if (send(breaker_sock, &q, sizeof(q), MSG_NOSIGNAL) != sizeof(q))
		fz_die("breaker: send: %m");
	/* Every operation is non-blocking: a late answer is a hang. */
	if (fz_poll(breaker_sock, POLLIN, BREAKER_TIMEOUT_MS) != 1)
		fz_die("breaker: op %d on %s: no answer in %d ms", op,
		       fz_file(file), BREAKER_TIMEOUT_MS);
	if (recv(breaker_sock, &r, sizeof(r), 0) != sizeof(r))
		fz_die("breaker: recv: %m");
	return r;
}

/* ---------------------------------------------------------------- setup */

static void mkfile(char *out, const struct fx_fs *fs, const char *name)
{
	int fd;

	fx_path(fs, name, out);
	fd = open(out, O_CREAT | O_RDWR | O_CLOEXEC, 0600);
	if (fd < 0)
		fz_die("create %s: %m", out);
	close(fd);
}

static bool setup_done;

/* A fixture assertion exits through cmocka, whose line libFuzzer's fork
 * mode does not echo ("error:"): say it in the words it does echo. */
static void setup_failed(void)
{
	if (!setup_done)
		fprintf(stderr, "ERROR: fuzz: the setup failed before any input "
				"(the fixture's reason is above)\n");
}

void fz_env_init(void)
{
	const char *req = getenv("IMM_REQUIRE_ROOT");

	if (geteuid() != 0 || access("/dev/loop-control", F_OK) < 0) {
		fprintf(stderr, "SKIP: the fuzzer needs root and loop devices "
				"(it mounts a tmpfs and an ext4)\n");
		exit(req && !strcmp(req, "1") ? 1 : 77);
	}
	atexit(setup_failed);
	/* Mounts only this process sees, gone with it even after a crash. */
	if (unshare(CLONE_NEWNS) < 0 ||
	    mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) < 0)
		fz_die("private mount namespace: %m");
	if (access("/dev/shm", W_OK) == 0)
		setenv("TMPDIR", "/dev/shm", 1);
	/* A seal nobody releases holds its breaker until the library revokes
	 * it, at lease-break-time minus the margin: with the default 45 s one
	 * input outlasts -timeout=10.  Restored at exit (not after a crash). */
	fx_sysctl_set("/proc/sys/fs/lease-break-time", 2);
	fx_mount(&fs_tmpfs, "tmpfs", 64, NULL);
	fx_mount(&fs_ext4, "ext4", 128, "-O ^has_journal");

	mkfile(files[0], &fs_tmpfs, "a");
	mkfile(files[1], &fs_tmpfs, "b");
	mkfile(files[2], &fs_ext4, "a");
	mkfile(files[3], &fs_ext4, "b");
	fx_path(&fs_tmpfs, "dir", odd[0]);
	if (mkdir(odd[0], 0700) < 0)
		fz_die("mkdir %s: %m", odd[0]);
	fx_path(&fs_ext4, "missing", odd[1]);
	fx_path(&fs_tmpfs, "fifo", odd[2]);
	if (mkfifo(odd[2], 0600) < 0)
		fz_die("mkfifo %s: %m", odd[2]);
	fx_path(&fs_ext4, "link", odd[3]);
	if (symlink(files[2], odd[3]) < 0)
		fz_die("symlink %s: %m", odd[3]);
	snprintf(odd[4], sizeof(odd[4]), "/dev/null");
	breaker_start();
	setup_done = true;
}

/* ---------------------------------------------------------------- checks */

static int count_fds(void)
{
	DIR *d = opendir("/proc/self/fd");
	struct dirent *e;
	int n = 0;

	if (!d)
		fz_die("opendir /proc/self/fd: %m");
	while ((e = readdir(d)))
		n += e->d_name[0] != '.';
	closedir(d);
	return n - 1;	/* the directory's own */
}

static int count_threads(void)
{
	char buf[1024], *p;
	ssize_t n;
	int fd = open("/proc/self/stat", O_RDONLY | O_CLOEXEC), field = 2;

	if (fd < 0)
		fz_die("open /proc/self/stat: %m");
	n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	if (n <= 0)
		fz_die("read /proc/self/stat: %m");
	buf[n] = '\0';
	/* num_threads is field 20; the comm (2) may hold spaces: skip it. */
	p = strrchr(buf, ')');
	while (p && field < 20) {
		p = strchr(p + 1, ' ');
		field++;
	}
	return p ? atoi(p + 1) : -1;
}

/* The sanitizers' symbolizer (libFuzzer's NEW_FUNC lines) runs as a
 * child process on two pipes it keeps: start it now, not mid-run. */
void __sanitizer_symbolize_pc(void *pc, const char *fmt, char *out, size_t n);

void fz_env_baseline(void)
{
	char where[256];

	__sanitizer_symbolize_pc(__builtin_return_address(0), "%p %F %L",
				 where, sizeof(where));
	base_fds = count_fds();
	base_threads = count_threads();
}

static void dump_fds(void)
{
	DIR *d = opendir("/proc/self/fd");
	struct dirent *e;

	while (d && (e = readdir(d))) {
		char link[PATH_MAX + 32], target[PATH_MAX];
		ssize_t n;

		if (e->d_name[0] == '.')
			continue;
		snprintf(link, sizeof(link), "/proc/self/fd/%s", e->d_name);
		n = readlink(link, target, sizeof(target) - 1);
		target[n > 0 ? n : 0] = '\0';
		fprintf(stderr, "fuzz:   fd %s -> %s\n", e->d_name, target);
	}
	if (d)
		closedir(d);
}

static void maps_check(void)
{
	char line[PATH_MAX + 256];
	FILE *f = fopen("/proc/self/maps", "re");

	if (!f)
		fz_die("open /proc/self/maps: %m");
	while (fgets(line, sizeof(line), f)) {
		if (strstr(line, fs_tmpfs.mnt) || strstr(line, fs_ext4.mnt)) {
			fclose(f);
			fz_die("leaked mapping after every handle and map was "
			       "destroyed: %s", line);
		}
	}
	fclose(f);
}

void fz_check_clean(bool maps_made)
{
	uint64_t deadline = 0;
	int fds, threads;

	/*
	 * A context whose last reference went away on its notifier thread
	 * is destroyed by that thread after the callback returns: wait for
	 * the condition itself, yielding, up to a bound.
	 */
	for (;;) {
		fds = count_fds();
		threads = count_threads();
		if (fds == base_fds && threads == base_threads)
			break;
		if (!deadline)
			deadline = now_ns() + SETTLE_TIMEOUT_NS;
		else if (now_ns() > deadline)
			break;
		sched_yield();
		nanosleep(&(struct timespec){ .tv_nsec = 100000 }, NULL);
	}
	if (fds != base_fds || threads != base_threads) {
		fprintf(stderr, "fuzz: after the input: %d fds (baseline %d), %d "
				"threads (baseline %d), 2 s after its last call\n",
			fds, base_fds, threads, base_threads);
		dump_fds();
		fz_die("leaked %s", fds != base_fds ? "file descriptors" :
		       "threads (a notifier never stopped)");
	}
	if (maps_made)
		maps_check();
}

void fz_check_unmapped(const void *addr, uint64_t len)
{
	long pg = sysconf(_SC_PAGESIZE);
	uintptr_t a = (uintptr_t)addr & ~(uintptr_t)(pg - 1);
	uintptr_t probe[3] = { a, a + (len / 2 & ~(uint64_t)(pg - 1)),
			       a + ((len - 1) & ~(uint64_t)(pg - 1)) };

	/* msync fails with ENOMEM on a page that nothing maps. */
	for (int i = 0; i < 3 && len; i++)
		if (msync((void *)probe[i], (size_t)pg, MS_ASYNC) == 0)
			fz_die("imm_unmap() left %p (of [%p, +%llu)) mapped",
			       (void *)probe[i], addr, (unsigned long long)len);
}
