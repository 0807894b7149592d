// SPDX-License-Identifier: LGPL-2.1-or-later
/*
 * bench-rpma: registering the same sealed fsdax mapping through
 * imm_reg_mr() (IMM_MR_AUTO) and through librpma's rpma_mr_reg(), which
 * also falls back to ODP when a pinned registration is refused: outcome and
 * time per register + deregister, interleaved, on the same device.
 *
 * Needs an RDMA device: run it in the VM tier's guest,
 *   tests/vm/run --kernel stock-7.3 --build BUILD -- BUILD/bench/bench-rpma
 * (on 6.12 rxe has no ODP: both are expected to fail, and say so).
 *
 *   bench-rpma [--dir DIR] [--size BYTES] [-n ROUNDS]
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <librpma.h>
#include <libimmutable/verbs.h>

#include "common.h"

#define MiB (1024ull * 1024)
#define RW (IBV_ACCESS_LOCAL_WRITE | IBV_ACCESS_REMOTE_WRITE | \
	    IBV_ACCESS_REMOTE_READ)
#define RPMA_USAGE (RPMA_MR_USAGE_READ_SRC | RPMA_MR_USAGE_WRITE_DST)

struct opts {
	const char *dir;
	uint64_t size;
	uint64_t rounds;
};

static void parse_args(int argc, char **argv, struct opts *o)
{
	*o = (struct opts){ "/mnt/pmem-xfs", 64 * MiB, 20 };
	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--dir") && i + 1 < argc)
			o->dir = argv[++i];
		else if (!strcmp(argv[i], "--size") && i + 1 < argc &&
			 bench_parse_u64(argv[i + 1], &o->size))
			i++;
		else if (!strcmp(argv[i], "-n") && i + 1 < argc &&
			 bench_parse_u64(argv[i + 1], &o->rounds))
			i++;
		else
			bench_fail("usage: %s [--dir DIR] [--size BYTES] [-n ROUNDS]",
				   argv[0]);
	}
}

static struct ibv_context *first_device(void)
{
	struct ibv_device **list;
	struct ibv_context *ctx = NULL;
	int n;

	list = ibv_get_device_list(&n);
	if (list && n > 0)
		ctx = ibv_open_device(list[0]);
	if (list)
		ibv_free_device_list(list);
	if (!ctx)
		bench_fail("no RDMA device (run it in the VM tier: tests/vm/run "
			   "-- BUILD/bench/bench-rpma)");
	return ctx;
}

/* One register + deregister through each path: ns, or 0 on failure with
 * the reason in why. */
static uint64_t imm_round(struct imm_map *m, struct ibv_pd *pd, uint64_t size,
			  char *why, size_t whylen, const char **mode)
{
	uint64_t t0 = bench_now_ns();
	struct imm_mr *mr;
	int r = imm_reg_mr(m, pd, imm_map_get_offset(m), size, RW,
			   IMM_MR_AUTO | IMM_MR_NO_PREFETCH, &mr);

	if (r < 0) {
		snprintf(why, whylen, "%s", strerror(-r));
		return 0;
	}
	*mode = imm_mr_mode_name(imm_mr_get_mode(mr));
	imm_dereg_mr(mr);
	return bench_now_ns() - t0;
}

static uint64_t rpma_round(struct rpma_peer *peer, void *addr, uint64_t size,
			   char *why, size_t whylen)
{
	uint64_t t0 = bench_now_ns();
	struct rpma_mr_local *mr;
	int r = rpma_mr_reg(peer, addr, size, RPMA_USAGE, &mr);

	if (r < 0) {
		snprintf(why, whylen, "%s", rpma_err_2str(r));
		return 0;
	}
	rpma_mr_dereg(&mr);
	return bench_now_ns() - t0;
}

int main(int argc, char **argv)
{
	char dir[PATH_MAX], path[PATH_MAX], why_imm[128] = "", why_rpma[128] = "";
	uint64_t *t_imm, *t_rpma, ok_imm = 0, ok_rpma = 0;
	struct bench_stats s_imm, s_rpma;
	const char *mode = "none";
	struct ibv_context *dev;
	struct rpma_peer *peer;
	struct imm_handle *h;
	struct imm_ctx *ctx;
	struct imm_map *m;
	struct ibv_pd *pd;
	struct opts o;
	int r, fd;

	bench_init("rpma", argv[0]);
	parse_args(argc, argv, &o);
	dev = first_device();
	pd = ibv_alloc_pd(dev);
	if (!pd || (r = rpma_peer_new(dev, &peer)) < 0)
		bench_fail("ibv_alloc_pd / rpma_peer_new failed");
	bench_make_tmpdir(o.dir, "rpma", dir, sizeof(dir));
	bench_path(path, sizeof(path), dir, "registered");
	fd = bench_create_written(path, o.size, true);
	close(fd);
	ctx = bench_ctx_new();
	if (imm_handle_open(ctx, path, IMM_RDWR, &h) ||
	    imm_seal(h, 0, o.size, IMM_SEAL_EXCLUSIVE, NULL) ||
	    imm_map(h, 0, o.size, IMM_MAP_PAGE_OK | IMM_MAP_POPULATE, &m))
		bench_fail("cannot seal and map %s", path);
	printf("%s on %s (%s), %llu MiB, device %s, %s granularity\n", path,
	       bench_fs_name(dir), bench_kernel(),
	       (unsigned long long)(o.size / MiB), ibv_get_device_name(dev->device),
	       imm_granularity_name(imm_map_get_granularity(m)));

	t_imm = calloc(o.rounds, sizeof(*t_imm));
	t_rpma = calloc(o.rounds, sizeof(*t_rpma));
	for (uint64_t i = 0; i < o.rounds; i++) {
		bool imm_first = i % 2 == 0;

		if (!imm_first)
			t_rpma[ok_rpma] = rpma_round(peer, imm_map_get_addr(m), o.size,
						     why_rpma, sizeof(why_rpma));
		t_imm[ok_imm] = imm_round(m, pd, o.size, why_imm, sizeof(why_imm), &mode);
		ok_imm += t_imm[ok_imm] != 0;
		if (imm_first)
			t_rpma[ok_rpma] = rpma_round(peer, imm_map_get_addr(m), o.size,
						     why_rpma, sizeof(why_rpma));
		ok_rpma += t_rpma[ok_rpma] != 0;
	}
	printf("imm_reg_mr (IMM_MR_AUTO): %s%s\n", ok_imm ? mode : "failed: ",
	       ok_imm ? "" : why_imm);
	printf("rpma_mr_reg:              %s%s\n", ok_rpma ? "registered" :
	       "failed: ", ok_rpma ? "" : why_rpma);
	if (ok_imm && ok_rpma) {
		bench_stats_u64(t_imm, ok_imm, &s_imm);
		bench_stats_u64(t_rpma, ok_rpma, &s_rpma);
		bench_fig_cmp("reg_dereg_vs_rpma", "register + deregister, "
			      "imm_reg_mr vs rpma_mr_reg", "us",
			      s_imm.median / 1e3, s_rpma.median / 1e3, GOAL_NONE, 0);
	}
	bench_fig("imm_ok", "imm_reg_mr succeeded (of rounds)", "", (double)ok_imm,
		  GOAL_NONE, 0);
	bench_fig("rpma_ok", "rpma_mr_reg succeeded (of rounds)", "",
		  (double)ok_rpma, GOAL_NONE, 0);
	bench_report();
	imm_unmap(m);
	imm_handle_close(h);
	imm_ctx_unref(ctx);
	rpma_peer_delete(&peer);
	ibv_dealloc_pd(pd);
	ibv_close_device(dev);
	free(t_imm);
	free(t_rpma);
	return 0;
}
