// SPDX-License-Identifier: LGPL-2.1-or-later
/*
 * rdma-client: the other end of rdma-server.  It connects, takes the
 * address and rkey from the accept, and RDMA WRITEs then READs back each
 * 64 KiB block of the file in turn, checking every byte.  When an access
 * fails -- the server revoked the registration because another process
 * wanted the blocks -- it reconnects until the server has sealed again, and
 * then writes and checks every block once more under the new rkey.
 *
 *   rdma-client [-a ADDR] [-p PORT] [-t SECONDS] [-e EXPECTED]
 *   rdma-client [-a ADDR] [-p PORT] -B write|read [-t SECONDS]
 *
 * -B measures instead: 64 KiB RDMA WRITEs or READs, 16 in flight, for -t
 * seconds (default 5), and prints the bandwidth, for a side-by-side with
 * perftest's ib_write_bw / ib_read_bw on the same device.
 *
 * Exit 0 when it saw a failed access, resumed on a new seal generation and
 * verified the whole file there.  -e writes the image the file must hold
 * afterwards, for a pread comparison once the server has stopped.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <rdma/rdma_cma.h>

#include "rdma-common.h"

struct client {
	struct rdma_event_channel *ch;
	struct rdma_cm_id *id;
	struct ibv_pd *pd;
	struct ibv_cq *cq;
	struct ibv_mr *mr;
	unsigned char *buf;	/* [0, BLOCK): to write; [BLOCK, 2 BLOCK): read */
	struct example_advert ad;
};

static double now(void)
{
	struct timespec t;

	clock_gettime(CLOCK_MONOTONIC, &t);
	return (double)t.tv_sec + t.tv_nsec / 1e9;
}

static int wait_event(struct client *c, enum rdma_cm_event_type want,
		      struct example_advert *ad)
{
	struct rdma_cm_event *ev;
	int r = 0;

	if (rdma_get_cm_event(c->ch, &ev))
		return -errno;
	if (ev->event != want)
		r = -ECONNREFUSED;
	else if (ad && ev->param.conn.private_data_len >= sizeof(*ad))
		memcpy(ad, ev->param.conn.private_data, sizeof(*ad));
	rdma_ack_cm_event(ev);
	return r;
}

static void disconnect(struct client *c)
{
	if (c->id) {
		rdma_disconnect(c->id);
		if (c->mr)
			ibv_dereg_mr(c->mr);
		rdma_destroy_qp(c->id);
		if (c->cq)
			ibv_destroy_cq(c->cq);
		if (c->pd)
			ibv_dealloc_pd(c->pd);
		rdma_destroy_id(c->id);
	}
	if (c->ch)
		rdma_destroy_event_channel(c->ch);
	c->mr = NULL;
	c->cq = NULL;
	c->pd = NULL;
	c->id = NULL;
	c->ch = NULL;
}

static int setup_qp(struct client *c)
{
	struct ibv_qp_init_attr qa = { .qp_type = IBV_QPT_RC, .sq_sig_all = 1,
		.cap = { .max_send_wr = 32, .max_recv_wr = 1, .max_send_sge = 1,
			 .max_recv_sge = 1 } };

	c->pd = ibv_alloc_pd(c->id->verbs);
	c->cq = c->pd ? ibv_create_cq(c->id->verbs, 64, NULL, NULL, 0) : NULL;
	if (!c->cq)
		return -errno;
	qa.send_cq = qa.recv_cq = c->cq;
	c->mr = ibv_reg_mr(c->pd, c->buf, 2 * EXAMPLE_BLOCK,
			   IBV_ACCESS_LOCAL_WRITE);
	if (!c->mr || rdma_create_qp(c->id, c->pd, &qa))
		return -errno;
	return 0;
}

/* One connection attempt; 0 with the server's advert in c->ad. */
static int connect_once(struct client *c, const char *addr, const char *port)
{
	struct rdma_addrinfo hints = { .ai_port_space = RDMA_PS_TCP }, *ai;
	struct rdma_conn_param cp = { .responder_resources = 8,
				      .initiator_depth = 8, .retry_count = 7,
				      .rnr_retry_count = 7 };
	int r;

	if (rdma_getaddrinfo(addr, port, &hints, &ai))
		return -errno;
	c->ch = rdma_create_event_channel();
	r = !c->ch || rdma_create_id(c->ch, &c->id, NULL, RDMA_PS_TCP) ||
	    rdma_resolve_addr(c->id, NULL, ai->ai_dst_addr, 2000) ? -errno : 0;
	rdma_freeaddrinfo(ai);
	if (r == 0)
		r = wait_event(c, RDMA_CM_EVENT_ADDR_RESOLVED, NULL);
	if (r == 0)
		r = rdma_resolve_route(c->id, 2000) ? -errno :
		    wait_event(c, RDMA_CM_EVENT_ROUTE_RESOLVED, NULL);
	if (r == 0)
		r = setup_qp(c);
	if (r == 0)
		r = rdma_connect(c->id, &cp) ? -errno :
		    wait_event(c, RDMA_CM_EVENT_ESTABLISHED, &c->ad);
	if (r == 0 && c->ad.magic != EXAMPLE_MAGIC)
		r = -EPROTO;
	if (r < 0)
		disconnect(c);
	return r;
}

/* RDMA WRITE or READ of one block, waited for; the completion status. */
static int rdma_block(struct client *c, enum ibv_wr_opcode op, uint64_t block)
{
	unsigned char *local = c->buf + (op == IBV_WR_RDMA_READ ? EXAMPLE_BLOCK : 0);
	struct ibv_sge sge = { .addr = (uintptr_t)local, .length = EXAMPLE_BLOCK,
			       .lkey = c->mr->lkey };
	struct ibv_send_wr wr = { .sg_list = &sge, .num_sge = 1, .opcode = op,
		.wr.rdma = { .remote_addr = c->ad.addr + block * EXAMPLE_BLOCK,
			     .rkey = c->ad.rkey } }, *bad;
	double give_up = now() + 10;
	struct ibv_wc wc;
	int n;

	if (ibv_post_send(c->id->qp, &wr, &bad))
		return -errno;
	while ((n = ibv_poll_cq(c->cq, 1, &wc)) == 0)
		if (now() > give_up)
			return -ETIMEDOUT;	/* the transport's retries hung */
	return n < 0 ? -EIO : (int)wc.status;
}

/* Write block b, read it back, compare.  0, or the failure. */
static int write_and_check(struct client *c, uint64_t b)
{
	int r;

	for (uint64_t i = 0; i < EXAMPLE_BLOCK; i++)
		c->buf[i] = example_byte(b, i);
	r = rdma_block(c, IBV_WR_RDMA_WRITE, b);
	if (r == 0)
		r = rdma_block(c, IBV_WR_RDMA_READ, b);
	if (r == 0 && memcmp(c->buf, c->buf + EXAMPLE_BLOCK, EXAMPLE_BLOCK))
		return -EILSEQ;
	return r;
}

/* -B: keep `depth` WRs in flight for `seconds`; MB/s, or -errno. */
static double bandwidth(struct client *c, enum ibv_wr_opcode op, double seconds)
{
	const int depth = 16;
	uint64_t blocks = c->ad.length / EXAMPLE_BLOCK, posted = 0, done = 0;
	struct ibv_sge sge = { .addr = (uintptr_t)c->buf, .length = EXAMPLE_BLOCK,
			       .lkey = c->mr->lkey };
	struct ibv_send_wr wr = { .sg_list = &sge, .num_sge = 1, .opcode = op,
				  .wr.rdma.rkey = c->ad.rkey }, *bad;
	double t0 = now(), end = t0 + seconds;
	struct ibv_wc wc[16];

	while (now() < end || done < posted) {
		while (posted - done < (uint64_t)depth && now() < end) {
			wr.wr.rdma.remote_addr = c->ad.addr +
				(posted % blocks) * EXAMPLE_BLOCK;
			if (ibv_post_send(c->id->qp, &wr, &bad))
				return -errno;
			posted++;
		}
		int n = ibv_poll_cq(c->cq, depth, wc);

		for (int i = 0; i < n; i++)
			if (wc[i].status != IBV_WC_SUCCESS) {
				fprintf(stderr, "rdma-client: %s\n",
					ibv_wc_status_str(wc[i].status));
				return -EIO;
			}
		done += n > 0 ? (uint64_t)n : 0;
	}
	return done * (double)EXAMPLE_BLOCK / (now() - t0) / 1e6;
}

static int measure(const char *addr, const char *port, const char *what,
		   double seconds)
{
	enum ibv_wr_opcode op = strcmp(what, "read") == 0 ? IBV_WR_RDMA_READ :
				IBV_WR_RDMA_WRITE;
	struct client c = { .buf = aligned_alloc(4096, 2 * EXAMPLE_BLOCK) };
	double mbs;
	int r;

	r = connect_once(&c, addr, port);
	if (r < 0) {
		fprintf(stderr, "rdma-client: cannot connect: %s\n", strerror(-r));
		return 1;
	}
	mbs = bandwidth(&c, op, seconds);
	disconnect(&c);
	free(c.buf);
	if (mbs < 0) {
		fprintf(stderr, "rdma-client: %s failed\n", what);
		return 1;
	}
	printf("client: bandwidth %s %u KiB, 16 in flight: %.1f MB/s\n", what,
	       EXAMPLE_BLOCK / 1024, mbs);
	return 0;
}

static int write_expected(const char *path, uint64_t length)
{
	FILE *f = fopen(path, "we");

	if (!f)
		return -errno;
	for (uint64_t b = 0; b < length / EXAMPLE_BLOCK; b++)
		for (uint64_t i = 0; i < EXAMPLE_BLOCK; i++)
			fputc(example_byte(b, i), f);
	return fclose(f) ? -errno : 0;
}

int main(int argc, char **argv)
{
	struct client c = { 0 };
	const char *addr = "192.0.2.1", *port = EXAMPLE_PORT, *expected = NULL;
	const char *bw = NULL;
	double deadline, seconds = 0;	/* default: 60, with -B 5 */
	uint32_t first_gen = 0;
	uint64_t ops = 0, failures = 0, b = 0;
	bool verified = false;
	int ch, r;

	while ((ch = getopt(argc, argv, "a:p:t:e:B:")) != -1) {
		if (ch == 'B') bw = optarg;
		else if (ch == 'a') addr = optarg;
		else if (ch == 'p') port = optarg;
		else if (ch == 't') seconds = atof(optarg);
		else if (ch == 'e') expected = optarg;
		else {
			fprintf(stderr, "usage: rdma-client [-a ADDR] [-p PORT] "
				"[-t SECONDS] [-e EXPECTED | -B write|read]\n");
			return 2;
		}
	}
	if (bw)
		return measure(addr, port, bw, seconds > 0 ? seconds : 5);
	if (seconds <= 0)
		seconds = 60;
	c.buf = aligned_alloc(4096, 2 * EXAMPLE_BLOCK);
	deadline = now() + seconds;
	while (!verified && now() < deadline) {
		if (!c.id && connect_once(&c, addr, port) < 0) {
			usleep(100000);	/* not serving yet: the seal comes back */
			continue;
		}
		if (!first_gen) {
			first_gen = c.ad.generation;
			printf("client: connected, generation %" PRIu32 ", rkey 0x%x, "
			       "%" PRIu64 " bytes\n", c.ad.generation, c.ad.rkey,
			       c.ad.length);
		}
		if (c.ad.generation == first_gen) {
			/* round-robin over the file until the server revokes */
			r = write_and_check(&c, b++ % (c.ad.length / EXAMPLE_BLOCK));
		} else {
			printf("client: resumed on generation %" PRIu32 ", rkey 0x%x; "
			       "writing and checking every block\n",
			       c.ad.generation, c.ad.rkey);
			for (b = 0, r = 0; r == 0 && b < c.ad.length / EXAMPLE_BLOCK; b++)
				r = write_and_check(&c, b);
			verified = r == 0;
		}
		if (r == 0) {
			ops++;
			continue;
		}
		failures++;
		printf("client: access failed after %" PRIu64 " blocks: %s; "
		       "reconnecting\n", ops, r > 0 ?
		       ibv_wc_status_str((enum ibv_wc_status)r) : strerror(-r));
		disconnect(&c);
	}
	if (c.id)
		disconnect(&c);
	printf("client: %" PRIu64 " blocks, %" PRIu64 " failed accesses, %s\n",
	       ops, failures, verified ? "the whole file verified after the "
	       "re-seal" : "did not resume");
	if (verified && expected && write_expected(expected, c.ad.length) < 0)
		return 1;
	free(c.buf);
	return verified && failures > 0 ? 0 : 1;
}
