// SPDX-License-Identifier: LGPL-2.1-or-later
/*
 * bench-break: how long from another process's open() of a sealed file to
 * the holder's callback, and how long that open() stays blocked when the
 * callback releases at once.  Three holders, interleaved round by round:
 *
 *   raw       the floor: a thread of its own (as the library's notifier
 *             is), RT signal blocked, F_SETOWN_EX to itself + F_SETSIG +
 *             F_SETLEASE F_WRLCK, a blocking read of a signalfd, then
 *             F_SETLEASE F_UNLCK;
 *   async     libimmutable, IMM_EVENT_FN_ASYNC: the callback runs on the
 *             library's notifier thread and calls imm_release();
 *   dispatch  libimmutable, poll(imm_ctx_get_fd()) + imm_ctx_dispatch() in
 *             this thread; the callback calls imm_release().
 *
 * Times are CLOCK_MONOTONIC; the breaker process stores its start time in
 * MAP_SHARED memory, the callback reads the clock first thing.
 *
 * With --seals N the library's context holds N - 1 more seals (shared, on
 * files of their own, never broken): a context with one handle takes a
 * shorter path to the callback (the notifier asks that seal before it
 * reads the signal queue), so this measures the general one.
 *
 * On a VM, waking a halted vCPU can cost more than the whole path; --pin
 * puts the holder, its threads and the breaker on one CPU, which leaves
 * the software path alone.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <semaphore.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/signalfd.h>
#include <unistd.h>

#include "common.h"

#define FILE_SIZE (64u * 1024u)
#define TIMEOUT_MS 60000

enum mode { M_RAW, M_ASYNC, M_DISPATCH, N_MODES };

static const char *const mode_name[N_MODES] = { "raw", "async", "dispatch" };

struct lib_state {
	struct imm_handle *h;
	atomic_uint_fast64_t t_cb;	/* first thing in the callback */
	atomic_uint_fast64_t t_ev;	/* the notifier's stamp of the break */
	atomic_int fired;
	atomic_int release_err;
	atomic_int other_events;
	atomic_bool async;		/* the callback runs on the notifier */
	int done_efd;			/* async: the callback has released */
};

struct samples {
	uint64_t *lat;		/* breaker's open() start -> callback */
	uint64_t *blocked;	/* breaker's open() start -> return */
	uint64_t *notifier;	/* open() start -> the library's break stamp */
	size_t n;
};

struct raw_thread {
	pthread_t thread;
	pid_t tid;
	bool arm_here;		/* the thread arms its own lease */
	int fd;
	int sig;
	int sfd;
	int done_efd;
	sem_t arm, armed;
	atomic_bool quit;
	atomic_uint_fast64_t t_cb;
};

struct run {
	struct bench_breaker br;
	int oflags;
	char raw_path[PATH_MAX];
	char lib_path[PATH_MAX];
	struct raw_thread raw;
	uint64_t lib_size;
	struct imm_ctx *ctx;
	struct lib_state lib;
	struct samples s[N_MODES];
	struct imm_handle **idle;	/* --seals: the other seals */
	uint64_t n_idle;
};

static void on_event(struct imm_event *ev, void *userdata)
{
	uint64_t t = bench_now_ns();
	struct lib_state *st = userdata;
	uint64_t one = 1;
	int r;

	if (imm_event_get_type(ev) != IMM_EVENT_RECALL) {
		atomic_fetch_add(&st->other_events, 1);
		return;
	}
	atomic_store(&st->t_cb, t);
	atomic_store(&st->t_ev, imm_event_get_time_ns(ev));
	r = imm_release(imm_event_get_handle(ev));
	if (r < 0)
		atomic_store(&st->release_err, r);
	atomic_store(&st->fired, 1);
	if (atomic_load(&st->async) &&
	    write(st->done_efd, &one, sizeof(one)) < 0)
		atomic_store(&st->release_err, -errno);
}

/*
 * The raw holder: its own thread, like the library's notifier, so that the
 * two differ by the library and not by who sleeps where.  It arms the lease
 * itself (the owner is its own tid), blocks in read() on a signalfd, stamps
 * the time, drops the lease and reports.  With --raw-arm-main the main
 * thread arms it instead (owner: the raw thread's tid), as imm_seal() does
 * for the notifier, and the raw thread never leaves its read() but for a
 * break -- the library's notifier sleeps just as long.
 */
static void raw_arm(struct raw_thread *rt)
{
	struct f_owner_ex owner = { .type = F_OWNER_TID, .pid = rt->tid };

	/* F_UNLCK cleared both: aim the signal again before every lease. */
	if (fcntl(rt->fd, F_SETOWN_EX, &owner) < 0 ||
	    fcntl(rt->fd, F_SETSIG, rt->sig) < 0)
		bench_fail("raw: F_SETOWN_EX/F_SETSIG: %s", strerror(errno));
	if (fcntl(rt->fd, F_SETLEASE, F_WRLCK) < 0)
		bench_fail("raw: F_SETLEASE F_WRLCK: %s%s", strerror(errno),
			   errno == EAGAIN ? " (the file is open elsewhere)" : "");
}

/* false: asked to quit */
static bool raw_take(struct raw_thread *rt)
{
	struct signalfd_siginfo si;
	uint64_t t, one = 1;
	ssize_t n;

	do {
		n = read(rt->sfd, &si, sizeof(si));
	} while (n < 0 && errno == EINTR);
	t = bench_now_ns();
	if (n != (ssize_t)sizeof(si))
		bench_fail("raw: signalfd read: %s", n < 0 ? strerror(errno) :
							      "short read");
	if (si.ssi_code == SI_TKILL && atomic_load(&rt->quit))
		return false;
	if ((int)si.ssi_signo != rt->sig || (int)si.ssi_fd != rt->fd)
		bench_fail("raw: unexpected signal %u for fd %d", si.ssi_signo,
			   (int)si.ssi_fd);
	if (fcntl(rt->fd, F_SETLEASE, F_UNLCK) < 0)
		bench_fail("raw: F_SETLEASE F_UNLCK: %s", strerror(errno));
	atomic_store(&rt->t_cb, t);
	if (write(rt->done_efd, &one, sizeof(one)) < 0)
		bench_fail("raw: eventfd write: %s", strerror(errno));
	return true;
}

static void *raw_main(void *arg)
{
	struct raw_thread *rt = arg;

	/* The signal is blocked: inherited from main(), set before any
	 * thread existed.  The signalfd reads this thread's own queue. */
	rt->tid = gettid();
	sem_post(&rt->armed);	/* the tid is known */
	if (!rt->arm_here) {
		while (raw_take(rt))
			;
		return NULL;
	}
	for (;;) {
		while (sem_wait(&rt->arm) < 0 && errno == EINTR)
			;
		if (atomic_load(&rt->quit))
			break;
		raw_arm(rt);
		sem_post(&rt->armed);
		raw_take(rt);
	}
	return NULL;
}

static void raw_start(struct raw_thread *rt, const char *path, int sig,
		      bool arm_here)
{
	sigset_t set;
	int r;

	rt->sig = sig;
	rt->arm_here = arm_here;
	rt->fd = open(path, O_RDWR | O_CLOEXEC);
	if (rt->fd < 0)
		bench_fail("open %s: %s", path, strerror(errno));
	sigemptyset(&set);
	sigaddset(&set, sig);
	rt->sfd = signalfd(-1, &set, SFD_CLOEXEC);
	rt->done_efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (rt->sfd < 0 || rt->done_efd < 0)
		bench_fail("signalfd/eventfd: %s", strerror(errno));
	if (sem_init(&rt->arm, 0, 0) < 0 || sem_init(&rt->armed, 0, 0) < 0)
		bench_fail("sem_init: %s", strerror(errno));
	r = pthread_create(&rt->thread, NULL, raw_main, rt);
	if (r)
		bench_fail("pthread_create: %s", strerror(r));
	while (sem_wait(&rt->armed) < 0 && errno == EINTR)
		;
}

/* Arm the raw lease for one break, from wherever the run says. */
static void raw_prepare(struct raw_thread *rt)
{
	if (!rt->arm_here) {
		raw_arm(rt);
		return;
	}
	sem_post(&rt->arm);
	while (sem_wait(&rt->armed) < 0 && errno == EINTR)
		;
}

static void raw_stop(struct raw_thread *rt)
{
	atomic_store(&rt->quit, true);
	if (rt->arm_here)
		sem_post(&rt->arm);
	else
		pthread_kill(rt->thread, rt->sig);
	pthread_join(rt->thread, NULL);
	sem_destroy(&rt->arm);
	sem_destroy(&rt->armed);
	close(rt->fd);
	close(rt->sfd);
	close(rt->done_efd);
}

static void lib_seal(struct run *ru)
{
	int r = imm_seal(ru->lib.h, 0, ru->lib_size, IMM_SEAL_EXCLUSIVE, NULL);

	if (r < 0)
		bench_fail("imm_seal: %s", strerror(-r));
	atomic_store(&ru->lib.fired, 0);
	atomic_store(&ru->lib.t_cb, 0);
	atomic_store(&ru->lib.t_ev, 0);
}

static void wait_readable(int fd, const char *what)
{
	struct pollfd p = { .fd = fd, .events = POLLIN };
	int r;

	do {
		r = poll(&p, 1, TIMEOUT_MS);
	} while (r < 0 && errno == EINTR);
	if (r <= 0)
		bench_fail("%s: no event within %d s%s", what, TIMEOUT_MS / 1000,
			   r < 0 ? strerror(errno) : "");
}

static void eventfd_wait(int efd, const char *what)
{
	uint64_t v;

	wait_readable(efd, what);
	if (read(efd, &v, sizeof(v)) != sizeof(v))
		bench_fail("eventfd read: %s", strerror(errno));
}

static void dispatch_wait(struct run *ru)
{
	int fd = imm_ctx_get_fd(ru->ctx);

	if (fd < 0)
		bench_fail("imm_ctx_get_fd: %s", strerror(-fd));
	while (!atomic_load(&ru->lib.fired)) {
		int r;

		wait_readable(fd, "imm_ctx_get_fd");
		r = imm_ctx_dispatch(ru->ctx);
		if (r < 0)
			bench_fail("imm_ctx_dispatch: %s", strerror(-r));
	}
}

static void set_mode(struct run *ru, enum mode m)
{
	int r = 0;

	atomic_store(&ru->lib.async, m == M_ASYNC);
	if (m == M_ASYNC)
		r = imm_ctx_set_event_fn(ru->ctx, on_event, &ru->lib,
					 IMM_EVENT_FN_ASYNC);
	else if (m == M_DISPATCH)
		r = imm_ctx_set_event_fn(ru->ctx, on_event, &ru->lib, 0);
	if (r < 0)
		bench_fail("imm_ctx_set_event_fn: %s", strerror(-r));
}

/* One break; record it at index i unless i < 0 (warm-up). */
static void one_break(struct run *ru, enum mode m, long i)
{
	volatile struct bench_shared *shm = ru->br.shm;
	uint64_t t_cb = 0, t_ev = 0;
	int e, rel;

	if (m == M_RAW) {
		raw_prepare(&ru->raw);
		bench_breaker_go(&ru->br, ru->raw_path, ru->oflags);
		eventfd_wait(ru->raw.done_efd, "raw signalfd");
		t_cb = atomic_load(&ru->raw.t_cb);
	} else {
		lib_seal(ru);
		bench_breaker_go(&ru->br, ru->lib_path, ru->oflags);
		if (m == M_ASYNC)
			eventfd_wait(ru->lib.done_efd, "async callback");
		else
			dispatch_wait(ru);
		t_cb = atomic_load(&ru->lib.t_cb);
		t_ev = atomic_load(&ru->lib.t_ev);
		rel = atomic_load(&ru->lib.release_err);
		if (rel < 0)
			bench_fail("imm_release in the callback: %s", strerror(-rel));
	}
	e = bench_breaker_wait(&ru->br, TIMEOUT_MS);
	if (e < 0)
		bench_fail("the breaker's open() did not return within %d s",
			   TIMEOUT_MS / 1000);
	if (e > 0)
		bench_fail("the breaker's open() failed: %s", strerror(e));
	if (i < 0)
		return;
	ru->s[m].lat[i] = t_cb > shm->t_start ? t_cb - shm->t_start : 0;
	ru->s[m].blocked[i] = shm->t_return - shm->t_start;
	ru->s[m].notifier[i] = t_ev > shm->t_start ? t_ev - shm->t_start : 0;
	ru->s[m].n = (size_t)i + 1;
}

/* --seals: shared seals on small files of their own, held all run long. */
static void idle_seals(struct run *ru, const char *dir, uint64_t n)
{
	char path[PATH_MAX], name[32];
	int r;

	ru->idle = calloc(n ? n : 1, sizeof(*ru->idle));
	if (!ru->idle)
		bench_fail("out of memory");
	for (uint64_t k = 0; k < n; k++) {
		snprintf(name, sizeof(name), "idle-%llu", (unsigned long long)k);
		bench_path(path, sizeof(path), dir, name);
		r = bench_create_written(path, 4096, true);
		if (r == 0)
			r = imm_handle_open(ru->ctx, path, IMM_RDONLY, &ru->idle[k]);
		if (r == 0)
			r = imm_seal(ru->idle[k], 0, 4096, IMM_SEAL_SHARED, NULL);
		if (r < 0)
			bench_fail("sealing %s: %s (RLIMIT_NOFILE for --seals?)",
				   path, strerror(-r));
		ru->n_idle = k + 1;
	}
}

static void usage(const char *prog)
{
	fprintf(stderr,
		"usage: %s [--quick] [-n ITERATIONS] [--rounds R] [--rdwr] "
		"[--pin CPU] [--extents E] [--seals N] [--raw-arm-main]\n"
		"  Break -> callback latency: raw F_SETLEASE + signalfd vs\n"
		"  libimmutable (async callback, and poll + imm_ctx_dispatch).\n"
		"  -n N       breaks per mode (default 2000, --quick 200)\n"
		"  --rounds R interleave the modes in R rounds (default 20)\n"
		"  --rdwr     the breaker opens O_RDWR (default O_RDONLY)\n"
		"  --pin CPU  run holder, threads and breaker on one CPU\n"
		"  --extents E  seal files of E one-block extents instead of a\n"
		"             64 KiB file (the library verifies the map on a break)\n"
		"  --seals N  the library's context holds N seals, the one broken\n"
		"             and N - 1 others (default 1)\n"
		"  --raw-arm-main  the main thread arms the raw lease (aimed at\n"
		"             the raw thread), as imm_seal() does for the notifier\n"
		"  Files go in $IMM_BENCH_DIR, or /tmp.\n", prog);
}

static void print_mode_table(struct run *ru, struct bench_stats *lat,
			     struct bench_stats *blk, struct bench_stats *ntf)
{
	printf("\n%-9s %8s %10s %10s %10s %10s | %10s %10s %10s | %12s\n",
	       "mode", "n", "lat med", "lat p90", "lat p99", "lat max",
	       "blk med", "blk p90", "blk p99", "notifier med");
	for (int m = 0; m < N_MODES; m++) {
		char nt[32] = "-";

		if (m != M_RAW)
			snprintf(nt, sizeof(nt), "%.2f", ntf[m].median / 1e3);
		printf("%-9s %8zu %10.2f %10.2f %10.2f %10.2f | %10.2f %10.2f "
		       "%10.2f | %12s\n", mode_name[m], ru->s[m].n,
		       lat[m].median / 1e3, lat[m].p90 / 1e3, lat[m].p99 / 1e3,
		       lat[m].max / 1e3, blk[m].median / 1e3, blk[m].p90 / 1e3,
		       blk[m].p99 / 1e3, nt);
	}
	printf("(microseconds; lat: breaker's open() start -> first instruction "
	       "of the callback; blk: the breaker's open() start -> return; "
	       "notifier: open() start -> the library's own stamp of the break)\n");
}

int main(int argc, char **argv)
{
	uint64_t n = 2000, rounds = 20, warm;
	struct bench_stats lat[N_MODES], blk[N_MODES], ntf[N_MODES];
	struct run *ru;
	char dir[PATH_MAX];
	sigset_t set;
	uint64_t pin = 0, extents = 0, seals = 1;
	bool quick = false, pinned = false, raw_arm_main = false;
	uint64_t lib_extents = 0;
	int r, raw_sig;

	bench_init("break", argv[0]);
	ru = calloc(1, sizeof(*ru));
	if (!ru)
		bench_fail("out of memory");
	ru->oflags = O_RDONLY;
	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--quick")) {
			quick = true;
			n = 200;
		} else if (!strcmp(argv[i], "-n") && i + 1 < argc) {
			if (!bench_parse_u64(argv[++i], &n) || n == 0 || n > 10000000)
				bench_fail("bad -n %s", argv[i]);
		} else if (!strcmp(argv[i], "--rounds") && i + 1 < argc) {
			if (!bench_parse_u64(argv[++i], &rounds) || rounds == 0)
				bench_fail("bad --rounds %s", argv[i]);
		} else if (!strcmp(argv[i], "--pin") && i + 1 < argc) {
			if (!bench_parse_u64(argv[++i], &pin))
				bench_fail("bad --pin %s", argv[i]);
			pinned = true;
		} else if (!strcmp(argv[i], "--extents") && i + 1 < argc) {
			if (!bench_parse_u64(argv[++i], &extents) || extents < 2 ||
			    extents > 10000000)
				bench_fail("bad --extents %s", argv[i]);
		} else if (!strcmp(argv[i], "--seals") && i + 1 < argc) {
			if (!bench_parse_u64(argv[++i], &seals) || seals == 0 ||
			    seals > 100000)
				bench_fail("bad --seals %s", argv[i]);
		} else if (!strcmp(argv[i], "--raw-arm-main")) {
			raw_arm_main = true;
		} else if (!strcmp(argv[i], "--rdwr")) {
			ru->oflags = O_RDWR;
		} else if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) {
			usage(argv[0]);
			return 0;
		} else {
			usage(argv[0]);
			return 2;
		}
	}
	/* -n after --quick wins, --quick after -n too: last one counts. */
	if (rounds > n)
		rounds = n;
	warm = quick ? 10 : 50;

	if (pinned)
		bench_pin_cpu(pin);
	{
		char cfg[96] = "";

		if (pinned)
			snprintf(cfg, sizeof(cfg), "pinned-cpu%llu",
				 (unsigned long long)pin);
		if (extents)
			snprintf(cfg + strlen(cfg), sizeof(cfg) - strlen(cfg),
				 "%sextents-%llu", *cfg ? "," : "",
				 (unsigned long long)extents);
		if (ru->oflags == O_RDWR)
			snprintf(cfg + strlen(cfg), sizeof(cfg) - strlen(cfg),
				 "%srdwr", *cfg ? "," : "");
		if (raw_arm_main)
			snprintf(cfg + strlen(cfg), sizeof(cfg) - strlen(cfg),
				 "%sraw-arm-main", *cfg ? "," : "");
		if (seals > 1)
			snprintf(cfg + strlen(cfg), sizeof(cfg) - strlen(cfg),
				 "%sseals-%llu", *cfg ? "," : "",
				 (unsigned long long)seals);
		bench_set_config(cfg);
	}

	/* The breaker first: it must inherit no file and no library state. */
	bench_breaker_start(&ru->br);

	/* The raw signal: blocked here, before any thread exists, so that
	 * every thread inherits the block; the raw thread reads it through a
	 * signalfd.  Not the library's signal (SIGRTMAX-3 by default). */
	raw_sig = SIGRTMAX - 6;
	sigemptyset(&set);
	sigaddset(&set, raw_sig);
	if (pthread_sigmask(SIG_BLOCK, &set, NULL) != 0)
		bench_fail("pthread_sigmask failed");

	bench_make_tmpdir(bench_base_dir(), "break", dir, sizeof(dir));
	bench_path(ru->raw_path, sizeof(ru->raw_path), dir, "raw");
	bench_path(ru->lib_path, sizeof(ru->lib_path), dir, "lib");
	if (extents) {
		/* Both files alike, though only the library reads the map. */
		const char *p[2] = { ru->raw_path, ru->lib_path };

		for (int k = 0; k < 2; k++) {
			double secs;

			if (bench_create_fragmented(p[k], extents,
						    120ull * 1000000000ull,
						    &secs) != FRAG_OK)
				bench_fail("%s (%s) cannot be fragmented into %llu "
					   "extents in 2 minutes", p[k],
					   bench_fs_name(dir),
					   (unsigned long long)extents);
		}
	} else if ((r = bench_create_written(ru->raw_path, FILE_SIZE, true)) < 0 ||
		   (r = bench_create_written(ru->lib_path, FILE_SIZE, true)) < 0) {
		bench_fail("creating the files in %s: %s", dir, strerror(-r));
	}
	raw_start(&ru->raw, ru->raw_path, raw_sig, !raw_arm_main);

	ru->ctx = bench_ctx_new();
	ru->lib.done_efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (ru->lib.done_efd < 0)
		bench_fail("eventfd: %s", strerror(errno));
	r = imm_handle_open(ru->ctx, ru->lib_path, IMM_RDWR, &ru->lib.h);
	if (r < 0)
		bench_fail("imm_handle_open %s: %s", ru->lib_path, strerror(-r));
	{
		struct imm_layout_info info = { .sz = sizeof(info) };

		r = imm_layout_query(ru->lib.h, 0, 0, &info);
		if (r < 0)
			bench_fail("imm_layout_query: %s", strerror(-r));
		ru->lib_size = info.file_size;
		lib_extents = info.extents;
	}
	idle_seals(ru, dir, seals - 1);

	for (int m = 0; m < N_MODES; m++) {
		ru->s[m].lat = calloc(n, sizeof(uint64_t));
		ru->s[m].blocked = calloc(n, sizeof(uint64_t));
		ru->s[m].notifier = calloc(n, sizeof(uint64_t));
		if (!ru->s[m].lat || !ru->s[m].blocked || !ru->s[m].notifier)
			bench_fail("out of memory");
	}

	printf("bench-break: kernel %s, %s (%s), files of %llu KiB in %llu "
	       "extents, %llu breaks per mode in %llu "
	       "interleaved rounds (+%llu warm-up), breaker opens %s, "
	       "lease-break-time %d s, %llu seal%s in the library's context, "
	       "%ld CPUs%s\n",
	       bench_kernel(), dir, bench_fs_name(dir),
	       (unsigned long long)(ru->lib_size >> 10),
	       (unsigned long long)lib_extents, (unsigned long long)n,
	       (unsigned long long)rounds, (unsigned long long)warm,
	       ru->oflags == O_RDWR ? "O_RDWR" : "O_RDONLY",
	       imm_ctx_get_lease_break_time(ru->ctx), (unsigned long long)seals,
	       seals == 1 ? "" : "s", sysconf(_SC_NPROCESSORS_ONLN),
	       pinned ? ", all pinned to one CPU" : "");

	for (int m = 0; m < N_MODES; m++) {
		set_mode(ru, (enum mode)m);
		bench_watchdog(300, "the warm-up");
		for (uint64_t k = 0; k < warm; k++)
			one_break(ru, (enum mode)m, -1);
	}
	/* Rounds, so that drift (other load, frequency) hits every mode
	 * alike; the order rotates so no mode always follows another. */
	for (uint64_t rd = 0; rd < rounds; rd++) {
		uint64_t from = n * rd / rounds, to = n * (rd + 1) / rounds;

		for (int k = 0; k < N_MODES; k++) {
			enum mode m = (enum mode)((k + rd) % N_MODES);

			set_mode(ru, m);
			bench_watchdog(300, "a round of breaks");
			for (uint64_t i = from; i < to; i++)
				one_break(ru, m, (long)i);
		}
	}
	bench_watchdog(0, NULL);

	if (atomic_load(&ru->lib.other_events))
		bench_note("%d events other than recalls arrived (verify "
			   "mismatches or revokes): look at the log above",
			   atomic_load(&ru->lib.other_events));

	for (int m = 0; m < N_MODES; m++) {
		bench_stats_u64(ru->s[m].lat, ru->s[m].n, &lat[m]);
		bench_stats_u64(ru->s[m].blocked, ru->s[m].n, &blk[m]);
		bench_stats_u64(ru->s[m].notifier, ru->s[m].n, &ntf[m]);
	}
	print_mode_table(ru, lat, blk, ntf);

	bench_fig("raw_median_us", "raw: open -> signalfd, median", "us",
		  lat[M_RAW].median / 1e3, GOAL_NONE, 0);
	bench_fig("raw_p90_us", "raw: open -> signalfd, p90", "us",
		  lat[M_RAW].p90 / 1e3, GOAL_NONE, 0);
	bench_fig("raw_p99_us", "raw: open -> signalfd, p99", "us",
		  lat[M_RAW].p99 / 1e3, GOAL_NONE, 0);
	bench_fig_cmp("async_median_us", "async: open -> callback, median", "us",
		      lat[M_ASYNC].median / 1e3, lat[M_RAW].median / 1e3,
		      GOAL_LE, 1.2);
	bench_fig_cmp("async_p90_us", "async: open -> callback, p90", "us",
		      lat[M_ASYNC].p90 / 1e3, lat[M_RAW].p90 / 1e3, GOAL_NONE, 0);
	bench_fig_cmp("async_p99_us", "async: open -> callback, p99", "us",
		      lat[M_ASYNC].p99 / 1e3, lat[M_RAW].p99 / 1e3, GOAL_LE, 3);
	bench_fig_cmp("dispatch_median_us", "dispatch: open -> callback, median",
		      "us", lat[M_DISPATCH].median / 1e3, lat[M_RAW].median / 1e3,
		      GOAL_LE, 2);
	bench_fig_cmp("dispatch_p90_us", "dispatch: open -> callback, p90", "us",
		      lat[M_DISPATCH].p90 / 1e3, lat[M_RAW].p90 / 1e3, GOAL_NONE,
		      0);
	bench_fig_cmp("dispatch_p99_us", "dispatch: open -> callback, p99", "us",
		      lat[M_DISPATCH].p99 / 1e3, lat[M_RAW].p99 / 1e3, GOAL_LE, 3);
	bench_fig("blocked_raw_median_us", "raw: breaker blocked, median", "us",
		  blk[M_RAW].median / 1e3, GOAL_NONE, 0);
	bench_fig("blocked_raw_p99_us", "raw: breaker blocked, p99", "us",
		  blk[M_RAW].p99 / 1e3, GOAL_NONE, 0);
	bench_fig_cmp("blocked_async_median_us", "async: breaker blocked, median",
		      "us", blk[M_ASYNC].median / 1e3, blk[M_RAW].median / 1e3,
		      GOAL_LE, 2);
	bench_fig_cmp("blocked_async_p99_us", "async: breaker blocked, p99", "us",
		      blk[M_ASYNC].p99 / 1e3, blk[M_RAW].p99 / 1e3, GOAL_NONE, 0);
	bench_fig_cmp("blocked_dispatch_median_us",
		      "dispatch: breaker blocked, median", "us",
		      blk[M_DISPATCH].median / 1e3, blk[M_RAW].median / 1e3,
		      GOAL_LE, 2);
	bench_fig_cmp("blocked_dispatch_p99_us", "dispatch: breaker blocked, p99",
		      "us", blk[M_DISPATCH].p99 / 1e3, blk[M_RAW].p99 / 1e3,
		      GOAL_NONE, 0);
	bench_fig("async_notifier_median_us",
		  "async: open -> library's break stamp, median", "us",
		  ntf[M_ASYNC].median / 1e3, GOAL_NONE, 0);
	bench_fig("dispatch_notifier_median_us",
		  "dispatch: open -> library's break stamp, median", "us",
		  ntf[M_DISPATCH].median / 1e3, GOAL_NONE, 0);
	bench_report();

	imm_handle_close(ru->lib.h);
	for (uint64_t k = 0; k < ru->n_idle; k++)
		imm_handle_close(ru->idle[k]);
	free(ru->idle);
	imm_ctx_unref(ru->ctx);
	raw_stop(&ru->raw);
	close(ru->lib.done_efd);
	bench_breaker_stop(&ru->br);
	for (int m = 0; m < N_MODES; m++) {
		free(ru->s[m].lat);
		free(ru->s[m].blocked);
		free(ru->s[m].notifier);
	}
	free(ru);
	return 0;
}
