// SPDX-License-Identifier: LGPL-2.1-or-later
/*
 * Soak: two contexts in one process hold shared seals on N files (half on
 * tmpfs, half on a loop ext4) while breaker processes open them for
 * writing, truncate them or punch holes at random.  Each handle re-seals
 * after its release.  Checked, through the public API only:
 *  - every break a breaker causes reaches the right context and handle,
 *    exactly once (per handle: breaks caused == recalls received);
 *  - no fd, mapping or memory leaks: /proc/self/fd entries and
 *    /proc/self/maps lines are the same at two quiescent points (after a
 *    warm-up and at the end), RSS grows by less than RSS_BOUND.
 *
 * A break is "caused" only by construction: a breaker claims a handle
 * that the holder has marked sealed (shared memory, compare-and-swap), so
 * its write-open, truncate or punch-open must break that lease, and the
 * holder re-seals only after the breaker has let go of the file.
 *
 * usage: soak [--duration SECONDS] [--handles N] [--breakers N]
 *             [--map-every N]  (every Nth handle mapped; 0: none; 10)
 * ctest runs it for 20 s (label soak); the long run is
 *   soak --duration 600 --handles 1000
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <poll.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "fixture.h"

#define SEC 1000000000ull
#define FILE_SIZE (16u << 10)
#define MAX_BREAKERS 8
#define QUIESCE_MS 30000

/* RSS may grow by this much between the two quiescent points: allocator
 * arenas settling, not per-break growth (2 MiB per 1,000 handles would be
 * a leak of 2 KiB a handle).  ASan's quarantine holds freed memory. */
#if defined(__SANITIZE_ADDRESS__)
#define RSS_BOUND_KB (128u << 10)
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define RSS_BOUND_KB (128u << 10)
#endif
#endif
#ifndef RSS_BOUND_KB
#define RSS_BOUND_KB (4u << 10)
#endif

/* Per handle, in memory shared with the breakers. */
enum { SLOT_IDLE, SLOT_SEALED, SLOT_CLAIMED };

struct slot {
	atomic_int state;
	atomic_uint caused;	/* breaks a breaker caused */
};

struct shared {
	atomic_bool go, pause, stop;
	atomic_int paused;	/* breakers idle under pause */
	atomic_uint ops[3];	/* write-open, truncate, punch */
	atomic_int failed;	/* a breaker's errno */
	struct slot slot[];
};

struct opts {
	unsigned duration, handles, breakers;
	unsigned map_every;	/* handles i % map_every == 0 keep a mapping */
};

struct hstate {
	struct imm_handle *h;
	struct imm_map *map;
	unsigned idx;
	unsigned recalls;	/* received */
	bool sealed;		/* by us, not yet recalled */
	bool pending;		/* released, waiting to re-seal */
};

struct ctxinfo {
	struct imm_ctx *ctx;
	int id;
};

struct soak {
	struct opts o;
	struct shared *sh;
	size_t sh_size;
	char (*path)[PATH_MAX];
	struct hstate *hs;
	struct ctxinfo ci[2];
	struct fx_fs tmpfs, ext4;
	pid_t breaker[MAX_BREAKERS];
	unsigned npending;
	/* failures, counted in callbacks, asserted by the test */
	unsigned wrong_ctx, unexpected, duplicate, mismatch, revoked;
	unsigned release_fail, reseal_fail, map_fail, maps_made;
	uint64_t recalls;
};

static struct soak S;

/* ------------------------------------------------------------ breakers */

static uint64_t xorshift(uint64_t *s)
{
	*s ^= *s << 13;
	*s ^= *s >> 7;
	*s ^= *s << 17;
	return *s;
}

/* One operation that must break a read lease; 0 or an errno. */
static int break_once(const char *path, unsigned op)
{
	int fd, r = 0;

	switch (op) {
	case 0:
		fd = open(path, O_WRONLY | O_CLOEXEC);
		if (fd < 0)
			return errno;
		close(fd);
		return 0;
	case 1:
		return truncate(path, FILE_SIZE) < 0 ? errno : 0;
	default:
		fd = open(path, O_RDWR | O_CLOEXEC);
		if (fd < 0)
			return errno;
		if (fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
			      4096, 4096) < 0)
			r = errno;
		close(fd);
		return r;
	}
}

static void breaker_main(unsigned id)
{
	struct shared *sh = S.sh;
	uint64_t rnd = 0x9e3779b97f4a7c15ull * (id + 1) ^ (uint64_t)getpid();
	struct timespec ms = { 0, 1000000 };

	while (!atomic_load(&sh->go) && !atomic_load(&sh->stop))
		nanosleep(&ms, NULL);	/* pacing: the holder sets up */
	while (!atomic_load(&sh->stop)) {
		unsigned i = (unsigned)(xorshift(&rnd) % S.o.handles);
		unsigned op = (unsigned)(xorshift(&rnd) % 3);
		int want = SLOT_SEALED, e;

		if (atomic_load(&sh->pause)) {
			atomic_fetch_add(&sh->paused, 1);
			while (atomic_load(&sh->pause) && !atomic_load(&sh->stop))
				nanosleep(&ms, NULL);
			atomic_fetch_sub(&sh->paused, 1);
			continue;
		}
		if (!atomic_compare_exchange_strong(&sh->slot[i].state, &want,
						    SLOT_CLAIMED))
			continue;
		e = break_once(S.path[i], op);
		if (e) {
			atomic_store(&sh->failed, e);
			_exit(1);
		}
		atomic_fetch_add(&sh->ops[op], 1);
		atomic_fetch_add(&sh->slot[i].caused, 1);
		atomic_store(&sh->slot[i].state, SLOT_IDLE);
	}
	_exit(0);
}

static void start_breakers(void)
{
	for (unsigned b = 0; b < S.o.breakers; b++) {
		pid_t pid = fork();

		assert_true(pid >= 0);
		if (pid == 0)
			breaker_main(b);
		S.breaker[b] = pid;
	}
}

/* ------------------------------------------------------------ holder */

static void on_event(struct imm_event *ev, void *data)
{
	struct ctxinfo *ci = data;
	struct imm_handle *h = imm_event_get_handle(ev);
	struct hstate *hs = h ? imm_handle_get_userdata(h) : NULL;
	int type = imm_event_get_type(ev);

	if (!hs || hs->idx % 2 != (unsigned)ci->id ||
	    imm_handle_get_ctx(h) != ci->ctx) {
		S.wrong_ctx++;
		return;
	}
	if (type == IMM_EVENT_VERIFY_MISMATCH) {
		S.mismatch++;	/* nothing punches under a seal here */
		return;
	}
	if (type == IMM_EVENT_REVOKED) {
		S.revoked++;	/* dispatch too slow for lease-break-time */
		return;
	}
	if (!hs->sealed) {
		S.duplicate++;	/* a second recall of the same seal */
		return;
	}
	if (atomic_load(&S.sh->slot[hs->idx].state) != SLOT_CLAIMED)
		S.unexpected++;	/* no breaker claimed it */
	hs->recalls++;
	S.recalls++;
	hs->sealed = false;
	if (hs->map) {
		if (imm_unmap(hs->map) < 0)
			S.map_fail++;
		hs->map = NULL;
	}
	if (imm_release(h) < 0)
		S.release_fail++;
	hs->pending = true;
	S.npending++;
}

/* Seal (and for some, map) handle i; the breakers may claim it after. */
static int seal_one(struct hstate *hs)
{
	int r = imm_seal(hs->h, 0, FILE_SIZE, IMM_SEAL_SHARED, NULL);

	if (r < 0)
		return r;
	if (S.o.map_every && hs->idx % S.o.map_every == 0) {
		r = imm_map(hs->h, 0, FILE_SIZE, IMM_MAP_PAGE_OK |
			    IMM_MAP_READONLY, &hs->map);
		if (r < 0) {
			S.map_fail++;
			hs->map = NULL;
		} else {
			S.maps_made++;
		}
	}
	hs->sealed = true;
	atomic_store(&S.sh->slot[hs->idx].state, SLOT_SEALED);
	return 0;
}

/* Re-seal the released handles whose breaker has let go of the file. */
static void reseal_pending(void)
{
	if (!S.npending)
		return;
	for (unsigned i = 0; i < S.o.handles; i++) {
		struct hstate *hs = &S.hs[i];

		if (!hs->pending ||
		    atomic_load(&S.sh->slot[i].state) != SLOT_IDLE)
			continue;
		if (seal_one(hs) < 0) {
			S.reseal_fail++;
			continue;	/* stays pending: retried */
		}
		hs->pending = false;
		S.npending--;
	}
}

static void dispatch_round(int timeout_ms)
{
	struct pollfd p[2] = {
		{ .fd = imm_ctx_get_fd(S.ci[0].ctx), .events = POLLIN },
		{ .fd = imm_ctx_get_fd(S.ci[1].ctx), .events = POLLIN },
	};

	if (poll(p, 2, timeout_ms) > 0) {
		for (int k = 0; k < 2; k++)
			if (p[k].revents)
				assert_true(imm_ctx_dispatch(S.ci[k].ctx) >= 0);
	}
	reseal_pending();
}

/* Stop the breakers between operations and re-seal everything. */
static void quiesce(void)
{
	uint64_t end = fx_now_ns() + (uint64_t)QUIESCE_MS * 1000000ull;

	atomic_store(&S.sh->pause, true);
	while (atomic_load(&S.sh->paused) < (int)S.o.breakers || S.npending) {
		if (fx_now_ns() >= end)
			fail_msg("not quiescent within %d ms: %d of %u breakers "
				 "paused, %u handles waiting to re-seal",
				 QUIESCE_MS, atomic_load(&S.sh->paused),
				 S.o.breakers, S.npending);
		dispatch_round(10);
	}
}

static void resume(void)
{
	atomic_store(&S.sh->pause, false);
	/* the breakers leave their pause loop by themselves */
}

/* ------------------------------------------------------------ figures */

static unsigned count_lines(const char *path)
{
	FILE *f = fopen(path, "re");
	unsigned n = 0;
	int c;

	assert_non_null(f);
	while ((c = fgetc(f)) != EOF)
		n += c == '\n';
	fclose(f);
	return n;
}

static unsigned rss_kb(void)
{
	char line[256];
	unsigned kb = 0;
	FILE *f = fopen("/proc/self/status", "re");

	assert_non_null(f);
	while (fgets(line, sizeof(line), f))
		if (sscanf(line, "VmRSS: %u kB", &kb) == 1)
			break;
	fclose(f);
	return kb;
}

struct figures {
	unsigned fds, maps, rss;
};

/* For a leak's post-mortem: $SOAK_MAPS_DIR/maps.<n>, one per measure. */
static void keep_maps(void)
{
	const char *dir = getenv("SOAK_MAPS_DIR");
	static int n;
	char cmd[PATH_MAX + 64];

	if (!dir)
		return;
	snprintf(cmd, sizeof(cmd), "cp /proc/%d/maps %s/maps.%d", (int)getpid(),
		 dir, n++);
	if (system(cmd) != 0)
		fprintf(stderr, "soak: cannot keep maps in %s\n", dir);
}

static struct figures measure(void)
{
	keep_maps();
	return (struct figures){ .fds = fx_count_fds(),
				 .maps = count_lines("/proc/self/maps"),
				 .rss = rss_kb() };
}

/* ------------------------------------------------------------ setup */

static void raise_nofile(void)
{
	struct rlimit rl;

	assert_int_equal(getrlimit(RLIMIT_NOFILE, &rl), 0);
	rl.rlim_cur = rl.rlim_max;
	assert_int_equal(setrlimit(RLIMIT_NOFILE, &rl), 0);
	if (rl.rlim_cur < (rlim_t)S.o.handles + 64)
		fail_msg("RLIMIT_NOFILE hard limit %llu is too low for %u handles",
			 (unsigned long long)rl.rlim_max, S.o.handles);
}

static void make_files(void)
{
	S.path = calloc(S.o.handles, sizeof(*S.path));
	assert_non_null(S.path);
	for (unsigned i = 0; i < S.o.handles; i++) {
		char name[32];

		snprintf(name, sizeof(name), "f%u", i);
		fx_path(i % 2 ? &S.ext4 : &S.tmpfs, name, S.path[i]);
		fx_write_pattern(S.path[i], 0, FILE_SIZE, i);
	}
}

static void open_and_seal_all(void)
{
	S.hs = calloc(S.o.handles, sizeof(*S.hs));
	assert_non_null(S.hs);
	for (int k = 0; k < 2; k++) {
		S.ci[k].ctx = fx_ctx(NULL);
		S.ci[k].id = k;
		assert_int_equal(imm_ctx_set_event_fn(S.ci[k].ctx, on_event,
						      &S.ci[k], 0), 0);
	}
	for (unsigned i = 0; i < S.o.handles; i++) {
		struct hstate *hs = &S.hs[i];

		hs->idx = i;
		assert_int_equal(imm_handle_open(S.ci[i % 2].ctx, S.path[i],
						 IMM_RDONLY, &hs->h), 0);
		imm_handle_set_userdata(hs->h, hs);
		assert_int_equal(seal_one(hs), 0);
	}
}

static void stop_breakers(void)
{
	uint64_t end = fx_now_ns() + 30 * SEC;

	atomic_store(&S.sh->stop, true);
	for (unsigned b = 0; b < S.o.breakers; b++) {
		int st = 0;
		pid_t r;

		/* a breaker in an open blocks until we release: dispatch */
		while ((r = waitpid(S.breaker[b], &st, WNOHANG)) == 0) {
			if (fx_now_ns() >= end) {
				kill(S.breaker[b], SIGKILL);
				waitpid(S.breaker[b], &st, 0);
				S.breaker[b] = 0;
				fail_msg("breaker did not stop within 30 s");
			}
			dispatch_round(10);
		}
		assert_int_equal(r, S.breaker[b]);
		S.breaker[b] = 0;
		if (!WIFEXITED(st) || WEXITSTATUS(st))
			fail_msg("breaker failed: %s",
				 strerror(atomic_load(&S.sh->failed)));
	}
}

static void teardown(void)
{
	for (unsigned i = 0; S.hs && i < S.o.handles; i++) {
		if (S.hs[i].map)
			imm_unmap(S.hs[i].map);
		if (S.hs[i].h)
			imm_handle_close(S.hs[i].h);
	}
	for (int k = 0; k < 2; k++)
		S.ci[k].ctx = imm_ctx_unref(S.ci[k].ctx);	/* once only */
	free(S.hs);
	free(S.path);
	S.hs = NULL;
	S.path = NULL;
}

/* ------------------------------------------------------------ the test */

static void run_until(uint64_t end)
{
	while (fx_now_ns() < end)
		dispatch_round(20);
}

static void soak(void **state)
{
	struct figures start, end;
	uint64_t t0, warm, stop;
	unsigned caused = 0, mismatched = 0;

	(void)state;
	fx_need_root("loop-mounted ext4 and tmpfs");
	raise_nofile();
	fx_mount(&S.tmpfs, "tmpfs", 64, NULL);
	fx_mount(&S.ext4, "ext4", 256, NULL);
	S.sh_size = sizeof(*S.sh) + S.o.handles * sizeof(struct slot);
	S.sh = mmap(NULL, S.sh_size, PROT_READ | PROT_WRITE,
		    MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	assert_true(S.sh != MAP_FAILED);
	make_files();
	/* before any handle exists: the breakers inherit none of them */
	start_breakers();
	open_and_seal_all();

	t0 = fx_now_ns();
	warm = t0 + (uint64_t)S.o.duration * SEC / 10 + SEC;
	stop = t0 + (uint64_t)S.o.duration * SEC;
	atomic_store(&S.sh->go, true);
	run_until(warm);
	quiesce();
	start = measure();
	resume();
	run_until(stop);
	quiesce();
	end = measure();
	stop_breakers();
	reseal_pending();

	for (unsigned i = 0; i < S.o.handles; i++) {
		unsigned c = atomic_load(&S.sh->slot[i].caused);

		caused += c;
		if (c != S.hs[i].recalls) {
			if (!mismatched++)
				print_error("handle %u (%s): %u breaks caused, %u "
					    "recalls received\n", i, S.path[i], c,
					    S.hs[i].recalls);
		}
	}
	printf("soak: %u s, %u handles (1 in %u mapped), 2 contexts, %u "
	       "breakers: %u breaks "
	       "(open %u, truncate %u, punch %u), %" PRIu64 " recalls, "
	       "%u handles off, wrong ctx %u, unexpected %u, duplicate %u, "
	       "mismatch %u, revoked %u, reseal retries %u; fds %u -> %u, "
	       "maps %u -> %u (%u imm_map/imm_unmap), RSS %u -> %u kB "
	       "(bound +%u kB)\n",
	       S.o.duration, S.o.handles, S.o.map_every, S.o.breakers, caused,
	       atomic_load(&S.sh->ops[0]), atomic_load(&S.sh->ops[1]),
	       atomic_load(&S.sh->ops[2]), S.recalls, mismatched, S.wrong_ctx,
	       S.unexpected, S.duplicate, S.mismatch, S.revoked, S.reseal_fail,
	       start.fds, end.fds, start.maps, end.maps, S.maps_made,
	       start.rss, end.rss,
	       RSS_BOUND_KB);
	fflush(stdout);

	assert_true(caused > 0);	/* it soaked something */
	assert_int_equal(mismatched, 0);
	assert_int_equal(S.recalls, caused);
	assert_int_equal(S.wrong_ctx, 0);
	assert_int_equal(S.unexpected, 0);
	assert_int_equal(S.duplicate, 0);
	assert_int_equal(S.mismatch, 0);
	assert_int_equal(S.revoked, 0);
	assert_int_equal(S.release_fail, 0);
	assert_int_equal(S.map_fail, 0);
	assert_int_equal(end.fds, start.fds);
	assert_int_equal(end.maps, start.maps);
	assert_true(end.rss < start.rss + RSS_BOUND_KB);
	teardown();
	fx_umount(&S.ext4);
	fx_umount(&S.tmpfs);
}

static int group_teardown(void **state)
{
	(void)state;
	if (S.sh) {
		atomic_store(&S.sh->stop, true);
		for (unsigned b = 0; b < S.o.breakers; b++)
			if (S.breaker[b]) {	/* reaped, killed if need be */
				fx_waitpid_timeout(S.breaker[b], NULL, 100);
				S.breaker[b] = 0;
			}
	}
	teardown();
	return 0;
}

static unsigned parse_uint(const char *s, const char *what, unsigned max)
{
	char *end;
	unsigned long v;

	errno = 0;
	v = strtoul(s, &end, 10);
	if (errno || *end || !*s || v == 0 || v > max) {
		fprintf(stderr, "soak: bad %s '%s' (1..%u)\n", what, s, max);
		exit(2);
	}
	return (unsigned)v;
}

int main(int argc, char **argv)
{
	static const struct option lo[] = {
		{ "duration", required_argument, NULL, 'd' },
		{ "handles", required_argument, NULL, 'n' },
		{ "breakers", required_argument, NULL, 'b' },
		{ "map-every", required_argument, NULL, 'm' },
		{ 0 }
	};
	const struct CMUnitTest tests[] = { cmocka_unit_test(soak) };
	int c;

	S.o = (struct opts){ .duration = 25, .handles = 1000, .breakers = 2,
			     .map_every = 10 };
	while ((c = getopt_long(argc, argv, "", lo, NULL)) != -1) {
		switch (c) {
		case 'd': S.o.duration = parse_uint(optarg, "duration", 86400); break;
		case 'n': S.o.handles = parse_uint(optarg, "handles", 100000); break;
		case 'b': S.o.breakers = parse_uint(optarg, "breakers",
						    MAX_BREAKERS); break;
		case 'm': /* 0: no mappings */
			S.o.map_every = strcmp(optarg, "0") ?
				parse_uint(optarg, "map-every", 100000) : 0;
			break;
		default:
			fprintf(stderr, "usage: soak [--duration SECONDS] "
					"[--handles N] [--breakers N] "
					"[--map-every N]\n");
			return 2;
		}
	}
	return cmocka_run_group_tests(tests, NULL, group_teardown);
}
