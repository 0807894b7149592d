// SPDX-License-Identifier: LGPL-2.1-or-later
/*
 * bench-verbs: what the library's verbs registrations cost over plain
 * libibverbs calls on the same memory.
 *
 * 1. Register + deregister: imm_reg_mr() + imm_dereg_mr() of a range of a
 *    sealed mapping against ibv_reg_mr() + ibv_dereg_mr() of the same
 *    address range of the same mapping, in the same mode, interleaved (the
 *    order flips every pair); the median pair counts.
 *    - pinned: a tmpfs file (--dir, default /tmp), IMM_MR_PINNED against
 *      ibv_reg_mr(LOCAL_WRITE | REMOTE_WRITE | REMOTE_READ);
 *    - ODP: an fsdax file (--dax-dir, default /mnt/pmem-xfs),
 *      IMM_MR_ODP | IMM_MR_NO_PREFETCH against the same access plus
 *      IBV_ACCESS_ON_DEMAND; only where the device pages on demand for RC.
 *    4 KiB, 1 MiB and 256 MiB (--quick: 16 MiB).
 * 2. Revoke: a sealed, mapped tmpfs file with 1000 pinned 4 KiB
 *    registrations; imm_release() (deregisters all of them, unmaps,
 *    unseals) against 1000 ibv_dereg_mr() of 1000 raw registrations of the
 *    same ranges (the deregistrations alone).  imm_release() of a mapping
 *    without registrations is shown as well: the unmap + unseal share.
 * 3. ODP first touch: an fsdax file mapped without IMM_MAP_POPULATE and
 *    registered IMM_MR_ODP | IMM_MR_NO_PREFETCH (remote read); loopback
 *    RDMA READs of 4 KiB: each on a page in a 2 MiB region nothing has
 *    touched (CPU or NIC), then on the next page of that region; then,
 *    in a second pass, a second READ of each first page.  The poster waits
 *    on a completion channel (see read_op()).  IMM_MR_PREFETCH is tried
 *    too: rxe may refuse ibv_advise_mr(), which is then reported as a note.
 *
 * There is no RDMA device on the host: this runs in the qemu guest of the
 * VM tier (soft-RoCE rxe0, /tmp a tmpfs, /mnt/pmem-xfs xfs -o dax on an
 * emulated NVDIMM), so it is not in bench/run:
 *
 *     tests/vm/run --build build-vm [--kernel stock-7.3] -- \
 *         build-vm/bench/bench-verbs [--quick]
 *
 * Elsewhere it exits 2 with "no RDMA device".  The guest is qemu TCG: the
 * absolute times are emulated; only the ratios carry over.
 *
 * Each file is opened once, here; the handle is made from that fd.
 * Another open of the file would break the exclusive seal.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <syslog.h>
#include <unistd.h>

#include <infiniband/verbs.h>
#include <libimmutable/verbs.h>

#include "common.h"
#include "rdma-loop.h"

#define KiB 1024ull
#define MiB (1024ull * KiB)
#define GiB (1024ull * MiB)

#define PAGE (4 * KiB)
#define REGION (2 * MiB)	/* a huge page: fresh regions do not share one */
#define RW (IBV_ACCESS_LOCAL_WRITE | IBV_ACCESS_REMOTE_WRITE | \
	    IBV_ACCESS_REMOTE_READ)
#define RO IBV_ACCESS_REMOTE_READ

#define N_SIZES 3
static const uint64_t full_sizes[N_SIZES] = { 4 * KiB, MiB, 256 * MiB };
static const uint64_t quick_sizes[N_SIZES] = { 4 * KiB, MiB, 16 * MiB };

struct opts {
	const char *dir;	/* tmpfs: pinned registrations, revoke */
	const char *dax_dir;	/* fsdax: ODP */
	const char *dev;	/* NULL: the first device */
	const uint64_t *sizes;
	uint64_t pairs;		/* register + deregister pairs, small sizes */
	uint64_t big_pairs;	/* ... sizes above 1 MiB */
	uint64_t mrs;		/* registrations revoked at once */
	uint64_t rounds;	/* revoke rounds */
	uint64_t reads;		/* first-touch READs */
	bool quick;
};

enum { LIB = 0, RAW = 1 };

static struct rdma_loop L;

static void usage(const char *prog)
{
	fprintf(stderr,
		"usage: %s [--quick] [--dir DIR] [--dax-dir DIR] [--dev NAME] "
		"[-n PAIRS]\n"
		"          [--mrs N] [--rounds N] [--reads N]\n"
		"  Verbs registrations through the library vs plain "
		"libibverbs; needs an\n"
		"  RDMA device: run it in the VM tier (tests/vm/run -- "
		"build-vm/bench/bench-verbs).\n"
		"  --dir DIR      tmpfs for pinned registrations and revoke "
		"(default /tmp)\n"
		"  --dax-dir DIR  fsdax for ODP (default /mnt/pmem-xfs)\n"
		"  --dev NAME     RDMA device (default: the first one)\n"
		"  -n PAIRS       register+deregister pairs per path up to 1 "
		"MiB (default 200,\n"
		"                 --quick 50); above 1 MiB a quarter, at least 5\n"
		"  --mrs N        registrations revoked at once (default 1000)\n"
		"  --rounds N     revoke rounds (default 21, --quick 7)\n"
		"  --reads N      first-touch RDMA READs (default 200, --quick "
		"100)\n"
		"  --quick        smaller sizes (largest registration 16 MiB) "
		"and counts\n",
		prog);
}

static void parse_count(const char *opt, const char *s, uint64_t max,
			uint64_t *ret)
{
	if (!bench_parse_u64(s, ret) || !*ret || *ret > max)
		bench_fail("bad %s %s: 1 to %llu", opt, s,
			   (unsigned long long)max);
}

static void parse_args(int argc, char **argv, struct opts *o)
{
	memset(o, 0, sizeof(*o));
	o->dir = "/tmp";
	o->dax_dir = "/mnt/pmem-xfs";
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i];

		if (!strcmp(a, "--quick")) {
			o->quick = true;
		} else if (!strcmp(a, "--dir") && i + 1 < argc) {
			o->dir = argv[++i];
		} else if (!strcmp(a, "--dax-dir") && i + 1 < argc) {
			o->dax_dir = argv[++i];
		} else if (!strcmp(a, "--dev") && i + 1 < argc) {
			o->dev = argv[++i];
		} else if (!strcmp(a, "-n") && i + 1 < argc) {
			parse_count("-n", argv[++i], 100000, &o->pairs);
		} else if (!strcmp(a, "--mrs") && i + 1 < argc) {
			parse_count("--mrs", argv[++i], 100000, &o->mrs);
		} else if (!strcmp(a, "--rounds") && i + 1 < argc) {
			parse_count("--rounds", argv[++i], 1000, &o->rounds);
		} else if (!strcmp(a, "--reads") && i + 1 < argc) {
			parse_count("--reads", argv[++i], 4096, &o->reads);
		} else if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
			usage(argv[0]);
			exit(0);
		} else {
			usage(argv[0]);
			exit(2);
		}
	}
	o->sizes = o->quick ? quick_sizes : full_sizes;
	if (!o->pairs)
		o->pairs = o->quick ? 50 : 200;
	o->big_pairs = o->pairs / 4 > 5 ? o->pairs / 4 : 5;
	if (!o->mrs)
		o->mrs = 1000;
	if (!o->rounds)
		o->rounds = o->quick ? 7 : 21;
	if (!o->reads)
		o->reads = o->quick ? 100 : 200;
}

static void size_name(char *buf, size_t sz, uint64_t size)
{
	if (size >= MiB && size % MiB == 0)
		snprintf(buf, sz, "%llu MiB", (unsigned long long)(size / MiB));
	else
		snprintf(buf, sz, "%llu KiB", (unsigned long long)(size / KiB));
}

static void size_tag(char *buf, size_t sz, uint64_t size)
{
	if (size >= MiB && size % MiB == 0)
		snprintf(buf, sz, "%llum", (unsigned long long)(size / MiB));
	else
		snprintf(buf, sz, "%lluk", (unsigned long long)(size / KiB));
}

static double us(double ns)
{
	return ns / 1e3;
}

static uint64_t round_up(uint64_t v, uint64_t to)
{
	return (v + to - 1) / to * to;
}

/* ------------------------------------------------------------ device */

static void open_device(const char *dev)
{
	struct ibv_device **list;
	int n = 0, r;

	list = ibv_get_device_list(&n);
	if (list)
		ibv_free_device_list(list);
	if (!list || n == 0)
		bench_fail("no RDMA device (run it in the VM tier: tests/vm/run "
			   "-- build-vm/bench/bench-verbs [--quick])");
	r = rdma_loop_open(&L, dev);
	if (r < 0)
		bench_fail("a loopback RC QP pair on %s: %s%s", dev ? dev :
			   "the first RDMA device", strerror(-r), r == -ENOENT ?
			   " (no RoCE v2 IPv4 GID: is the port's netdev up "
			   "with an address?)" : "");
}

/* Whether the device pages on demand at all, and what it says for RC.
 * Whether that covers an access is the library's call (imm_reg_mr). */
static bool device_odp(char *desc, size_t sz)
{
	struct ibv_device_attr_ex a;
	uint32_t rc;
	int r;

	memset(&a, 0, sizeof(a));
	r = ibv_query_device_ex(L.ctx, NULL, &a);
	if (r)
		bench_fail("ibv_query_device_ex: %s", strerror(r));
	rc = a.odp_caps.per_transport_caps.rc_odp_caps;
	if (!(a.odp_caps.general_caps & IBV_ODP_SUPPORT)) {
		snprintf(desc, sz, "none");
		return false;
	}
	snprintf(desc, sz, "RC%s%s%s%s%s", rc & IBV_ODP_SUPPORT_SEND ? " send" : "",
		 rc & IBV_ODP_SUPPORT_RECV ? " recv" : "",
		 rc & IBV_ODP_SUPPORT_WRITE ? " write" : "",
		 rc & IBV_ODP_SUPPORT_READ ? " read" : "",
		 rc & IBV_ODP_SUPPORT_ATOMIC ? " atomic" : "");
	return true;
}

/* ------------------------------------------------------------ files */

/* A fully written file in a fresh directory under base, opened once. */
static int make_file(const char *base, const char *name, uint64_t size)
{
	char dir[PATH_MAX], path[PATH_MAX];
	uint64_t t0 = bench_now_ns();
	int fd;

	bench_make_tmpdir(base, "verbs", dir, sizeof(dir));
	fd = bench_open_written(dir, name, size, 16 * MiB, path, sizeof(path));
	printf("%llu MiB written to %s (%s%s) in %.1f s\n",
	       (unsigned long long)(size / MiB), path, bench_fs_name(dir),
	       bench_fd_is_dax(fd) ? ", DAX" : "", (double)(bench_now_ns() - t0) / 1e9);
	return fd;
}

static struct imm_handle *handle_of(struct imm_ctx *ctx, int fd)
{
	struct imm_handle *h;
	int r;

	/* flags 0: the handle takes the fd's access mode (O_RDWR) */
	r = imm_handle_from_fd(ctx, fd, 0, &h);
	if (r < 0)
		bench_fail("imm_handle_from_fd: %s", strerror(-r));
	return h;
}

static void seal(struct imm_handle *h, uint64_t size)
{
	int r = imm_seal(h, 0, size, IMM_SEAL_EXCLUSIVE, NULL);

	if (r < 0)
		bench_fail("imm_seal (exclusive) of %llu MiB: %s",
			   (unsigned long long)(size / MiB), strerror(-r));
}

static struct imm_map *map(struct imm_handle *h, uint64_t size, bool populate)
{
	struct imm_map *m;
	int r = imm_map(h, 0, size, IMM_MAP_PAGE_OK |
			(populate ? IMM_MAP_POPULATE : 0), &m);

	if (r < 0)
		bench_fail("imm_map of %llu MiB: %s",
			   (unsigned long long)(size / MiB), strerror(-r));
	return m;
}

static void release(struct imm_handle *h)
{
	int r = imm_release(h);

	if (r < 0)
		bench_fail("imm_release: %s", strerror(-r));
}

/* ------------------------------------------------------------ 1. register */

struct regmode {
	const char *tag;	/* metric prefix */
	const char *name;
	int access;		/* both paths */
	uint32_t lib_flags;	/* imm_reg_mr */
	int raw_extra;		/* ibv_reg_mr: access | raw_extra */
};

static const struct regmode pinned_mode = {
	"reg_pinned", "pinned", RW, IMM_MR_PINNED, 0,
};
static const struct regmode odp_mode = {
	"reg_odp", "ODP", RW, IMM_MR_ODP | IMM_MR_NO_PREFETCH,
	IBV_ACCESS_ON_DEMAND,
};

static uint64_t lib_pair(struct imm_map *m, const struct regmode *md,
			 uint64_t len)
{
	struct imm_mr *mr;
	uint64_t t0 = bench_now_ns();
	int r = imm_reg_mr(m, L.pd, 0, len, md->access, md->lib_flags, &mr);

	if (r < 0)
		bench_fail("imm_reg_mr %s of %llu bytes: %s", md->name,
			   (unsigned long long)len, strerror(-r));
	imm_dereg_mr(mr);
	return bench_now_ns() - t0;
}

static uint64_t raw_pair(void *addr, const struct regmode *md, uint64_t len)
{
	uint64_t t0 = bench_now_ns();
	struct ibv_mr *mr = ibv_reg_mr(L.pd, addr, len,
				       md->access | md->raw_extra);
	int r;

	if (!mr)
		bench_fail("ibv_reg_mr %s of %llu bytes: %s", md->name,
			   (unsigned long long)len, strerror(errno));
	r = ibv_dereg_mr(mr);
	if (r)
		bench_fail("ibv_dereg_mr: %s", strerror(r));
	return bench_now_ns() - t0;
}

static void reg_header(void)
{
	printf("\n%-7s %-8s %5s %12s %12s %8s %8s %12s %12s\n", "mode", "size",
	       "pairs", "lib med us", "raw med us", "ratio", "paired",
	       "lib min us", "raw min us");
}

static void bench_reg_size(struct imm_map *m, const struct regmode *md,
			   uint64_t len, uint64_t n)
{
	void *addr = imm_map_get_addr(m);
	struct bench_stats s[2];
	uint64_t *ns[2];
	char name[32], tag[32], metric[64], label[80];
	double paired;

	ns[LIB] = calloc(n, sizeof(uint64_t));
	ns[RAW] = calloc(n, sizeof(uint64_t));
	if (!ns[LIB] || !ns[RAW])
		bench_fail("out of memory");
	/* untimed: the first registration of a range may fault it in */
	lib_pair(m, md, len);
	raw_pair(addr, md, len);
	for (uint64_t i = 0; i < n; i++) {
		if (i % 2) {
			ns[RAW][i] = raw_pair(addr, md, len);
			ns[LIB][i] = lib_pair(m, md, len);
		} else {
			ns[LIB][i] = lib_pair(m, md, len);
			ns[RAW][i] = raw_pair(addr, md, len);
		}
	}
	paired = bench_paired_ratio(ns[LIB], ns[RAW], n);
	bench_stats_u64(ns[LIB], n, &s[LIB]);
	bench_stats_u64(ns[RAW], n, &s[RAW]);
	size_name(name, sizeof(name), len);
	size_tag(tag, sizeof(tag), len);
	printf("%-7s %-8s %5llu %12.1f %12.1f %8.3f %8.3f %12.1f %12.1f\n",
	       md->name, name, (unsigned long long)n, us(s[LIB].median),
	       us(s[RAW].median), s[LIB].median / s[RAW].median, paired,
	       us(s[LIB].min), us(s[RAW].min));
	snprintf(metric, sizeof(metric), "%s_%s", md->tag, tag);
	snprintf(label, sizeof(label), "register+deregister, %s, %s",
		 md->name, name);
	bench_fig_cmp(metric, label, "us", us(s[LIB].median), us(s[RAW].median),
		      GOAL_LE, 1.05);
	free(ns[LIB]);
	free(ns[RAW]);
}

static void bench_reg(struct imm_handle *h, struct imm_map *m,
		      const struct regmode *md, const struct opts *o)
{
	reg_header();
	for (int k = 0; k < N_SIZES; k++)
		bench_reg_size(m, md, o->sizes[k], o->sizes[k] > MiB ?
			       o->big_pairs : o->pairs);
	printf("(paired: the median over pairs of library time / raw time of "
	       "the same iteration)\n");
	bench_check_sealed(h, "through the registrations");
}

/* ------------------------------------------------------------ 2. revoke */

/* One revoke of mrs pinned 4 KiB registrations: the time of imm_release(). */
static uint64_t revoke_lib(struct imm_handle *h, uint64_t size, uint64_t mrs,
			   struct imm_mr **mr)
{
	struct imm_map *m;
	uint64_t t0, t;

	seal(h, size);
	m = map(h, size, true);
	for (uint64_t i = 0; i < mrs; i++) {
		int r = imm_reg_mr(m, L.pd, i * PAGE, PAGE, RW, IMM_MR_PINNED,
				   &mr[i]);

		if (r < 0)
			bench_fail("imm_reg_mr number %llu: %s",
				   (unsigned long long)i + 1, strerror(-r));
	}
	bench_check_sealed(h, "with the registrations");
	t0 = bench_now_ns();
	release(h);
	t = bench_now_ns() - t0;
	/* the objects stay until deregistered; newest first is the list's
	 * order */
	for (uint64_t i = mrs; i-- > 0;)
		imm_dereg_mr(mr[i]);
	imm_unmap(m);
	return t;
}

/* The baseline: mrs raw registrations of the same ranges of the same kind
 * of mapping, deregistered one by one. */
static uint64_t revoke_raw(struct imm_handle *h, uint64_t size, uint64_t mrs,
			   struct ibv_mr **mr)
{
	struct imm_map *m;
	char *addr;
	uint64_t t0, t;

	seal(h, size);
	m = map(h, size, true);
	addr = imm_map_get_addr(m);
	for (uint64_t i = 0; i < mrs; i++) {
		mr[i] = ibv_reg_mr(L.pd, addr + i * PAGE, PAGE, RW);
		if (!mr[i])
			bench_fail("ibv_reg_mr number %llu: %s",
				   (unsigned long long)i + 1, strerror(errno));
	}
	t0 = bench_now_ns();
	for (uint64_t i = mrs; i-- > 0;) {
		int r = ibv_dereg_mr(mr[i]);

		if (r)
			bench_fail("ibv_dereg_mr: %s", strerror(r));
	}
	t = bench_now_ns() - t0;
	imm_unmap(m);
	release(h);
	return t;
}

/* imm_release() of a mapping without registrations: unmap + unseal. */
static uint64_t revoke_empty(struct imm_handle *h, uint64_t size)
{
	struct imm_map *m;
	uint64_t t0, t;

	seal(h, size);
	m = map(h, size, true);
	t0 = bench_now_ns();
	release(h);
	t = bench_now_ns() - t0;
	imm_unmap(m);
	return t;
}

static void bench_revoke(struct imm_ctx *ctx, const struct opts *o)
{
	uint64_t size = round_up(o->mrs * PAGE, REGION);
	uint64_t *ns[3], n = o->rounds;
	struct bench_stats s[3];
	struct imm_mr **lib_mrs;
	struct ibv_mr **raw_mrs;
	struct imm_handle *h;
	int fd;

	if (size < 4 * MiB)
		size = 4 * MiB;
	fd = make_file(o->dir, "revokeme", size);
	h = handle_of(ctx, fd);
	lib_mrs = calloc(o->mrs, sizeof(*lib_mrs));
	raw_mrs = calloc(o->mrs, sizeof(*raw_mrs));
	for (int k = 0; k < 3; k++)
		ns[k] = calloc(n, sizeof(uint64_t));
	if (!lib_mrs || !raw_mrs || !ns[0] || !ns[1] || !ns[2])
		bench_fail("out of memory");
	/* untimed warm-up of both paths */
	revoke_lib(h, size, o->mrs, lib_mrs);
	revoke_raw(h, size, o->mrs, raw_mrs);
	for (uint64_t i = 0; i < n; i++) {
		if (i % 2) {
			ns[RAW][i] = revoke_raw(h, size, o->mrs, raw_mrs);
			ns[LIB][i] = revoke_lib(h, size, o->mrs, lib_mrs);
		} else {
			ns[LIB][i] = revoke_lib(h, size, o->mrs, lib_mrs);
			ns[RAW][i] = revoke_raw(h, size, o->mrs, raw_mrs);
		}
		ns[2][i] = revoke_empty(h, size);
	}
	for (int k = 0; k < 3; k++)
		bench_stats_u64(ns[k], n, &s[k]);
	printf("\nrevoke of %llu pinned 4 KiB registrations on a %llu MiB "
	       "mapping, %llu rounds\n", (unsigned long long)o->mrs,
	       (unsigned long long)(size / MiB), (unsigned long long)n);
	printf("%-44s %10s %10s %10s\n", "", "median ms", "min ms", "max ms");
	printf("%-44s %10.2f %10.2f %10.2f\n", "imm_release (dereg all, unmap, "
	       "unseal)", s[LIB].median / 1e6, s[LIB].min / 1e6,
	       s[LIB].max / 1e6);
	printf("%-44s %10.2f %10.2f %10.2f\n", "raw ibv_dereg_mr x N",
	       s[RAW].median / 1e6, s[RAW].min / 1e6, s[RAW].max / 1e6);
	printf("%-44s %10.2f %10.2f %10.2f\n", "imm_release, no registrations",
	       s[2].median / 1e6, s[2].min / 1e6, s[2].max / 1e6);
	bench_fig_cmp("revoke_1000_mrs", "imm_release with the MRs vs raw "
		      "deregs", "ms", s[LIB].median / 1e6, s[RAW].median / 1e6,
		      GOAL_NONE, 0);
	bench_fig("revoke_no_mrs", "imm_release without MRs (unmap+unseal)",
		  "ms", s[2].median / 1e6, GOAL_NONE, 0);
	if (o->mrs != 1000)
		bench_note("--mrs %llu: the revoke_1000_mrs figure is of %llu "
			   "registrations", (unsigned long long)o->mrs,
			   (unsigned long long)o->mrs);
	bench_note("the revoke goal (< 5 ms for 1000 MRs) is for real "
		   "hardware; here the time is emulated: the ratio to the raw "
		   "deregistrations is the figure that carries");
	for (int k = 0; k < 3; k++)
		free(ns[k]);
	free(lib_mrs);
	free(raw_mrs);
	imm_handle_close(h);
	close(fd);
}

/* ------------------------------------------------------------ 3. first touch */

struct reader {
	void *buf;
	struct ibv_mr *mr;	/* the local side: anonymous, pinned */
	uint64_t seq;		/* wr_id of the last READ */
	struct ibv_comp_channel *ch;	/* of the CQ below */
	struct ibv_cq *cq, *loop_cq;	/* ours, and the loop's own */
	void *warm;			/* a pinned page, for warm-up READs */
	struct ibv_mr *warm_mr;
	unsigned stalls;
};

/*
 * The local buffer, and a CQ with a completion channel in place of the
 * loop's own (which has none): the QP pair is remade on it.
 */
static void reader_start(struct reader *rd)
{
	int r, fl;

	if (posix_memalign(&rd->buf, PAGE, PAGE))
		bench_fail("out of memory");
	rd->mr = ibv_reg_mr(L.pd, rd->buf, PAGE, IBV_ACCESS_LOCAL_WRITE);
	if (!rd->mr)
		bench_fail("ibv_reg_mr of the local buffer: %s", strerror(errno));
	rd->ch = ibv_create_comp_channel(L.ctx);
	if (!rd->ch)
		bench_fail("ibv_create_comp_channel: %s", strerror(errno));
	fl = fcntl(rd->ch->fd, F_GETFL);
	if (fl < 0 || fcntl(rd->ch->fd, F_SETFL, fl | O_NONBLOCK) < 0)
		bench_fail("O_NONBLOCK on the completion channel: %s",
			   strerror(errno));
	rd->cq = ibv_create_cq(L.ctx, 128, NULL, rd->ch, 0);
	if (!rd->cq)
		bench_fail("ibv_create_cq: %s", strerror(errno));
	rd->loop_cq = L.cq;
	L.cq = rd->cq;
	r = rdma_loop_reconnect(&L);
	if (r < 0)
		bench_fail("a QP pair on the reader's CQ: %s", strerror(-r));
	/* a pinned page to READ untimed first: the new QP pair's first
	 * requests stay out of the samples */
	if (posix_memalign(&rd->warm, PAGE, PAGE))
		bench_fail("out of memory");
	memset(rd->warm, 0x5a, PAGE);
	rd->warm_mr = ibv_reg_mr(L.pd, rd->warm, PAGE, RO);
	if (!rd->warm_mr)
		bench_fail("ibv_reg_mr of the warm-up page: %s", strerror(errno));
}

/* The loop gets its CQ back, with a QP pair on it. */
static void reader_stop(struct reader *rd)
{
	int r;

	L.cq = rd->loop_cq;
	r = rdma_loop_reconnect(&L);
	if (r < 0)
		bench_fail("a QP pair on the loop's CQ: %s", strerror(-r));
	ibv_dereg_mr(rd->warm_mr);
	free(rd->warm);
	ibv_destroy_cq(rd->cq);
	ibv_destroy_comp_channel(rd->ch);
	ibv_dereg_mr(rd->mr);
	free(rd->buf);
}

/* Waits for the next completion event of the reader's CQ: 1, 0 on
 * timeout, or -errno. */
static int wait_event(struct reader *rd, uint64_t t0)
{
	struct pollfd pfd = { .fd = rd->ch->fd, .events = POLLIN };
	uint64_t spent = bench_now_ns() - t0;
	struct ibv_cq *cq;
	void *cq_ctx;
	int r;

	if (spent >= 10000000000ull)
		return 0;
	r = poll(&pfd, 1, (int)((10000000000ull - spent) / 1000000 + 1));
	if (r < 0)
		return errno == EINTR ? 1 : -errno;	/* 1: poll the CQ again */
	if (r == 0)
		return 0;
	if (ibv_get_cq_event(rd->ch, &cq, &cq_ctx))
		return -EIO;
	ibv_ack_cq_events(cq, 1);
	return ibv_req_notify_cq(cq, 0) ? -EIO : 1;
}

/*
 * One RDMA READ of a page into the local buffer, waited for on the CQ's
 * completion channel; the work completion status or -errno (-ETIMEDOUT
 * after 10 s).  Not rdma_loop_op(): that one spins on the CQ, and under
 * TCG a spinning vCPU holds off rxe's workers, which adds about a
 * millisecond to every READ and buries a fault's cost; blocking lets the
 * vCPU idle.  Completions of an older QP pair (after a stall) are skipped.
 */
static int read_op(struct reader *rd, uint64_t raddr, uint32_t rkey)
{
	struct ibv_sge sge = { .addr = (uintptr_t)rd->buf,
			       .length = (uint32_t)PAGE, .lkey = rd->mr->lkey };
	struct ibv_send_wr wr = {
		.wr_id = ++rd->seq, .sg_list = &sge, .num_sge = 1,
		.opcode = IBV_WR_RDMA_READ, .send_flags = IBV_SEND_SIGNALED,
		.wr.rdma = { .remote_addr = raddr, .rkey = rkey },
	}, *bad;
	uint64_t t0 = bench_now_ns();
	struct ibv_wc wc;
	int r, n;

	/* armed before the post: the completion cannot slip past */
	if (ibv_req_notify_cq(L.cq, 0))
		return -EIO;
	r = ibv_post_send(L.qp[0], &wr, &bad);
	if (r)
		return -r;
	for (;;) {
		n = ibv_poll_cq(L.cq, 1, &wc);
		if (n < 0)
			return -EIO;
		if (n == 1 && wc.qp_num == L.qp[0]->qp_num &&
		    wc.wr_id == rd->seq)
			return (int)wc.status;
		if (n == 1)
			continue;	/* a stale one */
		r = wait_event(rd, t0);
		if (r == 0)
			return -ETIMEDOUT;
		if (r < 0)
			return r;
	}
}

/*
 * One timed READ.  rxe's ODP path under TCG now and then never completes
 * a request (tests/vm/vm-verbs.c); the QP pair is then replaced, the READ
 * redone once untimed, and the sample dropped (UINT64_MAX): the stalled
 * request may have faulted the page in already.
 */
static uint64_t timed_read(struct reader *rd, uint64_t raddr, uint32_t rkey)
{
	uint64_t t0 = bench_now_ns(), t;
	int r = read_op(rd, raddr, rkey);

	t = bench_now_ns() - t0;
	if (r == -ETIMEDOUT) {
		rd->stalls++;
		r = rdma_loop_reconnect(&L);
		if (r < 0)
			bench_fail("a new QP pair after a stalled READ: %s",
				   strerror(-r));
		r = read_op(rd, raddr, rkey);
		if (r == 0)
			return UINT64_MAX;
	}
	if (r < 0)
		bench_fail("RDMA READ: %s", strerror(-r));
	if (r > 0)
		bench_fail("RDMA READ: %s",
			   ibv_wc_status_str((enum ibv_wc_status)r));
	return t;
}

/* Drops the stalled samples; the number left. */
static uint64_t valid_samples(uint64_t *v, uint64_t n)
{
	uint64_t k = 0;

	for (uint64_t i = 0; i < n; i++)
		if (v[i] != UINT64_MAX)
			v[k++] = v[i];
	return k;
}

/* smaps' "field:" of the mapping at addr, in kB; -1 if not found. */
static long smaps_kb(const void *addr, const char *field)
{
	char line[256];
	unsigned long lo, hi, want = (unsigned long)addr;
	bool in = false;
	long kb = -1;
	size_t fl = strlen(field);
	FILE *f = fopen("/proc/self/smaps", "re");

	if (!f)
		return -1;
	while (fgets(line, sizeof(line), f)) {
		if (sscanf(line, "%lx-%lx ", &lo, &hi) == 2 &&
		    strchr(line, '-') < strchr(line, ' ')) {
			in = lo <= want && want < hi;
			continue;
		}
		if (in && !strncmp(line, field, fl) && line[fl] == ':') {
			kb = atol(line + fl + 1);
			break;
		}
	}
	fclose(f);
	return kb;
}

static void touch_row(const char *what, uint64_t *v, uint64_t n,
		      struct bench_stats *s)
{
	bench_stats_u64(v, n, s);
	printf("%-46s %6llu %10.1f %10.1f %10.1f %10.1f\n", what,
	       (unsigned long long)n, us(s->median), us(s->min), us(s->p90),
	       us(s->max));
}

/* IMM_MR_PREFETCH on [off, +len): if the device prefetches, the median
 * READ of its pages; otherwise a note of what the device said. */
static void try_prefetch(struct imm_ctx *ctx, struct imm_map *m,
			 struct reader *rd, uint64_t off, uint64_t n,
			 const struct bench_stats *second)
{
	struct imm_mr *mr;
	struct bench_stats s;
	uint64_t *v, t0, took;
	char *base;
	int r;

	/* the library logs the refusal as an error: it is expected here */
	imm_ctx_set_log_priority(ctx, LOG_CRIT);
	t0 = bench_now_ns();
	r = imm_reg_mr(m, L.pd, off, n * PAGE, RO, IMM_MR_ODP | IMM_MR_PREFETCH,
		       &mr);
	took = bench_now_ns() - t0;
	imm_ctx_set_log_priority(ctx, LOG_WARNING);
	if (r < 0) {
		bench_note("prefetch: not supported by %s (imm_reg_mr "
			   "IMM_MR_ODP|IMM_MR_PREFETCH: %s, from ibv_advise_mr)",
			   ibv_get_device_name(L.ctx->device), strerror(-r));
		return;
	}
	base = imm_mr_get_addr(mr);
	v = calloc(n, sizeof(uint64_t));
	if (!v)
		bench_fail("out of memory");
	for (uint64_t i = 0; i < n; i++)
		v[i] = timed_read(rd, (uintptr_t)(base + i * PAGE),
				  imm_mr_get_rkey(mr));
	bench_note("prefetch: supported; registering %llu KiB with "
		   "IMM_MR_PREFETCH took %.1f us",
		   (unsigned long long)(n * PAGE / KiB), us((double)took));
	n = valid_samples(v, n);
	touch_row("after IMM_MR_PREFETCH, first READ", v, n, &s);
	if (n)
		bench_fig_cmp("odp_read_prefetched", "ODP READ 4 KiB after "
			      "IMM_MR_PREFETCH", "us", us(s.median),
			      us(second->median), GOAL_NONE, 0);
	free(v);
	imm_dereg_mr(mr);
}

/*
 * Layout of the file: reads regions of 2 MiB; the first page of region i
 * is the first-touch READ, its second page the neighbour; then the
 * prefetch range.  The mapping is not populated and the file was written
 * with pwrite(), so no page of it is in the page tables to start with.
 */
static void bench_first_touch(struct imm_ctx *ctx, struct imm_handle *h,
			      uint64_t size, const struct opts *o)
{
	uint64_t n = o->reads, *v[3], left[3];
	struct bench_stats s[3];
	struct reader rd = { 0 };
	struct imm_map *m;
	struct imm_mr *mr;
	uint32_t rkey;
	char *base;
	long pmd, rss;
	int r;

	m = map(h, size, false);
	r = imm_reg_mr(m, L.pd, 0, n * REGION, RO,
		       IMM_MR_ODP | IMM_MR_NO_PREFETCH, &mr);
	if (r < 0)
		bench_fail("imm_reg_mr ODP of %llu MiB: %s",
			   (unsigned long long)(n * REGION / MiB), strerror(-r));
	base = imm_mr_get_addr(mr);
	rkey = imm_mr_get_rkey(mr);
	reader_start(&rd);
	for (int k = 0; k < 3; k++) {
		v[k] = calloc(n, sizeof(uint64_t));
		if (!v[k])
			bench_fail("out of memory");
	}
	for (int i = 0; i < 3; i++)
		timed_read(&rd, (uintptr_t)rd.warm, rd.warm_mr->rkey);
	for (uint64_t i = 0; i < n; i++) {
		uintptr_t region = (uintptr_t)(base + i * REGION);

		v[0][i] = timed_read(&rd, region, rkey);
		v[1][i] = timed_read(&rd, region + PAGE, rkey);
	}
	pmd = smaps_kb(base, "FilePmdMapped");
	rss = smaps_kb(base, "Rss");
	for (uint64_t i = 0; i < n; i++)
		v[2][i] = timed_read(&rd, (uintptr_t)(base + i * REGION), rkey);
	bench_check_sealed(h, "through the READs");
	for (int k = 0; k < 3; k++)
		left[k] = valid_samples(v[k], n);

	printf("\nODP RDMA READ of 4 KiB, %llu READs each, loopback RC on %s\n",
	       (unsigned long long)n, ibv_get_device_name(L.ctx->device));
	printf("%-46s %6s %10s %10s %10s %10s\n", "", "n", "median us",
	       "min us", "p90 us", "max us");
	touch_row("first touch (page in an untouched 2 MiB)", v[0], left[0],
		  &s[0]);
	touch_row("first touch, next page of a touched 2 MiB", v[1], left[1],
		  &s[1]);
	touch_row("second touch (same page again)", v[2], left[2], &s[2]);
	if (pmd >= 0 && rss >= 0)
		printf("(after the first pass, %llu pages READ: the mapping "
		       "has %ld kB resident, %ld kB of it in PMD mappings)\n",
		       (unsigned long long)(2 * n), rss, pmd);
	if (rd.stalls)
		bench_note("rxe stalled %u READ(s) (no completion in 10 s); "
			   "each was redone on a new QP pair and its sample "
			   "dropped", rd.stalls);
	if (left[0] && left[2])
		bench_fig_cmp("odp_read_first_touch", "ODP READ 4 KiB, first "
			      "touch vs second", "us", us(s[0].median),
			      us(s[2].median), GOAL_NONE, 0);
	if (left[1] && left[2])
		bench_fig_cmp("odp_read_first_touch_nextpage", "ODP READ 4 KiB, "
			      "next page of a touched 2 MiB", "us",
			      us(s[1].median), us(s[2].median), GOAL_NONE, 0);

	try_prefetch(ctx, m, &rd, n * REGION, n, &s[2]);

	for (int k = 0; k < 3; k++)
		free(v[k]);
	reader_stop(&rd);
	imm_dereg_mr(mr);
	imm_unmap(m);
}

/* ------------------------------------------------------------ main */

static void bench_pinned(struct imm_ctx *ctx, const struct opts *o)
{
	uint64_t size = o->sizes[N_SIZES - 1];
	struct imm_handle *h;
	struct imm_map *m;
	int fd;

	fd = make_file(o->dir, "pinme", size);
	if (strcmp(bench_fs_name(o->dir), "tmpfs"))
		bench_note("%s is %s, not tmpfs: a writable pinned "
			   "registration of page-cache memory is refused by "
			   "kernels since 6.5", o->dir, bench_fs_name(o->dir));
	h = handle_of(ctx, fd);
	seal(h, size);
	m = map(h, size, true);
	bench_watchdog(900, "the pinned registrations");
	bench_reg(h, m, &pinned_mode, o);
	bench_watchdog(0, NULL);
	imm_unmap(m);
	release(h);
	imm_handle_close(h);
	close(fd);
}

/* ODP registrations and first touch on the fsdax file. */
static void bench_odp(struct imm_ctx *ctx, const struct opts *o)
{
	uint64_t reg_size = o->sizes[N_SIZES - 1];
	uint64_t touch_size = o->reads * REGION + round_up(o->reads * PAGE,
							   REGION);
	uint64_t size = reg_size > touch_size ? reg_size : touch_size;
	struct imm_handle *h;
	struct imm_map *m;
	struct stat st;
	int fd;

	if (stat(o->dax_dir, &st) < 0 || !S_ISDIR(st.st_mode)) {
		bench_note("no directory %s: the ODP figures are skipped "
			   "(--dax-dir DIR)", o->dax_dir);
		return;
	}
	fd = make_file(o->dax_dir, "odpme", size);
	if (!bench_fd_is_dax(fd))
		bench_note("%s is not DAX: the ODP figures are of page-cache "
			   "memory", o->dax_dir);
	h = handle_of(ctx, fd);
	seal(h, size);

	m = map(h, reg_size, false);
	bench_watchdog(900, "the ODP registrations");
	bench_reg(h, m, &odp_mode, o);
	imm_unmap(m);

	bench_watchdog(900, "the first-touch READs");
	bench_first_touch(ctx, h, size, o);
	bench_watchdog(0, NULL);
	release(h);
	imm_handle_close(h);
	close(fd);
}

int main(int argc, char **argv)
{
	struct imm_ctx *ctx;
	struct opts o;
	char odp[64];
	bool has_odp;

	bench_init("verbs", argv[0]);
	parse_args(argc, argv, &o);
	if (o.quick)
		bench_set_config("quick");
	open_device(o.dev);
	has_odp = device_odp(odp, sizeof(odp));
	printf("kernel %s, device %s port %u (%s), ODP: %s\n", bench_kernel(),
	       ibv_get_device_name(L.ctx->device), L.port,
	       ibv_node_type_str(L.ctx->device->node_type), odp);
	if (getenv("IMM_VM"))
		bench_note("a qemu guest (%s): the absolute times are "
			   "emulated; the ratios are the figures",
			   getenv("IMM_VM_KERNEL") ? getenv("IMM_VM_KERNEL") :
			   "VM tier");

	ctx = bench_ctx_new();
	bench_pinned(ctx, &o);
	bench_watchdog(900, "the revoke rounds");
	bench_revoke(ctx, &o);
	bench_watchdog(0, NULL);
	if (has_odp)
		bench_odp(ctx, &o);
	else
		bench_note("the device has no ODP for RC with this access: the "
			   "ODP registration and first-touch figures are "
			   "skipped");

	bench_fig("odp", "device pages on demand (RC)", "", has_odp,
		  GOAL_NONE, 0);
	bench_report();

	imm_ctx_unref(ctx);
	rdma_loop_close(&L);
	return 0;
}
