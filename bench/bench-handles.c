// SPDX-License-Identifier: LGPL-2.1-or-later
/*
 * bench-handles: 10,000 sealed handles in one process.
 *
 *  - memory per handle: VmRSS growth, and the heap the library keeps
 *    (mallinfo2: in-use arena bytes + mmapped chunks), over opening and
 *    exclusively sealing 10k files, divided by 10k;
 *  - dispatch cost: breaker open() -> callback through poll +
 *    imm_ctx_dispatch(), in a context with 1 sealed handle and in one with
 *    10k, interleaved round by round in the same process (the break always
 *    hits one handle).
 *
 * The files are 4 KiB, written and synced before the measurement so the
 * seals have nothing to prepare.  They live in a temp directory on ext4
 * (/tmp) unless $IMM_BENCH_DIR says otherwise (e.g. /dev/shm, faster to
 * set up); the filesystem used is printed.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <malloc.h>
#include <poll.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common.h"

#define FILE_SIZE 4096u
#define TIMEOUT_MS 60000

struct state {
	atomic_uint_fast64_t t_cb;
	atomic_int fired;
	atomic_int release_err;
	atomic_int other_events;
};

static void on_event(struct imm_event *ev, void *userdata)
{
	uint64_t t = bench_now_ns();
	struct state *st = userdata;
	int r;

	if (imm_event_get_type(ev) != IMM_EVENT_RECALL) {
		atomic_fetch_add(&st->other_events, 1);
		return;
	}
	atomic_store(&st->t_cb, t);
	r = imm_release(imm_event_get_handle(ev));
	if (r < 0)
		atomic_store(&st->release_err, r);
	atomic_store(&st->fired, 1);
}

static void file_name(char *out, size_t sz, const char *dir, unsigned i)
{
	char name[16];

	snprintf(name, sizeof(name), "f%05u", i);
	bench_path(out, sz, dir, name);
}

static long vm_rss_kib(void)
{
	char line[256];
	long kib = -1;
	FILE *f = fopen("/proc/self/status", "re");

	if (!f)
		bench_fail("/proc/self/status: %s", strerror(errno));
	while (fgets(line, sizeof(line), f))
		if (sscanf(line, "VmRSS: %ld kB", &kib) == 1)
			break;
	fclose(f);
	if (kib < 0)
		bench_fail("no VmRSS in /proc/self/status");
	return kib;
}

static size_t heap_in_use(void)
{
	struct mallinfo2 mi = mallinfo2();

	/* Chunks above the mmap threshold (the fd table at 10k handles) are
	 * in hblkhd, not uordblks. */
	return mi.uordblks + mi.hblkhd;
}

static void seal(struct imm_handle *h, const char *path)
{
	int r = imm_seal(h, 0, FILE_SIZE, IMM_SEAL_EXCLUSIVE, NULL);

	if (r < 0)
		bench_fail("imm_seal %s: %s", path, strerror(-r));
}

/* Breaks of one handle: open() start -> callback, dispatch mode. */
static void breaks(struct imm_ctx *ctx, struct state *st,
		   struct bench_breaker *br, struct imm_handle *h,
		   const char *path, uint64_t *lat, size_t n, size_t warm)
{
	struct pollfd p = { .fd = imm_ctx_get_fd(ctx), .events = POLLIN };

	bench_watchdog(600, "the breaks");
	for (size_t i = 0; i < n + warm; i++) {
		uint64_t t;
		int r, e;

		seal(h, path);
		atomic_store(&st->fired, 0);
		bench_breaker_go(br, path, O_RDONLY);
		while (!atomic_load(&st->fired)) {
			do {
				r = poll(&p, 1, TIMEOUT_MS);
			} while (r < 0 && errno == EINTR);
			if (r <= 0)
				bench_fail("no event on imm_ctx_get_fd() within %d s",
					   TIMEOUT_MS / 1000);
			r = imm_ctx_dispatch(ctx);
			if (r < 0)
				bench_fail("imm_ctx_dispatch: %s", strerror(-r));
		}
		r = atomic_load(&st->release_err);
		if (r < 0)
			bench_fail("imm_release in the callback: %s", strerror(-r));
		e = bench_breaker_wait(br, TIMEOUT_MS);
		if (e)
			bench_fail("the breaker's open(): %s", e < 0 ?
				   "no return within 60 s" : strerror(e));
		t = atomic_load(&st->t_cb);
		if (i >= warm)
			lat[i - warm] = t > br->shm->t_start ? t - br->shm->t_start : 0;
	}
	bench_watchdog(0, NULL);
}

static void usage(const char *prog)
{
	fprintf(stderr,
		"usage: %s [--quick] [--handles N] [--breaks N] [--pin CPU]\n"
		"  Memory per sealed handle and dispatch cost among many.\n"
		"  --handles N  sealed handles (default 10000, also with --quick)\n"
		"  --breaks N   breaks per context (default 200, --quick 50)\n"
		"  --pin CPU    run everything, breaker included, on one CPU\n"
		"  Files go in $IMM_BENCH_DIR, or /tmp.\n", prog);
}

static struct imm_ctx *new_ctx(struct state *st)
{
	struct imm_ctx *ctx = bench_ctx_new();
	int r = imm_ctx_set_event_fn(ctx, on_event, st, 0);

	if (r < 0)
		bench_fail("imm_ctx_set_event_fn: %s", strerror(-r));
	return ctx;
}

static struct imm_handle *open_sealed(struct imm_ctx *ctx, const char *path)
{
	struct imm_handle *h;
	int r = imm_handle_open(ctx, path, IMM_RDWR, &h);

	if (r < 0)
		bench_fail("imm_handle_open %s: %s", path, strerror(-r));
	seal(h, path);
	return h;
}

static void release(struct imm_handle *h)
{
	int r = imm_release(h);

	if (r < 0)
		bench_fail("imm_release: %s", strerror(-r));
}

int main(int argc, char **argv)
{
	uint64_t nh = 10000, nb = 200, rounds = 10, t0, t_create, t_seal_all;
	struct bench_stats one, many;
	struct state st = { 0 };
	struct bench_breaker br;
	struct imm_handle **hs, *solo;
	struct imm_ctx *ctx1, *ctxn;
	uint64_t *lat1, *latn;
	char dir[PATH_MAX], path[PATH_MAX], solo_path[PATH_MAX];
	char victim_path[PATH_MAX];
	long rss0, rss1;
	size_t heap0, heap1;
	unsigned victim;
	uint64_t pin = 0;
	bool pinned = false;
	int fd;

	bench_init("handles", argv[0]);
	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--quick")) {
			nb = 50;
		} else if (!strcmp(argv[i], "--handles") && i + 1 < argc) {
			if (!bench_parse_u64(argv[++i], &nh) || nh < 2 ||
			    nh > 99999)
				bench_fail("bad --handles %s (2..99999)", argv[i]);
		} else if (!strcmp(argv[i], "--pin") && i + 1 < argc) {
			if (!bench_parse_u64(argv[++i], &pin))
				bench_fail("bad --pin %s", argv[i]);
			pinned = true;
		} else if (!strcmp(argv[i], "--breaks") && i + 1 < argc) {
			if (!bench_parse_u64(argv[++i], &nb) || nb == 0 ||
			    nb > 1000000)
				bench_fail("bad --breaks %s", argv[i]);
		} else if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) {
			usage(argv[0]);
			return 0;
		} else {
			usage(argv[0]);
			return 2;
		}
	}
	if (rounds > nb)
		rounds = nb;
	if (pinned) {
		char cfg[32];

		bench_pin_cpu(pin);
		snprintf(cfg, sizeof(cfg), "pinned-cpu%llu", (unsigned long long)pin);
		bench_set_config(cfg);
	}

	/* Every handle is an fd; the library adds a few of its own. */
	bench_raise_nofile(nh * 2 < 20000 ? 20000 : nh * 2);
	bench_breaker_start(&br);
	bench_make_tmpdir(bench_base_dir(), "handles", dir, sizeof(dir));
	/* files 0 .. nh-1 for the big context, file nh for the solo one */
	bench_cleanup_fileset(dir, "f", (unsigned)nh + 1);

	t0 = bench_now_ns();
	for (unsigned i = 0; i <= nh; i++) {
		char buf[FILE_SIZE];
		ssize_t w;

		memset(buf, (int)(i & 0xff), sizeof(buf));
		file_name(path, sizeof(path), dir, i);
		fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
		if (fd < 0)
			bench_fail("create %s: %s", path, strerror(errno));
		w = write(fd, buf, sizeof(buf));
		if (w != (ssize_t)sizeof(buf))
			bench_fail("write %s: %s", path, w < 0 ? strerror(errno) :
							       "short write");
		close(fd);
	}
	/* One sync for all, so the seals find nothing dirty to flush. */
	fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0 || syncfs(fd) < 0)
		bench_fail("syncfs %s: %s", dir, strerror(errno));
	close(fd);
	t_create = bench_now_ns() - t0;

	hs = calloc(nh, sizeof(*hs));
	lat1 = calloc(nb, sizeof(*lat1));
	latn = calloc(nb, sizeof(*latn));
	if (!hs || !lat1 || !latn)
		bench_fail("out of memory");

	printf("bench-handles: kernel %s, %llu files of %u bytes in %s (%s), "
	       "created and synced in %.1f s; %llu breaks per context in %llu "
	       "interleaved rounds\n",
	       bench_kernel(), (unsigned long long)nh + 1, FILE_SIZE, dir,
	       bench_fs_name(dir), (double)t_create / 1e9,
	       (unsigned long long)nb, (unsigned long long)rounds);
	if (!pinned)
		bench_set_config(bench_fs_name(dir));

	/*
	 * Two contexts in this one process: "solo" holds one sealed handle,
	 * "many" holds nh.  Breaks alternate between them round by round, so
	 * both see the same machine; what differs is the library's per-context
	 * state (fd table, queue, breaking list) the break goes through.
	 */
	ctx1 = new_ctx(&st);
	ctxn = new_ctx(&st);
	file_name(solo_path, sizeof(solo_path), dir, (unsigned)nh);
	solo = open_sealed(ctx1, solo_path);
	file_name(path, sizeof(path), dir, 0);
	hs[0] = open_sealed(ctxn, path);	/* starts its notifier */

	/* Memory: from one sealed handle in "many" to nh of them. */
	rss0 = vm_rss_kib();
	heap0 = heap_in_use();
	t0 = bench_now_ns();
	bench_watchdog(1800, "sealing every file");
	for (unsigned i = 1; i < nh; i++) {
		file_name(path, sizeof(path), dir, i);
		hs[i] = open_sealed(ctxn, path);
	}
	bench_watchdog(0, NULL);
	t_seal_all = bench_now_ns() - t0;
	rss1 = vm_rss_kib();
	heap1 = heap_in_use();

	victim = (unsigned)(nh / 2);
	file_name(victim_path, sizeof(victim_path), dir, victim);
	release(solo);
	release(hs[victim]);
	breaks(ctx1, &st, &br, solo, solo_path, lat1, 0, 20);
	breaks(ctxn, &st, &br, hs[victim], victim_path, latn, 0, 20);
	for (uint64_t rd = 0; rd < rounds; rd++) {
		uint64_t from = nb * rd / rounds, to = nb * (rd + 1) / rounds;

		if (rd % 2) {
			breaks(ctxn, &st, &br, hs[victim], victim_path,
			       latn + from, to - from, 0);
			breaks(ctx1, &st, &br, solo, solo_path, lat1 + from,
			       to - from, 0);
		} else {
			breaks(ctx1, &st, &br, solo, solo_path, lat1 + from,
			       to - from, 0);
			breaks(ctxn, &st, &br, hs[victim], victim_path,
			       latn + from, to - from, 0);
		}
	}

	for (unsigned i = 0; i < nh; i++)
		imm_handle_close(hs[i]);
	imm_handle_close(solo);
	imm_ctx_unref(ctxn);
	imm_ctx_unref(ctx1);
	bench_breaker_stop(&br);

	if (atomic_load(&st.other_events))
		bench_note("%d events other than recalls arrived",
			   atomic_load(&st.other_events));

	bench_stats_u64(lat1, nb, &one);
	bench_stats_u64(latn, nb, &many);
	{
		double n1 = (double)(nh - 1);
		double rss_b = (double)(rss1 - rss0) * 1024.0 / n1;
		double heap_b = ((double)heap1 - (double)heap0) / n1;

		printf("\nmemory over %llu more sealed handles: VmRSS %+ld KiB "
		       "(%.0f B/handle), heap %+.0f KiB (%.0f B/handle); "
		       "open+seal %.1f us/handle\n",
		       (unsigned long long)(nh - 1), rss1 - rss0, rss_b,
		       ((double)heap1 - (double)heap0) / 1024.0, heap_b,
		       (double)t_seal_all / 1e3 / n1);
		printf("%-34s %10s %10s %10s %10s\n", "open -> dispatch callback (us)",
		       "median", "p90", "p99", "max");
		printf("%-34s %10.2f %10.2f %10.2f %10.2f\n",
		       "context with 1 sealed handle", one.median / 1e3,
		       one.p90 / 1e3, one.p99 / 1e3, one.max / 1e3);
		printf("%-34s %10.2f %10.2f %10.2f %10.2f\n",
		       "context with all sealed", many.median / 1e3,
		       many.p90 / 1e3, many.p99 / 1e3, many.max / 1e3);

		bench_fig("handles", "sealed handles in one context", "",
			  (double)nh, GOAL_NONE, 0);
		bench_fig("rss_per_handle_bytes", "VmRSS per sealed handle", "B",
			  rss_b, GOAL_NONE, 0);
		bench_fig("heap_per_handle_bytes", "library heap per sealed handle",
			  "B", heap_b, GOAL_LE, 2048);
		bench_fig("open_seal_per_handle_us", "imm_handle_open + imm_seal",
			  "us", (double)t_seal_all / 1e3 / n1, GOAL_NONE, 0);
	}
	bench_fig("dispatch_1_median_us", "dispatch, 1 sealed handle, median",
		  "us", one.median / 1e3, GOAL_NONE, 0);
	bench_fig("dispatch_1_p99_us", "dispatch, 1 sealed handle, p99", "us",
		  one.p99 / 1e3, GOAL_NONE, 0);
	bench_fig_cmp("dispatch_all_median_us", "dispatch, all sealed, median",
		      "us", many.median / 1e3, one.median / 1e3, GOAL_LE, 2);
	bench_fig_cmp("dispatch_all_p99_us", "dispatch, all sealed, p99", "us",
		      many.p99 / 1e3, one.p99 / 1e3, GOAL_NONE, 0);
	bench_report();

	free(hs);
	free(lat1);
	free(latn);
	return 0;
}
