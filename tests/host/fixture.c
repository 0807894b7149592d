// SPDX-License-Identifier: LGPL-2.1-or-later
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <syslog.h>
#include <time.h>
#include <unistd.h>

#include "fixture.h"

uint64_t fx_now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

unsigned fx_count_fds(void)
{
	DIR *d = opendir("/proc/self/fd");
	struct dirent *e;
	unsigned n = 0;

	assert_non_null(d);
	while ((e = readdir(d)))
		n += e->d_name[0] != '.' && atoi(e->d_name) != dirfd(d);
	closedir(d);
	return n;
}

void fx_pause_ms(int ms)
{
	struct timespec ts = { ms / 1000, (long)(ms % 1000) * 1000000l };

	while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
		;
}

bool fx_wait_until(bool (*cond)(void *arg), void *arg, int timeout_ms)
{
	uint64_t end = fx_now_ns() + (uint64_t)timeout_ms * 1000000ull;

	while (!cond(arg)) {
		if (fx_now_ns() >= end)
			return cond(arg);
		fx_pause_ms(1);
	}
	return true;
}

static int pidfd_open_(pid_t pid)
{
	return (int)syscall(SYS_pidfd_open, pid, 0);
}

/* Threads of the library (named imm-*) in this process; -1 on error. */
static int library_threads(void)
{
	char path[PATH_MAX], comm[32];
	struct dirent *d;
	int n = 0;
	DIR *dir = opendir("/proc/self/task");

	if (!dir)
		return -1;
	while ((d = readdir(dir))) {
		FILE *f;

		if (d->d_name[0] == '.')
			continue;
		snprintf(path, sizeof(path), "/proc/self/task/%s/comm", d->d_name);
		f = fopen(path, "re");
		if (!f)
			continue;	/* exited meanwhile */
		if (fgets(comm, sizeof(comm), f) && !strncmp(comm, "imm-", 4))
			n++;
		fclose(f);
	}
	closedir(dir);
	return n;
}

pid_t fx_fork_alone(void)
{
	pid_t pid;

	assert_until(library_threads() == 0, 10000);
	pid = fork();
	assert_true(pid >= 0);
	return pid;
}

pid_t fx_waitpid_timeout(pid_t pid, int *status, int timeout_ms)
{
	uint64_t end = fx_now_ns() + (uint64_t)timeout_ms * 1000000ull;
	int pfd = pidfd_open_(pid), st;
	pid_t r;

	if (pfd < 0)
		return -1;	/* no such child (reaped already) */
	/* the pidfd is readable once the child has exited */
	for (;;) {
		struct pollfd p = { .fd = pfd, .events = POLLIN };
		uint64_t now = fx_now_ns();
		int left = now >= end ? 0 : (int)((end - now) / 1000000ull) + 1;
		int n = poll(&p, 1, left);

		if (n > 0 || (n == 0 && left == 0) || (n < 0 && errno != EINTR))
			break;
	}
	r = waitpid(pid, &st, WNOHANG);
	if (r == 0) {
		kill(pid, SIGKILL);
		waitpid(pid, &st, 0);
	} else if (r == pid && status) {
		*status = st;
	}
	close(pfd);
	return r;
}

void fx_assert_child_ok(pid_t pid, int timeout_ms)
{
	int st = 0;

	if (fx_waitpid_timeout(pid, &st, timeout_ms) != pid)
		fail_msg("child %d did not exit within %d ms (killed)", (int)pid,
			 timeout_ms);
	if (WIFSIGNALED(st))
		fail_msg("child %d was killed by signal %d", (int)pid,
			 WTERMSIG(st));
	if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
		fail_msg("child %d exited with status %d", (int)pid,
			 WEXITSTATUS(st));
}

bool fx_read_line(int fd, char *buf, size_t size, int timeout_ms)
{
	uint64_t end = fx_now_ns() + (uint64_t)timeout_ms * 1000000ull;
	size_t n = 0;

	assert_true(size > 1);
	while (n < size - 1) {
		struct pollfd p = { .fd = fd, .events = POLLIN };
		uint64_t now = fx_now_ns();

		if (now >= end || poll(&p, 1, (int)((end - now) / 1000000ull) + 1) <= 0)
			break;
		if (read(fd, &buf[n], 1) != 1)
			break;
		if (buf[n++] == '\n') {
			buf[n] = '\0';
			return true;
		}
	}
	buf[n] = '\0';
	return false;
}

/* snprintf that fails the test instead of truncating a path */
static void fmt(char *out, size_t n, const char *f, ...)
	__attribute__((format(printf, 3, 4)));
static void fmt(char *out, size_t n, const char *f, ...)
{
	va_list ap;
	int r;

	va_start(ap, f);
	r = vsnprintf(out, n, f, ap);
	va_end(ap);
	assert_true(r >= 0 && (size_t)r < n);
}

void fx_need_root(const char *why)
{
	const char *req = getenv("IMM_REQUIRE_ROOT");
	bool loop_ok = access("/dev/loop-control", F_OK) == 0;

	if (geteuid() == 0 && loop_ok)
		return;
	fprintf(stderr, "SKIP: needs root and loop devices: %s\n", why);
	if (req && !strcmp(req, "1"))
		fail_msg("IMM_REQUIRE_ROOT=1 but not root with loop devices: %s",
			 why);
	skip();
}

int fx_run(const char *f, ...)
{
	char cmd[PATH_MAX * 3];
	va_list ap;
	int st;

	va_start(ap, f);
	vsnprintf(cmd, sizeof(cmd), f, ap);
	va_end(ap);
	st = system(cmd);
	return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

/*
 * A failed assertion longjmps out of a test, past its fx_umount(), and its
 * struct fx_fs dies with its stack frame: keep copies, unmount at exit.
 */
static struct fx_fs mounted[32];

static void umount_leftovers(void)
{
	for (size_t i = 0; i < 32; i++)
		if (mounted[i].mounted)
			fx_umount(&mounted[i]);
}

static void track(const struct fx_fs *fs, bool add)
{
	static bool registered;

	if (!registered) {
		atexit(umount_leftovers);
		registered = true;
	}
	for (size_t i = 0; i < 32; i++) {
		if (add && !mounted[i].mounted) {
			mounted[i] = *fs;
			return;
		}
		if (!add && mounted[i].mounted && !strcmp(mounted[i].mnt, fs->mnt)) {
			mounted[i].mounted = false;
			return;
		}
	}
}

void fx_mount(struct fx_fs *fs, const char *kind, unsigned size_mb,
	      const char *mkfs_opts)
{
	fx_mount_opts(fs, kind, size_mb, mkfs_opts, NULL);
}

void fx_mount_opts(struct fx_fs *fs, const char *kind, unsigned size_mb,
		   const char *mkfs_opts, const char *mount_opts)
{
	const char *tmp = getenv("TMPDIR");

	memset(fs, 0, sizeof(*fs));
	fmt(fs->dir, sizeof(fs->dir), "%s/imm-test.XXXXXX",
	    tmp && *tmp ? tmp : "/var/tmp");
	assert_non_null(mkdtemp(fs->dir));
	fmt(fs->mnt, sizeof(fs->mnt), "%s/mnt", fs->dir);
	fmt(fs->img, sizeof(fs->img), "%s/fs.img", fs->dir);
	assert_int_equal(mkdir(fs->mnt, 0755), 0);

	if (!strcmp(kind, "tmpfs") || !strcmp(kind, "ramfs")) {
		char opt[64];

		snprintf(opt, sizeof(opt), "size=%um", size_mb);
		assert_int_equal(mount(kind, fs->mnt, kind, 0,
				       !strcmp(kind, "tmpfs") ? opt : NULL), 0);
	} else {
		int fd = open(fs->img, O_CREAT | O_RDWR | O_CLOEXEC, 0600);

		assert_true(fd >= 0);
		assert_int_equal(ftruncate(fd, (off_t)size_mb << 20), 0);
		close(fd);
		if (!strcmp(kind, "xfs") || !strcmp(kind, "btrfs"))
			assert_int_equal(fx_run("mkfs.%s -q -f %s %s >/dev/null", kind,
					     mkfs_opts ? mkfs_opts : "", fs->img), 0);
		else
			assert_int_equal(fx_run("mkfs.%s -q -F %s %s >/dev/null 2>&1",
					     kind, mkfs_opts ? mkfs_opts : "",
					     fs->img), 0);
		assert_int_equal(fx_run("mount -o loop%s%s %s %s",
					mount_opts ? "," : "",
					mount_opts ? mount_opts : "",
					fs->img, fs->mnt), 0);
	}
	fs->mounted = true;
	track(fs, true);
}

void fx_umount(struct fx_fs *fs)
{
	bool was = fs->mounted;

	track(fs, false);	/* may be fs itself, at exit */
	if (was) {
		/* Lazy: a failed test may leave a child holding a file. */
		if (umount2(fs->mnt, 0) < 0)
			umount2(fs->mnt, MNT_DETACH);
		fs->mounted = false;
	}
	if (fs->img[0])
		unlink(fs->img);
	if (fs->mnt[0])
		rmdir(fs->mnt);
	if (fs->dir[0])
		rmdir(fs->dir);
}

void fx_path(const struct fx_fs *fs, const char *name, char *out)
{
	fmt(out, PATH_MAX, "%s/%s", fs->mnt, name);
}

struct fx_fs fx_ext4;

int fx_group_ext4_setup(void **state)
{
	(void)state;
	if (geteuid() == 0)
		fx_mount(&fx_ext4, "ext4", 128, NULL);
	return 0;
}

int fx_group_ext4_teardown(void **state)
{
	(void)state;
	fx_umount(&fx_ext4);
	return 0;
}

void fx_sparse_file(const char *path, uint64_t size)
{
	int fd = open(path, O_CREAT | O_TRUNC | O_RDWR | O_CLOEXEC, 0644);

	assert_true(fd >= 0);
	assert_int_equal(ftruncate(fd, (off_t)size), 0);
	close(fd);
}

void fx_write_pattern(const char *path, uint64_t off, uint64_t len, unsigned seed)
{
	char buf[65536];
	int fd = open(path, O_WRONLY | O_CREAT | O_CLOEXEC, 0644);

	assert_true(fd >= 0);
	while (len) {
		size_t n = len < sizeof(buf) ? (size_t)len : sizeof(buf);

		for (size_t i = 0; i < n; i++)
			buf[i] = (char)((off + i) * 2654435761u >> 13 ^ seed);
		assert_int_equal(pwrite(fd, buf, n, (off_t)off), (ssize_t)n);
		off += n;
		len -= n;
	}
	close(fd);
}

uint64_t fx_checksum_fd(int fd)
{
	uint64_t h = 1469598103934665603ull;
	char buf[65536];
	off_t off = 0;
	ssize_t n;

	while ((n = pread(fd, buf, sizeof(buf), off)) > 0) {
		for (ssize_t i = 0; i < n; i++)
			h = (h ^ (unsigned char)buf[i]) * 1099511628211ull;
		off += n;
	}
	assert_true(n == 0);
	return h ^ (uint64_t)off;
}

uint64_t fx_checksum(const char *path)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	uint64_t h;

	assert_true(fd >= 0);
	h = fx_checksum_fd(fd);
	close(fd);
	return h;
}

uint64_t fx_size(const char *path)
{
	struct stat st;

	assert_int_equal(stat(path, &st), 0);
	return (uint64_t)st.st_size;
}

/*
 * " MAJ:MIN:INO " as /proc/locks prints the file: the inode alone is not
 * enough, as other tests' loop filesystems have the same small inode
 * numbers (12 is the first file on a fresh ext4).
 */
static void lock_id(const struct stat *st, char *out, size_t size)
{
	snprintf(out, size, " %02x:%02x:%lu ", major(st->st_dev),
		 minor(st->st_dev), (unsigned long)st->st_ino);
}

bool fx_leased(const char *path)
{
	char line[512], want[64];
	struct stat st;
	bool found = false;
	FILE *f;

	assert_int_equal(stat(path, &st), 0);
	lock_id(&st, want, sizeof(want));
	f = fopen("/proc/locks", "re");
	assert_non_null(f);
	/* a lease, or a layout seal (SEAL, SEALX) on a patched kernel */
	while (fgets(line, sizeof(line), f))
		if ((strstr(line, "LEASE") || strstr(line, " SEAL")) &&
		    strstr(line, want) && !strstr(line, "->"))
			found = true;
	fclose(f);
	return found;
}

/* "N: LEASE  STATE  TYPE PID MAJ:MIN:INO ..." for path's lease, its
 * blocked openers "N: -> LEASE  BREAKER ..." under the same N. */
static int lease_line(const char *path, char *state, size_t size)
{
	char line[512], want[64], st[32];
	struct stat sb;
	int id = -1, n;
	FILE *f;

	assert_int_equal(stat(path, &sb), 0);
	lock_id(&sb, want, sizeof(want));
	f = fopen("/proc/locks", "re");
	assert_non_null(f);
	while (id < 0 && fgets(line, sizeof(line), f))
		if (strstr(line, want) && !strstr(line, "->") &&
		    sscanf(line, "%d: LEASE %31s", &n, st) == 2) {
			id = n;
			snprintf(state, size, "%s", st);
		}
	fclose(f);
	return id;
}

const char *fx_lease_state(const char *path, char *buf, size_t size)
{
	if (lease_line(path, buf, size) < 0)
		snprintf(buf, size, "none");
	return buf;
}

int fx_lease_waiters(const char *path)
{
	char line[512], st[32];
	int id = lease_line(path, st, sizeof(st)), n, count = 0;
	FILE *f;

	if (id < 0)
		return 0;
	f = fopen("/proc/locks", "re");
	assert_non_null(f);
	while (fgets(line, sizeof(line), f))
		if (sscanf(line, "%d: -> %31s", &n, st) == 2 && n == id)
			count++;
	fclose(f);
	return count;
}

/* ---------------------------------------------------------------- sysctl */

static struct saved {
	char path[128];
	int value;
} saved[8];
static int nsaved;

static void restore_all(void)
{
	while (nsaved > 0) {
		struct saved *s = &saved[--nsaved];
		FILE *f = fopen(s->path, "we");

		if (f) {
			fprintf(f, "%d\n", s->value);
			fclose(f);
		}
	}
}

void fx_sysctl_set(const char *path, int value)
{
	FILE *f = fopen(path, "re");
	int old;

	assert_non_null(f);
	assert_int_equal(fscanf(f, "%d", &old), 1);
	fclose(f);
	if (nsaved == 0)
		atexit(restore_all);	/* a failing test still restores */
	assert_true(nsaved < 8);
	snprintf(saved[nsaved].path, sizeof(saved[nsaved].path), "%s", path);
	saved[nsaved++].value = old;
	f = fopen(path, "we");
	assert_non_null(f);
	fprintf(f, "%d\n", value);
	assert_int_equal(fclose(f), 0);
}


/* ---------------------------------------------------------------- logs */

static void log_fn(void *data, int priority, const char *file, int line,
		   const char *fn, const char *format, va_list args)
{
	struct fx_log *log = data;

	(void)file;
	(void)line;
	(void)fn;
	log->count++;
	log->any_priority = priority;
	{
		va_list copy;

		va_copy(copy, args);
		vsnprintf(log->any, sizeof(log->any), format, copy);
		va_end(copy);
	}
	if (priority <= LOG_ERR) {
		log->errors++;
		vsnprintf(log->last, sizeof(log->last), format, args);
		if (getenv("IMM_TEST_VERBOSE"))
			fprintf(stderr, "  [lib] %s\n", log->last);
	}
}

void fx_log_attach(struct imm_ctx *ctx, struct fx_log *log)
{
	memset(log, 0, sizeof(*log));
	imm_ctx_set_log_fn(ctx, log_fn, log);
	imm_ctx_set_log_priority(ctx, LOG_ERR);
}

struct imm_ctx *fx_ctx(struct fx_log *log)
{
	struct imm_ctx *ctx = NULL;

	assert_int_equal(imm_ctx_new(&ctx), 0);
	if (log)
		fx_log_attach(ctx, log);
	return ctx;
}

int fx_dispatch_wait(struct imm_ctx *ctx, int timeout_ms)
{
	struct pollfd p = { .fd = imm_ctx_get_fd(ctx), .events = POLLIN };
	int r = poll(&p, 1, timeout_ms);

	assert_true(r >= 0);
	if (r == 0)
		return 0;
	return imm_ctx_dispatch(ctx);
}

/* ---------------------------------------------------------------- breakers */

struct breaker_shm {
	atomic_bool started;		/* about to break: timing starts */
	uint64_t blocked_ns;
	uint64_t end_ns;
	int err;
};

/* Results come back through a shared page, one per running breaker. */
static struct {
	pid_t pid;
	struct breaker_shm *shm;
} breakers[64];

static size_t slot_of(pid_t pid)
{
	for (size_t i = 0; i < sizeof(breakers) / sizeof(breakers[0]); i++)
		if (breakers[i].pid == pid)
			return i;
	fail_msg("more than 64 breakers at once");
	return 0;
}

static void breaker_run(const char *path, enum fx_break_op op,
			struct breaker_shm *shm)
{
	int r = 0, fd = -1;
	uint64_t t0 = fx_now_ns();

	atomic_store(&shm->started, true);
	switch (op) {
	case FX_OPEN_RDONLY:
		fd = open(path, O_RDONLY | O_CLOEXEC);
		break;
	case FX_OPEN_RDWR:
		fd = open(path, O_RDWR | O_CLOEXEC);
		break;
	case FX_OPEN_TRUNC:
		fd = open(path, O_RDWR | O_TRUNC | O_CLOEXEC);
		break;
	case FX_TRUNCATE:
		r = truncate(path, 0);
		break;
	}
	shm->end_ns = fx_now_ns();
	shm->blocked_ns = shm->end_ns - t0;
	shm->err = (fd < 0 && op != FX_TRUNCATE) || r < 0 ? errno : 0;
	_exit(0);
}

pid_t fx_breaker_start(const char *path, enum fx_break_op op)
{
	struct breaker_shm *shm;
	size_t i;
	pid_t pid;

	shm = mmap(NULL, sizeof(*shm), PROT_READ | PROT_WRITE,
		   MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	assert_true(shm != MAP_FAILED);
	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0)
		breaker_run(path, op, shm);
	/* A loaded machine may run the child late; callers time from here
	 * ("let the breaker block"), so return once it is at its call. */
	assert_until(atomic_load(&shm->started), 10000);
	i = slot_of(0);
	breakers[i].pid = pid;
	breakers[i].shm = shm;
	return pid;
}

uint64_t fx_breaker_wait(pid_t pid)
{
	return fx_breaker_wait_end(pid, NULL);
}

uint64_t fx_breaker_wait_end(pid_t pid, uint64_t *ret_end)
{
	size_t i = slot_of(pid);
	struct breaker_shm *shm = breakers[i].shm;
	uint64_t ns;
	int st;

	breakers[i].pid = 0;
	breakers[i].shm = NULL;
	/* The kernel lets a breaker wait up to lease-break-time (45 s by
	 * default) for a holder; more than that is a hang. */
	if (fx_waitpid_timeout(pid, &st, FX_BREAKER_TIMEOUT_MS) != pid)
		fail_msg("breaker %d still blocked after %d ms (killed)",
			 (int)pid, FX_BREAKER_TIMEOUT_MS);
	assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 0);
	ns = shm->blocked_ns;
	if (ret_end)
		*ret_end = shm->end_ns;
	if (shm->err) {
		int e = shm->err;

		munmap(shm, sizeof(*shm));
		fail_msg("breaker failed: %s", strerror(e));
	}
	munmap(shm, sizeof(*shm));
	return ns;
}

struct imm_handle *fx_seal(struct imm_ctx *ctx, const char *path,
			   uint32_t mode, uint64_t length)
{
	struct imm_handle *h;

	assert_int_equal(imm_handle_open(ctx, path, mode == IMM_SEAL_SHARED ?
					 IMM_RDONLY : IMM_RDWR, &h), 0);
	assert_int_equal(imm_seal(h, 0, length, mode, NULL), 0);
	return h;
}
