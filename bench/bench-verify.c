// SPDX-License-Identifier: LGPL-2.1-or-later
/*
 * bench-verify: imm_verify() of sealed files with 10k and 100k extents.
 *
 * The fragmentation has to survive preparation, which fills holes and
 * writes unwritten extents (a sparse "every other block" file would come
 * out of imm_seal() with its holes allocated, next to their neighbours, and
 * merged).  So the files have no holes at all: allocate 2E contiguous
 * blocks, then FALLOC_FL_COLLAPSE_RANGE away every other block, low to
 * high (each collapse then shifts a single tail extent), which leaves E
 * one-block extents that are logically adjacent and physically two blocks
 * apart; then write every byte, so nothing is unwritten either.  The
 * extent count is checked after sealing with imm_layout_query().
 *
 * That works on ext4 and xfs.  If the directory's filesystem cannot
 * collapse, does not reach the count, or takes longer than a minute, the
 * benchmark makes a small xfs on a loop device (mkfs.xfs on a file, mounted
 * on a mkdtemp directory) and says so; --xfs asks for that directly.
 * Everything it creates -- files, mount, loop device -- is undone on every
 * exit path, signals included.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>
#include <linux/fiemap.h>
#include <linux/fs.h>
#include <linux/loop.h>

#include "common.h"

#define BLK 4096ull	/* what bench_create_fragmented() collapses by */
#define MiB (1024ull * 1024)
#define BUILD_BUDGET_NS (60ull * 1000000000ull)
#define MAX_SIZES 8

struct target {
	uint64_t want;		/* extents asked for */
	uint64_t got;		/* extents after sealing */
	double build_s;
	double seal_ms;
	struct bench_stats verify;	/* ns */
};

/* ---------------------------------------------------- the measurement */

static void measure(struct imm_ctx *ctx, const char *path, struct target *t,
		    uint64_t reps)
{
	struct imm_layout_info info = { .sz = sizeof(info) };
	struct imm_handle *h;
	uint64_t *v, t0;
	int r;

	r = imm_handle_open(ctx, path, IMM_RDWR, &h);
	if (r < 0)
		bench_fail("imm_handle_open %s: %s", path, strerror(-r));
	t0 = bench_now_ns();
	r = imm_seal(h, 0, (uint64_t)lseek(imm_handle_get_fd(h), 0, SEEK_END),
		     IMM_SEAL_EXCLUSIVE, NULL);
	t->seal_ms = (double)(bench_now_ns() - t0) / 1e6;
	if (r < 0)
		bench_fail("imm_seal %s: %s", path, strerror(-r));
	r = imm_layout_query(h, 0, 0, &info);
	if (r < 0)
		bench_fail("imm_layout_query: %s", strerror(-r));
	t->got = info.extents;

	v = calloc(reps, sizeof(*v));
	if (!v)
		bench_fail("out of memory");
	r = imm_verify(h);	/* warm-up: the extent tree into the cache */
	if (r < 0)
		bench_fail("imm_verify %s: %s", path, strerror(-r));
	for (uint64_t i = 0; i < reps; i++) {
		t0 = bench_now_ns();
		r = imm_verify(h);
		v[i] = bench_now_ns() - t0;
		if (r < 0)
			bench_fail("imm_verify %s: %s", path, strerror(-r));
	}
	bench_stats_u64(v, reps, &t->verify);
	free(v);
	imm_release(h);
	imm_handle_close(h);
}

/* Extents as the filesystem reports them (FIEMAP's counting mode). */
static uint64_t count_extents(const char *path)
{
	struct fiemap fm;
	int fd = open(path, O_RDONLY | O_CLOEXEC);

	if (fd < 0)
		bench_fail("open %s: %s", path, strerror(errno));
	memset(&fm, 0, sizeof(fm));
	fm.fm_length = FIEMAP_MAX_OFFSET;
	fm.fm_flags = FIEMAP_FLAG_SYNC;
	if (ioctl(fd, FS_IOC_FIEMAP, &fm) < 0)
		bench_fail("FIEMAP %s: %s", path, strerror(errno));
	close(fd);
	return fm.fm_mapped_extents;
}

static bool build_all(const char *dir, struct target *t, size_t n,
		      char paths[][PATH_MAX])
{
	for (size_t i = 0; i < n; i++) {
		char name[32];
		enum bench_frag_result res;
		uint64_t got;

		snprintf(name, sizeof(name), "frag-%llu",
			 (unsigned long long)t[i].want);
		bench_path(paths[i], PATH_MAX, dir, name);
		res = bench_create_fragmented(paths[i], t[i].want,
					      BUILD_BUDGET_NS, &t[i].build_s);
		if (res != FRAG_OK) {
			printf("%s: %s after %.1f s\n", dir,
			       res == FRAG_UNSUPPORTED ?
				       "this filesystem cannot collapse ranges" :
				       "building the fragmented file takes too long",
			       t[i].build_s);
			unlink(paths[i]);
			for (size_t k = 0; k < i; k++)
				unlink(paths[k]);
			return false;
		}
		got = count_extents(paths[i]);
		printf("built %s: %llu extents asked for, %llu made, %.1f s\n",
		       paths[i], (unsigned long long)t[i].want,
		       (unsigned long long)got, t[i].build_s);
		if (got < t[i].want - t[i].want / 10) {
			printf("%s: the allocator did not leave the blocks "
			       "interleaved\n", dir);
			for (size_t k = 0; k <= i; k++)
				unlink(paths[k]);
			return false;
		}
	}
	return true;
}

static void usage(const char *prog)
{
	fprintf(stderr,
		"usage: %s [--quick] [-n REPS] [--xfs] [--sizes E1,E2,...]\n"
		"  imm_verify() time on files with many extents.\n"
		"  -n REPS     verifies per file (default 21, --quick 5)\n"
		"  --sizes     extent counts (default 10000,100000)\n"
		"  --xfs       use an xfs on a loop device (root) straight away\n"
		"  Files go in $IMM_BENCH_DIR, or /tmp.\n", prog);
}

static size_t parse_sizes(char *s, struct target *t)
{
	size_t n = 0;

	for (char *tok = strtok(s, ","); tok; tok = strtok(NULL, ",")) {
		uint64_t v;

		if (n == MAX_SIZES || !bench_parse_u64(tok, &v) || v < 2 ||
		    v > 10000000)
			bench_fail("bad --sizes entry %s", tok);
		t[n++].want = v;
	}
	return n;
}

int main(int argc, char **argv)
{
	struct target t[MAX_SIZES] = { { .want = 10000 }, { .want = 100000 } };
	char dir[PATH_MAX], mnt[PATH_MAX], dev[64], paths[MAX_SIZES][PATH_MAX];
	uint64_t reps = 21, total_blocks = 0;
	size_t n = 2;
	bool force_xfs = false, on_xfs_loop = false;
	const char *where;
	struct imm_ctx *ctx;

	bench_init("verify", argv[0]);
	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--quick")) {
			reps = 5;
		} else if (!strcmp(argv[i], "-n") && i + 1 < argc) {
			if (!bench_parse_u64(argv[++i], &reps) || reps == 0 ||
			    reps > 100000)
				bench_fail("bad -n %s", argv[i]);
		} else if (!strcmp(argv[i], "--sizes") && i + 1 < argc) {
			memset(t, 0, sizeof(t));
			n = parse_sizes(argv[++i], t);
		} else if (!strcmp(argv[i], "--xfs")) {
			force_xfs = true;
		} else if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) {
			usage(argv[0]);
			return 0;
		} else {
			usage(argv[0]);
			return 2;
		}
	}
	for (size_t i = 0; i < n; i++)
		total_blocks += 2 * t[i].want;

	bench_make_tmpdir(bench_base_dir(), "verify", dir, sizeof(dir));
	if (bench_free_bytes(dir) < total_blocks * BLK + 256 * MiB)
		bench_fail("%s has %llu MiB free, %llu MiB needed", dir,
			   (unsigned long long)(bench_free_bytes(dir) / MiB),
			   (unsigned long long)(total_blocks * BLK / MiB + 256));
	printf("bench-verify: kernel %s, %llu verifies per file\n", bench_kernel(),
	       (unsigned long long)reps);

	where = dir;
	if (force_xfs || !build_all(dir, t, n, paths)) {
		/* Room for the files, their 2x allocation, and xfs's log. */
		uint64_t image = total_blocks * BLK + total_blocks * BLK / 4 +
				 512 * MiB;

		bench_make_loop_fs(dir, "xfs", image, mnt, sizeof(mnt), dev,
				   sizeof(dev));
		on_xfs_loop = true;
		where = mnt;
		if (!build_all(mnt, t, n, paths))
			bench_fail("could not build the fragmented files on xfs "
				   "either");
	}
	bench_set_config(on_xfs_loop ? "xfs-loop" : bench_fs_name(where));

	ctx = bench_ctx_new();
	for (size_t i = 0; i < n; i++) {
		bench_watchdog(600, "verifying");
		measure(ctx, paths[i], &t[i], reps);
		unlink(paths[i]);	/* the space, early; cleanup would too */
	}
	bench_watchdog(0, NULL);
	imm_ctx_unref(ctx);

	printf("\nfilesystem: %s%s\n", bench_fs_name(where),
	       on_xfs_loop ? " (a loop device made by this benchmark)" : "");
	printf("%10s %10s %10s %10s %12s %12s %12s %12s\n", "asked", "extents",
	       "build s", "seal ms", "verify med", "verify p90", "verify min",
	       "us/1k ext");
	for (size_t i = 0; i < n; i++)
		printf("%10llu %10llu %10.1f %10.2f %12.3f %12.3f %12.3f %12.1f\n",
		       (unsigned long long)t[i].want, (unsigned long long)t[i].got,
		       t[i].build_s, t[i].seal_ms, t[i].verify.median / 1e6,
		       t[i].verify.p90 / 1e6, t[i].verify.min / 1e6,
		       t[i].got ? t[i].verify.median / 1e3 /
					  ((double)t[i].got / 1000.0) : 0);
	printf("(verify times in ms)\n");

	for (size_t i = 0; i < n; i++) {
		char metric[64], label[80];
		bool is100k = t[i].want == 100000;

		snprintf(metric, sizeof(metric), "extents_%llu",
			 (unsigned long long)t[i].want);
		snprintf(label, sizeof(label), "extents after sealing (asked %llu)",
			 (unsigned long long)t[i].want);
		bench_fig(metric, label, "", (double)t[i].got, GOAL_NONE, 0);
		snprintf(metric, sizeof(metric), "verify_%llu_median_ms",
			 (unsigned long long)t[i].want);
		snprintf(label, sizeof(label), "imm_verify, %llu extents, median",
			 (unsigned long long)t[i].got);
		bench_fig(metric, label, "ms", t[i].verify.median / 1e6,
			  is100k ? GOAL_LT : GOAL_NONE, 50);
	}
	if (n >= 2 && t[0].verify.median > 0) {
		/* The last size over the first, against the extent ratio. */
		double scale = t[n - 1].verify.median / t[0].verify.median;
		double linear = (double)t[n - 1].got / (double)(t[0].got ? t[0].got : 1);
		char label[80];

		snprintf(label, sizeof(label), "scaling %llu/%llu (linear = %.1f)",
			 (unsigned long long)t[n - 1].want,
			 (unsigned long long)t[0].want, linear);
		bench_fig("verify_scaling", label, "x", scale, GOAL_NONE, 0);
	}
	bench_report();
	return 0;
}
