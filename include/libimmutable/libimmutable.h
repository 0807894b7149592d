/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * libimmutable - temporary, process-held seals of a file's extent map,
 * breakable with a recall notification.
 *
 * Everything here is documented in libimmutable(7) and one man3 page per
 * function.  Conventions, once:
 *  - every fallible call returns 0 (or a count) on success and a negative
 *    errno on failure, with a log line through the context's log hook;
 *  - output parameters are written only on success;
 *  - objects are opaque; option structs start with a size member and only
 *    ever grow at the end.
 */
#ifndef LIBIMMUTABLE_H
#define LIBIMMUTABLE_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

struct imm_ctx;
struct imm_handle;
struct imm_event;

/* ------------------------------------------------------------------ */
/* Context                                                             */

int imm_ctx_new(struct imm_ctx **ret_ctx);
struct imm_ctx *imm_ctx_ref(struct imm_ctx *ctx);
struct imm_ctx *imm_ctx_unref(struct imm_ctx *ctx);

void imm_ctx_set_userdata(struct imm_ctx *ctx, void *userdata);
void *imm_ctx_get_userdata(const struct imm_ctx *ctx);

/* priority: LOG_ERR .. LOG_DEBUG from <syslog.h> */
typedef void (*imm_log_fn)(void *data, int priority, const char *file,
			   int line, const char *fn, const char *format,
			   va_list args);
void imm_ctx_set_log_fn(struct imm_ctx *ctx, imm_log_fn log_fn, void *data);
int imm_ctx_get_log_priority(const struct imm_ctx *ctx);
void imm_ctx_set_log_priority(struct imm_ctx *ctx, int priority);

/* Notifier settings; the signal can only change before the first seal. */
int imm_ctx_set_signal(struct imm_ctx *ctx, int signo);
int imm_ctx_get_signal(const struct imm_ctx *ctx);
int imm_ctx_set_revoke_margin(struct imm_ctx *ctx, uint32_t margin_ms);
uint32_t imm_ctx_get_revoke_margin(const struct imm_ctx *ctx);

/* Capability probe */
enum imm_backend {
	IMM_BACKEND_NONE = 0,
	IMM_BACKEND_LEASE = 1,	/* stock kernels: F_SETLEASE emulation */
	IMM_BACKEND_LAYOUT = 2,	/* kernels with the companion patch */
	IMM_BACKEND_FORCE_INT = 0x7fffffff	/* keeps the enum int-sized */
};
int imm_ctx_get_backend(const struct imm_ctx *ctx);
/* the backend that seals this handle's file (since 1.2) */
int imm_handle_get_backend(struct imm_handle *h);
const char *imm_backend_name(int backend);
int imm_ctx_get_leases_enabled(struct imm_ctx *ctx);
int imm_ctx_get_lease_break_time(struct imm_ctx *ctx);

/* ------------------------------------------------------------------ */
/* Events                                                              */

enum imm_event_type {
	IMM_EVENT_RECALL = 1,		/* someone wants the blocks: release */
	IMM_EVENT_VERIFY_MISMATCH = 2,	/* the extent map changed under the seal */
	IMM_EVENT_REVOKED = 3,		/* the library dropped the seal itself */
	IMM_EVENT_FORCE_INT = 0x7fffffff	/* keeps the enum int-sized */
};

/* Run on the library's notifier thread, as soon as the kernel reports. */
#define IMM_EVENT_FN_ASYNC 0x1u

typedef void (*imm_event_fn)(struct imm_event *ev, void *userdata);
int imm_ctx_set_event_fn(struct imm_ctx *ctx, imm_event_fn fn, void *userdata,
			 uint32_t flags);
int imm_ctx_get_fd(struct imm_ctx *ctx);
int imm_ctx_dispatch(struct imm_ctx *ctx);
int imm_ctx_next_event(struct imm_ctx *ctx, struct imm_event **ret_event);

struct imm_event *imm_event_unref(struct imm_event *ev);
struct imm_event *imm_event_ref(struct imm_event *ev);	/* LIBIMMUTABLE_1.3 */
int imm_event_get_type(const struct imm_event *ev);
const char *imm_event_type_name(int type);
struct imm_handle *imm_event_get_handle(const struct imm_event *ev);
uint64_t imm_event_get_time_ns(const struct imm_event *ev);
uint64_t imm_event_get_deadline_ns(const struct imm_event *ev);
uint64_t imm_event_get_revoke_ns(const struct imm_event *ev);
uint64_t imm_event_get_offset(const struct imm_event *ev);

/* ------------------------------------------------------------------ */
/* Handles                                                             */

#define IMM_RDONLY 0x0u
#define IMM_RDWR 0x1u

int imm_handle_open(struct imm_ctx *ctx, const char *path, uint32_t flags,
		    struct imm_handle **ret_handle);
int imm_handle_from_fd(struct imm_ctx *ctx, int fd, uint32_t flags,
		       struct imm_handle **ret_handle);
int imm_handle_close(struct imm_handle *h);

struct imm_ctx *imm_handle_get_ctx(const struct imm_handle *h);
int imm_handle_get_fd(const struct imm_handle *h);
void imm_handle_set_userdata(struct imm_handle *h, void *userdata);
void *imm_handle_get_userdata(const struct imm_handle *h);

enum imm_handle_state {
	IMM_STATE_OPEN = 1,	/* no seal */
	IMM_STATE_SEALED = 2,
	IMM_STATE_BREAKING = 3,	/* recalled: release before the deadline */
	IMM_STATE_REVOKED = 4,	/* the library dropped the seal */
	IMM_STATE_DEFEATED = 5,	/* sealed, but the extent map changed */
	IMM_STATE_CLOSED = 6,
	IMM_STATE_FORCE_INT = 0x7fffffff	/* keeps the enum int-sized */
};
int imm_handle_get_state(const struct imm_handle *h);
const char *imm_state_name(int state);

/* ------------------------------------------------------------------ */
/* Layout                                                              */

#define IMM_LAYOUT_DAX 0x1u	/* statx reports STATX_ATTR_DAX */
#define IMM_LAYOUT_FINAL 0x2u	/* no holes, unwritten, shared, delalloc... */
#define IMM_LAYOUT_ALLOC_ONLY 0x4u /* no FIEMAP: allocation map only (tmpfs) */

struct imm_layout_info {
	size_t sz;		/* caller: sizeof(struct imm_layout_info) */
	uint64_t file_size;
	uint64_t fs_magic;	/* statfs f_type */
	uint32_t flags;		/* IMM_LAYOUT_* */
	uint32_t block_size;
	uint64_t extents;	/* mapped extents in the range, merged */
	uint64_t holes;
	uint64_t hole_bytes;
	uint64_t unwritten;
	uint64_t unwritten_bytes;
	uint64_t shared;
	uint64_t shared_bytes;
	uint64_t delalloc;
	uint64_t delalloc_bytes;
	uint64_t inline_data;
	uint64_t inline_bytes;
	uint64_t other;		/* unknown, encoded, tail-packed */
	uint64_t other_bytes;
};

int imm_layout_query(struct imm_handle *h, uint64_t offset, uint64_t length,
		     struct imm_layout_info *info);
const char *imm_handle_get_fs_name(const struct imm_handle *h);

/* ------------------------------------------------------------------ */
/* Seals                                                               */

/* What the two kinds mean depends on the backend (imm_seal(3)):
 * lease: SHARED = read lease, IMM_RDONLY handle; EXCLUSIVE = write lease,
 * the only open of the file.  layout: SHARED = breakable by layout changes;
 * EXCLUSIVE = layout changes fail with ETXTBSY, IMM_RDWR handle. */
#define IMM_SEAL_SHARED 0x1u
#define IMM_SEAL_EXCLUSIVE 0x2u
#define IMM_SEAL_NO_PREPARE 0x4u /* fail with -EUCLEAN instead of preparing */
#define IMM_SEAL_NO_BADBLOCKS 0x8u /* fail with -EIO if known media errors
				     * lie in the range (since 1.1) */

struct imm_seal_opts {
	size_t sz;		/* sizeof(struct imm_seal_opts) */
	uint32_t revoke_margin_ms; /* 0: the context's margin */
	uint32_t reserved;	/* must be 0 */
};
#define IMM_SEAL_OPTS_INIT { sizeof(struct imm_seal_opts), 0, 0 }

int imm_seal(struct imm_handle *h, uint64_t offset, uint64_t length,
	     uint32_t flags, const struct imm_seal_opts *opts);
int imm_release(struct imm_handle *h);
int imm_verify(struct imm_handle *h);
int imm_handle_get_seal(const struct imm_handle *h, uint64_t *ret_offset,
			uint64_t *ret_length, uint32_t *ret_flags);

/* ------------------------------------------------------------------ */
/* DAX-safe mappings of a sealed range (since 1.1)                     */

struct imm_map;

/* The smallest store that is persistent once the map's persist function
 * has run on it. */
enum imm_granularity {
	IMM_GRANULARITY_NONE = 0,	/* no such mapping can be made */
	IMM_GRANULARITY_BYTE = 1,	/* stores persist from the CPU cache */
	IMM_GRANULARITY_CACHE_LINE = 2,	/* persist = cache flush + fence */
	IMM_GRANULARITY_PAGE = 3	/* persist = msync of whole pages */
};

#define IMM_MAP_SYNC 0x1u	/* require synchronous faults (MAP_SYNC): byte
				 * or cache-line granularity; the default */
#define IMM_MAP_PAGE_OK 0x2u	/* accept page granularity (non-DAX files,
				 * virtio-pmem): persist is msync */
#define IMM_MAP_READONLY 0x4u	/* PROT_READ only */
#define IMM_MAP_POPULATE 0x8u	/* fault every page in before returning */

typedef void (*imm_persist_fn)(const void *ptr, size_t size);
typedef void (*imm_flush_fn)(const void *ptr, size_t size);
typedef void (*imm_drain_fn)(void);

int imm_map(struct imm_handle *h, uint64_t offset, uint64_t length,
	    uint32_t flags, struct imm_map **ret_map);
int imm_unmap(struct imm_map *map);
void *imm_map_get_addr(const struct imm_map *map);
uint64_t imm_map_get_offset(const struct imm_map *map);
uint64_t imm_map_get_length(const struct imm_map *map);
struct imm_handle *imm_map_get_handle(const struct imm_map *map);
enum imm_granularity imm_map_get_granularity(const struct imm_map *map);
const char *imm_granularity_name(enum imm_granularity g);
imm_persist_fn imm_map_get_persist_fn(const struct imm_map *map);
imm_flush_fn imm_map_get_flush_fn(const struct imm_map *map);
imm_drain_fn imm_map_get_drain_fn(const struct imm_map *map);
int imm_map_deep_flush(struct imm_map *map, void *ptr, size_t size);

/* ------------------------------------------------------------------ */
/* Persistent-memory topology and media errors (since 1.1)             */

#define IMM_TOPO_DAX 0x1u	/* the file is accessed directly (statx) */
#define IMM_TOPO_PMEM 0x2u	/* on an nvdimm namespace: the fields below */
#define IMM_TOPO_PARTITION 0x4u	/* the filesystem sits on a partition */

struct imm_topology {
	size_t sz;		/* caller: sizeof(struct imm_topology) */
	uint32_t flags;		/* IMM_TOPO_* */
	uint32_t reserved;
	char blockdev[32];	/* the filesystem's block device, "pmem0p1" */
	char disk[32];		/* its whole disk, "pmem0" */
	uint64_t part_start;	/* bytes from the disk's start to the fs */
	char bus[64];		/* nvdimm bus provider, "ACPI.NFIT" */
	char region[32];	/* "region0" */
	char persistence_domain[24]; /* cpu_cache, memory_controller, none,
				      * unknown */
	char ns_name[32];	/* "namespace0.0" */
	char ns_mode[16];	/* fsdax, devdax, sector, raw */
	uint64_t ns_size;	/* bytes */
	uint64_t ns_align;	/* bytes; fsdax: the page-map alignment */
	uint64_t data_offset;	/* bytes from the region's start to the disk */
	/* what imm_map() of this file would get */
	enum imm_granularity gran_sync;		/* IMM_MAP_SYNC */
	enum imm_granularity gran_page_ok;	/* IMM_MAP_PAGE_OK */
};

/* One known media error inside the file's extents. */
struct imm_badblock {
	uint64_t offset;	/* file offset of the first bad byte */
	uint64_t length;	/* bad bytes from there, inside one extent */
	uint64_t sector;	/* 512-byte sector on the disk (blockdev) */
};

int imm_topology_query(struct imm_handle *h, struct imm_topology *topo);
int imm_badblocks(struct imm_handle *h, struct imm_badblock *bb, size_t max);

/* ------------------------------------------------------------------ */
/* The physical block map of a sealed range (since 1.3)                */

/* imm_block_map() flags */
#define IMM_BLOCK_UNSEALED 0x1u	/* a handle without a live seal: the map as
				 * it is now, for looking only (generation 0) */

/* struct imm_block_dev flags */
#define IMM_BDEV_SEALED 0x1u	/* fixed until the seal of generation ends */
#define IMM_BDEV_PARTITION 0x2u	/* path is a partition of disk */
#define IMM_BDEV_REALTIME 0x4u	/* an XFS realtime file: its rt device */
#define IMM_BDEV_DAX 0x8u	/* the file is DAX: no page cache */

/* The device that holds the extents, and the range they describe. */
struct imm_block_dev {
	size_t sz;		/* caller: sizeof(struct imm_block_dev) */
	uint32_t flags;		/* IMM_BDEV_* */
	uint32_t logical_block_size; /* bytes: O_DIRECT's unit on path */
	uint64_t dev;		/* device number of path: major(), minor() */
	char path[64];		/* a node that opens it: "/dev/nvme0n1p2" */
	char disk[64];		/* its whole disk: "/dev/nvme0n1" */
	uint64_t part_start;	/* bytes from disk's start to path's */
	uint64_t generation;	/* the seal's; 0 with IMM_BLOCK_UNSEALED */
	uint64_t offset;	/* the file range described: the sealed */
	uint64_t length;	/* range, out to filesystem blocks */
};

struct imm_block_extent {
	uint64_t offset;	/* in the file, bytes */
	uint64_t dev_offset;	/* from the start of path, bytes */
	uint64_t length;	/* bytes */
	uint32_t flags;		/* FIEMAP_EXTENT_*, as the filesystem said */
	uint32_t reserved;
};

int imm_block_map(struct imm_handle *h, uint32_t flags,
		  struct imm_block_dev *dev, struct imm_block_extent *ext,
		  size_t max);
uint64_t imm_handle_get_generation(const struct imm_handle *h);
uint64_t imm_event_get_generation(const struct imm_event *ev);

#ifdef __cplusplus
}
#endif

#endif /* LIBIMMUTABLE_H */
