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
	_IMM_BACKEND_FORCE_INT = 0x7fffffff
};
int imm_ctx_get_backend(const struct imm_ctx *ctx);
const char *imm_backend_name(int backend);
int imm_ctx_get_leases_enabled(struct imm_ctx *ctx);
int imm_ctx_get_lease_break_time(struct imm_ctx *ctx);

/* ------------------------------------------------------------------ */
/* Events                                                              */

enum imm_event_type {
	IMM_EVENT_RECALL = 1,		/* someone wants the blocks: release */
	IMM_EVENT_VERIFY_MISMATCH = 2,	/* the extent map changed under the seal */
	IMM_EVENT_REVOKED = 3,		/* the library dropped the seal itself */
	_IMM_EVENT_FORCE_INT = 0x7fffffff
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
	_IMM_STATE_FORCE_INT = 0x7fffffff
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

#define IMM_SEAL_SHARED 0x1u	/* read-only users; needs an IMM_RDONLY handle */
#define IMM_SEAL_EXCLUSIVE 0x2u	/* the holder writes; only open of the file */
#define IMM_SEAL_NO_PREPARE 0x4u /* fail with -EUCLEAN instead of preparing */

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

#ifdef __cplusplus
}
#endif

#endif /* LIBIMMUTABLE_H */
