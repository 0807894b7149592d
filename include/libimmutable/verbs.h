/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * libimmutable: verbs registrations of a sealed mapping (since 1.1).
 *
 * A registration hangs off an imm_map: it is deregistered before the
 * mapping goes and before the seal is dropped -- on release, on close and
 * on the automatic revoke at the deadline.
 */
#ifndef LIBIMMUTABLE_VERBS_H
#define LIBIMMUTABLE_VERBS_H

#include <stdint.h>

#include <infiniband/verbs.h>
#include <libimmutable/libimmutable.h>

#ifdef __cplusplus
extern "C" {
#endif

struct imm_mr;

/* How the NIC reaches the memory. */
enum imm_mr_mode {
	IMM_MR_AUTO = 0,	/* request only: the safest mode that works */
	IMM_MR_PINNED = 1,	/* a long-term pin of the pages */
	IMM_MR_ODP = 2,		/* on-demand paging, no pin */
	IMM_MR_PINNED_SEALED = 3  /* a pin the kernel ties to the seal
				   * (layout backend, companion kernel
				   * patch): fsdax under a layout seal */
};

/* imm_reg_mr() flags, or'ed with the mode asked for */
#define IMM_MR_MODE_MASK 0xffu
#define IMM_MR_PREFETCH 0x100u	  /* ODP: fault the range in now (the
				   * default for a populated mapping) */
#define IMM_MR_NO_PREFETCH 0x200u /* ODP: never prefetch */

int imm_reg_mr(struct imm_map *map, struct ibv_pd *pd, uint64_t offset,
	       uint64_t length, int access, uint32_t flags,
	       struct imm_mr **ret_mr);
int imm_dereg_mr(struct imm_mr *mr);
struct ibv_mr *imm_mr_get_ibv_mr(const struct imm_mr *mr);
uint32_t imm_mr_get_lkey(const struct imm_mr *mr);
uint32_t imm_mr_get_rkey(const struct imm_mr *mr);
void *imm_mr_get_addr(const struct imm_mr *mr);
uint64_t imm_mr_get_offset(const struct imm_mr *mr);
uint64_t imm_mr_get_length(const struct imm_mr *mr);
enum imm_mr_mode imm_mr_get_mode(const struct imm_mr *mr);
struct imm_map *imm_mr_get_map(const struct imm_mr *mr);
const char *imm_mr_mode_name(enum imm_mr_mode mode);

#ifdef __cplusplus
}
#endif

#endif /* LIBIMMUTABLE_VERBS_H */
