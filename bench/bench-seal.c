// SPDX-License-Identifier: LGPL-2.1-or-later
/*
 * bench-seal: imm_seal() of a prepared (fully written, fsynced) file
 * against what a careful application would do by hand to know the same
 * thing: fallocate(KEEP_SIZE) over the whole file + fsync + a FIEMAP of the
 * whole file (SEEK_DATA/SEEK_HOLE on a filesystem without FIEMAP, as in
 * the library).  Same file, same open file, interleaved (the order flips every
 * iteration); the seal is released between seals, untimed.
 *
 * The seal passes IMM_SEAL_NO_PREPARE: on a prepared file that is the same
 * code path as without it, and it turns "preparation crept in" into an
 * error instead of a silently different measurement.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>
#include <linux/falloc.h>
#include <linux/fiemap.h>
#include <linux/fs.h>

#include "common.h"

#define GiB (1024ull * 1024 * 1024)
#define MiB (1024ull * 1024)
#define FIEMAP_BATCH 512u

/* The allocation map without FIEMAP (tmpfs): what the library reads there. */
static uint64_t seek_map(int fd, uint64_t size)
{
	off_t pos = 0;
	uint64_t n = 0;

	while ((uint64_t)pos < size) {
		off_t data = lseek(fd, pos, SEEK_DATA), hole;

		if (data < 0) {
			if (errno == ENXIO)
				break;
			bench_fail("SEEK_DATA: %s", strerror(errno));
		}
		hole = lseek(fd, data, SEEK_HOLE);
		if (hole < 0)
			bench_fail("SEEK_HOLE: %s", strerror(errno));
		n++;
		pos = hole;
	}
	return n;
}

/* The baseline: allocate (a no-op on a prepared file, but the kernel has
 * to walk the map to know), flush, read the whole extent map. */
static uint64_t baseline(int fd, uint64_t size, struct fiemap *fm,
			 bool use_seek, uint64_t *ret_extents)
{
	uint64_t t0 = bench_now_ns(), cursor = 0, n = 0;
	bool last = false;

	if (fallocate(fd, FALLOC_FL_KEEP_SIZE, 0, (off_t)size) < 0)
		bench_fail("fallocate: %s", strerror(errno));
	if (fsync(fd) < 0)
		bench_fail("fsync: %s", strerror(errno));
	if (use_seek) {
		*ret_extents = seek_map(fd, size);
		return bench_now_ns() - t0;
	}
	while (!last && cursor < size) {
		memset(fm, 0, sizeof(*fm));
		fm->fm_start = cursor;
		fm->fm_length = size - cursor;
		fm->fm_extent_count = FIEMAP_BATCH;
		if (ioctl(fd, FS_IOC_FIEMAP, fm) < 0)
			bench_fail("FIEMAP: %s", strerror(errno));
		if (!fm->fm_mapped_extents)
			break;
		for (uint32_t i = 0; i < fm->fm_mapped_extents; i++) {
			const struct fiemap_extent *e = &fm->fm_extents[i];

			last = e->fe_flags & FIEMAP_EXTENT_LAST;
			cursor = e->fe_logical + e->fe_length;
		}
		n += fm->fm_mapped_extents;
	}
	*ret_extents = n;
	return bench_now_ns() - t0;
}

static uint64_t lib_seal(struct imm_handle *h, uint64_t size,
			 uint64_t *ret_release_ns)
{
	uint64_t t0, t1, t2;
	int r;

	t0 = bench_now_ns();
	r = imm_seal(h, 0, size, IMM_SEAL_EXCLUSIVE | IMM_SEAL_NO_PREPARE, NULL);
	t1 = bench_now_ns();
	if (r < 0)
		bench_fail("imm_seal: %s%s", strerror(-r), r == -EUCLEAN ?
			   " (the file was not left prepared)" : "");
	r = imm_release(h);
	t2 = bench_now_ns();
	if (r < 0)
		bench_fail("imm_release: %s", strerror(-r));
	*ret_release_ns = t2 - t1;
	return t1 - t0;
}

static void usage(const char *prog)
{
	fprintf(stderr,
		"usage: %s [--quick] [-n ITERATIONS] [--size MiB]\n"
		"  imm_seal() of a prepared file vs fallocate + fsync + FIEMAP.\n"
		"  -n N        pairs (default 50, --quick 10)\n"
		"  --size MiB  file size (default 1024; 256 if < 3 GiB free)\n"
		"  The file goes in $IMM_BENCH_DIR, or /tmp.\n", prog);
}

int main(int argc, char **argv)
{
	uint64_t n = 50, size = GiB, size_mib = 0, extents = 0, freeb;
	uint64_t *t_seal, *t_base, *t_rel, t_create;
	struct bench_stats s_seal, s_base, s_rel;
	struct imm_layout_info info = { .sz = sizeof(info) };
	struct imm_handle *h;
	struct imm_ctx *ctx;
	struct fiemap *fm;
	char dir[PATH_MAX], path[PATH_MAX];
	bool use_seek;
	int r, fd;

	bench_init("seal", argv[0]);
	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--quick")) {
			n = 10;
		} else if (!strcmp(argv[i], "-n") && i + 1 < argc) {
			if (!bench_parse_u64(argv[++i], &n) || n == 0 || n > 100000)
				bench_fail("bad -n %s", argv[i]);
		} else if (!strcmp(argv[i], "--size") && i + 1 < argc) {
			if (!bench_parse_u64(argv[++i], &size_mib) || size_mib == 0 ||
			    size_mib > 1024 * 1024)
				bench_fail("bad --size %s", argv[i]);
		} else if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) {
			usage(argv[0]);
			return 0;
		} else {
			usage(argv[0]);
			return 2;
		}
	}

	bench_make_tmpdir(bench_base_dir(), "seal", dir, sizeof(dir));
	freeb = bench_free_bytes(dir);
	if (size_mib) {
		size = size_mib * MiB;
		if (freeb < size + 256 * MiB)
			bench_fail("%llu MiB asked for, %llu MiB free in %s",
				   (unsigned long long)size_mib,
				   (unsigned long long)(freeb / MiB), dir);
	} else if (freeb < 3 * GiB) {
		size = 256 * MiB;
		bench_note("only %llu MiB free in %s (< 3 GiB): using a 256 MiB "
			   "file instead of 1 GiB", (unsigned long long)(freeb / MiB),
			   dir);
		if (freeb < size + 64 * MiB)
			bench_fail("not even 320 MiB free in %s; set IMM_BENCH_DIR",
				   dir);
	}
	bench_path(path, sizeof(path), dir, "sealme");

	t_create = bench_now_ns();
	r = bench_create_written(path, size, true);
	if (r < 0)
		bench_fail("writing %llu MiB to %s: %s",
			   (unsigned long long)(size / MiB), path, strerror(-r));
	t_create = bench_now_ns() - t_create;

	ctx = bench_ctx_new();
	r = imm_handle_open(ctx, path, IMM_RDWR, &h);
	if (r < 0)
		bench_fail("imm_handle_open %s: %s", path, strerror(-r));
	fd = imm_handle_get_fd(h);
	r = imm_layout_query(h, 0, 0, &info);
	if (r < 0)
		bench_fail("imm_layout_query: %s", strerror(-r));
	if (!(info.flags & IMM_LAYOUT_FINAL))
		bench_fail("%s is not prepared after writing it (%llu holes, %llu "
			   "unwritten extents)", path,
			   (unsigned long long)info.holes,
			   (unsigned long long)info.unwritten);

	/* Where the filesystem has no FIEMAP the library reads the
	 * allocation map with SEEK_DATA/SEEK_HOLE; so does the baseline. */
	use_seek = info.flags & IMM_LAYOUT_ALLOC_ONLY;
	if (use_seek)
		bench_note("%s has no FIEMAP: the baseline walks SEEK_DATA/"
			   "SEEK_HOLE instead, as the library does", bench_fs_name(dir));
	fm = malloc(sizeof(*fm) + FIEMAP_BATCH * sizeof(struct fiemap_extent));
	t_seal = calloc(n, sizeof(*t_seal));
	t_base = calloc(n, sizeof(*t_base));
	t_rel = calloc(n, sizeof(*t_rel));
	if (!fm || !t_seal || !t_base || !t_rel)
		bench_fail("out of memory");

	printf("bench-seal: kernel %s, %s (%s), %llu MiB file written in %.1f s, "
	       "%llu extents (merged), %llu interleaved pairs (+2 warm-up)\n",
	       bench_kernel(), path, bench_fs_name(dir),
	       (unsigned long long)(size / MiB), (double)t_create / 1e9,
	       (unsigned long long)info.extents, (unsigned long long)n);

	/* Warm-up: the notifier thread starts on the first seal; the first
	 * FIEMAP reads the extent tree into the cache. */
	for (int k = 0; k < 2; k++) {
		uint64_t rel;

		baseline(fd, size, fm, use_seek, &extents);
		lib_seal(h, size, &rel);
	}
	bench_watchdog(1800, "the seal loop");
	for (uint64_t i = 0; i < n; i++) {
		if (i % 2) {
			t_seal[i] = lib_seal(h, size, &t_rel[i]);
			t_base[i] = baseline(fd, size, fm, use_seek, &extents);
		} else {
			t_base[i] = baseline(fd, size, fm, use_seek, &extents);
			t_seal[i] = lib_seal(h, size, &t_rel[i]);
		}
	}
	bench_watchdog(0, NULL);

	bench_stats_u64(t_seal, n, &s_seal);
	bench_stats_u64(t_base, n, &s_base);
	bench_stats_u64(t_rel, n, &s_rel);
	printf("\n%-34s %10s %10s %10s %10s\n", "", "median", "p90", "min", "max");
	printf("%-34s %10.3f %10.3f %10.3f %10.3f  ms\n", "imm_seal (exclusive)",
	       s_seal.median / 1e6, s_seal.p90 / 1e6, s_seal.min / 1e6,
	       s_seal.max / 1e6);
	printf("%-34s %10.3f %10.3f %10.3f %10.3f  ms\n",
	       "fallocate + fsync + FIEMAP", s_base.median / 1e6,
	       s_base.p90 / 1e6, s_base.min / 1e6, s_base.max / 1e6);
	printf("%-34s %10.3f %10.3f %10.3f %10.3f  ms\n", "imm_release (untimed above)",
	       s_rel.median / 1e6, s_rel.p90 / 1e6, s_rel.min / 1e6,
	       s_rel.max / 1e6);
	printf("(the baseline's %s reported %llu extents, unmerged)\n",
	       use_seek ? "SEEK_DATA walk" : "FIEMAP", (unsigned long long)extents);

	bench_fig("file_mib", "file size", "MiB", (double)(size / MiB), GOAL_NONE,
		  0);
	bench_fig("extents", "extents in the file (merged)", "", (double)info.extents,
		  GOAL_NONE, 0);
	bench_fig("baseline_median_ms", "fallocate+fsync+FIEMAP, median", "ms",
		  s_base.median / 1e6, GOAL_NONE, 0);
	bench_fig_cmp("seal_median_ms", "imm_seal of the prepared file, median",
		      "ms", s_seal.median / 1e6, s_base.median / 1e6, GOAL_LE, 1.2);
	bench_fig_cmp("seal_p90_ms", "imm_seal of the prepared file, p90", "ms",
		      s_seal.p90 / 1e6, s_base.p90 / 1e6, GOAL_NONE, 0);
	bench_fig("release_median_us", "imm_release, median", "us",
		  s_rel.median / 1e3, GOAL_NONE, 0);
	bench_report();

	imm_handle_close(h);
	imm_ctx_unref(ctx);
	free(fm);
	free(t_seal);
	free(t_base);
	free(t_rel);
	return 0;
}
