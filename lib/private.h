/* SPDX-License-Identifier: LGPL-2.1-or-later */
#ifndef IMM_PRIVATE_H
#define IMM_PRIVATE_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>
#include <syslog.h>

#include <libimmutable/libimmutable.h>

#define IMM_EXPORT __attribute__((visibility("default")))
#define IMM_PRINTF(a, b) __attribute__((format(printf, a, b)))

/*
 * Locking.  ctx->lock guards the fd table, the event queue, the breaking
 * list and the notifier's lifecycle.  h->lock guards a handle's state and
 * seal.  Order: h->lock, then ctx->lock; never the other way round.  No
 * lock is held while an application callback runs.
 */

/* One extent, as FIEMAP reports it, merged and clipped (extents.c). */
struct imm_extent {
	uint64_t logical;
	uint64_t physical;
	uint64_t length;
	uint32_t flags;
};

struct imm_extent_map {
	struct imm_extent *ext;
	size_t n;
	size_t cap;
	bool alloc_only;	/* built from SEEK_DATA/SEEK_HOLE, no physical */
};

struct imm_event {
	atomic_int refcount;
	int type;
	struct imm_handle *handle;	/* holds a reference */
	uint64_t seal_gen;		/* drop if the handle re-sealed since */
	uint64_t time_ns;
	uint64_t deadline_ns;
	uint64_t revoke_ns;
	uint64_t offset;
	struct imm_event *next;
};

struct imm_seal_backend;
struct ndctl_ctx;
struct pmem2_map;

/* A mapping of a sealed range (map.c).  Lives until imm_unmap(); torn down
 * (pm == NULL, the address range left reserved: PROT_NONE anonymous memory
 * in place of the file, under libpmem2's object in dead) with the seal. */
/*
 * What lives on a handle's seal and must go before the seal does.  The
 * modules above the seal attach themselves (imm_handle_attach()); the seal
 * tears them down with imm_handle_detach() knowing nothing of them.  The
 * kinds are in the one safe order: registrations (the NIC loses the memory
 * first), mappings (then the CPU), the exported block map (its page cache
 * is dropped while nothing moves yet).
 */
enum imm_attach_kind {
	IMM_ATTACH_MR,		/* verbs.c */
	IMM_ATTACH_MAP,		/* map.c */
	IMM_ATTACH_BLOCK_MAP,	/* blockmap.c */
	IMM_ATTACH_KINDS
};

struct imm_attach_ops {
	/* h->lock held: tear down what this module has on h.  -errno when
	 * something must stay (a NIC may still reach it): it stays listed,
	 * nothing after it is torn down, and the next teardown retries. */
	int (*teardown)(struct imm_handle *h);
};

struct imm_map {
	struct imm_handle *h;		/* holds a reference */
	struct imm_map *next;		/* h->maps, under h->lock */
	struct pmem2_map *pm;		/* live */
	struct pmem2_map *dead;		/* torn down, range still reserved */
	void *addr;
	uint64_t offset;
	uint64_t length;
	uint32_t flags;
	bool dax;			/* the file is DAX (statx) */
	struct imm_mr *mrs;		/* verbs.c, under h->lock */
	/* set by verbs.c with the first MR: retries deregistrations that
	 * failed, so that imm_unmap() need not know of MRs */
	int (*mrs_retry)(struct imm_map *m);
	enum imm_granularity gran;
	imm_persist_fn persist;
	imm_flush_fn flush;
	imm_drain_fn drain;
};

/*
 * A module's state in a context (libndctl's context, the ODP caps cache):
 * made by the module on first use, freed with the context by the function
 * it gave.  The context knows neither.
 */
enum imm_module {
	IMM_MODULE_NDCTL,	/* topology.c, badblocks.c */
	IMM_MODULE_VERBS,	/* verbs.c */
	IMM_MODULES
};

struct imm_module_ops {
	void *(*make)(struct imm_ctx *ctx);		/* NULL: no memory */
	void (*free)(struct imm_ctx *ctx, void *data);	/* also in a child */
};

struct imm_ctx {
	atomic_int refcount;
	pid_t pid;			/* fork detection when no token page */
	/* MADV_WIPEONFORK page holding a nonzero token: it reads 0 in any
	 * child, whatever pid the child got (util.c) */
	volatile uint64_t *fork_token;
	void *userdata;

	/* The log hook: fn and data change together (log.c).  A seqlock:
	 * writers (under log_lock) make log_seq odd while they store, readers
	 * retry until they read both under one even value. */
	_Atomic(imm_log_fn) log_fn;
	_Atomic(void *) log_data;
	atomic_uint log_seq;
	pthread_mutex_t log_lock;
	atomic_int log_priority;

	const struct imm_seal_backend *backend;
	bool backend_forced;		/* LIBIMMUTABLE_BACKEND: no fallback */
	int signo;
	uint32_t revoke_margin_ms;

	imm_event_fn event_fn;
	void *event_data;
	uint32_t event_flags;

	pthread_mutex_t lock;
	int event_fd;			/* eventfd handed to the application */
	struct imm_event *queue_head;
	struct imm_event *queue_tail;

	/* handles by fd number: si_fd of a break signal -> handle, O(1) */
	struct imm_handle **by_fd;
	size_t by_fd_len;
	size_t n_tracked;
	struct imm_handle *sole;	/* the only one, when n_tracked == 1 */

	/* handles in BREAKING, sorted by revoke time */
	struct imm_handle *breaking;

	/* notifier thread (notify.c), started by the first seal */
	bool notifier_running;
	pthread_t notifier;
	pid_t notifier_tid;
	pid_t notifier_pid;		/* its process and user, for */
	uid_t notifier_uid;		/* the marker it queues itself */
	atomic_bool notifier_stop;
	atomic_bool notifier_dead;	/* it stopped on an error ... */
	atomic_int notifier_error;	/* ... this -errno, reported once */
	int wake_fd;			/* eventfd: asks the notifier to stop */
	int sig_fd;			/* the notifier's signalfds, its own: */
	int sigio_fd;			/* ctx->signo's, SIGIO's */
	int status_fd;			/* its /proc/self/task/TID/status */
	bool free_on_notifier_exit;	/* last unref ran on the notifier */
	bool free_on_revoker_exit;	/* ... or on the revoker */
	bool notifier_rescan;		/* a new notifier checks every seal */
	/* The earliest time the kernel can have started a break the
	 * notifier has not dequeued yet: when it last saw its queue empty, or
	 * woke up.  0 while it sleeps with nothing pending.  The revoker
	 * plans from it when the notifier is late. */
	_Atomic uint64_t quiet_ns;
	_Atomic uint64_t busy_since;

	/* revoker thread (notify.c): deadlines, independent of the notifier
	 * (which may be inside a slow callback); waits on revoke_cond */
	bool revoker_running;
	pthread_t revoker;
	pthread_cond_t revoke_cond;	/* CLOCK_MONOTONIC, with ctx->lock */
	struct imm_event *late;		/* async events for the notifier */

	/* the modules' own state, see imm_ctx_module(); under ctx->lock */
	struct {
		void *data;
		const struct imm_module_ops *ops;
	} modules[IMM_MODULES];
};

struct imm_handle {
	atomic_int refcount;
	struct imm_ctx *ctx;
	pthread_mutex_t lock;
	int fd;
	bool writable;
	bool opened;			/* its own open(), not the caller's fd */
	uint64_t fs_magic;
	uint32_t block_size;
	void *userdata;

	/* Chosen once, under h->lock, by imm_seal_pick_backend(): the
	 * context's, or leases on a filesystem without layout seals. */
	const struct imm_seal_backend *backend;
	int state;			/* enum imm_handle_state */
	uint64_t seal_gen;
	uint64_t seal_off;
	uint64_t seal_len;
	uint32_t seal_flags;
	uint32_t revoke_margin_ms;
	int lease_break_time;		/* seconds, read when sealed */
	bool sealing;			/* inside imm_seal() */
	bool broken_while_sealing;	/* a break arrived during imm_seal() */
	bool recheck_at_commit;		/* a rescan passed during imm_seal() */
	bool mismatch_reported;		/* one VERIFY_MISMATCH event per seal */
	bool claimed;			/* seals its open file; under ctx->lock */
	bool untracked;			/* closed: queue nothing; under ctx->lock */
	bool block_exported;		/* imm_block_map() handed the map out */
	dev_t dev;			/* the file, while claimed */
	ino_t ino;
	struct imm_extent_map snapshot;
	struct imm_map *maps;		/* under h->lock */
	const struct imm_attach_ops *attached[IMM_ATTACH_KINDS];	/* h->lock */

	/* BREAKING bookkeeping, under ctx->lock */
	uint64_t break_ns;
	uint64_t deadline_ns;
	uint64_t revoke_ns;
	struct imm_handle *breaking_next;
};

/* log.c */
void imm_log(const struct imm_ctx *ctx, int priority, const char *file,
	     int line, const char *fn, const char *format, ...)
	IMM_PRINTF(6, 7);
void imm_log_init(struct imm_ctx *ctx);

#define imm_log_cond(ctx, prio, ...)                                        \
	do {                                                                \
		if ((ctx)->log_priority >= (prio))                          \
			imm_log((ctx), (prio), __FILE__, __LINE__, __func__,  \
				__VA_ARGS__);                               \
	} while (0)
#define dbg(ctx, ...) imm_log_cond(ctx, LOG_DEBUG, __VA_ARGS__)
#define info(ctx, ...) imm_log_cond(ctx, LOG_INFO, __VA_ARGS__)
#define warn(ctx, ...) imm_log_cond(ctx, LOG_WARNING, __VA_ARGS__)
#define err(ctx, ...) imm_log_cond(ctx, LOG_ERR, __VA_ARGS__)

/* ctx.c: the longest revoke margin, for the context's and a seal's own. */
#define IMM_REVOKE_MARGIN_MAX_MS (3600u * 1000u)
int imm_revoke_margin_check(struct imm_ctx *ctx, const char *who, uint32_t ms);

/* util.c */
uint64_t imm_now_ns(void);
int imm_read_sysctl_int(const char *path, int *ret_value);
bool imm_range_valid(uint64_t offset, uint64_t length, uint64_t size,
		     int *ret_errno);
/* What is wrong with a range imm_range_valid() refused, for a log line. */
const char *imm_range_problem(int e, uint64_t length);
void imm_range_align(uint64_t offset, uint64_t length, uint32_t block,
		     uint64_t *ret_start, uint64_t *ret_end);
int imm_opts_check(const void *opts, size_t known_size, size_t given_size);
bool imm_forked(const struct imm_ctx *ctx);
void imm_fork_token_init(struct imm_ctx *ctx);
void imm_fork_token_free(struct imm_ctx *ctx);
bool imm_fd_is_dax(int fd);
int imm_check_fork(const struct imm_ctx *ctx, const char *what);

/* ctx.c */
void imm_ctx_destroy(struct imm_ctx *ctx);
struct imm_handle *imm_ctx_handle_by_fd(struct imm_ctx *ctx, int fd);
int imm_ctx_track(struct imm_ctx *ctx, struct imm_handle *h);
void imm_ctx_untrack(struct imm_ctx *ctx, struct imm_handle *h);
/* The module's state, made with ops->make() on first use; NULL (logged)
 * when it cannot be made. */
void *imm_ctx_module(struct imm_ctx *ctx, enum imm_module m,
		     const struct imm_module_ops *ops);

/* handle.c */
struct imm_handle *imm_handle_ref(struct imm_handle *h);
void imm_handle_unref(struct imm_handle *h);
int imm_handle_dup_fd(struct imm_handle *h);
/* h->lock held: see enum imm_attach_kind */
void imm_handle_attach(struct imm_handle *h, enum imm_attach_kind kind,
		       const struct imm_attach_ops *ops);
int imm_handle_detach(struct imm_handle *h, enum imm_attach_kind last);

/* fscheck.c */
int imm_fscheck_type(struct imm_ctx *ctx, int fd, const char *what);
int imm_fscheck_fd(struct imm_ctx *ctx, int fd, const char *what,
		   uint64_t *ret_magic, uint32_t *ret_block);
const char *imm_fs_name(uint64_t magic);
bool imm_fs_has_fiemap(uint64_t magic);

/* extents.c */
void imm_extent_map_free(struct imm_extent_map *map);
int imm_extent_map_push(struct imm_extent_map *map, const struct imm_extent *e);
void imm_extent_map_normalize(struct imm_extent_map *map);
void imm_extent_map_shrink(struct imm_extent_map *map);
int imm_extent_map_copy(struct imm_extent_map *dst,
			const struct imm_extent_map *src);
int imm_extent_map_read_file(struct imm_handle *h, int fd, bool sync,
			     struct imm_extent_map *map, uint64_t *start,
			     uint64_t *end);
int imm_extent_map_read(struct imm_ctx *ctx, int fd, uint64_t start,
			uint64_t end, bool alloc_only, bool sync,
			struct imm_extent_map *out);
bool imm_extent_map_equal(const struct imm_extent_map *a,
			  const struct imm_extent_map *b,
			  uint64_t *ret_first_diff);
void imm_extent_map_summarize(const struct imm_extent_map *map,
			      uint64_t start, uint64_t end,
			      struct imm_layout_info *info);
bool imm_extent_map_final(const struct imm_extent_map *map, uint64_t start,
			  uint64_t end, uint64_t *ret_bad_offset,
			  uint32_t *ret_bad_flags);

/* prepare.c */
int imm_prepare(struct imm_handle *h, int fd, uint64_t start, uint64_t end);

/* map.c */
enum imm_granularity imm_map_probe(struct imm_handle *h, int fd, uint32_t flags);

/* topology.c, badblocks.c */
/* the context's libndctl context, for imm_pmem_locate() and its region:
 * 0 and locked, or -ENOMEM */
int imm_ndctl_lock(struct imm_ctx *ctx);
void imm_ndctl_unlock(struct imm_ctx *ctx);
struct imm_pmem_loc {
	struct ndctl_region *region;	/* valid under imm_ndctl_lock() */
	uint64_t data_offset;		/* region start -> disk start, bytes */
	uint64_t part_start;		/* disk start -> filesystem, bytes */
	bool linear;			/* sectors map 1:1 (not BTT) */
};
int imm_pmem_locate(struct imm_handle *h, int fd, struct imm_topology *topo,
		    struct imm_pmem_loc *loc);
ssize_t imm_badblocks_intersect(const struct imm_pmem_loc *loc,
				const struct imm_extent_map *map,
				uint64_t start, uint64_t end,
				struct imm_badblock *out, size_t max);
int imm_badblocks_check_seal(struct imm_handle *h,
			     const struct imm_extent_map *map,
			     uint64_t start, uint64_t end);

/* seal backends (seal-lease.c; seal-layout.c with the companion patch) */
struct imm_seal_backend {
	int id;				/* enum imm_backend */
	const char *name;
	/* preparation conflicts with the seal (it unshares, which is a layout
	 * change): prepare before sealing, whatever the kind of seal */
	bool prepare_first;
	int (*probe)(struct imm_ctx *ctx);
	/* 1: this backend can seal the handle's file, 0: not on its
	 * filesystem (leases can), <0: error; NULL: always 1.  Must not
	 * touch the fd's kernel state (seal, owner, signal): getters ask. */
	int (*file_ok)(struct imm_handle *h);
	/* the backend's own rules for this kind of seal on this handle,
	 * checked before any work; 0 or a logged -errno */
	int (*check)(struct imm_handle *h, uint32_t flags);
	int (*seal)(struct imm_handle *h, uint32_t flags);
	int (*unseal)(struct imm_handle *h);
	/* 1: the kernel has a break pending for this seal, 0: no, <0: error */
	int (*break_pending)(struct imm_handle *h);
	/* What a break signal means when no break is pending, for the log;
	 * NULL (or no hook): nothing, a stale or duplicate signal. */
	const char *(*signal_without_break)(const struct imm_handle *h);
};
extern const struct imm_seal_backend imm_seal_lease;
extern const struct imm_seal_backend imm_seal_layout;

/* seal.c: the handle's backend, picked by imm_seal_pick_backend() with
 * h->lock held; before that, the context's */
int imm_seal_pick_backend(struct imm_handle *h);
static inline const struct imm_seal_backend *
imm_handle_backend(const struct imm_handle *h)
{
	return h->backend ? h->backend : h->ctx->backend;
}

/* seal.c: teardown in the one safe order; h->lock held */
int imm_seal_teardown(struct imm_handle *h, int new_state);
/* seal.c, for the backends' error lines */
int imm_seal_eacces(struct imm_ctx *ctx);
bool imm_leases_disabled(void);
int imm_seal_verify(struct imm_handle *h, struct imm_event **ret_ev);

/* notify.c */
int imm_notifier_start(struct imm_ctx *ctx);
int imm_notifier_aim(struct imm_handle *h);
void imm_notifier_stop(struct imm_ctx *ctx);
bool imm_notifier_is_self(const struct imm_ctx *ctx);
int imm_notifier_check(struct imm_ctx *ctx, const char *what);
/* a break signal naming fd (unit tests call it directly) */
void imm_notifier_on_break_fd(struct imm_ctx *ctx, int fd);
void imm_breaking_remove(struct imm_ctx *ctx, struct imm_handle *h);

/* event.c */
struct imm_event *imm_event_new(int type, struct imm_handle *h);
void imm_event_post(struct imm_ctx *ctx, struct imm_event *ev);
void imm_event_deliver(struct imm_ctx *ctx, struct imm_event *ev);
/* from a thread that must not run the async callback: queue it for the
 * notifier */
void imm_event_deliver_later(struct imm_ctx *ctx, struct imm_event *ev);
void imm_event_deliver_late_all(struct imm_ctx *ctx);
void imm_event_purge_handle(struct imm_ctx *ctx, struct imm_handle *h);
void imm_event_purge_all(struct imm_ctx *ctx);
bool imm_event_stale(const struct imm_event *ev);

#endif /* IMM_PRIVATE_H */
