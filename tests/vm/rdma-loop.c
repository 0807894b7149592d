// SPDX-License-Identifier: LGPL-2.1-or-later
/* A loopback RC QP pair on one soft-RoCE port (see rdma-loop.h). */
#define _GNU_SOURCE
#include <errno.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "rdma-loop.h"

/* The RoCE v2 GID of the port's IPv4 address: rxe needs a routable one. */
static int find_gid(struct rdma_loop *l)
{
	struct ibv_gid_entry e;

	for (int i = 0; i < 64; i++) {
		if (ibv_query_gid_ex(l->ctx, l->port, (uint32_t)i, &e, 0))
			continue;
		if (e.gid_type == IBV_GID_TYPE_ROCE_V2 &&
		    e.gid.raw[10] == 0xff && e.gid.raw[11] == 0xff) {
			l->gid_index = i;
			l->gid = e.gid;
			return 0;
		}
	}
	return -ENOENT;
}

static struct ibv_qp *qp_new(struct rdma_loop *l)
{
	struct ibv_qp_init_attr a = {
		.send_cq = l->cq, .recv_cq = l->cq, .qp_type = IBV_QPT_RC,
		.cap = { .max_send_wr = 64, .max_recv_wr = 16,
			 .max_send_sge = 1, .max_recv_sge = 1 },
		.sq_sig_all = 1,
	};

	return ibv_create_qp(l->pd, &a);
}

static int qp_connect(struct rdma_loop *l, struct ibv_qp *qp, uint32_t dest)
{
	struct ibv_qp_attr a = {
		.qp_state = IBV_QPS_INIT, .port_num = l->port,
		.qp_access_flags = IBV_ACCESS_REMOTE_READ |
				   IBV_ACCESS_REMOTE_WRITE |
				   IBV_ACCESS_REMOTE_ATOMIC,
	};
	int r;

	r = ibv_modify_qp(qp, &a, IBV_QP_STATE | IBV_QP_PKEY_INDEX |
			  IBV_QP_PORT | IBV_QP_ACCESS_FLAGS);
	if (r)
		return -r;
	a = (struct ibv_qp_attr){
		.qp_state = IBV_QPS_RTR, .path_mtu = l->mtu, .dest_qp_num = dest,
		.max_dest_rd_atomic = 4, .min_rnr_timer = 12,
		.ah_attr = { .is_global = 1, .port_num = l->port,
			     .grh = { .dgid = l->gid, .hop_limit = 64,
				      .sgid_index = (uint8_t)l->gid_index } },
	};
	r = ibv_modify_qp(qp, &a, IBV_QP_STATE | IBV_QP_AV | IBV_QP_PATH_MTU |
			  IBV_QP_DEST_QPN | IBV_QP_RQ_PSN |
			  IBV_QP_MAX_DEST_RD_ATOMIC | IBV_QP_MIN_RNR_TIMER);
	if (r)
		return -r;
	a = (struct ibv_qp_attr){ .qp_state = IBV_QPS_RTS, .timeout = 14,
				  .retry_cnt = 7, .rnr_retry = 7,
				  .max_rd_atomic = 4 };
	r = ibv_modify_qp(qp, &a, IBV_QP_STATE | IBV_QP_TIMEOUT |
			  IBV_QP_RETRY_CNT | IBV_QP_RNR_RETRY | IBV_QP_SQ_PSN |
			  IBV_QP_MAX_QP_RD_ATOMIC);
	return -r;
}

static void qps_destroy(struct rdma_loop *l)
{
	for (int i = 0; i < 2; i++) {
		if (l->qp[i])
			ibv_destroy_qp(l->qp[i]);
		l->qp[i] = NULL;
	}
}

int rdma_loop_reconnect(struct rdma_loop *l)
{
	int r;

	qps_destroy(l);
	l->qp[0] = qp_new(l);
	l->qp[1] = qp_new(l);
	if (!l->qp[0] || !l->qp[1])
		return -errno;
	r = qp_connect(l, l->qp[0], l->qp[1]->qp_num);
	return r ? r : qp_connect(l, l->qp[1], l->qp[0]->qp_num);
}

int rdma_loop_open(struct rdma_loop *l, const char *devname)
{
	struct ibv_device **list;
	struct ibv_port_attr pa;
	int n, r = -ENODEV;

	memset(l, 0, sizeof(*l));
	l->port = 1;
	list = ibv_get_device_list(&n);
	if (!list)
		return -errno;
	for (int i = 0; i < n && !l->ctx; i++)
		if (!devname || strcmp(ibv_get_device_name(list[i]), devname) == 0)
			l->ctx = ibv_open_device(list[i]);
	ibv_free_device_list(list);
	if (!l->ctx)
		return r;
	if (ibv_query_port(l->ctx, l->port, &pa))
		goto fail;
	l->mtu = pa.active_mtu;
	r = find_gid(l);
	if (r < 0)
		goto fail;
	l->pd = ibv_alloc_pd(l->ctx);
	l->cq = l->pd ? ibv_create_cq(l->ctx, 128, NULL, NULL, 0) : NULL;
	if (!l->cq) {
		r = -errno;
		goto fail;
	}
	r = rdma_loop_reconnect(l);
	if (r == 0)
		return 0;
fail:
	rdma_loop_close(l);
	return r < 0 ? r : -EIO;
}

void rdma_loop_close(struct rdma_loop *l)
{
	qps_destroy(l);
	if (l->cq)
		ibv_destroy_cq(l->cq);
	if (l->pd)
		ibv_dealloc_pd(l->pd);
	if (l->ctx)
		ibv_close_device(l->ctx);
	memset(l, 0, sizeof(*l));
}

int rdma_loop_op(struct rdma_loop *l, enum ibv_wr_opcode op, void *local,
		 uint32_t lkey, uint32_t len, uint64_t raddr, uint32_t rkey)
{
	struct ibv_sge sge = { .addr = (uintptr_t)local, .length = len,
			       .lkey = lkey };
	struct ibv_send_wr wr = {
		.wr_id = 1, .sg_list = &sge, .num_sge = 1, .opcode = op,
		.send_flags = IBV_SEND_SIGNALED,
		.wr.rdma = { .remote_addr = raddr, .rkey = rkey },
	}, *bad;
	struct timespec t0, t;
	struct ibv_wc wc;
	int r, n;

	r = ibv_post_send(l->qp[0], &wr, &bad);
	if (r)
		return -r;
	clock_gettime(CLOCK_MONOTONIC, &t0);
	do {	/* busy-poll: soft-RoCE completes in software anyway */
		n = ibv_poll_cq(l->cq, 1, &wc);
		if (n < 0)
			return -EIO;
		clock_gettime(CLOCK_MONOTONIC, &t);
		if (t.tv_sec - t0.tv_sec > 10)
			return -ETIMEDOUT;
	} while (n == 0);
	return (int)wc.status;
}

int rdma_loop_buffer(struct rdma_loop *l, size_t len, void **buf,
		     struct ibv_mr **mr)
{
	*mr = NULL;
	*buf = aligned_alloc(4096, len);
	if (*buf)
		*mr = ibv_reg_mr(l->pd, *buf, len, IBV_ACCESS_LOCAL_WRITE |
				 IBV_ACCESS_REMOTE_WRITE | IBV_ACCESS_REMOTE_READ);
	return *mr ? 0 : -1;
}
