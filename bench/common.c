// SPDX-License-Identifier: LGPL-2.1-or-later
/* Shared pieces of the benchmarks; see common.h. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <math.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/utsname.h>
#include <sys/vfs.h>
#include <sys/wait.h>
#include <syslog.h>
#include <time.h>
#include <unistd.h>
#include <linux/falloc.h>
#include <linux/loop.h>

#include "common.h"

#define MiB (1024ull * 1024)

static const char *g_bench = "bench";
static const char *g_prog = "bench";

void bench_init(const char *name, const char *prog)
{
	const char *slash = prog ? strrchr(prog, '/') : NULL;

	g_bench = name;
	g_prog = slash ? slash + 1 : (prog ? prog : name);
	/* Lines, not blocks: the table and the JSON interleave with stderr
	 * sensibly when both go to one pipe. */
	setvbuf(stdout, NULL, _IOLBF, 0);
	bench_cleanup_init();
}

const char *bench_name(void)
{
	return g_bench;
}

uint64_t bench_now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

void bench_fail(const char *fmt, ...)
{
	va_list ap;

	fflush(stdout);
	fprintf(stderr, "%s: setup failed: ", g_prog);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	exit(2);	/* atexit runs the cleanup stack */
}

void bench_note(const char *fmt, ...)
{
	va_list ap;

	printf("note: ");
	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
	putchar('\n');
}

bool bench_parse_u64(const char *s, uint64_t *ret)
{
	unsigned long long v;
	char *end;

	if (!s || !*s || *s == '-')
		return false;
	errno = 0;
	v = strtoull(s, &end, 10);
	if (errno || *end)
		return false;
	*ret = v;
	return true;
}

/* ------------------------------------------------------------ stats */

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return x < y ? -1 : x > y;
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return x < y ? -1 : x > y;
}

/* Nearest rank: the smallest value with at least p of the samples at or
 * below it. */
static size_t rank(size_t n, double p)
{
	size_t k = (size_t)ceil(p * (double)n);

	return k ? k - 1 : 0;
}

void bench_stats_double(double *v, size_t n, struct bench_stats *s)
{
	double sum = 0;

	memset(s, 0, sizeof(*s));
	if (!n)
		return;
	qsort(v, n, sizeof(*v), cmp_double);
	for (size_t i = 0; i < n; i++)
		sum += v[i];
	s->n = n;
	s->min = v[0];
	s->max = v[n - 1];
	s->mean = sum / (double)n;
	s->median = n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
	s->p90 = v[rank(n, 0.90)];
	s->p99 = v[rank(n, 0.99)];
}

void bench_stats_u64(uint64_t *v, size_t n, struct bench_stats *s)
{
	double sum = 0;

	memset(s, 0, sizeof(*s));
	if (!n)
		return;
	qsort(v, n, sizeof(*v), cmp_u64);
	for (size_t i = 0; i < n; i++)
		sum += (double)v[i];
	s->n = n;
	s->min = (double)v[0];
	s->max = (double)v[n - 1];
	s->mean = sum / (double)n;
	s->median = n % 2 ? (double)v[n / 2] :
			    ((double)v[n / 2 - 1] + (double)v[n / 2]) / 2;
	s->p90 = (double)v[rank(n, 0.90)];
	s->p99 = (double)v[rank(n, 0.99)];
}

/* ------------------------------------------------------------ figures */

#define MAX_FIGS 64

struct fig {
	char metric[64];
	char label[80];
	char unit[12];
	double value;
	double baseline;	/* NAN: none */
	enum bench_goal_op op;
	double limit;
};

static struct fig figs[MAX_FIGS];
static size_t n_figs;
static char g_config[96];

void bench_set_config(const char *config)
{
	snprintf(g_config, sizeof(g_config), "%s", config ? config : "");
}

static void fig_push(const char *metric, const char *label, const char *unit,
		     double value, double baseline, enum bench_goal_op op,
		     double limit)
{
	struct fig *f;

	if (n_figs == MAX_FIGS) {
		fprintf(stderr, "%s: too many figures, %s dropped\n", g_prog,
			metric);
		return;
	}
	f = &figs[n_figs++];
	snprintf(f->metric, sizeof(f->metric), "%s", metric);
	snprintf(f->label, sizeof(f->label), "%s", label);
	snprintf(f->unit, sizeof(f->unit), "%s", unit ? unit : "");
	f->value = value;
	f->baseline = baseline;
	f->op = op;
	f->limit = limit;
}

void bench_fig(const char *metric, const char *label, const char *unit,
	       double value, enum bench_goal_op op, double limit)
{
	fig_push(metric, label, unit, value, NAN, op, limit);
}

void bench_fig_cmp(const char *metric, const char *label, const char *unit,
		   double value, double baseline, enum bench_goal_op op,
		   double limit)
{
	fig_push(metric, label, unit, value, baseline, op, limit);
}

static bool fig_has_ratio(const struct fig *f)
{
	return !isnan(f->baseline) && f->baseline > 0;
}

static double fig_ratio(const struct fig *f)
{
	return fig_has_ratio(f) ? f->value / f->baseline : NAN;
}

/* 1 met, 0 missed, -1 no goal or nothing to judge */
static int fig_met(const struct fig *f)
{
	double x;

	if (f->op == GOAL_NONE)
		return -1;
	if (!isnan(f->baseline)) {
		if (!fig_has_ratio(f))
			return -1;
		x = fig_ratio(f);
	} else {
		x = f->value;
	}
	if (isnan(x))
		return -1;
	return f->op == GOAL_LE ? x <= f->limit : x < f->limit;
}

static void fig_goal(const struct fig *f, char *buf, size_t sz)
{
	if (f->op == GOAL_NONE)
		snprintf(buf, sz, "%s", "");
	else
		snprintf(buf, sz, "%s%g", f->op == GOAL_LE ? "<=" : "<",
			 f->limit);
}

/* Integers as integers, large values without exponents, the rest with
 * four significant digits. */
static void fmt_number(char *buf, size_t sz, double v)
{
	if (isnan(v) || isinf(v))
		snprintf(buf, sz, "%s", "null");
	else if (v == floor(v) && fabs(v) < 1e15)
		snprintf(buf, sz, "%.0f", v);
	else if (fabs(v) >= 1000)
		snprintf(buf, sz, "%.1f", v);
	else
		snprintf(buf, sz, "%.4g", v);
}

static void json_number(double v)
{
	char buf[48];

	fmt_number(buf, sizeof(buf), v);
	fputs(buf, stdout);
}

void bench_report(void)
{
	char goal[24];

	printf("\n%-48s %12s %-6s %10s %8s %10s  %s\n", "figure", "value", "unit",
	       "baseline", "ratio", "goal", "result");
	for (size_t i = 0; i < n_figs; i++) {
		const struct fig *f = &figs[i];
		int met = fig_met(f);
		char val[48], base[48] = "", ratio[24] = "";

		fig_goal(f, goal, sizeof(goal));
		fmt_number(val, sizeof(val), f->value);
		if (!isnan(f->baseline))
			fmt_number(base, sizeof(base), f->baseline);
		if (fig_has_ratio(f))
			snprintf(ratio, sizeof(ratio), "%.3fx", fig_ratio(f));
		if (*goal && !isnan(f->baseline))
			strncat(goal, "x", sizeof(goal) - strlen(goal) - 1);
		printf("%-48s %12s %-6s %10s %8s %10s  %s\n", f->label, val,
		       f->unit, base, ratio, goal,
		       met < 0 ? "" : met ? "met" : "MISSED");
	}
	putchar('\n');
	for (size_t i = 0; i < n_figs; i++) {
		const struct fig *f = &figs[i];
		int met = fig_met(f);

		printf("{\"bench\":\"%s\",\"metric\":\"%s\",\"value\":", g_bench,
		       f->metric);
		json_number(f->value);
		if (!isnan(f->baseline)) {
			fputs(",\"baseline\":", stdout);
			json_number(f->baseline);
			fputs(",\"ratio\":", stdout);
			json_number(fig_ratio(f));
		}
		if (f->op != GOAL_NONE) {
			fig_goal(f, goal, sizeof(goal));
			printf(",\"goal\":\"%s\"", goal);
			if (met >= 0)
				printf(",\"met\":%s", met ? "true" : "false");
		}
		if (*f->unit)
			printf(",\"unit\":\"%s\"", f->unit);
		if (*g_config)
			printf(",\"config\":\"%s\"", g_config);
		puts("}");
	}
	fflush(stdout);
}

/* ------------------------------------------------------------ cleanup */

enum cu_kind { CU_UNLINK, CU_RMDIR, CU_UMOUNT, CU_LOOP, CU_CHILD, CU_FILESET };

struct cu_action {
	enum cu_kind kind;
	char *path;
	char *prefix;
	unsigned count;
	int fd;
	pid_t pid;
	volatile sig_atomic_t done;
};

#define MAX_ACTIONS 64

static struct cu_action actions[MAX_ACTIONS];
static volatile sig_atomic_t n_actions;
static pid_t owner_pid;
static const char *volatile watchdog_what;

/* Async-signal-safe: only syscalls and stack buffers from here on. */
static void say(const char *s)
{
	size_t n = strlen(s);

	while (n) {
		ssize_t w = write(STDERR_FILENO, s, n);

		if (w <= 0)
			return;
		s += w;
		n -= (size_t)w;
	}
}

static void fileset_unlink(const struct cu_action *a)
{
	char p[PATH_MAX];
	size_t dl = strlen(a->path), pl = strlen(a->prefix);

	if (dl + 1 + pl + 6 > sizeof(p))
		return;
	memcpy(p, a->path, dl);
	p[dl] = '/';
	memcpy(p + dl + 1, a->prefix, pl);
	for (unsigned i = 0; i < a->count; i++) {
		char *d = p + dl + 1 + pl;
		unsigned v = i;

		for (int k = 4; k >= 0; k--) {
			d[k] = (char)('0' + v % 10);
			v /= 10;
		}
		d[5] = '\0';
		unlink(p);
	}
}

static void run_action(struct cu_action *a)
{
	if (a->done)
		return;
	a->done = 1;
	switch (a->kind) {
	case CU_UNLINK:
		unlink(a->path);
		break;
	case CU_RMDIR:
		if (rmdir(a->path) < 0 && errno != ENOENT) {
			say("bench: cannot remove directory ");
			say(a->path);
			say(" (not empty?)\n");
		}
		break;
	case CU_UMOUNT:
		if (umount2(a->path, 0) < 0 && errno == EBUSY) {
			/* Something still has a file open: detach now, the
			 * kernel finishes when the last fd goes. */
			if (umount2(a->path, MNT_DETACH) < 0) {
				say("bench: cannot unmount ");
				say(a->path);
				say("\n");
			}
		}
		break;
	case CU_LOOP:
		ioctl(a->fd, LOOP_CLR_FD, 0);
		close(a->fd);
		break;
	case CU_CHILD:
		kill(a->pid, SIGKILL);
		while (waitpid(a->pid, NULL, 0) < 0 && errno == EINTR)
			;
		break;
	case CU_FILESET:
		fileset_unlink(a);
		break;
	}
}

void bench_cleanup_all(void)
{
	int saved = errno;

	if (getpid() != owner_pid)
		return;
	for (int i = n_actions - 1; i >= 0; i--)
		run_action(&actions[i]);
	errno = saved;
}

static void on_signal(int sig)
{
	if (getpid() == owner_pid) {
		if (sig == SIGALRM) {
			say("bench: watchdog: ");
			say(watchdog_what ? watchdog_what : "a step");
			say(" took too long; cleaning up and giving up\n");
		}
		bench_cleanup_all();
		if (sig == SIGALRM)
			_exit(2);
	}
	signal(sig, SIG_DFL);
	raise(sig);
}

void bench_cleanup_init(void)
{
	static const int sigs[] = { SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGALRM };
	struct sigaction sa;

	owner_pid = getpid();
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_signal;
	sigfillset(&sa.sa_mask);
	for (size_t i = 0; i < sizeof(sigs) / sizeof(sigs[0]); i++)
		sigaction(sigs[i], &sa, NULL);
	atexit(bench_cleanup_all);
}

static int push(enum cu_kind kind, const char *path, const char *prefix,
		unsigned count, int fd, pid_t pid)
{
	struct cu_action *a;
	int id = n_actions;

	if (id == MAX_ACTIONS)
		bench_fail("cleanup stack full");
	a = &actions[id];
	memset(a, 0, sizeof(*a));
	a->kind = kind;
	a->path = path ? strdup(path) : NULL;
	a->prefix = prefix ? strdup(prefix) : NULL;
	if ((path && !a->path) || (prefix && !a->prefix))
		bench_fail("out of memory");
	a->count = count;
	a->fd = fd;
	a->pid = pid;
	/* The entry is complete before a signal handler can see it. */
	atomic_signal_fence(memory_order_seq_cst);
	n_actions = id + 1;
	return id;
}

int bench_cleanup_unlink(const char *path)
{
	return push(CU_UNLINK, path, NULL, 0, -1, 0);
}

int bench_cleanup_rmdir(const char *path)
{
	return push(CU_RMDIR, path, NULL, 0, -1, 0);
}

int bench_cleanup_umount(const char *path)
{
	return push(CU_UMOUNT, path, NULL, 0, -1, 0);
}

int bench_cleanup_loop(int loop_fd)
{
	return push(CU_LOOP, NULL, NULL, 0, loop_fd, 0);
}

int bench_cleanup_child(pid_t pid)
{
	return push(CU_CHILD, NULL, NULL, 0, -1, pid);
}

int bench_cleanup_fileset(const char *dir, const char *prefix, unsigned count)
{
	if (count > 100000)
		bench_fail("file sets are named with 5 digits: at most 100000");
	return push(CU_FILESET, dir, prefix, count, -1, 0);
}

void bench_cleanup_run(int id)
{
	if (id >= 0 && id < n_actions)
		run_action(&actions[id]);
}

void bench_cleanup_forget(int id)
{
	if (id >= 0 && id < n_actions)
		actions[id].done = 1;
}

void bench_watchdog(unsigned seconds, const char *what)
{
	watchdog_what = what;
	alarm(seconds);
}

/* ------------------------------------------------------------ files */

const char *bench_base_dir(void)
{
	const char *d = getenv("IMM_BENCH_DIR");

	return d && *d ? d : "/tmp";
}

void bench_make_tmpdir(const char *base, const char *tag, char *out,
		       size_t outsz)
{
	int n = snprintf(out, outsz, "%s/immbench-%s-XXXXXX", base, tag);

	if (n < 0 || (size_t)n >= outsz)
		bench_fail("directory name too long under %s", base);
	if (!mkdtemp(out))
		bench_fail("cannot create a directory under %s: %s "
			   "(set IMM_BENCH_DIR to a writable ext4 directory)",
			   base, strerror(errno));
	bench_cleanup_rmdir(out);
}

void bench_path(char *out, size_t outsz, const char *dir, const char *name)
{
	int n = snprintf(out, outsz, "%s/%s", dir, name);

	if (n < 0 || (size_t)n >= outsz)
		bench_fail("path too long: %s/%s", dir, name);
}

const char *bench_fs_name(const char *path)
{
	struct statfs s;

	if (statfs(path, &s) < 0)
		return "unknown";
	switch ((unsigned long)s.f_type) {
	case 0xEF53ul:
		return "ext4";
	case 0x58465342ul:
		return "xfs";
	case 0x01021994ul:
		return "tmpfs";
	case 0x9123683Eul:
		return "btrfs";
	default:
		return "other";
	}
}

uint64_t bench_free_bytes(const char *path)
{
	struct statvfs s;

	if (statvfs(path, &s) < 0)
		return 0;
	return (uint64_t)s.f_bavail * (uint64_t)s.f_frsize;
}

int bench_create_written(const char *path, uint64_t size, bool register_it)
{
	const size_t chunk = 1u << 20;
	char *buf;
	uint64_t off = 0;
	int fd, r = 0;

	fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	if (fd < 0)
		return -errno;
	if (register_it)
		bench_cleanup_unlink(path);
	/* Allocate in one go (few, large extents), then write every byte so
	 * nothing is left unwritten: the seal then has nothing to prepare. */
	if (size >= chunk && fallocate(fd, 0, 0, (off_t)size) < 0 &&
	    errno != EOPNOTSUPP) {
		r = -errno;
		goto out;
	}
	buf = malloc(chunk);
	if (!buf) {
		r = -ENOMEM;
		goto out;
	}
	for (size_t i = 0; i < chunk; i++)
		buf[i] = (char)(0x5a ^ (i >> 12));
	while (off < size) {
		size_t n = size - off < chunk ? (size_t)(size - off) : chunk;
		ssize_t w = pwrite(fd, buf, n, (off_t)off);

		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0) {
			r = w < 0 ? -errno : -EIO;
			break;
		}
		off += (uint64_t)w;
	}
	free(buf);
	if (r == 0 && fsync(fd) < 0)
		r = -errno;
out:
	close(fd);
	return r;
}

int bench_open_written(const char *dir, const char *name, uint64_t size,
		       uint64_t slack, char *path, size_t pathsz)
{
	int r, fd;

	if (bench_free_bytes(dir) < size + slack)
		bench_fail("%llu MiB needed, %llu MiB free in %s",
			   (unsigned long long)((size + slack) >> 20),
			   (unsigned long long)(bench_free_bytes(dir) >> 20), dir);
	bench_path(path, pathsz, dir, name);
	r = bench_create_written(path, size, true);
	if (r < 0)
		bench_fail("writing %llu MiB to %s: %s",
			   (unsigned long long)(size >> 20), path, strerror(-r));
	fd = open(path, O_RDWR | O_CLOEXEC);
	if (fd < 0)
		bench_fail("open %s: %s", path, strerror(errno));
	return fd;
}

enum bench_frag_result bench_create_fragmented(const char *path,
					       uint64_t extents,
					       uint64_t budget_ns,
					       double *ret_seconds)
{
	const uint64_t blk = 4096;
	const size_t chunk = 1u << 20;
	uint64_t t0 = bench_now_ns(), size;
	enum bench_frag_result res = FRAG_OK;
	char *buf;
	int fd;

	fd = open(path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	if (fd < 0)
		bench_fail("create %s: %s", path, strerror(errno));
	bench_cleanup_unlink(path);
	/* One allocation: physically contiguous as far as the allocator can. */
	if (fallocate(fd, 0, 0, (off_t)(2 * extents * blk)) < 0)
		bench_fail("fallocate %llu MiB in %s: %s",
			   (unsigned long long)(2 * extents * blk >> 20), path,
			   strerror(errno));
	for (uint64_t i = 1; i < extents; i++) {
		if (fallocate(fd, FALLOC_FL_COLLAPSE_RANGE, (off_t)(i * blk),
			      (off_t)blk) < 0) {
			if (errno != EOPNOTSUPP && errno != EINVAL)
				bench_fail("collapse range: %s", strerror(errno));
			res = FRAG_UNSUPPORTED;
			goto out;
		}
		if (i % 1024 == 0 && bench_now_ns() - t0 > budget_ns) {
			res = FRAG_TOO_SLOW;
			goto out;
		}
	}
	/* Write every byte: no unwritten extent left for preparation. */
	size = (uint64_t)lseek(fd, 0, SEEK_END);
	buf = malloc(chunk);
	if (!buf)
		bench_fail("out of memory");
	memset(buf, 0x6b, chunk);
	for (uint64_t off = 0; off < size;) {
		size_t n = size - off < chunk ? (size_t)(size - off) : chunk;
		ssize_t w = pwrite(fd, buf, n, (off_t)off);

		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0)
			bench_fail("write %s: %s", path, w < 0 ? strerror(errno) :
							       "short write");
		off += (uint64_t)w;
	}
	free(buf);
	if (fsync(fd) < 0)
		bench_fail("fsync %s: %s", path, strerror(errno));
out:
	close(fd);
	*ret_seconds = (double)(bench_now_ns() - t0) / 1e9;
	return res;
}

void bench_raise_nofile(uint64_t want)
{
	struct rlimit rl;

	if (getrlimit(RLIMIT_NOFILE, &rl) < 0)
		bench_fail("getrlimit: %s", strerror(errno));
	if (rl.rlim_cur != RLIM_INFINITY && rl.rlim_cur >= want)
		return;
	if (rl.rlim_max != RLIM_INFINITY && rl.rlim_max < want)
		rl.rlim_max = want;	/* needs CAP_SYS_RESOURCE */
	rl.rlim_cur = want;
	if (setrlimit(RLIMIT_NOFILE, &rl) < 0)
		bench_fail("setrlimit(RLIMIT_NOFILE, %llu): %s; run as root or "
			   "raise the hard limit (ulimit -Hn)",
			   (unsigned long long)want, strerror(errno));
}

void bench_pin_cpu(uint64_t cpu)
{
	cpu_set_t cpus;

	if (cpu >= CPU_SETSIZE)
		bench_fail("no CPU %llu", (unsigned long long)cpu);
	CPU_ZERO(&cpus);
	CPU_SET((int)cpu, &cpus);
	if (sched_setaffinity(0, sizeof(cpus), &cpus) < 0)
		bench_fail("pinning to CPU %llu: %s", (unsigned long long)cpu,
			   strerror(errno));
}

static void log_to_stderr(void *data, int priority, const char *file,
			  int line, const char *fn, const char *format,
			  va_list args)
{
	(void)data;
	(void)file;
	(void)line;
	fprintf(stderr, "libimmutable %s %s: ",
		priority <= LOG_ERR ? "error" : "warning", fn);
	vfprintf(stderr, format, args);
	fputc('\n', stderr);
}

struct imm_ctx *bench_ctx_new(void)
{
	struct imm_ctx *ctx;
	int r = imm_ctx_new(&ctx);

	if (r < 0)
		bench_fail("imm_ctx_new: %s", strerror(-r));
	imm_ctx_set_log_fn(ctx, log_to_stderr, NULL);
	imm_ctx_set_log_priority(ctx, LOG_WARNING);
	return ctx;
}

const char *bench_kernel(void)
{
	static char buf[sizeof(((struct utsname *)0)->release)];
	struct utsname u;

	if (!*buf && uname(&u) == 0)
		snprintf(buf, sizeof(buf), "%s", u.release);
	return buf;
}

/* ------------------------------------------------------------ breaker */

struct breaker_cmd {
	int oflags;	/* -1: exit */
	char path[1024];
};

static bool read_full(int fd, void *buf, size_t n)
{
	char *p = buf;

	while (n) {
		ssize_t r = read(fd, p, n);

		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			return false;
		p += r;
		n -= (size_t)r;
	}
	return true;
}

static bool write_full(int fd, const void *buf, size_t n)
{
	const char *p = buf;

	while (n) {
		ssize_t w = write(fd, p, n);

		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0)
			return false;
		p += w;
		n -= (size_t)w;
	}
	return true;
}

static BENCH_NORETURN void breaker_main(int cmd_fd, int ack_fd,
					volatile struct bench_shared *shm)
{
	struct breaker_cmd cmd;

	while (read_full(cmd_fd, &cmd, sizeof(cmd)) && cmd.oflags >= 0) {
		char ack = 1;
		uint64_t t0, t1;
		int fd;

		t0 = bench_now_ns();
		shm->t_start = t0;
		fd = open(cmd.path, cmd.oflags | O_CLOEXEC);
		t1 = bench_now_ns();
		shm->t_return = t1;
		shm->open_errno = fd < 0 ? errno : 0;
		if (fd >= 0)
			close(fd);
		if (!write_full(ack_fd, &ack, 1))
			break;
	}
	_exit(0);
}

void bench_breaker_start(struct bench_breaker *b)
{
	int cmd[2], ack[2];
	void *shm;

	shm = mmap(NULL, sizeof(struct bench_shared), PROT_READ | PROT_WRITE,
		   MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (shm == MAP_FAILED)
		bench_fail("mmap: %s", strerror(errno));
	if (pipe2(cmd, O_CLOEXEC) < 0 || pipe2(ack, O_CLOEXEC) < 0)
		bench_fail("pipe: %s", strerror(errno));
	fflush(NULL);
	b->pid = fork();
	if (b->pid < 0)
		bench_fail("fork: %s", strerror(errno));
	if (b->pid == 0) {
		close(cmd[1]);
		close(ack[0]);
		breaker_main(cmd[0], ack[1], shm);
	}
	close(cmd[0]);
	close(ack[1]);
	b->cmd_fd = cmd[1];
	b->ack_fd = ack[0];
	b->shm = shm;
	b->cleanup_id = bench_cleanup_child(b->pid);
}

void bench_breaker_go(struct bench_breaker *b, const char *path, int oflags)
{
	struct breaker_cmd cmd;

	memset(&cmd, 0, sizeof(cmd));
	cmd.oflags = oflags;
	if (snprintf(cmd.path, sizeof(cmd.path), "%s", path) >=
	    (int)sizeof(cmd.path))
		bench_fail("path too long for the breaker: %s", path);
	b->shm->t_start = 0;
	b->shm->t_return = 0;
	b->shm->open_errno = 0;
	if (!write_full(b->cmd_fd, &cmd, sizeof(cmd)))
		bench_fail("the breaker process is gone: %s", strerror(errno));
}

int bench_breaker_wait(struct bench_breaker *b, int timeout_ms)
{
	struct pollfd p = { .fd = b->ack_fd, .events = POLLIN };
	char ack;
	int r;

	do {
		r = poll(&p, 1, timeout_ms);
	} while (r < 0 && errno == EINTR);
	if (r == 0)
		return -ETIMEDOUT;
	if (r < 0 || !read_full(b->ack_fd, &ack, 1))
		bench_fail("the breaker process is gone");
	return b->shm->open_errno;
}

void bench_breaker_stop(struct bench_breaker *b)
{
	struct breaker_cmd cmd;

	memset(&cmd, 0, sizeof(cmd));
	cmd.oflags = -1;
	write_full(b->cmd_fd, &cmd, sizeof(cmd));
	close(b->cmd_fd);
	close(b->ack_fd);
	while (waitpid(b->pid, NULL, 0) < 0 && errno == EINTR)
		;
	bench_cleanup_forget(b->cleanup_id);
	munmap((void *)b->shm, sizeof(struct bench_shared));
}

double bench_paired_ratio(const uint64_t *lib, const uint64_t *raw, size_t n)
{
	struct bench_stats s;
	double *r = calloc(n, sizeof(double));

	if (!r)
		bench_fail("out of memory");
	for (size_t i = 0; i < n; i++)
		r[i] = (double)lib[i] / (double)raw[i];
	bench_stats_double(r, n, &s);
	free(r);
	return s.median;
}

bool bench_fd_is_dax(int fd)
{
	struct statx stx;

	if (statx(fd, "", AT_EMPTY_PATH, STATX_BASIC_STATS, &stx) < 0)
		bench_fail("statx: %s", strerror(errno));
	return (stx.stx_attributes_mask & STATX_ATTR_DAX) &&
	       (stx.stx_attributes & STATX_ATTR_DAX);
}

void bench_check_sealed(struct imm_handle *h, const char *when)
{
	int st = imm_handle_get_state(h);

	if (st != IMM_STATE_SEALED)
		bench_fail("the seal did not hold %s: the handle is %s; "
			   "something opened the file, so the figures are void",
			   when, imm_state_name(st));
}

/* ------------------------------------------------------------ loop filesystems */

static void run_mkfs(const char *kind, const char *image)
{
	pid_t pid;
	int st;

	fflush(NULL);
	pid = fork();
	if (pid < 0)
		bench_fail("fork: %s", strerror(errno));
	if (pid == 0) {
		int devnull = open("/dev/null", O_WRONLY);

		if (devnull >= 0)
			dup2(devnull, STDOUT_FILENO);
		if (!strcmp(kind, "xfs"))
			execlp("mkfs.xfs", "mkfs.xfs", "-q", "-f", image,
			       (char *)NULL);
		else
			execlp("mkfs.ext4", "mkfs.ext4", "-q", "-F", image,
			       (char *)NULL);
		fprintf(stderr, "mkfs.%s: %s\n", kind, strerror(errno));
		_exit(127);
	}
	while (waitpid(pid, &st, 0) < 0)
		if (errno != EINTR)
			bench_fail("waitpid: %s", strerror(errno));
	if (!WIFEXITED(st) || WEXITSTATUS(st))
		bench_fail("mkfs.%s %s failed (are xfsprogs and e2fsprogs "
			   "installed?)", kind, image);
}

static int attach_loop(const char *image, char *dev, size_t devsz)
{
	int ctl, img, lfd = -1;

	img = open(image, O_RDWR | O_CLOEXEC);
	if (img < 0)
		bench_fail("open %s: %s", image, strerror(errno));
	ctl = open("/dev/loop-control", O_RDWR | O_CLOEXEC);
	if (ctl < 0)
		bench_fail("/dev/loop-control: %s (no loop driver, or not root)",
			   strerror(errno));
	/* Others may grab the same free device between the two calls. */
	for (int attempt = 0; attempt < 20 && lfd < 0; attempt++) {
		struct loop_config cfg;
		int n = ioctl(ctl, LOOP_CTL_GET_FREE);

		if (n < 0)
			bench_fail("LOOP_CTL_GET_FREE: %s", strerror(errno));
		snprintf(dev, devsz, "/dev/loop%d", n);
		lfd = open(dev, O_RDWR | O_CLOEXEC);
		if (lfd < 0)
			continue;
		memset(&cfg, 0, sizeof(cfg));
		cfg.fd = (uint32_t)img;
		/* Autoclear: the device goes away with its last user even if
		 * this process is killed before it can detach it. */
		cfg.info.lo_flags = LO_FLAGS_AUTOCLEAR;
		if (ioctl(lfd, LOOP_CONFIGURE, &cfg) < 0) {
			int e = errno;

			close(lfd);
			lfd = -1;
			if (e != EBUSY)
				bench_fail("LOOP_CONFIGURE %s: %s", dev, strerror(e));
		}
	}
	close(ctl);
	close(img);
	if (lfd < 0)
		bench_fail("no free loop device after 20 attempts");
	bench_cleanup_loop(lfd);
	return lfd;
}

void bench_make_loop_fs(const char *base, const char *kind,
			uint64_t image_bytes, char *mnt, size_t mntsz,
			char *dev, size_t devsz)
{
	char dir[PATH_MAX], image[PATH_MAX];
	int fd;

	if (bench_free_bytes(base) < image_bytes + 256 * MiB)
		bench_fail("an %s image of %llu MiB does not fit in %s", kind,
			   (unsigned long long)(image_bytes / MiB), base);
	bench_make_tmpdir(base, "fsimg", dir, sizeof(dir));
	bench_path(image, sizeof(image), dir, "fs.img");
	fd = open(image, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	if (fd < 0)
		bench_fail("create %s: %s", image, strerror(errno));
	bench_cleanup_unlink(image);
	if (ftruncate(fd, (off_t)image_bytes) < 0)
		bench_fail("ftruncate %s: %s", image, strerror(errno));
	close(fd);
	run_mkfs(kind, image);
	attach_loop(image, dev, devsz);
	bench_path(mnt, mntsz, dir, "mnt-XXXXXX");
	if (!mkdtemp(mnt))
		bench_fail("mkdtemp %s: %s", mnt, strerror(errno));
	bench_cleanup_rmdir(mnt);
	if (mount(dev, mnt, kind, 0, "") < 0)
		bench_fail("mount %s on %s: %s", dev, mnt, strerror(errno));
	bench_cleanup_umount(mnt);
	printf("made an %s of %llu MiB on %s (image %s), mounted on %s\n",
	       kind, (unsigned long long)(image_bytes / MiB), dev, image, mnt);
}
