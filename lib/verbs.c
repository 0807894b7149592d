// SPDX-License-Identifier: LGPL-2.1-or-later
/*
 * Verbs registrations of a sealed mapping.
 *
 * What a NIC may hold depends on the kernel and the memory (design.md §4):
 * a long-term pin works for anonymous memory and tmpfs, for read-only
 * page-cache files and, before 6.5, writable ones; it never works for
 * fsdax on a stock kernel.  With the companion patch's layout seals it
 * works for fsdax too, as long as the mapped open file holds a seal that
 * is not being broken.  ODP needs the device to say so for RC and the
 * access asked for.  So AUTO tries the pin, the kernel being the judge of
 * what it allows, then ODP, then says which options there are.
 *
 * An MR belongs to its mapping: the seal's teardown deregisters it before
 * the mapping and the seal go, and the object stays until imm_dereg_mr().
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include <libimmutable/verbs.h>

#include "private.h"

struct imm_mr {
	struct imm_map *m;
	struct imm_mr *next;		/* m->mrs, under h->lock */
	struct ibv_pd *pd;
	struct ibv_mr *mr;		/* NULL once torn down */
	bool dereg_failed;		/* mr still live: retried */
	bool orphan;			/* never handed out: freed once gone */
	enum imm_mr_mode mode;
	uint64_t offset;
	uint64_t length;
	void *addr;
	uint32_t lkey, rkey;
};

#define KNOWN_ACCESS (IBV_ACCESS_LOCAL_WRITE | IBV_ACCESS_REMOTE_WRITE | \
		      IBV_ACCESS_REMOTE_READ | IBV_ACCESS_REMOTE_ATOMIC | \
		      IBV_ACCESS_RELAXED_ORDERING)
#define WRITES (IBV_ACCESS_LOCAL_WRITE | IBV_ACCESS_REMOTE_WRITE | \
		IBV_ACCESS_REMOTE_ATOMIC)

IMM_EXPORT const char *imm_mr_mode_name(enum imm_mr_mode mode)
{
	switch (mode) {
	case IMM_MR_AUTO:
		return "auto";
	case IMM_MR_PINNED:
		return "pinned";
	case IMM_MR_ODP:
		return "odp";
	case IMM_MR_PINNED_SEALED:
		return "pinned-sealed";
	}
	return "unknown";
}

static int check_access(struct imm_ctx *ctx, const struct imm_map *m,
			int access, uint32_t flags)
{
	uint32_t mode = flags & IMM_MR_MODE_MASK;

	if (flags & ~(IMM_MR_MODE_MASK | IMM_MR_PREFETCH | IMM_MR_NO_PREFETCH) ||
	    mode > IMM_MR_PINNED_SEALED ||
	    (flags & IMM_MR_PREFETCH && flags & IMM_MR_NO_PREFETCH)) {
		err(ctx, "imm_reg_mr: bad flags 0x%x: one IMM_MR_* mode, and at "
			 "most one of IMM_MR_PREFETCH and IMM_MR_NO_PREFETCH", flags);
		return -EINVAL;
	}
	if (access & IBV_ACCESS_ON_DEMAND) {
		err(ctx, "imm_reg_mr: ask for IMM_MR_ODP instead of passing "
			 "IBV_ACCESS_ON_DEMAND: the library picks the mode");
		return -EINVAL;
	}
	if (access & ~KNOWN_ACCESS) {
		err(ctx, "imm_reg_mr: access flags 0x%x are not supported here",
		    access & ~KNOWN_ACCESS);
		return -EINVAL;
	}
	if ((access & (IBV_ACCESS_REMOTE_WRITE | IBV_ACCESS_REMOTE_ATOMIC)) &&
	    !(access & IBV_ACCESS_LOCAL_WRITE)) {
		err(ctx, "imm_reg_mr: remote write or atomic access needs "
			 "IBV_ACCESS_LOCAL_WRITE too (a verbs rule)");
		return -EINVAL;
	}
	if ((access & WRITES) && (m->flags & IMM_MAP_READONLY)) {
		err(ctx, "imm_reg_mr: write access to a read-only mapping; map "
			 "without IMM_MAP_READONLY or register read-only");
		return -EACCES;
	}
	return 0;
}

/* The RC ODP capabilities that access needs. */
static uint32_t odp_needs(int access)
{
	uint32_t need = IBV_ODP_SUPPORT_SEND;

	if (access & IBV_ACCESS_LOCAL_WRITE)
		need |= IBV_ODP_SUPPORT_RECV;
	if (access & IBV_ACCESS_REMOTE_WRITE)
		need |= IBV_ODP_SUPPORT_WRITE;
	if (access & IBV_ACCESS_REMOTE_READ)
		need |= IBV_ODP_SUPPORT_READ;
	if (access & IBV_ACCESS_REMOTE_ATOMIC)
		need |= IBV_ODP_SUPPORT_ATOMIC;
	return need;
}

/* RC ODP caps per verbs device context, the context's verbs state */
struct odp_cache {
	struct odp_caps {
		const struct ibv_context *dev;
		const struct ibv_device *device;
		uint64_t general;
		uint32_t rc;
	} e[4];
	unsigned next;
};

static void *odp_cache_make(struct imm_ctx *ctx)
{
	(void)ctx;
	return calloc(1, sizeof(struct odp_cache));
}

static void odp_cache_free(struct imm_ctx *ctx, void *data)
{
	(void)ctx;
	free(data);
}

static const struct imm_module_ops verbs_module = {
	.make = odp_cache_make,
	.free = odp_cache_free,
};

/* The device's ODP caps, asked once per device context and kept in the
 * context (a registration should not pay for a device query); asked every
 * time if there is no memory to keep them. */
static int odp_caps(struct imm_ctx *ctx, struct ibv_context *dev,
		    uint64_t *general, uint32_t *rc)
{
	struct odp_cache *cache = imm_ctx_module(ctx, IMM_MODULE_VERBS,
						 &verbs_module);
	struct odp_caps *c, once = { 0 };
	struct ibv_device_attr_ex attr;
	int r = 0;

	pthread_mutex_lock(&ctx->lock);
	for (c = cache ? cache->e : &once; cache && c < cache->e + 4; c++)
		if (c->dev == dev && c->device == dev->device)
			break;
	if (!cache || c == cache->e + 4) {
		memset(&attr, 0, sizeof(attr));
		r = -ibv_query_device_ex(dev, NULL, &attr);
		c = cache ? &cache->e[cache->next++ % 4] : &once;
		*c = (struct odp_caps){ dev, dev->device,
			attr.odp_caps.general_caps,
			attr.odp_caps.per_transport_caps.rc_odp_caps };
		if (r < 0)
			c->dev = NULL;
	}
	*general = c->general;
	*rc = c->rc;
	pthread_mutex_unlock(&ctx->lock);
	return r;
}

/* 1: the device pages on demand for RC with this access; 0: it does not. */
static int odp_capable(struct imm_ctx *ctx, struct ibv_pd *pd, int access)
{
	uint32_t need = odp_needs(access), rc;
	uint64_t general;
	int r;

	r = odp_caps(ctx, pd->context, &general, &rc);
	if (r < 0)
		return r;
	return (general & IBV_ODP_SUPPORT) && (rc & need) == need;
}

static int reg(struct imm_mr *mr, int access)
{
	mr->mr = ibv_reg_mr(mr->pd, mr->addr, mr->length, access);
	if (!mr->mr)
		return errno ? -errno : -EIO;	/* libibverbs: NULL + errno */
	mr->lkey = mr->mr->lkey;
	mr->rkey = mr->mr->rkey;
	return 0;
}

/* Prefetch in chunks: an SGE's length is 32 bits. */
static int prefetch(struct imm_mr *mr, int access)
{
	const uint64_t chunk = 1ull << 30;
	uint64_t off;
	int r = 0;

	for (off = 0; r == 0 && off < mr->length; off += chunk) {
		struct ibv_sge sge = {
			.addr = (uintptr_t)mr->addr + off,
			.length = (uint32_t)(mr->length - off < chunk ?
					     mr->length - off : chunk),
			.lkey = mr->lkey,
		};

		r = -ibv_advise_mr(mr->pd, (access & WRITES) ?
				   IBV_ADVISE_MR_ADVICE_PREFETCH_WRITE :
				   IBV_ADVISE_MR_ADVICE_PREFETCH,
				   IBV_ADVISE_MR_FLAG_FLUSH, &sge, 1);
	}
	return r;
}

/* ODP: a fault on first touch unless prefetched; prefetch what a populated
 * mapping already has, so the first RDMA does not pay for it. */
static int reg_odp(struct imm_ctx *ctx, struct imm_mr *mr, int access,
		   uint32_t flags)
{
	bool want = (flags & IMM_MR_PREFETCH) ||
		    (!(flags & IMM_MR_NO_PREFETCH) &&
		     (mr->m->flags & IMM_MAP_POPULATE));
	int r;

	r = reg(mr, access | IBV_ACCESS_ON_DEMAND);
	if (r < 0)
		err(ctx, "imm_reg_mr: ODP registration: %s", strerror(-r));
	if (r < 0 || !want)
		return r;
	r = prefetch(mr, access);
	if (r < 0 && (flags & IMM_MR_PREFETCH)) {
		err(ctx, "imm_reg_mr: IMM_MR_PREFETCH: ibv_advise_mr: %s; the "
			 "device may not prefetch (rxe does not): register "
			 "without the flag", strerror(-r));
		ibv_dereg_mr(mr->mr);
		mr->mr = NULL;
		return r;
	}
	if (r < 0)
		info(ctx, "ODP prefetch failed (%s); pages fault in on first "
			  "access", strerror(-r));
	return 0;
}

/* A pin of fsdax memory exists only because the kernel ties it to the
 * layout seal of the mapped open file: say so in the mode. */
static enum imm_mr_mode pinned_mode(const struct imm_mr *mr)
{
	return mr->m->dax &&
	       imm_handle_backend(mr->m->h)->id == IMM_BACKEND_LAYOUT ?
	       IMM_MR_PINNED_SEALED : IMM_MR_PINNED;
}

/* The kernel has a break pending for the handle's seal: 1, 0 or -errno. */
static int seal_breaking(struct imm_handle *h)
{
	int r;

	pthread_mutex_lock(&h->lock);
	r = h->state == IMM_STATE_CLOSED ? -EBADF :
	    imm_handle_backend(h)->break_pending(h);
	pthread_mutex_unlock(&h->lock);
	return r;
}

static int no_mode(struct imm_ctx *ctx, const struct imm_mr *mr, int pin_err)
{
	if (mr->m->dax &&
	    imm_handle_backend(mr->m->h)->id == IMM_BACKEND_LAYOUT) {
		err(ctx, "imm_reg_mr: the kernel refused a long-term pin of this "
			 "fsdax memory (%s) although it has layout seals: the seal "
			 "is being broken (release and re-seal), or the pages are "
			 "not those of the sealed open file; and the device "
			 "reports no ODP for RC with this access",
		    strerror(-pin_err));
		return -EOPNOTSUPP;
	}
	err(ctx, "imm_reg_mr: no safe way to register this %s memory: the "
		 "kernel refused a long-term pin (%s) and the device reports no "
		 "ODP for RC with this access. Options: an ODP-capable NIC, a "
		 "kernel with the libimmutable companion patch (pinned "
		 "registration of sealed fsdax ranges), or device-dax",
	    mr->m->dax ? "fsdax" : "file-backed", strerror(-pin_err));
	return -EOPNOTSUPP;
}

/* Why the kernel refused a pin under a layout seal, and what to do. */
static int sealed_pin_refused(struct imm_ctx *ctx, struct imm_mr *mr, int r)
{
	if (seal_breaking(mr->m->h) == 1) {
		err(ctx, "imm_reg_mr: the kernel refused the pin (%s): the seal "
			 "is being broken and a recall is on its way; release "
			 "and re-seal", strerror(-r));
		return -ESTALE;
	}
	if (!mr->m->dax)
		err(ctx, "imm_reg_mr: IMM_MR_PINNED_SEALED: the kernel refused "
			 "the pin (%s); a layout seal makes fsdax pages pinnable, "
			 "and this memory is not fsdax: the kernel's own rules "
			 "for it apply (no writable page-cache pins since 6.5); "
			 "try IMM_MR_AUTO", strerror(-r));
	else
		err(ctx, "imm_reg_mr: IMM_MR_PINNED_SEALED: the kernel refused "
			 "the pin of the sealed fsdax range: %s", strerror(-r));
	return r;
}

/* The pin the layout seal allows: only with that backend, only while the
 * seal is not being broken (the kernel checks that at pin time). */
static int reg_pinned_sealed(struct imm_ctx *ctx, struct imm_mr *mr,
			     int access)
{
	const struct imm_seal_backend *b = imm_handle_backend(mr->m->h);
	int r;

	if (b->id != IMM_BACKEND_LAYOUT) {
		err(ctx, "imm_reg_mr: IMM_MR_PINNED_SEALED needs the layout seal "
			 "backend of the companion kernel patch; %s",
		    ctx->backend->id == IMM_BACKEND_LAYOUT ?
		    "this file's filesystem has no layout seals and is sealed "
		    "with a lease" : "this kernel has the lease backend");
		return -EOPNOTSUPP;
	}
	r = reg(mr, access);
	if (r < 0)
		return sealed_pin_refused(ctx, mr, r);
	mr->mode = pinned_mode(mr);
	return 0;
}

static void pin_refused(struct imm_ctx *ctx, const struct imm_mr *mr, int r)
{
	bool policy = r == -EOPNOTSUPP || r == -EFAULT;

	err(ctx, "imm_reg_mr: pinned registration: %s%s%s", strerror(-r),
	    policy ? " (this kernel allows no long-term pin of this memory; "
		     "try IMM_MR_AUTO" : "",
	    !policy ? "" : mr->m->dax &&
	    imm_handle_backend(mr->m->h)->id != IMM_BACKEND_LAYOUT ?
	    ", or IMM_MR_PINNED_SEALED on a kernel with the companion patch)" :
	    ")");
}

/* Register in the mode asked for, or choose one. */
static int register_mr(struct imm_ctx *ctx, struct imm_mr *mr, int access,
		       uint32_t flags)
{
	uint32_t mode = flags & IMM_MR_MODE_MASK;
	int r = -EOPNOTSUPP, odp;

	if (mode == IMM_MR_PINNED_SEALED)
		return reg_pinned_sealed(ctx, mr, access);
	if (mode == IMM_MR_AUTO || mode == IMM_MR_PINNED) {
		r = reg(mr, access);
		if (r == 0)
			mr->mode = pinned_mode(mr);
		if (r == 0 || mode == IMM_MR_PINNED) {
			if (r < 0)
				pin_refused(ctx, mr, r);
			return r;
		}
		dbg(ctx, "pinned registration refused (%s); trying ODP",
		    strerror(-r));
	}
	odp = odp_capable(ctx, mr->pd, access);
	if (odp < 0) {
		err(ctx, "ibv_query_device_ex: %s", strerror(-odp));
		return odp;
	}
	if (!odp) {
		if (mode == IMM_MR_ODP) {
			err(ctx, "imm_reg_mr: the device reports no ODP for RC "
				 "with access 0x%x", access);
			return -EOPNOTSUPP;
		}
		return no_mode(ctx, mr, r);
	}
	mr->mode = IMM_MR_ODP;
	return reg_odp(ctx, mr, access, flags);
}

/* h->lock held: may [offset, +length) of m be registered now? */
static int reg_begin(struct imm_map *m, uint64_t offset, uint64_t length)
{
	struct imm_handle *h = m->h;

	if (!m->pm || h->state != IMM_STATE_SEALED || h->sealing) {
		err(h->ctx, "imm_reg_mr: the mapping is %s; register only a live "
			    "mapping of a sealed range: release and re-seal",
		    m->pm ? imm_state_name(h->state) : "torn down");
		return h->state == IMM_STATE_CLOSED ? -EBADF : -ESTALE;
	}
	if (length == 0 || offset < m->offset || offset + length < offset ||
	    offset + length > m->offset + m->length) {
		err(h->ctx, "imm_reg_mr: [%llu, +%llu) is %s the mapping [%llu, "
			    "+%llu)", (unsigned long long)offset,
		    (unsigned long long)length, length ? "not inside" :
		    "an empty range of", (unsigned long long)m->offset,
		    (unsigned long long)m->length);
		return length ? -ERANGE : -EINVAL;
	}
	return 0;
}

/*
 * Deregister, or say why not and keep the ibv_mr: the NIC still has the
 * memory, so the MR stays on its list, and the next teardown, imm_unmap()
 * or imm_dereg_mr() tries again.  h->lock held (or not yet linked).
 */
static int mr_teardown(struct imm_mr *mr)
{
	int r;

	if (!mr->mr)
		return 0;
	r = ibv_dereg_mr(mr->mr);
	if (r) {
		r = r > 0 ? -r : -EIO;
		err(mr->m->h->ctx, "ibv_dereg_mr of [%llu, +%llu), rkey 0x%x: "
				   "%s; the NIC may still access the memory, so "
				   "it stays registered and the seal held: "
				   "retry imm_release(), imm_dereg_mr() or "
				   "imm_handle_close()",
		    (unsigned long long)mr->offset,
		    (unsigned long long)mr->length, mr->rkey, strerror(-r));
		mr->dereg_failed = true;
		return r;
	}
	mr->mr = NULL;
	mr->dereg_failed = false;
	return 0;
}

/* h->lock held: free the orphans of m whose deregistration has worked. */
static void reap_orphans(struct imm_map *m)
{
	struct imm_mr **pp = &m->mrs;

	while (*pp) {
		struct imm_mr *mr = *pp;

		if (mr->orphan && !mr->mr) {
			*pp = mr->next;
			free(mr);
		} else {
			pp = &mr->next;
		}
	}
}

/* h->lock held: deregister every MR of the handle's mappings; the first
 * error if one could not be (it stays live and listed, and the next
 * teardown, or imm_unmap() of its mapping, retries). */
static int teardown_all(struct imm_handle *h)
{
	struct imm_map *m;
	struct imm_mr *mr;
	int r = 0, e;

	for (m = h->maps; m; m = m->next) {
		for (mr = m->mrs; mr; mr = mr->next) {
			e = mr_teardown(mr);
			if (e < 0 && r == 0)
				r = e;
		}
		reap_orphans(m);
	}
	return r;
}

/* h->lock held: retry the MRs of m whose deregistration failed before. */
static int retry_map(struct imm_map *m)
{
	struct imm_mr *mr;
	int r = 0, e;

	for (mr = m->mrs; mr; mr = mr->next) {
		if (!mr->dereg_failed)
			continue;
		e = mr_teardown(mr);
		if (e < 0 && r == 0)
			r = e;
	}
	reap_orphans(m);
	return r;
}

static const struct imm_attach_ops mr_attach = { .teardown = teardown_all };

/* h->lock held: link an MR to its mapping, which then knows how to retry
 * it, and the handle how to tear it down. */
static void link_mr(struct imm_mr *mr)
{
	mr->next = mr->m->mrs;
	mr->m->mrs = mr;
	mr->m->mrs_retry = retry_map;
	imm_handle_attach(mr->m->h, IMM_ATTACH_MR, &mr_attach);
}

/*
 * h->lock held: link the MR unless the seal went while registering.  An
 * MR that cannot be undone stays listed as an orphan (*ret_kept), so
 * that the NIC's registration is not forgotten.
 */
static int reg_commit(struct imm_mr *mr, uint64_t gen, bool *ret_kept)
{
	struct imm_handle *h = mr->m->h;

	*ret_kept = false;
	if (gen != h->seal_gen || h->state != IMM_STATE_SEALED || !mr->m->pm) {
		err(h->ctx, "imm_reg_mr: the seal was %s during the registration; "
			    "it was undone: release and re-seal",
		    h->state == IMM_STATE_BREAKING ? "recalled" :
		    imm_state_name(h->state));
		if (mr_teardown(mr) < 0) {
			mr->orphan = true;
			link_mr(mr);
			*ret_kept = true;
		}
		return h->state == IMM_STATE_CLOSED ? -EBADF : -ESTALE;
	}
	link_mr(mr);
	return 0;
}

/* A child must not inherit memory a NIC may write: with fork it would get
 * the pages, and after an exec-less fork, a copy-on-write mess. */
static void exclude_from_fork(struct imm_ctx *ctx, struct imm_mr *mr)
{
	long page = sysconf(_SC_PAGESIZE);
	uintptr_t lo = (uintptr_t)mr->addr & ~(uintptr_t)(page - 1);
	uintptr_t hi = ((uintptr_t)mr->addr + mr->length + page - 1) &
		       ~(uintptr_t)(page - 1);

	if (madvise((void *)lo, hi - lo, MADV_DONTFORK) < 0)
		warn(ctx, "madvise(MADV_DONTFORK): %s; a child would inherit "
			  "registered memory", strerror(errno));
}

IMM_EXPORT int imm_reg_mr(struct imm_map *m, struct ibv_pd *pd,
			  uint64_t offset, uint64_t length, int access,
			  uint32_t flags, struct imm_mr **ret_mr)
{
	struct imm_handle *h;
	struct imm_mr *mr;
	uint64_t gen;
	bool kept = false;
	int r;

	if (!m || !ret_mr)
		return -EINVAL;
	*ret_mr = NULL;
	h = m->h;
	r = imm_check_fork(h->ctx, "imm_reg_mr");
	if (r < 0)
		return r;
	if (!pd || !pd->context) {
		err(h->ctx, "imm_reg_mr: no protection domain (or one without a "
			    "device context); pass an ibv_pd of the NIC");
		return -EINVAL;
	}
	r = check_access(h->ctx, m, access, flags);
	if (r < 0)
		return r;
	pthread_mutex_lock(&h->lock);
	r = reg_begin(m, offset, length);
	gen = h->seal_gen;
	pthread_mutex_unlock(&h->lock);
	if (r < 0)
		return r;
	mr = calloc(1, sizeof(*mr));
	if (!mr)
		return -ENOMEM;
	*mr = (struct imm_mr){ .m = m, .pd = pd, .offset = offset,
			       .length = length,
			       .addr = (char *)m->addr + (offset - m->offset) };

	/* registering pins or faults in, maybe gigabytes: not under the
	 * lock the notifier needs */
	r = register_mr(h->ctx, mr, access, flags);
	if (r == 0) {
		pthread_mutex_lock(&h->lock);
		r = reg_commit(mr, gen, &kept);
		pthread_mutex_unlock(&h->lock);
	}
	if (r < 0) {
		if (!kept)
			free(mr);
		return r;
	}
	exclude_from_fork(h->ctx, mr);
	dbg(h->ctx, "registered [%llu, +%llu) %s, rkey 0x%x",
	    (unsigned long long)offset, (unsigned long long)length,
	    imm_mr_mode_name(mr->mode), mr->rkey);
	*ret_mr = mr;
	return 0;
}

IMM_EXPORT int imm_dereg_mr(struct imm_mr *mr)
{
	struct imm_handle *h;
	struct imm_mr **pp;
	int r;

	if (!mr)
		return -EINVAL;
	h = mr->m->h;
	if (imm_forked(h->ctx))
		return imm_check_fork(h->ctx, "imm_dereg_mr");
	pthread_mutex_lock(&h->lock);
	r = mr_teardown(mr);
	if (r == 0) {
		for (pp = &mr->m->mrs; *pp && *pp != mr; pp = &(*pp)->next)
			;
		if (*pp)
			*pp = mr->next;
	}
	pthread_mutex_unlock(&h->lock);
	if (r == 0)
		free(mr);
	return r;
}

IMM_EXPORT struct ibv_mr *imm_mr_get_ibv_mr(const struct imm_mr *mr)
{
	return mr ? mr->mr : NULL;
}

IMM_EXPORT uint32_t imm_mr_get_lkey(const struct imm_mr *mr)
{
	return mr && mr->mr ? mr->lkey : 0;
}

IMM_EXPORT uint32_t imm_mr_get_rkey(const struct imm_mr *mr)
{
	return mr && mr->mr ? mr->rkey : 0;
}

IMM_EXPORT void *imm_mr_get_addr(const struct imm_mr *mr)
{
	return mr && mr->mr ? mr->addr : NULL;
}

IMM_EXPORT uint64_t imm_mr_get_offset(const struct imm_mr *mr)
{
	return mr ? mr->offset : 0;
}

IMM_EXPORT uint64_t imm_mr_get_length(const struct imm_mr *mr)
{
	return mr ? mr->length : 0;
}

IMM_EXPORT enum imm_mr_mode imm_mr_get_mode(const struct imm_mr *mr)
{
	return mr ? mr->mode : IMM_MR_AUTO;
}

IMM_EXPORT struct imm_map *imm_mr_get_map(const struct imm_mr *mr)
{
	return mr ? mr->m : NULL;
}
