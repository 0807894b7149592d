// SPDX-License-Identifier: LGPL-2.1-or-later
/*
 * block-io: swap-style I/O to a sealed file, straight to its block device.
 *
 *   block-io [--size BYTES] [--seconds S] [--until-recall] [--late-write] FILE
 *
 * It fills FILE (made or resized to --size, default 64 MiB) through the
 * filesystem, seals it exclusively, takes its block map and does 4 KiB
 * random writes and reads on the block device with O_DIRECT through
 * io_uring, at queue depth 1 and then 32, for --seconds each (default 1).
 * Every read is checked against what was last written there.
 *
 * A recall (another process opens or truncates FILE) stops the I/O: no new
 * I/O is submitted, the I/O in flight is drained, and only then is the
 * seal released.  With --until-recall it keeps going (at queue depth 32)
 * until one comes, or --seconds runs out.
 *
 * Afterwards every byte is checked through the file.  If the file was
 * truncated, the blocks the truncate freed are read on the device: they
 * must hold what they held at the release, which proves that no write of
 * this program reached them after the filesystem could give them away.
 * --late-write tests that check: after the release it writes one freed
 * block once more, as a program that did not stop in time would, and the
 * check must then fail (exit 1, "bad_pages":1).
 *
 * Public API only (and liburing).  One JSON line per phase on stdout; exit
 * 0 when everything checked out.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <poll.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <liburing.h>
#include <libimmutable/libimmutable.h>

#include "block-pattern.h"

#define QD_MAX 32u

struct state {
	const char *path;
	uint64_t size, pages;
	uint64_t *dev_off;	/* device byte offset of each file page */
	uint32_t *version;	/* what each page holds: pattern version */
	bool *busy;		/* an I/O on the page is in flight */
	char device[64];
	uint64_t generation;
	int dev_fd;
	struct io_uring ring;
	unsigned char *buf;	/* QD_MAX pages, aligned */
	uint64_t rng;
	bool recalled;
	uint64_t recall_ns, revoke_ns;
	uint64_t bad_reads;
};

struct slot {
	uint64_t page;
	uint32_t version;	/* written, or expected by a read */
	bool write;
};

static struct slot slots[QD_MAX];

static int die(const char *what, int err)
{
	fprintf(stderr, "block-io: %s: %s\n", what, strerror(err));
	return 1;
}

static void on_event(struct imm_event *ev, void *userdata)
{
	struct state *s = userdata;

	if (imm_event_get_type(ev) != IMM_EVENT_RECALL ||
	    imm_event_get_generation(ev) != s->generation)
		return;
	s->recalled = true;
	s->recall_ns = now_ns();
	s->revoke_ns = imm_event_get_revoke_ns(ev);
}

/* The sealed map as one device offset per file page. */
static int take_map(struct state *s, struct imm_handle *h)
{
	struct imm_block_dev dev = { .sz = sizeof(dev) };
	struct imm_block_extent *ext;
	int n = imm_block_map(h, 0, &dev, NULL, 0);

	if (n < 0)
		return die("imm_block_map", -n);
	ext = calloc((size_t)n, sizeof(*ext));
	if (!ext || imm_block_map(h, 0, &dev, ext, (size_t)n) != n)
		return die("imm_block_map", ext ? ESTALE : ENOMEM);
	for (int i = 0; i < n; i++)
		for (uint64_t o = 0; o < ext[i].length; o += PAGE)
			if ((ext[i].offset + o) / PAGE < s->pages)
				s->dev_off[(ext[i].offset + o) / PAGE] =
					ext[i].dev_offset + o;
	snprintf(s->device, sizeof(s->device), "%s", dev.path);
	s->generation = dev.generation;
	printf("{\"phase\":\"map\",\"device\":\"%s\",\"extents\":%d,"
	       "\"generation\":%" PRIu64 "}\n", dev.path, n, dev.generation);
	fflush(stdout);
	free(ext);
	return 0;
}

static void submit(struct state *s, unsigned i)
{
	struct io_uring_sqe *sqe = io_uring_get_sqe(&s->ring);
	unsigned char *b = s->buf + (size_t)i * PAGE;
	uint64_t p;

	do
		p = next_rand(&s->rng) % s->pages;
	while (s->busy[p]);
	s->busy[p] = true;
	slots[i] = (struct slot){ .page = p, .write = next_rand(&s->rng) % 10 < 7,
				  .version = s->version[p] };
	if (slots[i].write) {
		slots[i].version++;
		page_fill(b, p, slots[i].version);
		io_uring_prep_write(sqe, s->dev_fd, b, PAGE, s->dev_off[p]);
	} else {
		io_uring_prep_read(sqe, s->dev_fd, b, PAGE, s->dev_off[p]);
	}
	io_uring_sqe_set_data64(sqe, i);
}

static int complete(struct state *s, struct io_uring_cqe *cqe)
{
	unsigned i = (unsigned)io_uring_cqe_get_data64(cqe);
	struct slot *sl = &slots[i];

	if (cqe->res != (int)PAGE)
		return die(sl->write ? "device write" : "device read",
			   cqe->res < 0 ? -cqe->res : EIO);
	if (sl->write)
		s->version[sl->page] = sl->version;
	else if (!page_holds(s->buf + (size_t)i * PAGE, sl->page, sl->version))
		s->bad_reads++;
	s->busy[sl->page] = false;
	return 0;
}

/* I/O at depth qd until the time is up or a recall comes, then drain. */
static int run(struct state *s, struct imm_ctx *ctx, unsigned qd,
	       uint64_t seconds)
{
	struct pollfd pfd = { .fd = imm_ctx_get_fd(ctx), .events = POLLIN };
	uint64_t t0 = now_ns(), end = t0 + seconds * 1000000000ull, ios = 0;
	unsigned inflight = 0;
	struct io_uring_cqe *cqe;
	int r;

	for (unsigned i = 0; i < qd; i++, inflight++)
		submit(s, i);
	io_uring_submit(&s->ring);
	while (inflight) {
		r = io_uring_wait_cqe(&s->ring, &cqe);
		if (r < 0)
			return die("io_uring_wait_cqe", -r);
		unsigned i = (unsigned)io_uring_cqe_get_data64(cqe);

		r = complete(s, cqe);
		io_uring_cqe_seen(&s->ring, cqe);
		if (r)
			return r;
		ios++;
		/* the recall first: it must stop new I/O at once */
		if (poll(&pfd, 1, 0) > 0)
			imm_ctx_dispatch(ctx);
		if (!s->recalled && now_ns() < end)
			submit(s, i), io_uring_submit(&s->ring);
		else
			inflight--;
	}
	printf("{\"phase\":\"io\",\"qd\":%u,\"ios\":%" PRIu64 ",\"iops\":%.0f,"
	       "\"bad_reads\":%" PRIu64 ",\"recalled\":%s}\n", qd, ios,
	       (double)ios * 1e9 / (double)(now_ns() - t0), s->bad_reads,
	       s->recalled ? "true" : "false");
	fflush(stdout);
	return s->bad_reads ? die("reads", EIO) : 0;
}

/* After the release: each page through the file (below size), and the
 * freed ones on the device, must be the last version written. */
static int check_after(struct state *s, uint64_t size)
{
	unsigned char *b;
	uint64_t bad = 0, freed = 0;
	int fd, dfd, r = 0;

	if (posix_memalign((void **)&b, PAGE, PAGE))
		return die("memory", ENOMEM);
	fd = open(s->path, O_RDONLY | O_CLOEXEC);
	dfd = open(s->device, O_RDONLY | O_DIRECT | O_CLOEXEC);
	if (fd < 0 || dfd < 0)
		r = die(fd < 0 ? s->path : s->device, errno);
	for (uint64_t p = 0; !r && p < s->pages; p++) {
		bool in_file = (p + 1) * PAGE <= size;
		ssize_t n = in_file ? pread(fd, b, PAGE, (off_t)(p * PAGE)) :
				      pread(dfd, b, PAGE, (off_t)s->dev_off[p]);

		if (n != PAGE)
			r = die("read back", errno ? errno : EIO);
		else if (!page_holds(b, p, s->version[p]))
			bad++;
		freed += !in_file;
	}
	printf("{\"phase\":\"check\",\"file_size\":%" PRIu64 ",\"pages_in_file\":%"
	       PRIu64 ",\"freed_pages_on_device\":%" PRIu64 ",\"bad_pages\":%"
	       PRIu64 "}\n", size, s->pages - freed, freed, bad);
	if (!r && bad)
		r = die("a page does not hold its last write (or a freed "
			"block changed after the release)", EIO);
	if (fd >= 0)
		close(fd);
	if (dfd >= 0)
		close(dfd);
	free(b);
	return r;
}

/* --late-write: what a program that ignored the recall would do, to one
 * block the truncate freed, so that the check can be seen to catch it. */
static int late_write(struct state *s, uint64_t size)
{
	uint64_t p = (size + PAGE - 1) / PAGE;
	int fd, r = 0;

	if (p >= s->pages)
		return die("--late-write: the truncate freed no block", EINVAL);
	fd = open(s->device, O_WRONLY | O_DIRECT | O_CLOEXEC);
	if (fd < 0)
		return die(s->device, errno);
	page_fill(s->buf, p, s->version[p] + 1);
	if (pwrite(fd, s->buf, PAGE, (off_t)s->dev_off[p]) != PAGE)
		r = die("--late-write", errno ? errno : EIO);
	close(fd);
	printf("{\"phase\":\"late_write\",\"page\":%" PRIu64 "}\n", p);
	return r;
}

/* A truncate recalled the seal: it completes once the seal is released. */
static uint64_t settled_size(const char *path, uint64_t was)
{
	uint64_t end = now_ns() + 30000000000ull;
	struct stat st;

	while (stat(path, &st) == 0 && (uint64_t)st.st_size == was &&
	       now_ns() < end)
		usleep(10000);
	return stat(path, &st) == 0 ? (uint64_t)st.st_size : was;
}

/* 4096, 64K, 64M, 1G */
static uint64_t size_arg(const char *a)
{
	char *end;
	uint64_t v = strtoull(a, &end, 0);

	switch (*end) {
	case 'K': case 'k': return v << 10;
	case 'M': case 'm': return v << 20;
	case 'G': case 'g': return v << 30;
	default: return *end ? 0 : v;
	}
}

static int parse(int argc, char **argv, struct state *s, uint64_t *seconds,
		 bool *until_recall, bool *late)
{
	static const struct option opts[] = {
		{ "size", required_argument, NULL, 's' },
		{ "seconds", required_argument, NULL, 't' },
		{ "until-recall", no_argument, NULL, 'u' },
		{ "late-write", no_argument, NULL, 'L' },
		{ 0 }
	};
	int c;

	while ((c = getopt_long(argc, argv, "s:t:u", opts, NULL)) != -1) {
		if (c == 's')
			s->size = size_arg(optarg);
		else if (c == 't')
			*seconds = strtoull(optarg, NULL, 0);
		else if (c == 'u')
			*until_recall = true;
		else if (c == 'L')
			*late = true;
		else
			return -1;
	}
	if (optind != argc - 1 || s->size < 64 * PAGE || s->size % PAGE ||
	    !*seconds)
		return -1;
	s->path = argv[optind];
	s->pages = s->size / PAGE;
	return 0;
}

static int seal_and_io(struct state *s, struct imm_ctx *ctx,
		       uint64_t seconds, bool until_recall)
{
	struct imm_handle *h;
	int r;

	r = imm_handle_open(ctx, s->path, IMM_RDWR, &h);
	if (r < 0)
		return die("imm_handle_open", -r);
	r = imm_seal(h, 0, s->size, IMM_SEAL_EXCLUSIVE, NULL);
	if (r < 0)
		r = die("imm_seal", -r);
	if (!r)
		r = take_map(s, h);
	if (!r) {
		s->dev_fd = open(s->device, O_RDWR | O_DIRECT | O_CLOEXEC);
		if (s->dev_fd < 0)
			r = die(s->device, errno);
	}
	if (!r && !until_recall)
		r = run(s, ctx, 1, seconds);
	if (!r && (!s->recalled || until_recall))
		r = run(s, ctx, QD_MAX, seconds);
	if (s->dev_fd >= 0)
		close(s->dev_fd);
	/* the I/O is drained: now the blocks may go */
	if (imm_release(h) < 0 && !r)
		r = die("imm_release", EIO);
	if (s->recalled)
		printf("{\"phase\":\"release\",\"after_recall_ms\":%.3f,"
		       "\"before_revoke_ms\":%.3f}\n",
		       (double)(now_ns() - s->recall_ns) / 1e6,
		       ((double)s->revoke_ns - (double)now_ns()) / 1e6);
	imm_handle_close(h);
	return r;
}

int main(int argc, char **argv)
{
	struct state s = { .size = 64ull << 20, .rng = 0x2545f4914f6cdd1dull,
			   .dev_fd = -1 };
	uint64_t seconds = 1;
	bool until_recall = false, late = false;
	uint64_t size;
	struct imm_ctx *ctx;
	int r;

	if (parse(argc, argv, &s, &seconds, &until_recall, &late) < 0) {
		fprintf(stderr, "usage: block-io [--size BYTES] [--seconds S] "
				"[--until-recall] [--late-write] FILE\n");
		return 2;
	}
	s.dev_off = calloc(s.pages, sizeof(*s.dev_off));
	s.version = calloc(s.pages, sizeof(*s.version));
	s.busy = calloc(s.pages, sizeof(*s.busy));
	if (!s.dev_off || !s.version || !s.busy ||
	    posix_memalign((void **)&s.buf, PAGE, QD_MAX * PAGE))
		return die("memory", ENOMEM);
	if (fill_file(s.path, s.size) < 0)
		return die(s.path, errno);
	r = io_uring_queue_init(2 * QD_MAX, &s.ring, 0);
	if (r < 0)
		return die("io_uring_queue_init", -r);
	r = imm_ctx_new(&ctx);
	if (r < 0)
		return die("imm_ctx_new", -r);
	imm_ctx_set_event_fn(ctx, on_event, &s, 0);
	r = seal_and_io(&s, ctx, seconds, until_recall);
	size = !r && s.recalled ? settled_size(s.path, s.size) : s.size;
	if (!r && late)
		r = late_write(&s, size);
	if (!r)
		r = check_after(&s, size);
	imm_ctx_unref(ctx);
	io_uring_queue_exit(&s.ring);
	free(s.dev_off);
	free(s.version);
	free(s.busy);
	free(s.buf);
	return r;
}
