// SPDX-License-Identifier: LGPL-2.1-or-later
/*
 * block-remote: a remote host writes a sealed file's blocks through a
 * fabric (NVMe over Fabrics), told where they are by the file's owner.
 *
 *   block-remote serve FILE PORT [SIZE]
 *   block-remote client [--late-write] HOST PORT DEVICE
 *
 * The server fills FILE (SIZE bytes, default 32 MiB) through the
 * filesystem, seals it exclusively, takes its block map and hands it to a
 * client over TCP.  The client writes and reads 4 KiB pages of the file at
 * the map's device offsets on DEVICE -- its own view of the same
 * namespace, e.g. /dev/nvme1n1 connected with nvme-cli -- checking every
 * read.  When the seal is recalled (a truncate on the server), the server
 * tells the client; the client stops, and acknowledges with what it wrote;
 * only then does the server release.  Once the truncate is through, the
 * server checks with pread that every acknowledged write is in the file,
 * and on its own device that the blocks the truncate freed hold what was
 * acknowledged: nothing landed after the acknowledgement.
 * client --late-write tests that check: it writes one page more, left out
 * of its acknowledgement, as a client that did not stop would; the server's
 * check must then fail ("1 not as acknowledged").
 *
 * Protocol, one TCP connection: the server sends "MAP gen n size\n", n
 * lines "EXT offset dev_offset length\n", "END\n"; later "RECALL gen\n".
 * The client answers "STOPPED pages\n" and one little-endian u32 version
 * per page; a RECALL of another generation than its map's is a protocol
 * error.  Public API only.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <endian.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <netdb.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <libimmutable/libimmutable.h>

#include "block-pattern.h"

struct server {
	const char *path;
	uint64_t size, pages;
	struct imm_block_extent *ext;
	int n;
	char device[64];
	uint64_t generation;
	bool recalled;
	uint64_t revoke_ns;
};

static int fail(const char *what, int err)
{
	fprintf(stderr, "block-remote: %s: %s\n", what, strerror(err));
	return 1;
}

static void on_event(struct imm_event *ev, void *userdata)
{
	struct server *s = userdata;

	if (imm_event_get_type(ev) == IMM_EVENT_RECALL &&
	    imm_event_get_generation(ev) == s->generation) {
		s->recalled = true;
		s->revoke_ns = imm_event_get_revoke_ns(ev);
	}
}

static int write_all(int fd, const void *p, size_t n)
{
	for (const char *c = p; n;) {
		ssize_t w = write(fd, c, n);

		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0)
			return -1;
		c += w, n -= (size_t)w;
	}
	return 0;
}

static int read_all(int fd, void *p, size_t n)
{
	for (char *c = p; n;) {
		ssize_t r = read(fd, c, n);

		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			return -1;
		c += r, n -= (size_t)r;
	}
	return 0;
}

/* One '\n'-terminated line, unbuffered (binary data may follow it). */
static int read_line(int fd, char *buf, size_t n)
{
	for (size_t i = 0; i + 1 < n; i++) {
		if (read_all(fd, buf + i, 1) < 0)
			return -1;
		if (buf[i] == '\n') {
			buf[i] = '\0';
			return 0;
		}
	}
	return -1;
}

/* ------------------------------------------------------------ server */

static int send_map(struct server *s, int c)
{
	char line[128];
	int len;

	len = snprintf(line, sizeof(line), "MAP %" PRIu64 " %d %" PRIu64 "\n",
		       s->generation, s->n, s->size);
	if (write_all(c, line, (size_t)len) < 0)
		return -1;
	for (int i = 0; i < s->n; i++) {
		len = snprintf(line, sizeof(line), "EXT %" PRIu64 " %" PRIu64
			       " %" PRIu64 "\n", s->ext[i].offset,
			       s->ext[i].dev_offset, s->ext[i].length);
		if (write_all(c, line, (size_t)len) < 0)
			return -1;
	}
	return write_all(c, "END\n", 4);
}

static int take_map(struct server *s, struct imm_handle *h)
{
	struct imm_block_dev d = { .sz = sizeof(d) };

	s->n = imm_block_map(h, 0, &d, NULL, 0);
	if (s->n < 0)
		return fail("imm_block_map", -s->n);
	s->ext = calloc((size_t)s->n, sizeof(*s->ext));
	if (!s->ext || imm_block_map(h, 0, &d, s->ext, (size_t)s->n) != s->n)
		return fail("imm_block_map", s->ext ? ESTALE : ENOMEM);
	if (d.part_start) {
		/* the client's namespace is the whole disk */
		for (int i = 0; i < s->n; i++)
			s->ext[i].dev_offset += d.part_start;
	}
	snprintf(s->device, sizeof(s->device), "%s", d.disk);
	s->generation = d.generation;
	printf("server: sealed generation %" PRIu64 ", %d extent(s) on %s\n",
	       s->generation, s->n, d.disk);
	fflush(stdout);
	return 0;
}

static int listen_on(const char *port)
{
	struct sockaddr_in a = { .sin_family = AF_INET,
				 .sin_addr.s_addr = htonl(INADDR_ANY),
				 .sin_port = htons((uint16_t)atoi(port)) };
	int one = 1, fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

	if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one,
				 sizeof(one)) < 0 ||
	    bind(fd, (struct sockaddr *)&a, sizeof(a)) < 0 || listen(fd, 1) < 0)
		return -1;
	return fd;
}

/* The client's acknowledgement: its version of every page. */
static int wait_stopped(struct server *s, int c, uint32_t *version)
{
	char line[64];
	unsigned long long pages;
	int len = snprintf(line, sizeof(line), "RECALL %" PRIu64 "\n",
			   s->generation);

	if (write_all(c, line, (size_t)len) < 0 || read_line(c, line, sizeof(line)) ||
	    sscanf(line, "STOPPED %llu", &pages) != 1 || pages != s->pages ||
	    read_all(c, version, s->pages * sizeof(*version)) < 0)
		return fail("the client's acknowledgement", EPROTO);
	for (uint64_t p = 0; p < s->pages; p++)
		version[p] = le32toh(version[p]);
	printf("server: the client stopped and acknowledged %.3f ms before "
	       "the revoke\n", ((double)s->revoke_ns - (double)now_ns()) / 1e6);
	return 0;
}

/* Hold the seal, serving one client, until the recall. */
static int serve(struct server *s, struct imm_ctx *ctx, const char *port,
		 uint32_t *version)
{
	struct pollfd p[2] = { { .fd = imm_ctx_get_fd(ctx), .events = POLLIN },
			       { .fd = listen_on(port), .events = POLLIN } };
	int c = -1, r = 0;

	if (p[1].fd < 0)
		return fail("listen", errno);
	printf("server: ready on port %s\n", port);
	fflush(stdout);
	while (!s->recalled && !r) {
		if (poll(p, 2, -1) < 0 && errno != EINTR)
			r = fail("poll", errno);
		if (p[0].revents)
			imm_ctx_dispatch(ctx);
		if (!s->recalled && (p[1].revents & POLLIN) && c < 0) {
			c = accept4(p[1].fd, NULL, NULL, SOCK_CLOEXEC);
			if (c < 0 || send_map(s, c) < 0)
				r = fail("sending the map", errno);
			p[1].events = 0;
		}
	}
	printf("server: recall from the kernel: another process wants the "
	       "blocks\n");
	if (!r && c >= 0)
		r = wait_stopped(s, c, version);
	if (c >= 0)
		close(c);
	close(p[1].fd);
	return r;
}

/* After the truncate: pages in the file by pread, freed pages on the
 * device, each as the client acknowledged it. */
static int verify(struct server *s, const uint32_t *version)
{
	uint64_t end = now_ns() + 30000000000ull, size = s->size, bad = 0;
	unsigned char *b;
	struct stat st;
	int fd, dfd, r = 0;

	while (stat(s->path, &st) == 0 && (uint64_t)st.st_size == s->size &&
	       now_ns() < end)
		usleep(10000);
	size = (uint64_t)st.st_size;
	if (posix_memalign((void **)&b, PAGE, PAGE))
		return fail("memory", ENOMEM);
	fd = open(s->path, O_RDONLY | O_CLOEXEC);
	dfd = open(s->device, O_RDONLY | O_DIRECT | O_CLOEXEC);
	if (fd < 0 || dfd < 0)
		r = fail(fd < 0 ? s->path : s->device, errno);
	for (uint64_t p = 0; !r && p < s->pages; p++) {
		bool in_file = (p + 1) * PAGE <= size;
		ssize_t n = in_file ? pread(fd, b, PAGE, (off_t)(p * PAGE)) :
			    pread(dfd, b, PAGE, (off_t)dev_offset_of(s->ext,
						s->n, p * PAGE));

		if (n != PAGE)
			r = fail("read back", errno ? errno : EIO);
		else if (!page_holds(b, p, version[p]))
			bad++;
	}
	printf("server: after the truncate to %" PRIu64 " bytes: %" PRIu64
	       " page(s) checked by pread, %" PRIu64 " freed page(s) on the "
	       "device, %" PRIu64 " not as acknowledged\n", size,
	       size / PAGE, s->pages - size / PAGE, bad);
	free(b);
	if (fd >= 0)
		close(fd);
	if (dfd >= 0)
		close(dfd);
	return r ? r : bad ? fail("verification", EIO) : 0;
}

static int cmd_serve(const char *path, const char *port, uint64_t size)
{
	struct server s = { .path = path, .size = size, .pages = size / PAGE };
	uint32_t *version = calloc(s.pages, sizeof(*version));
	struct imm_handle *h;
	struct imm_ctx *ctx;
	int r;

	if (!version || size < PAGE || size % PAGE || fill_file(path, size) < 0)
		return fail(path, errno ? errno : EINVAL);
	r = imm_ctx_new(&ctx);
	if (r < 0)
		return fail("imm_ctx_new", -r);
	imm_ctx_set_event_fn(ctx, on_event, &s, 0);
	r = imm_handle_open(ctx, path, IMM_RDWR, &h);
	if (r == 0)
		r = imm_seal(h, 0, size, IMM_SEAL_EXCLUSIVE, NULL);
	r = r < 0 ? fail("sealing", -r) : take_map(&s, h);
	if (!r)
		r = serve(&s, ctx, port, version);
	if (imm_release(h) == 0)
		printf("server: released generation %" PRIu64 "\n", s.generation);
	fflush(stdout);
	imm_handle_close(h);
	imm_ctx_unref(ctx);
	if (!r)
		r = verify(&s, version);
	free(s.ext);
	free(version);
	return r;
}

/* ------------------------------------------------------------ client */

static int connect_to(const char *host, const char *port)
{
	struct addrinfo hints = { .ai_socktype = SOCK_STREAM }, *ai;
	int fd = -1;

	if (getaddrinfo(host, port, &hints, &ai))
		return -1;
	fd = socket(ai->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd >= 0 && connect(fd, ai->ai_addr, ai->ai_addrlen) < 0) {
		close(fd);
		fd = -1;
	}
	freeaddrinfo(ai);
	return fd;
}

static int receive_map(int c, struct imm_block_extent **ext, int *n,
		       uint64_t *size, uint64_t *ret_gen)
{
	unsigned long long gen, sz, o, d, l;
	char line[128];

	if (read_line(c, line, sizeof(line)) ||
	    sscanf(line, "MAP %llu %d %llu", &gen, n, &sz) != 3 || *n <= 0)
		return -1;
	*size = sz;
	*ret_gen = gen;
	*ext = calloc((size_t)*n, sizeof(**ext));
	for (int i = 0; *ext && i < *n; i++) {
		if (read_line(c, line, sizeof(line)) ||
		    sscanf(line, "EXT %llu %llu %llu", &o, &d, &l) != 3)
			return -1;
		(*ext)[i] = (struct imm_block_extent){ .offset = o,
						       .dev_offset = d,
						       .length = l };
	}
	printf("client: map of generation %llu, %d extent(s), %llu bytes\n",
	       gen, *n, sz);
	fflush(stdout);
	return *ext && !read_line(c, line, sizeof(line)) &&
	       !strcmp(line, "END") ? 0 : -1;
}

/* Random pages, 7 writes in 10, synchronously, until the recall. */
static int client_io(int c, int dev, const struct imm_block_extent *ext,
		     int n, uint64_t pages, uint32_t *version)
{
	struct pollfd p = { .fd = c, .events = POLLIN };
	uint64_t rng = 0x2545f4914f6cdd1dull, writes = 0, reads = 0;
	unsigned char *b;

	if (posix_memalign((void **)&b, PAGE, PAGE))
		return fail("memory", ENOMEM);
	while (poll(&p, 1, 0) == 0) {
		uint64_t pg = next_rand(&rng) % pages;
		off_t at = (off_t)dev_offset_of(ext, n, pg * PAGE);

		if (next_rand(&rng) % 10 < 7) {
			page_fill(b, pg, version[pg] + 1);
			if (pwrite(dev, b, PAGE, at) != PAGE)
				return fail("device write", errno ? errno : EIO);
			version[pg]++, writes++;
		} else {
			if (pread(dev, b, PAGE, at) != PAGE)
				return fail("device read", errno ? errno : EIO);
			if (!page_holds(b, pg, version[pg]))
				return fail("a page read back", EIO);
			reads++;
		}
	}
	printf("client: recalled after %" PRIu64 " writes and %" PRIu64
	       " reads, every read as written; stopped\n", writes, reads);
	fflush(stdout);
	free(b);
	return 0;
}

/* --late-write: the last page once more, left out of the acknowledgement
 * (a truncate to less than the whole file frees it). */
static int late_write(int dev, const struct imm_block_extent *ext, int n,
		      uint64_t pages, const uint32_t *version)
{
	uint64_t pg = pages - 1;
	unsigned char *b;
	int r = 0;

	if (posix_memalign((void **)&b, PAGE, PAGE))
		return fail("memory", ENOMEM);
	page_fill(b, pg, version[pg] + 1);
	if (pwrite(dev, b, PAGE, (off_t)dev_offset_of(ext, n, pg * PAGE)) != PAGE)
		r = fail("--late-write", errno ? errno : EIO);
	printf("client: --late-write: page %" PRIu64 " written once more, not "
	       "acknowledged\n", pg);
	fflush(stdout);
	free(b);
	return r;
}

static int cmd_client(const char *host, const char *port, const char *device,
		      bool late)
{
	struct imm_block_extent *ext = NULL;
	uint32_t *version = NULL;
	uint64_t size = 0, gen = 0, rgen;
	char line[64], recall[32];
	int c, dev, n = 0, len, r;

	c = connect_to(host, port);
	if (c < 0)
		return fail("connect", errno ? errno : ECONNREFUSED);
	if (receive_map(c, &ext, &n, &size, &gen) < 0)
		return fail("receiving the map", EPROTO);
	version = calloc(size / PAGE, sizeof(*version));
	dev = open(device, O_RDWR | O_DIRECT | O_CLOEXEC);
	if (!version || dev < 0)
		return fail(device, version ? errno : ENOMEM);
	r = client_io(c, dev, ext, n, size / PAGE, version);
	if (!r && late)
		r = late_write(dev, ext, n, size / PAGE, version);
	close(dev);	/* every write has completed: acknowledge */
	len = snprintf(line, sizeof(line), "STOPPED %" PRIu64 "\n", size / PAGE);
	for (uint64_t p = 0; p < size / PAGE; p++)
		version[p] = htole32(version[p]);
	if (!r && (read_line(c, recall, sizeof(recall)) ||
		   sscanf(recall, "RECALL %" SCNu64, &rgen) != 1 || rgen != gen))
		r = fail("the recall names another generation than the map's",
			 EPROTO);
	if (!r && (write_all(c, line, (size_t)len) < 0 ||
		   write_all(c, version, size / PAGE * sizeof(*version)) < 0))
		r = fail("acknowledging", EPROTO);
	close(c);
	free(ext);
	free(version);
	return r;
}

int main(int argc, char **argv)
{
	if (argc >= 4 && !strcmp(argv[1], "serve"))
		return cmd_serve(argv[2], argv[3], argc > 4 ?
				 strtoull(argv[4], NULL, 0) : 32ull << 20);
	if (argc == 5 && !strcmp(argv[1], "client"))
		return cmd_client(argv[2], argv[3], argv[4], false);
	if (argc == 6 && !strcmp(argv[1], "client") &&
	    !strcmp(argv[2], "--late-write"))
		return cmd_client(argv[3], argv[4], argv[5], true);
	fprintf(stderr, "usage: block-remote serve FILE PORT [SIZE]\n"
			"       block-remote client [--late-write] HOST PORT DEVICE\n");
	return 2;
}
