/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * What the example storage server tells a client when it accepts the
 * connection (rdma_cm private data): where the sealed file is in its
 * address space, the rkey that reaches it, and the seal's generation, which
 * changes each time the server re-seals after a recall.
 */
#ifndef IMM_EXAMPLE_RDMA_COMMON_H
#define IMM_EXAMPLE_RDMA_COMMON_H

#include <stdint.h>

#define EXAMPLE_MAGIC 0x494d4d31u	/* "IMM1" */
#define EXAMPLE_PORT "7471"
#define EXAMPLE_BLOCK (64u * 1024)

struct example_advert {
	uint32_t magic;
	uint32_t generation;
	uint64_t addr;
	uint64_t length;
	uint32_t rkey;
	uint32_t reserved;
};

/* The bytes the client writes into block b of the file. */
static inline unsigned char example_byte(uint64_t block, uint64_t i)
{
	return (unsigned char)(block * 37 + i * 5 + (i >> 9) + 1);
}

#endif
