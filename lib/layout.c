// SPDX-License-Identifier: LGPL-2.1-or-later
/* What a range's block map looks like now: for status tools and callers
 * that want to know what a seal would have to prepare. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/stat.h>

#include "private.h"

IMM_EXPORT int imm_layout_query(struct imm_handle *h, uint64_t offset,
				uint64_t length, struct imm_layout_info *info)
{
	struct imm_layout_info out = { 0 };
	struct imm_extent_map m = { 0 };
	uint64_t start, end, bad;
	uint32_t bad_flags;
	struct stat st;
	size_t n;
	int r, e;

	if (!h || !info)
		return -EINVAL;
	r = imm_check_fork(h->ctx, "imm_layout_query");
	if (r < 0)
		return r;
	if (info->sz < sizeof(size_t)) {
		err(h->ctx, "imm_layout_query: set info->sz = sizeof(struct "
			    "imm_layout_info)");
		return -EINVAL;
	}
	pthread_mutex_lock(&h->lock);
	if (h->state == IMM_STATE_CLOSED) {
		r = -EBADF;
		goto out;
	}
	if (fstat(h->fd, &st) < 0) {
		r = -errno;
		goto out;
	}
	if (length == 0 && offset <= (uint64_t)st.st_size)
		length = (uint64_t)st.st_size - offset;	/* 0: to EOF */
	else if (length == 0)
		length = 1;	/* past EOF: let the check below say so */
	if (length && !imm_range_valid(offset, length, (uint64_t)st.st_size, &e)) {
		err(h->ctx, "imm_layout_query: range [%llu, +%llu) %s (file "
			    "size %lld)", (unsigned long long)offset,
		    (unsigned long long)length, imm_range_problem(e, length),
		    (long long)st.st_size);
		r = -e;
		goto out;
	}
	out.file_size = (uint64_t)st.st_size;
	out.fs_magic = h->fs_magic;
	out.block_size = h->block_size;
	if (imm_fd_is_dax(h->fd))
		out.flags |= IMM_LAYOUT_DAX;
	if (!imm_fs_has_fiemap(h->fs_magic))
		out.flags |= IMM_LAYOUT_ALLOC_ONLY;
	if (length) {
		imm_range_align(offset, length, h->block_size, &start, &end);
		r = imm_extent_map_read(h->ctx, h->fd, start, end,
					!imm_fs_has_fiemap(h->fs_magic), false, &m);
		if (r < 0)
			goto out;
		imm_extent_map_summarize(&m, start, end, &out);
		if (imm_extent_map_final(&m, start, end, &bad, &bad_flags))
			out.flags |= IMM_LAYOUT_FINAL;
		imm_extent_map_free(&m);
	} else {
		out.flags |= IMM_LAYOUT_FINAL;	/* nothing to prepare */
	}
	/* Copy what the caller's (maybe older, smaller) struct has room for,
	 * and say how much that was: a newer caller learns which fields an
	 * older library left alone. */
	n = info->sz < sizeof(out) ? info->sz : sizeof(out);
	out.sz = n;
	memcpy(info, &out, n);
out:
	pthread_mutex_unlock(&h->lock);
	return r;
}
