// SPDX-License-Identifier: LGPL-2.1-or-later
/*
 * DAX-safe mappings of a sealed range, through libpmem2.
 *
 * libpmem2 decides how stores become persistent (MAP_SYNC or not, cache
 * flush or msync, eADR) and hands out the matching persist, flush and
 * drain functions; this file adds the policy (what the caller accepts),
 * the seal (a mapping lives inside one, and dies with it) and populate.
 *
 * When the seal goes, the file mapping is replaced in place by an
 * inaccessible anonymous one, which keeps the address range until
 * imm_unmap(): a stale pointer then faults on PROT_NONE memory instead of
 * writing into whatever the kernel mapped at that address next.  No
 * libpmem2 vm reservation: 1.12.1's reserves ALIGN_UP(len, 2 MiB) + 2 MiB
 * and gives back len when deleted, leaking address space on every cycle.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <libpmem2.h>

#include "private.h"

#ifndef MADV_POPULATE_READ
#define MADV_POPULATE_READ 22	/* Linux 5.14 */
#endif
#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23
#endif

/* libpmem2 1.12 returns -errno or its own codes, and does not export its
 * converter; these are the codes a mapping can meet. */
static int pmem2_errno(int r)
{
	if (r > -4096)
		return r;
	switch (r) {
	case PMEM2_E_GRANULARITY_NOT_SUPPORTED:
	case PMEM2_E_NOSUPP:
	case PMEM2_E_SOURCE_TYPE_NOT_SUPPORTED:
		return -EOPNOTSUPP;
	case PMEM2_E_NO_ACCESS:
		return -EBADF;
	case PMEM2_E_IO_FAIL:
		return -EIO;
	default:
		return -EINVAL;
	}
}

/* libpmem2's words, quoted as its own: they name its internals, and the
 * caller's mistakes are checked before calling it (see deep_flush_range). */
static int pmem2_fail(struct imm_handle *h, const char *call, int r)
{
	const char *msg = pmem2_errormsg();

	err(h->ctx, "%s failed (%d); libpmem2 says: %s", call, r,
	    msg && *msg ? msg : "nothing");
	return pmem2_errno(r);
}

static enum imm_granularity from_pmem2(enum pmem2_granularity g)
{
	switch (g) {
	case PMEM2_GRANULARITY_BYTE:
		return IMM_GRANULARITY_BYTE;
	case PMEM2_GRANULARITY_CACHE_LINE:
		return IMM_GRANULARITY_CACHE_LINE;
	default:
		return IMM_GRANULARITY_PAGE;
	}
}

IMM_EXPORT const char *imm_granularity_name(enum imm_granularity g)
{
	switch (g) {
	case IMM_GRANULARITY_BYTE:
		return "byte";
	case IMM_GRANULARITY_CACHE_LINE:
		return "cache-line";
	case IMM_GRANULARITY_PAGE:
		return "page";
	case IMM_GRANULARITY_NONE:
		return "none";
	}
	return "unknown";
}

static int check_map_args(struct imm_handle *h, uint64_t length,
			  uint32_t flags)
{
	uint32_t known = IMM_MAP_SYNC | IMM_MAP_PAGE_OK | IMM_MAP_READONLY |
			 IMM_MAP_POPULATE;

	if (flags & ~known) {
		err(h->ctx, "imm_map: unknown flags 0x%x", flags & ~known);
		return -EINVAL;
	}
	if ((flags & IMM_MAP_SYNC) && (flags & IMM_MAP_PAGE_OK)) {
		err(h->ctx, "imm_map: IMM_MAP_SYNC requires synchronous faults and "
			    "IMM_MAP_PAGE_OK accepts their absence; give one");
		return -EINVAL;
	}
	if (length == 0) {
		err(h->ctx, "imm_map: zero length; map a non-empty part of the "
			    "sealed range");
		return -EINVAL;
	}
	return 0;
}

static bool seal_is_live(const struct imm_handle *h)
{
	return h->state == IMM_STATE_SEALED && !h->sealing;
}

/* h->lock held: may [offset, +length) be mapped now?  Returns a dup of the
 * handle's fd, for libpmem2 to map without the lock: a dup, never a reopen,
 * since the kernel lets a layout seal cover pins of mappings of the sealed
 * open file only (vma->vm_file). */
static int map_begin(struct imm_handle *h, uint64_t offset, uint64_t length,
		     uint32_t flags)
{
	uint64_t end = offset + length;

	if (h->sealing) {
		err(h->ctx, "imm_map: imm_seal() is in progress on another "
			    "thread; map once it has returned");
		return -EBUSY;
	}
	if (!seal_is_live(h)) {
		err(h->ctx, "imm_map: the handle is %s; map only a sealed range "
			    "whose seal is neither breaking nor revoked%s",
		    imm_state_name(h->state),
		    h->state == IMM_STATE_OPEN ? ": imm_seal() it first" :
		    h->state == IMM_STATE_CLOSED ? "" : ": release and re-seal");
		return h->state == IMM_STATE_CLOSED ? -EBADF :
		       h->state == IMM_STATE_OPEN ? -EINVAL : -ESTALE;
	}
	if (end < offset || offset < h->seal_off ||
	    end > h->seal_off + h->seal_len) {
		err(h->ctx, "imm_map: [%llu, +%llu) is not inside the sealed "
			    "range [%llu, +%llu)", (unsigned long long)offset,
		    (unsigned long long)length, (unsigned long long)h->seal_off,
		    (unsigned long long)h->seal_len);
		return -ERANGE;
	}
	if (!h->writable && !(flags & IMM_MAP_READONLY)) {
		err(h->ctx, "imm_map: the handle is read-only; pass "
			    "IMM_MAP_READONLY, or open the file IMM_RDWR");
		return -EBADF;
	}
	return imm_handle_dup_fd(h);
}

static int check_alignment(struct imm_handle *h, struct pmem2_source *src,
			   uint64_t offset, uint64_t length)
{
	size_t align;
	int r;

	r = pmem2_source_alignment(src, &align);
	if (r < 0)
		return pmem2_fail(h, "pmem2_source_alignment", r);
	if (offset % align || length % align) {
		err(h->ctx, "imm_map: offset %llu and length %llu must be "
			    "multiples of %zu, the mapping alignment of this "
			    "file; seal a range with aligned ends",
		    (unsigned long long)offset, (unsigned long long)length,
		    align);
		return -EINVAL;
	}
	return 0;
}

/* Why a mapping with synchronous faults is impossible, and what to do. */
static void explain_no_sync(struct imm_handle *h, int fd)
{
	if (imm_fd_is_dax(fd))
		err(h->ctx, "imm_map: the file is DAX but its device refuses "
			    "synchronous faults (MAP_SYNC), as virtio-pmem does: "
			    "stores persist only through msync/fsync. Pass "
			    "IMM_MAP_PAGE_OK to map it with page granularity");
	else
		err(h->ctx, "imm_map: the file is not on DAX persistent memory "
			    "(a filesystem mounted -o dax on an fsdax namespace); "
			    "synchronous faults are impossible. Pass "
			    "IMM_MAP_PAGE_OK to map it with page granularity");
}

static void *config_new(struct imm_handle *h, uint64_t offset,
			uint64_t length, uint32_t flags, int *ret)
{
	struct pmem2_config *cfg;
	enum pmem2_granularity want = (flags & IMM_MAP_PAGE_OK) ?
		PMEM2_GRANULARITY_PAGE : PMEM2_GRANULARITY_CACHE_LINE;
	int r;

	r = pmem2_config_new(&cfg);
	if (r < 0) {
		*ret = pmem2_fail(h, "pmem2_config_new", r);
		return NULL;
	}
	r = pmem2_config_set_required_store_granularity(cfg, want);
	if (r == 0)
		r = pmem2_config_set_offset(cfg, offset);
	if (r == 0)
		r = pmem2_config_set_length(cfg, length);
	if (r == 0)
		r = pmem2_config_set_sharing(cfg, PMEM2_SHARED);
	if (r == 0)
		r = pmem2_config_set_protection(cfg, (flags & IMM_MAP_READONLY) ?
			PMEM2_PROT_READ : PMEM2_PROT_READ | PMEM2_PROT_WRITE);
	if (r < 0) {
		*ret = pmem2_fail(h, "pmem2_config", r);
		pmem2_config_delete(&cfg);
		return NULL;
	}
	return cfg;
}

/* Map fd's [offset, +length); libpmem2 picks the (aligned) address. */
static int map_create(struct imm_handle *h, int fd, struct imm_map *m)
{
	struct pmem2_source *src = NULL;
	struct pmem2_config *cfg = NULL;
	int r;

	r = pmem2_source_from_fd(&src, fd);
	if (r < 0)
		return pmem2_fail(h, "pmem2_source_from_fd", r);
	r = check_alignment(h, src, m->offset, m->length);
	if (r == 0)
		cfg = config_new(h, m->offset, m->length, m->flags, &r);
	if (cfg) {
		r = pmem2_map_new(&m->pm, cfg, src);
		if (r == PMEM2_E_GRANULARITY_NOT_SUPPORTED) {
			explain_no_sync(h, fd);
			r = -EOPNOTSUPP;
		} else if (r < 0) {
			r = pmem2_fail(h, "pmem2_map_new", r);
		}
	}
	if (r == 0) {
		m->dax = imm_fd_is_dax(fd);
		m->addr = pmem2_map_get_address(m->pm);
		m->gran = from_pmem2(pmem2_map_get_store_granularity(m->pm));
		m->persist = pmem2_get_persist_fn(m->pm);
		m->flush = pmem2_get_flush_fn(m->pm);
		m->drain = pmem2_get_drain_fn(m->pm);
	}
	pmem2_config_delete(&cfg);
	pmem2_source_delete(&src);
	return r;
}

/* Fault every page in.  The fallback for kernels without MADV_POPULATE_*
 * (before 5.14) touches each page; a write touch adds zero atomically, so
 * it never changes data another thread or device is writing. */
static int populate(struct imm_handle *h, struct imm_map *m)
{
	bool wr = !(m->flags & IMM_MAP_READONLY);
	long page = sysconf(_SC_PAGESIZE);
	unsigned char *p = m->addr;
	uint64_t i;

	if (madvise(p, m->length, wr ? MADV_POPULATE_WRITE :
					  MADV_POPULATE_READ) == 0)
		return 0;
	if (errno != EINVAL) {
		int r = -errno;

		err(h->ctx, "imm_map: populating [%llu, +%llu) failed: %s; a "
			    "media error or a page the filesystem cannot provide",
		    (unsigned long long)m->offset,
		    (unsigned long long)m->length, strerror(-r));
		return r == -EFAULT || r == -EHWPOISON ? -EIO : r;
	}
	for (i = 0; i < m->length; i += (uint64_t)page) {
		if (wr)
			__atomic_fetch_add(p + i, 0, __ATOMIC_RELAXED);
		else
			(void)*(volatile unsigned char *)(p + i);
	}
	return 0;
}

/*
 * Tear a live mapping down while the application may still hold its
 * address: one MAP_FIXED mmap swaps the file pages for inaccessible
 * anonymous memory atomically, so no other mapping can land in the range
 * before imm_unmap() frees it.  libpmem2 keeps its map object (the range)
 * meanwhile.  If the kernel will not, unmap for real and say so.
 */
static void map_delete(struct imm_map *m)
{
	if (!m->pm)
		return;
	if (mmap(m->addr, m->length, PROT_NONE, MAP_FIXED | MAP_PRIVATE |
		 MAP_ANONYMOUS | MAP_NORESERVE, -1, 0) == MAP_FAILED) {
		warn(m->h->ctx, "keeping the address range of a torn-down "
				"mapping reserved: mmap: %s; it is unmapped, and "
				"a stale pointer to it may reach other memory",
		     strerror(errno));
		if (pmem2_map_delete(&m->pm) < 0)
			warn(m->h->ctx, "pmem2_map_delete: %s", pmem2_errormsg());
	} else {
		m->dead = m->pm;
	}
	m->pm = NULL;
	/* imm_map_get_addr() reads it without h->lock */
	__atomic_store_n(&m->addr, NULL, __ATOMIC_RELEASE);
}

/* Unmap what is left, live or torn down, and free m. */
static void map_free(struct imm_map *m)
{
	struct pmem2_map **pm = m->pm ? &m->pm : &m->dead;

	if (*pm && pmem2_map_delete(pm) < 0)
		warn(m->h->ctx, "pmem2_map_delete: %s", pmem2_errormsg());
	imm_handle_unref(m->h);
	free(m);
}

/* h->lock held: link the new mapping, unless the seal went meanwhile. */
/* h->lock held: unmap every mapping, keep the address ranges reserved. */
static int teardown_all(struct imm_handle *h)
{
	for (struct imm_map *m = h->maps; m; m = m->next)
		map_delete(m);
	return 0;
}

static const struct imm_attach_ops map_attach = { .teardown = teardown_all };

static int map_commit(struct imm_handle *h, struct imm_map *m, uint64_t gen)
{
	if (gen != h->seal_gen || !seal_is_live(h)) {
		err(h->ctx, "imm_map: the seal was %s while the range was being "
			    "mapped; the mapping was undone: release and re-seal",
		    h->state == IMM_STATE_BREAKING ? "recalled" :
		    imm_state_name(h->state));
		return h->state == IMM_STATE_CLOSED ? -EBADF : -ESTALE;
	}
	m->next = h->maps;
	h->maps = m;
	imm_handle_attach(h, IMM_ATTACH_MAP, &map_attach);
	return 0;
}

IMM_EXPORT int imm_map(struct imm_handle *h, uint64_t offset, uint64_t length,
		       uint32_t flags, struct imm_map **ret_map)
{
	struct imm_map *m;
	uint64_t gen;
	int fd, r;

	if (!h || !ret_map)
		return -EINVAL;
	*ret_map = NULL;
	r = imm_check_fork(h->ctx, "imm_map");
	if (r == 0)
		r = check_map_args(h, length, flags);
	if (r < 0)
		return r;
	m = calloc(1, sizeof(*m));
	if (!m)
		return -ENOMEM;
	m->h = imm_handle_ref(h);
	m->offset = offset;
	m->length = length;
	m->flags = flags;

	/* libpmem2 maps and we populate without the handle lock: the
	 * notifier takes it to record a break and must not wait for a
	 * gigabyte of page faults. */
	pthread_mutex_lock(&h->lock);
	fd = map_begin(h, offset, length, flags);
	gen = h->seal_gen;
	pthread_mutex_unlock(&h->lock);
	if (fd < 0) {
		map_free(m);
		return fd;
	}
	r = map_create(h, fd, m);
	close(fd);
	if (r == 0 && (flags & IMM_MAP_POPULATE))
		r = populate(h, m);
	if (r == 0) {
		pthread_mutex_lock(&h->lock);
		r = map_commit(h, m, gen);
		pthread_mutex_unlock(&h->lock);
	}
	if (r < 0) {
		map_free(m);
		return r;
	}
	dbg(h->ctx, "mapped [%llu, +%llu) at %p, %s granularity",
	    (unsigned long long)offset, (unsigned long long)length, m->addr,
	    imm_granularity_name(m->gran));
	*ret_map = m;
	return 0;
}


IMM_EXPORT int imm_unmap(struct imm_map *m)
{
	struct imm_handle *h;
	struct imm_map **pp;

	if (!m)
		return -EINVAL;
	h = m->h;
	if (imm_forked(h->ctx))
		return imm_check_fork(h->ctx, "imm_unmap");
	pthread_mutex_lock(&h->lock);
	if (m->mrs && m->mrs_retry)
		m->mrs_retry(m);
	if (m->mrs) {
		pthread_mutex_unlock(&h->lock);
		err(h->ctx, "imm_unmap: the mapping still has verbs registrations; "
			    "imm_dereg_mr() them first");
		return -EBUSY;
	}
	for (pp = &h->maps; *pp && *pp != m; pp = &(*pp)->next)
		;
	if (*pp)
		*pp = m->next;
	pthread_mutex_unlock(&h->lock);
	map_free(m);	/* unlinked: no teardown reaches it now */
	return 0;
}

/* What granularity a mapping with these flags would get: a one-page trial
 * mapping, read-only.  IMM_GRANULARITY_NONE if none can be made. */
enum imm_granularity imm_map_probe(struct imm_handle *h, int fd,
				   uint32_t flags)
{
	struct pmem2_source *src = NULL;
	struct pmem2_config *cfg;
	struct pmem2_map *pm = NULL;
	enum imm_granularity g = IMM_GRANULARITY_NONE;
	size_t align;
	int r;

	if (pmem2_source_from_fd(&src, fd) < 0)
		return g;
	if (pmem2_source_alignment(src, &align) == 0) {
		cfg = config_new(h, 0, align, flags | IMM_MAP_READONLY, &r);
		if (cfg && pmem2_map_new(&pm, cfg, src) == 0) {
			g = from_pmem2(pmem2_map_get_store_granularity(pm));
			pmem2_map_delete(&pm);
		}
		pmem2_config_delete(&cfg);
	}
	pmem2_source_delete(&src);
	return g;
}

IMM_EXPORT void *imm_map_get_addr(const struct imm_map *m)
{
	/* a revoke on the revoker thread clears it under h->lock; this
	 * getter takes no lock, so the two meet in one atomic word */
	return m ? __atomic_load_n(&m->addr, __ATOMIC_ACQUIRE) : NULL;
}

IMM_EXPORT uint64_t imm_map_get_offset(const struct imm_map *m)
{
	return m ? m->offset : 0;
}

IMM_EXPORT uint64_t imm_map_get_length(const struct imm_map *m)
{
	return m ? m->length : 0;
}

IMM_EXPORT struct imm_handle *imm_map_get_handle(const struct imm_map *m)
{
	return m ? m->h : NULL;
}

IMM_EXPORT enum imm_granularity imm_map_get_granularity(const struct imm_map *m)
{
	return m ? m->gran : IMM_GRANULARITY_NONE;
}

IMM_EXPORT imm_persist_fn imm_map_get_persist_fn(const struct imm_map *m)
{
	return m ? m->persist : NULL;
}

IMM_EXPORT imm_flush_fn imm_map_get_flush_fn(const struct imm_map *m)
{
	return m ? m->flush : NULL;
}

IMM_EXPORT imm_drain_fn imm_map_get_drain_fn(const struct imm_map *m)
{
	return m ? m->drain : NULL;
}

/* Whether [ptr, +size) lies in the mapping; libpmem2's own message for
 * this came out garbled ("rage", the map object's address as its end). */
static bool deep_flush_range(const struct imm_map *m, const void *ptr,
			     size_t size)
{
	uintptr_t a = (uintptr_t)m->addr, p = (uintptr_t)ptr;

	if (p >= a && p - a <= m->length && size <= m->length - (p - a))
		return true;
	err(m->h->ctx, "imm_map_deep_flush: [%p, +%zu) is not inside the "
		       "mapping [%p, +%llu): flush a range of this mapping",
	    ptr, size, m->addr, (unsigned long long)m->length);
	return false;
}

IMM_EXPORT int imm_map_deep_flush(struct imm_map *m, void *ptr, size_t size)
{
	int r;

	if (!m)
		return -EINVAL;
	r = imm_check_fork(m->h->ctx, "imm_map_deep_flush");
	if (r < 0)
		return r;
	pthread_mutex_lock(&m->h->lock);
	if (m->pm && !deep_flush_range(m, ptr, size)) {
		r = -EINVAL;
	} else if (!m->pm) {
		err(m->h->ctx, "imm_map_deep_flush: the mapping was torn down "
			       "with its seal");
		r = -ESTALE;
	} else {
		r = pmem2_deep_flush(m->pm, ptr, size);
		if (r < 0)
			r = pmem2_fail(m->h, "pmem2_deep_flush", r);
	}
	pthread_mutex_unlock(&m->h->lock);
	return r;
}
