// SPDX-License-Identifier: LGPL-2.1-or-later
/*
 * bench-map: what imm_map() costs over mapping the file with libpmem2
 * directly.
 *
 * 1. Persisted writes: memcpy a store, then the mapping's persist
 *    function on it, over the whole file; 4 KiB, 64 KiB and 2 MiB stores.
 *    The same file through an imm_map() mapping and through a plain
 *    pmem2_map_new() of the same fd with the same required granularity,
 *    interleaved (the order flips every round); the median round counts.
 *    Both copy with memcpy, so the mapping is the only difference.
 * 2. Populate: imm_map(IMM_MAP_POPULATE) + imm_unmap of the whole file
 *    against imm_map + one written byte per page + imm_unmap, each round
 *    on a fresh mapping.
 *
 * The file is opened once, here; the handle is made from that fd and the
 * raw mapping uses it too.  Another open of the file, even from this
 * process, would break the exclusive seal (its lease breaks on any open).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <libpmem2.h>

#include "common.h"

#define KiB 1024ull
#define MiB (1024ull * KiB)
#define GiB (1024ull * MiB)

#define N_STORES 3
static const size_t store_sizes[N_STORES] = { 4 * KiB, 64 * KiB, 2 * MiB };
static const char *const store_tags[N_STORES] = { "4k", "64k", "2m" };
static const char *const store_names[N_STORES] = { "4 KiB", "64 KiB",
						   "2 MiB" };

struct opts {
	uint64_t size;		/* 0: the default for the granularity */
	uint64_t rounds;
	const char *dir;
	bool quick, page_ok;
};

/* A mapping under test: where it is and how its stores become durable. */
struct target {
	char *addr;
	void (*persist)(const void *ptr, size_t size);
};

enum { LIB = 0, RAW = 1 };

static void usage(const char *prog)
{
	fprintf(stderr,
		"usage: %s [--quick] [--size BYTES] [--dir DIR] [--page-ok] "
		"[-n ROUNDS]\n"
		"  Persisted writes and populate through imm_map() vs a plain\n"
		"  libpmem2 mapping of the same file.\n"
		"  --size BYTES  file size, a multiple of 2 MiB (default 1 GiB "
		"on DAX,\n"
		"                128 MiB at page granularity; --quick 64 MiB)\n"
		"  --dir DIR     where the file goes (default $IMM_BENCH_DIR, "
		"or /tmp)\n"
		"  --page-ok     map with IMM_MAP_PAGE_OK even on DAX (msync "
		"persist)\n"
		"  -n ROUNDS     interleaved rounds (default 5, --quick 3)\n",
		prog);
}

static void parse_args(int argc, char **argv, struct opts *o)
{
	memset(o, 0, sizeof(*o));
	o->dir = bench_base_dir();
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i];

		if (!strcmp(a, "--quick")) {
			o->quick = true;
		} else if (!strcmp(a, "--page-ok")) {
			o->page_ok = true;
		} else if (!strcmp(a, "--size") && i + 1 < argc) {
			if (!bench_parse_u64(argv[++i], &o->size) || !o->size ||
			    o->size % (2 * MiB) || o->size > 1024 * GiB)
				bench_fail("bad --size %s: a multiple of 2 MiB "
					   "(2097152), at most 1 TiB", argv[i]);
		} else if (!strcmp(a, "--dir") && i + 1 < argc) {
			o->dir = argv[++i];
		} else if (!strcmp(a, "-n") && i + 1 < argc) {
			if (!bench_parse_u64(argv[++i], &o->rounds) ||
			    !o->rounds || o->rounds > 1000)
				bench_fail("bad -n %s", argv[i]);
		} else if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
			usage(argv[0]);
			exit(0);
		} else {
			usage(argv[0]);
			exit(2);
		}
	}
	if (!o->rounds)
		o->rounds = o->quick ? 3 : 5;
}

/* Whether a new file in dir would be DAX, before the big file is written:
 * the default size depends on it. */
static bool dir_makes_dax(const char *dir)
{
	char path[PATH_MAX];
	bool dax;
	int fd, id;

	bench_path(path, sizeof(path), dir, "daxprobe");
	fd = open(path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	if (fd < 0)
		bench_fail("create %s: %s", path, strerror(errno));
	id = bench_cleanup_unlink(path);
	dax = bench_fd_is_dax(fd);
	close(fd);
	bench_cleanup_run(id);
	return dax;
}

/*
 * 1 GiB on DAX, as the goal is stated.  At page granularity every persist
 * is an msync that writes the pages to the disk: 4 KiB stores ran at about
 * 10 MB/s on ext4 (a VM disk), so one 1 GiB pass took 100 s and the ten
 * passes of one store size (5 rounds, 2 paths) about 17 minutes.  128 MiB
 * keeps a store size to about 2 minutes there, still 32768 msyncs a pass.
 */
static uint64_t default_size(const struct opts *o, bool page_gran)
{
	if (o->quick)
		return 64 * MiB;
	if (!page_gran)
		return GiB;
	bench_note("page granularity (msync persist): a 128 MiB file by "
		   "default instead of 1 GiB, to keep each store size to "
		   "minutes; --size 1073741824 for the full size");
	return 128 * MiB;
}

static struct imm_map *lib_map(struct imm_handle *h, uint64_t size,
			       uint32_t flags, struct target *t)
{
	struct imm_map *m;
	int r = imm_map(h, 0, size, flags, &m);

	if (r < 0)
		bench_fail("imm_map of %llu MiB: %s%s",
			   (unsigned long long)(size / MiB), strerror(-r),
			   r == -EOPNOTSUPP && (flags & IMM_MAP_SYNC) ?
			   " (a DAX file without MAP_SYNC? try --page-ok)" : "");
	if (t) {
		t->addr = imm_map_get_addr(m);
		t->persist = imm_map_get_persist_fn(m);
	}
	return m;
}

static void pmem2_check(int r, const char *call)
{
	if (r < 0)
		bench_fail("%s: %s", call, pmem2_errormsg());
}

/* What the library does under imm_map(), minus the seal and reservation. */
static struct pmem2_map *raw_map(int fd, uint64_t size, bool sync,
				 struct target *t)
{
	struct pmem2_source *src;
	struct pmem2_config *cfg;
	struct pmem2_map *pm;

	pmem2_check(pmem2_source_from_fd(&src, fd), "pmem2_source_from_fd");
	pmem2_check(pmem2_config_new(&cfg), "pmem2_config_new");
	pmem2_check(pmem2_config_set_required_store_granularity(cfg, sync ?
		    PMEM2_GRANULARITY_CACHE_LINE : PMEM2_GRANULARITY_PAGE),
		    "pmem2_config_set_required_store_granularity");
	pmem2_check(pmem2_config_set_length(cfg, size),
		    "pmem2_config_set_length");
	pmem2_check(pmem2_config_set_sharing(cfg, PMEM2_SHARED),
		    "pmem2_config_set_sharing");
	pmem2_check(pmem2_config_set_protection(cfg, PMEM2_PROT_READ |
		    PMEM2_PROT_WRITE), "pmem2_config_set_protection");
	pmem2_check(pmem2_map_new(&pm, cfg, src), "pmem2_map_new");
	pmem2_config_delete(&cfg);
	pmem2_source_delete(&src);
	t->addr = pmem2_map_get_address(pm);
	t->persist = pmem2_get_persist_fn(pm);
	return pm;
}

static const char *pmem2_gran_name(enum pmem2_granularity g)
{
	switch (g) {
	case PMEM2_GRANULARITY_BYTE:
		return "byte";
	case PMEM2_GRANULARITY_CACHE_LINE:
		return "cache-line";
	case PMEM2_GRANULARITY_PAGE:
		return "page";
	}
	return "unknown";
}

static uint64_t write_pass(const struct target *t, const char *src,
			   uint64_t size, size_t store)
{
	uint64_t t0 = bench_now_ns();

	for (uint64_t off = 0; off < size; off += store) {
		memcpy(t->addr + off, src, store);
		t->persist(t->addr + off, store);
	}
	return bench_now_ns() - t0;
}

/* ns[who][round]; the path that goes first alternates, so a trend in the
 * machine (writeback, thermal) falls on both alike. */
static void write_rounds(const struct target t[2], const char *src,
			 uint64_t size, size_t store, uint64_t rounds,
			 uint64_t *ns[2])
{
	for (uint64_t i = 0; i < rounds; i++) {
		int first = (int)(i % 2);

		ns[first][i] = write_pass(&t[first], src, size, store);
		ns[!first][i] = write_pass(&t[!first], src, size, store);
	}
}

static double per_gib(double ns, uint64_t size)
{
	return ns / 1e9 * (double)GiB / (double)size;
}

static double mb_per_s(double ns, uint64_t size)
{
	return (double)size / 1e6 / (ns / 1e9);
}

static void print_write_row(const char *who, const char *store,
			    const struct bench_stats *s, uint64_t size,
			    double paired)
{
	/* min time = max bandwidth: the columns are median, best, worst */
	printf("%-8s %-7s %10.1f %10.1f %10.1f %12.4f", who, store,
	       mb_per_s(s->median, size), mb_per_s(s->min, size),
	       mb_per_s(s->max, size), per_gib(s->median, size));
	if (paired > 0)
		printf(" %10.3f", paired);
	putchar('\n');
}

static void bench_writes(struct imm_handle *h, const struct target t[2],
			 uint64_t size, uint64_t rounds)
{
	uint64_t *ns[2];
	char *src;
	char metric[48], label[80];

	ns[LIB] = calloc(rounds, sizeof(uint64_t));
	ns[RAW] = calloc(rounds, sizeof(uint64_t));
	if (posix_memalign((void **)&src, 4096, 2 * MiB) || !ns[LIB] || !ns[RAW])
		bench_fail("out of memory");
	for (size_t i = 0; i < 2 * MiB; i++)
		src[i] = (char)(i * 7 + (i >> 12));
	/* One untimed pass each: first-touch faults stay out of the rounds. */
	write_pass(&t[LIB], src, size, 2 * MiB);
	write_pass(&t[RAW], src, size, 2 * MiB);

	printf("\n%-8s %-7s %10s %10s %10s %12s %10s\n", "path", "store",
	       "MB/s med", "MB/s best", "MB/s worst", "s/GiB med",
	       "paired");
	for (int k = 0; k < N_STORES; k++) {
		struct bench_stats s_lib, s_raw;
		double paired;

		write_rounds(t, src, size, store_sizes[k], rounds, ns);
		/* A break would void these rounds (and, at the revoke
		 * deadline, unmap the library's mapping under the stores). */
		bench_check_sealed(h, "through the persisted-write rounds");
		paired = bench_paired_ratio(ns[LIB], ns[RAW], rounds);
		bench_stats_u64(ns[LIB], rounds, &s_lib);
		bench_stats_u64(ns[RAW], rounds, &s_raw);
		print_write_row("library", store_names[k], &s_lib, size, paired);
		print_write_row("libpmem2", store_names[k], &s_raw, size, 0);
		/* Time per GiB, lower is better: lib/raw <= 1.0101 is the
		 * same as bandwidth lib/raw >= 0.99. */
		snprintf(metric, sizeof(metric), "persist_write_%s",
			 store_tags[k]);
		snprintf(label, sizeof(label), "persisted write, %s stores "
			 "(%.0f MB/s)", store_names[k], mb_per_s(s_lib.median, size));
		bench_fig_cmp(metric, label, "s/GiB", per_gib(s_lib.median, size),
			      per_gib(s_raw.median, size), GOAL_LE, 1.0101);
	}
	printf("(paired: the median over rounds of library time / libpmem2 "
	       "time in the same round)\n");
	free(src);
	free(ns[LIB]);
	free(ns[RAW]);
}

static uint64_t populate_round(struct imm_handle *h, uint64_t size,
			       uint32_t flags)
{
	uint64_t t0 = bench_now_ns();
	struct imm_map *m = lib_map(h, size, flags | IMM_MAP_POPULATE, NULL);

	imm_unmap(m);
	return bench_now_ns() - t0;
}

static uint64_t touch_round(struct imm_handle *h, uint64_t size,
			    uint32_t flags, size_t page)
{
	uint64_t t0 = bench_now_ns();
	struct imm_map *m = lib_map(h, size, flags, NULL);
	volatile char *p = imm_map_get_addr(m);

	/* A write, not a read: a read fault on a shared file mapping would
	 * be followed by a second, write-protect fault on the first store. */
	for (uint64_t off = 0; off < size; off += page)
		p[off] = (char)0x5a;
	imm_unmap(m);
	return bench_now_ns() - t0;
}

/* Untimed: every round starts with the file's pages clean (page cache),
 * so each write fault does the same work. */
static void settle(int fd)
{
	if (fdatasync(fd) < 0)
		bench_fail("fdatasync: %s", strerror(errno));
}

/* Both orders alike: rounds alternate which goes first. */
static void populate_rounds(struct imm_handle *h, int fd, uint64_t size,
			    uint32_t flags, uint64_t rounds, uint64_t *pop,
			    uint64_t *touch)
{
	size_t page = (size_t)sysconf(_SC_PAGESIZE);

	for (uint64_t i = 0; i < rounds; i++) {
		settle(fd);
		if (i % 2)
			pop[i] = populate_round(h, size, flags);
		else
			touch[i] = touch_round(h, size, flags, page);
		settle(fd);
		if (i % 2)
			touch[i] = touch_round(h, size, flags, page);
		else
			pop[i] = populate_round(h, size, flags);
	}
}

static void print_populate_row(const char *what, const struct bench_stats *s,
			       uint64_t size)
{
	printf("%-34s %10.2f %10.2f %10.2f\n", what,
	       per_gib(s->median, size) * 1e3, per_gib(s->min, size) * 1e3,
	       per_gib(s->max, size) * 1e3);
}

/*
 * How to read it: on a page cache with large folios (ext4 on recent
 * kernels) one write fault maps a whole folio, so first touch takes one
 * fault per folio, while MADV_POPULATE_WRITE still walks every 4 KiB page:
 * populate may be the slower.  With 4 KiB pages (tmpfs without huge pages)
 * it saves an exception per page and is the faster.
 */
static void bench_populate(struct imm_handle *h, int fd, uint64_t size,
			   uint32_t flags, uint64_t rounds)
{
	uint64_t *pop = calloc(rounds, sizeof(uint64_t));
	uint64_t *touch = calloc(rounds, sizeof(uint64_t));
	struct bench_stats s_pop, s_touch;

	if (!pop || !touch)
		bench_fail("out of memory");
	populate_rounds(h, fd, size, flags, rounds, pop, touch);
	bench_stats_u64(pop, rounds, &s_pop);
	bench_stats_u64(touch, rounds, &s_touch);
	printf("\n%-34s %10s %10s %10s  ms/GiB\n", "map + fault in + unmap",
	       "median", "min", "max");
	print_populate_row("IMM_MAP_POPULATE", &s_pop, size);
	print_populate_row("first-touch write per page", &s_touch, size);
	bench_fig_cmp("populate", "imm_map(POPULATE) + unmap, per GiB", "ms/GiB",
		      per_gib(s_pop.median, size) * 1e3,
		      per_gib(s_touch.median, size) * 1e3, GOAL_NONE, 0);
	free(pop);
	free(touch);
}

/* The file, written and fsynced, opened once for everything. */
static int make_file(const char *dir, uint64_t size, char *path,
		     size_t pathsz)
{
	uint64_t t0 = bench_now_ns();
	int fd;

	fd = bench_open_written(dir, "mapme", size, 64 * MiB, path, pathsz);
	printf("bench-map: %llu MiB written to %s in %.1f s\n",
	       (unsigned long long)(size / MiB), path,
	       (double)(bench_now_ns() - t0) / 1e9);
	return fd;
}

static struct imm_handle *seal_fd(struct imm_ctx *ctx, int fd, uint64_t size)
{
	struct imm_handle *h;
	int r;

	/* flags 0: the handle takes the fd's access mode (O_RDWR) */
	r = imm_handle_from_fd(ctx, fd, 0, &h);
	if (r < 0)
		bench_fail("imm_handle_from_fd: %s", strerror(-r));
	r = imm_seal(h, 0, size, IMM_SEAL_EXCLUSIVE, NULL);
	if (r < 0)
		bench_fail("imm_seal (exclusive) of %llu MiB: %s",
			   (unsigned long long)(size / MiB), strerror(-r));
	return h;
}

static void print_setup(const char *dir, bool dax, uint32_t flags,
			struct imm_map *m, struct pmem2_map *pm,
			const struct target t[2], const struct opts *o)
{
	const char *lg = imm_granularity_name(imm_map_get_granularity(m));
	const char *rg = pmem2_gran_name(pmem2_map_get_store_granularity(pm));

	printf("kernel %s, %s on %s, %s, imm_map flags %s, %llu interleaved "
	       "rounds (+1 warm-up pass each)\n", bench_kernel(), dir,
	       bench_fs_name(dir), dax ? "DAX" : "not DAX (page cache)",
	       (flags & IMM_MAP_SYNC) ? "IMM_MAP_SYNC" : "IMM_MAP_PAGE_OK",
	       (unsigned long long)o->rounds);
	printf("granularity: library mapping %s, raw libpmem2 mapping %s\n",
	       lg, rg);
	if (t[LIB].persist != t[RAW].persist)
		bench_note("the two mappings have different persist functions");
	if (strcmp(lg, rg))
		bench_note("the two mappings got different granularities: the "
			   "comparison is not like for like");
	if (!dax)
		bench_note("not DAX: persist is msync; the page cache stays warm "
			   "across rounds, so populate and first touch measure "
			   "mapping faults on resident pages, not reads; where "
			   "a fault maps a large folio, first touch faults once "
			   "per folio but populate walks every page");
}

int main(int argc, char **argv)
{
	struct target t[2];
	struct imm_map *m;
	struct pmem2_map *pm;
	struct imm_handle *h;
	struct imm_ctx *ctx;
	struct opts o;
	char dir[PATH_MAX], path[PATH_MAX];
	uint32_t flags;
	bool dax;
	int fd;

	bench_init("map", argv[0]);
	parse_args(argc, argv, &o);
	if (o.page_ok)
		bench_set_config("page-ok");
	bench_make_tmpdir(o.dir, "map", dir, sizeof(dir));
	if (!o.size)
		o.size = default_size(&o, o.page_ok || !dir_makes_dax(dir));
	fd = make_file(dir, o.size, path, sizeof(path));
	dax = bench_fd_is_dax(fd);
	flags = dax && !o.page_ok ? IMM_MAP_SYNC : IMM_MAP_PAGE_OK;

	ctx = bench_ctx_new();
	h = seal_fd(ctx, fd, o.size);
	m = lib_map(h, o.size, flags, &t[LIB]);
	pm = raw_map(fd, o.size, flags & IMM_MAP_SYNC, &t[RAW]);
	print_setup(dir, dax, flags, m, pm, t, &o);

	bench_watchdog(3 * 3600, "the persisted-write rounds");
	bench_writes(h, t, o.size, o.rounds);
	imm_unmap(m);
	pmem2_map_delete(&pm);

	bench_watchdog(3600, "the populate rounds");
	bench_populate(h, fd, o.size, flags, o.rounds);
	bench_watchdog(0, NULL);
	bench_check_sealed(h, "through the populate rounds");

	bench_fig("file_mib", "file size", "MiB", (double)(o.size / MiB),
		  GOAL_NONE, 0);
	bench_fig("dax", "file is DAX (statx)", "", dax, GOAL_NONE, 0);
	bench_report();

	imm_handle_close(h);
	imm_ctx_unref(ctx);
	close(fd);
	return 0;
}
