/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * A loopback RC connection on one soft-RoCE device: two QPs on the same
 * port connected to each other, so one process can RDMA WRITE and READ its
 * own registrations as a remote peer would.  For the VM tier's tests and
 * benchmarks.
 */
#ifndef IMM_RDMA_LOOP_H
#define IMM_RDMA_LOOP_H

#include <stddef.h>
#include <stdint.h>

#include <infiniband/verbs.h>

struct rdma_loop {
	struct ibv_context *ctx;
	struct ibv_pd *pd;
	struct ibv_cq *cq;
	struct ibv_qp *qp[2];	/* qp[0] posts, qp[1] is the "remote" */
	uint8_t port;
	int gid_index;
	union ibv_gid gid;
	enum ibv_mtu mtu;
};

/* Open devname (NULL: the first device), a PD, a CQ and a connected QP
 * pair.  0 or -errno. */
int rdma_loop_open(struct rdma_loop *l, const char *devname);
/* A fresh QP pair, after a remote access error moved the old one to ERR. */
int rdma_loop_reconnect(struct rdma_loop *l);
void rdma_loop_close(struct rdma_loop *l);
/* The tests' "remote" memory: len bytes of anonymous memory, page aligned,
 * registered pinned for local write and remote read and write.  0 or -1;
 * release with ibv_dereg_mr(*mr) and free(*buf). */
int rdma_loop_buffer(struct rdma_loop *l, size_t len, void **buf,
		     struct ibv_mr **mr);

/*
 * One RDMA WRITE (local -> remote) or READ (remote -> local) on qp[0],
 * waited for.  Returns the work completion status (IBV_WC_SUCCESS = 0,
 * e.g. IBV_WC_REM_ACCESS_ERR) or -errno if it could not be posted.
 */
int rdma_loop_op(struct rdma_loop *l, enum ibv_wr_opcode op, void *local,
		 uint32_t lkey, uint32_t len, uint64_t raddr, uint32_t rkey);

#endif
