// SPDX-License-Identifier: LGPL-2.1-or-later
/*
 * bench-block: 4 KiB random reads and writes with io_uring at queue depth
 * 1 and 32, three ways on one device in one run:
 *
 *   file    O_DIRECT through the filesystem, at random file offsets;
 *   sealed  straight to the device, each random file offset translated
 *           through the map imm_block_map() exported (binary search);
 *   raw     straight to the device at the same kind of random offsets of
 *           the same blocks, from a table made beforehand (one device
 *           offset per 4 KiB of the file): the device's own cost.
 *
 * Rounds alternate the three so that a slow spell of the machine weighs on
 * all; each figure is the median round.  Goals: sealed >= 0.97x raw IOPS at
 * QD32; at QD1 the cost per I/O of file against sealed is reported.
 *
 * Also the cost of exporting the map of sealed files of 10k and 100k
 * extents (goal: < 20 ms for 100k, and linear).
 *
 * The device is a loop device over an image in $IMM_BENCH_DIR (ext4 made
 * here), with direct I/O to its image so that it caches nothing itself.
 * Root, liburing.
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
#include <linux/loop.h>

#include <liburing.h>

#include "common.h"

#define MiB (1024ull * 1024)
#define IO 4096u
#define QD_MAX 32u
#define FRAG_BUDGET_NS (120ull * 1000000000ull)

enum way { FILE_IO, SEALED, RAW, N_WAYS };
static const char *const way_name[N_WAYS] = { "file", "sealed", "raw" };

struct map {
	struct imm_block_extent *ext;
	int n;
};

struct job {
	struct io_uring ring;
	int fd;
	bool write;
	unsigned qd;
	enum way way;
	const struct map *map;
	uint64_t size;		/* file bytes */
	uint64_t *pages;	/* raw: device offset of each 4 KiB */
	uint64_t rng;
	unsigned char *buf;	/* QD_MAX * IO, aligned */
};

static uint64_t next_rand(uint64_t *s)
{
	*s ^= *s << 13;
	*s ^= *s >> 7;
	*s ^= *s << 17;
	return *s;
}

/* The extent holding file offset off: the map is in file order. */
static uint64_t translate(const struct map *m, uint64_t off)
{
	int lo = 0, hi = m->n - 1;

	while (lo < hi) {
		int mid = (lo + hi + 1) / 2;

		if (m->ext[mid].offset <= off)
			lo = mid;
		else
			hi = mid - 1;
	}
	return m->ext[lo].dev_offset + (off - m->ext[lo].offset);
}

static uint64_t target(struct job *j)
{
	uint64_t r = next_rand(&j->rng);

	switch (j->way) {
	case SEALED:
		return translate(j->map, r % (j->size / IO) * IO);
	case RAW:
		return j->pages[r % (j->size / IO)];
	default:
		return r % (j->size / IO) * IO;
	}
}

static void submit_one(struct job *j, unsigned slot)
{
	struct io_uring_sqe *sqe = io_uring_get_sqe(&j->ring);
	void *b = j->buf + (size_t)slot * IO;

	if (!sqe)
		bench_fail("io_uring: no free submission entry");
	if (j->write)
		io_uring_prep_write(sqe, j->fd, b, IO, target(j));
	else
		io_uring_prep_read(sqe, j->fd, b, IO, target(j));
	io_uring_sqe_set_data64(sqe, slot);
}

/* I/Os per second over duration_ns, qd in flight all along. */
static double run_job(struct job *j, uint64_t duration_ns)
{
	uint64_t done = 0, t0, end;
	struct io_uring_cqe *cqe;
	int r;

	for (unsigned s = 0; s < j->qd; s++)
		submit_one(j, s);
	t0 = bench_now_ns();
	end = t0 + duration_ns;
	io_uring_submit(&j->ring);
	for (unsigned inflight = j->qd; inflight;) {
		r = io_uring_wait_cqe(&j->ring, &cqe);
		if (r < 0)
			bench_fail("io_uring_wait_cqe: %s", strerror(-r));
		if (cqe->res != (int)IO)
			bench_fail("%s %s: %s", way_name[j->way],
				   j->write ? "write" : "read",
				   cqe->res < 0 ? strerror(-cqe->res) : "short");
		done++;
		if (bench_now_ns() < end)
			submit_one(j, (unsigned)io_uring_cqe_get_data64(cqe));
		else
			inflight--;
		io_uring_cqe_seen(&j->ring, cqe);
		io_uring_submit(&j->ring);
	}
	return (double)done * 1e9 / (double)(bench_now_ns() - t0);
}

struct setup {
	char dev[64];
	char mnt[PATH_MAX];
	char path[PATH_MAX];
	uint64_t size;
	struct imm_ctx *ctx;
};

/* The map of the sealed handle, all of it. */
static struct map export_map(struct imm_handle *h, struct imm_block_dev *d)
{
	struct map m;

	*d = (struct imm_block_dev){ .sz = sizeof(*d) };
	m.n = imm_block_map(h, 0, d, NULL, 0);
	if (m.n < 0)
		bench_fail("imm_block_map: %s", strerror(-m.n));
	m.ext = calloc((size_t)m.n + 1, sizeof(*m.ext));
	if (!m.ext || imm_block_map(h, 0, d, m.ext, (size_t)m.n) != m.n)
		bench_fail("imm_block_map: the map changed under the seal");
	return m;
}

static int open_or_fail(const char *path, int flags)
{
	int fd = open(path, flags | O_CLOEXEC);

	if (fd < 0)
		bench_fail("open %s: %s", path, strerror(errno));
	return fd;
}

/* One round: each way, each direction, each depth; iops[way][w][qd]. */
static void round_of(struct setup *s, struct job *j, uint64_t dur,
		     double iops[N_WAYS][2][2])
{
	struct imm_block_dev d;
	struct imm_handle *h;
	struct map m;
	int r;

	for (int w = 0; w < 2; w++)
		for (int q = 0; q < 2; q++) {
			j->write = w, j->qd = q ? QD_MAX : 1;
			/* the file way first: its open would break the seal */
			j->way = FILE_IO;
			j->fd = open_or_fail(s->path, O_RDWR | O_DIRECT);
			iops[FILE_IO][w][q] = run_job(j, dur);
			close(j->fd);
		}
	r = imm_handle_open(s->ctx, s->path, IMM_RDONLY, &h);
	if (r == 0)
		r = imm_seal(h, 0, s->size, IMM_SEAL_SHARED, NULL);
	if (r < 0)
		bench_fail("sealing %s: %s", s->path, strerror(-r));
	m = export_map(h, &d);
	j->map = &m;
	j->pages = malloc(s->size / IO * sizeof(*j->pages));
	if (!j->pages)
		bench_fail("out of memory");
	for (uint64_t p = 0; p < s->size / IO; p++)
		j->pages[p] = translate(&m, p * IO);
	j->fd = open_or_fail(d.path, O_RDWR | O_DIRECT);
	for (int w = 0; w < 2; w++)
		for (int q = 0; q < 2; q++) {
			j->write = w, j->qd = q ? QD_MAX : 1;
			for (enum way x = SEALED; x <= RAW; x++) {
				j->way = x;
				iops[x][w][q] = run_job(j, dur);
			}
		}
	close(j->fd);
	free(j->pages);
	bench_check_sealed(h, "after the block I/O");
	imm_handle_close(h);
	free(m.ext);
}

static int by_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return x < y ? -1 : x > y;
}

static double median(double *v, size_t n)
{
	qsort(v, n, sizeof(*v), by_double);
	return v[n / 2];
}

static void measure_io(struct setup *s, uint64_t dur, unsigned rounds)
{
	static double all[16][N_WAYS][2][2];
	double med[N_WAYS][2][2];
	struct job j = { .size = s->size, .rng = 0x9e3779b97f4a7c15ull };
	char label[64], text[64];
	int r;

	if (posix_memalign((void **)&j.buf, IO, QD_MAX * IO))
		bench_fail("out of memory");
	memset(j.buf, 0x5a, QD_MAX * IO);
	r = io_uring_queue_init(2 * QD_MAX, &j.ring, 0);
	if (r < 0)
		bench_fail("io_uring_queue_init: %s", strerror(-r));
	for (unsigned i = 0; i < rounds; i++)
		round_of(s, &j, dur, all[i]);
	io_uring_queue_exit(&j.ring);
	free(j.buf);
	for (int x = 0; x < N_WAYS; x++)
		for (int w = 0; w < 2; w++)
			for (int q = 0; q < 2; q++) {
				double v[16];

				for (unsigned i = 0; i < rounds; i++)
					v[i] = all[i][x][w][q];
				med[x][w][q] = median(v, rounds);
			}
	/* as time per I/O (1/IOPS), so that the goals are upper bounds on
	 * the ratio: sealed >= 0.97x raw IOPS is sealed <= 1/0.97 raw time */
	for (int w = 0; w < 2; w++)
		for (int q = 0; q < 2; q++) {
			const char *dir = w ? "write" : "read";
			unsigned qd = q ? QD_MAX : 1;

			snprintf(label, sizeof(label), "4k_%s_qd%u_sealed_vs_raw",
				 dir, qd);
			snprintf(text, sizeof(text), "%s QD%u: sealed vs raw device",
				 dir, qd);
			bench_fig_cmp(label, text,
				      "us/IO", 1e6 / med[SEALED][w][q],
				      1e6 / med[RAW][w][q], q ? GOAL_LE : GOAL_NONE,
				      1 / 0.97);
			snprintf(label, sizeof(label), "4k_%s_qd%u_file_vs_sealed",
				 dir, qd);
			snprintf(text, sizeof(text), "%s QD%u: file O_DIRECT vs sealed",
				 dir, qd);
			bench_fig_cmp(label, text,
				      "us/IO", 1e6 / med[FILE_IO][w][q],
				      1e6 / med[SEALED][w][q], GOAL_NONE, 0);
		}
}

/* Export cost for a sealed file of `extents` one-block extents. */
static void measure_export(struct setup *s, uint64_t extents, unsigned reps)
{
	struct imm_block_dev d;
	struct imm_handle *h;
	char path[PATH_MAX], label[64], text[64];
	double secs, v[32];
	struct map m;
	int r;

	snprintf(label, sizeof(label), "frag-%llu", (unsigned long long)extents);
	bench_path(path, sizeof(path), s->mnt, label);
	if (bench_create_fragmented(path, extents, FRAG_BUDGET_NS, &secs) != FRAG_OK)
		bench_fail("cannot make a file of %llu extents in %s",
			   (unsigned long long)extents, s->mnt);
	r = imm_handle_open(s->ctx, path, IMM_RDONLY, &h);
	if (r == 0)
		r = imm_seal(h, 0, extents * 4096, IMM_SEAL_SHARED, NULL);
	if (r < 0)
		bench_fail("sealing %s: %s", path, strerror(-r));
	for (unsigned i = 0; i < reps; i++) {
		uint64_t t0 = bench_now_ns();

		m = export_map(h, &d);
		v[i] = (double)(bench_now_ns() - t0) / 1e6;
		if ((uint64_t)m.n < extents * 9 / 10)
			bench_fail("%s: %d extents after sealing, %llu made",
				   path, m.n, (unsigned long long)extents);
		free(m.ext);
	}
	snprintf(label, sizeof(label), "export_%lluk_extents",
		 (unsigned long long)(extents / 1000));
	snprintf(text, sizeof(text), "export of %lluk extents (count, then all)",
		 (unsigned long long)(extents / 1000));
	bench_fig(label, text, "ms",
		  median(v, reps), extents >= 100000 ? GOAL_LT : GOAL_NONE, 20);
	imm_handle_close(h);
	unlink(path);
}

static void usage(const char *prog)
{
	fprintf(stderr, "usage: %s [--quick]\n"
		"  4 KiB random I/O at QD1 and QD32 three ways, and the cost of\n"
		"  exporting a 10k- and a 100k-extent map; root\n", prog);
}

int main(int argc, char **argv)
{
	struct setup s = { .size = 256 * MiB };
	uint64_t dur = 2000000000ull;
	unsigned rounds = 5, reps = 11;
	char dir[PATH_MAX];
	int fd;

	bench_init("block", argv[0]);
	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--quick")) {
			dur = 300000000ull, rounds = 3, reps = 5;
			s.size = 64 * MiB;
		} else {
			usage(argv[0]);
			return !strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")
				       ? 0 : 2;
		}
	}
	if (geteuid() != 0)
		bench_fail("needs root: a loop device and a mount");
	bench_cleanup_init();
	bench_watchdog(1800, "bench-block");
	bench_make_tmpdir(bench_base_dir(), "block", dir, sizeof(dir));
	bench_make_loop_fs(dir, "ext4", s.size * 3 + 1024 * MiB, s.mnt,
			   sizeof(s.mnt), s.dev, sizeof(s.dev));
	fd = open_or_fail(s.dev, O_RDONLY);
	if (ioctl(fd, LOOP_SET_DIRECT_IO, 1UL) < 0)
		bench_note("%s: no direct I/O to its image (%s): the loop "
			   "device caches; ratios still compare like with like",
			   s.dev, strerror(errno));
	close(fd);
	s.ctx = bench_ctx_new();
	fd = bench_open_written(s.mnt, "data", s.size, 64 * MiB, s.path,
				sizeof(s.path));
	close(fd);
	printf("bench-block: kernel %s, %llu MiB file on %s, %u rounds of "
	       "%.1f s per figure\n", bench_kernel(),
	       (unsigned long long)(s.size / MiB), s.dev, rounds, dur / 1e9);
	measure_io(&s, dur, rounds);
	measure_export(&s, 10000, reps);
	measure_export(&s, 100000, reps);
	imm_ctx_unref(s.ctx);
	bench_report();
	bench_watchdog(0, NULL);
	return 0;
}
