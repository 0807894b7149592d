// SPDX-License-Identifier: LGPL-2.1-or-later
/*
 * API-sequence fuzzer: each input is a program of public calls --
 * contexts, handles, seals, maps, events, callbacks that close or unref
 * what they are handed -- on real files, with a breaker process.  After
 * each input everything it made is destroyed and fz_check_clean() wants
 * every fd, thread and mapping back to where they were.
 *
 * Input: one byte per operation, then its arguments, read by next() (0
 * once the input runs out, so every prefix of an input is an input).
 * The harness itself follows the API's rules (it never uses what it gave
 * up, never writes through a mapping it may lose on another thread): a
 * crash or a leak is the library's.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <syslog.h>
#include <unistd.h>

#include <libimmutable/libimmutable.h>

#include "fuzz.h"

#define NCTX 3		/* context slots */
#define NINST 8		/* contexts created per input, at most */
#define NH 6		/* handle slots */
#define NMAP 6
#define NEV 3		/* events taken with imm_ctx_next_event() */
#define NRAW 3		/* the harness's own fds, for imm_handle_from_fd() */
#define NOPS 64		/* operations per input, at most */

/* ------------------------------------------------------------ input */

struct rd {
	const uint8_t *p;
	size_t n;
};

static uint8_t next(struct rd *r)
{
	if (!r->n)
		return 0;
	r->n--;
	return *r->p++;
}

static const uint64_t sizes[] = { 0, 4096, 12288, 65536, 200000, 1 << 20 };

/* Offsets and lengths: the edges that matter, and some that must fail. */
static uint64_t pick_u64(struct rd *r, uint64_t size)
{
	uint8_t b = next(r);

	switch (b & 15) {
	case 0: return 0;
	case 1: return 1;
	case 2: return 4095;
	case 3: return 4096;
	case 4: return 8192;
	case 5: return size;
	case 6: return size ? size - 1 : 0;
	case 7: return size + 4096;
	case 8: return UINT64_MAX;
	case 9: return UINT64_MAX - 4095;
	case 10: return 1ull << 40;
	case 11: return size / 2;
	default: return (uint64_t)(b >> 4) * 4096 + next(r) * 512u;
	}
}

/* ------------------------------------------------------------ state */

/* Per context made: what its event callback does.  Never freed while a
 * notifier may run it (fz_check_clean() waits for every notifier). */
enum cb_mode {
	CB_COUNT,		/* look at the event */
	CB_RELEASE,		/* imm_release() its handle */
	CB_CLOSE,		/* imm_handle_close() its handle (sync only) */
	CB_UNREF_CTX,		/* drop a reference to the context */
	CB_CLOSE_UNREF,		/* both (sync only) */
	CB_VERIFY,		/* imm_verify() its handle */
	CB_NR
};

struct inst {
	struct imm_ctx *ctx;
	atomic_int mode;
	atomic_bool armed;	/* holds a reference the callback may drop */
	atomic_bool async;	/* a callback that may release on its own */
	atomic_int calls;
};

struct cslot {
	struct inst *in;	/* NULL: free */
	int refs;		/* the harness's references */
};

struct hslot {
	struct imm_handle *h;	/* NULL: free */
	struct inst *in;
	int file;
};

struct mslot {
	struct imm_map *m;
	struct inst *in;
	int file;
	uint32_t flags;
};

static struct {
	struct inst inst[NINST];
	int ninst;
	struct cslot c[NCTX];
	struct hslot h[NH];
	struct mslot m[NMAP];
	struct imm_event *ev[NEV];
	int raw[NRAW];
	bool reset[FZ_FILES];	/* file already reset by this input */
	bool shrunk[FZ_FILES];	/* the breaker may have cut it under a map */
	uint64_t size[FZ_FILES];
	int raw_file[NRAW];
	bool maps_made;
	/* kept across inputs: proof that the inputs do real work */
	struct {
		unsigned long inputs, seals, maps, writes, events, forks;
		unsigned long block_maps;	/* sealed ones exported */
	} stats;
} S;

static void log_fn(void *data, int priority, const char *file, int line,
		   const char *fn, const char *format, va_list args)
{
	char msg[256];

	(void)data;
	(void)file;
	(void)line;
	/* Every line must say something: a format that reads garbage is
	 * what ASan is here for. */
	vsnprintf(msg, sizeof(msg), format, args);
	if (!fn || !*fn || !msg[0] || priority < LOG_EMERG || priority > LOG_DEBUG)
		fz_die("malformed log line from %s: priority %d, \"%s\"",
		       fn ? fn : "(null)", priority, msg);
}

static struct cslot *cslot_of(struct imm_ctx *ctx)
{
	for (int i = 0; i < NCTX; i++)
		if (S.c[i].in && S.c[i].in->ctx == ctx && S.c[i].refs > 0)
			return &S.c[i];
	return NULL;
}

static struct hslot *hslot_of(struct imm_handle *h)
{
	for (int i = 0; i < NH; i++)
		if (S.h[i].h == h)
			return &S.h[i];
	return NULL;
}

static void cslot_unref(struct cslot *c)
{
	imm_ctx_unref(c->in->ctx);
	if (--c->refs == 0)
		c->in = NULL;
}

static void look_at(struct imm_event *ev)
{
	struct imm_handle *h = imm_event_get_handle(ev);
	const char *name = imm_event_type_name(imm_event_get_type(ev));

	S.stats.events++;
	if (!h || !name)
		fz_die("event without a handle or a known type (%d)",
		       imm_event_get_type(ev));
	(void)imm_event_get_time_ns(ev);
	(void)imm_event_get_deadline_ns(ev);
	(void)imm_event_get_revoke_ns(ev);
	(void)imm_event_get_offset(ev);
	(void)imm_handle_get_state(h);
}

/* Runs in imm_ctx_dispatch(), on the harness's thread: may touch S. */
static void cb_sync(struct imm_event *ev, void *userdata)
{
	struct inst *in = userdata;
	struct imm_handle *h = imm_event_get_handle(ev);
	int mode = atomic_load(&in->mode);
	struct hslot *hs;
	struct cslot *c;

	atomic_fetch_add(&in->calls, 1);
	look_at(ev);
	if (mode == CB_RELEASE)
		imm_release(h);
	if (mode == CB_VERIFY)
		imm_verify(h);
	if ((mode == CB_CLOSE || mode == CB_CLOSE_UNREF) && (hs = hslot_of(h))) {
		imm_handle_close(h);
		hs->h = NULL;
	}
	if ((mode == CB_UNREF_CTX || mode == CB_CLOSE_UNREF) &&
	    (c = cslot_of(imm_handle_get_ctx(h))))
		cslot_unref(c);
}

/* Runs on the notifier thread: only the event's handle (which the event
 * keeps alive) and the instance's atomics. */
static void cb_async(struct imm_event *ev, void *userdata)
{
	struct inst *in = userdata;
	struct imm_handle *h = imm_event_get_handle(ev);

	atomic_fetch_add(&in->calls, 1);
	look_at(ev);
	switch (atomic_load(&in->mode)) {
	case CB_RELEASE:
		imm_release(h);
		break;
	case CB_VERIFY:
		imm_verify(h);
		break;
	case CB_UNREF_CTX:
		if (atomic_exchange(&in->armed, false))
			imm_ctx_unref(in->ctx);
		break;
	}
}

/* ------------------------------------------------------------ helpers */

static int use_file(struct rd *r)
{
	int f = next(r) % FZ_FILES;

	if (!S.reset[f]) {
		S.size[f] = sizes[next(r) % (sizeof(sizes) / sizeof(sizes[0]))];
		fz_file_reset(f, S.size[f]);
		S.reset[f] = true;
	}
	return f;
}

static struct cslot *live_ctx(struct rd *r)
{
	struct cslot *c = &S.c[next(r) % NCTX];

	return c->in ? c : NULL;
}

static struct hslot *free_hslot(void)
{
	for (int i = 0; i < NH; i++)
		if (!S.h[i].h)
			return &S.h[i];
	return NULL;
}

/* Where a handle's writes through a mapping are safe: sealed, mapped
 * writable, not cut by the breaker, no callback that may release it on
 * the notifier meanwhile. */
static bool may_write(const struct mslot *ms, uint32_t flags)
{
	int st = imm_handle_get_state(imm_map_get_handle(ms->m));

	return !(flags & IMM_MAP_READONLY) && !S.shrunk[ms->file] &&
	       !atomic_load(&ms->in->async) &&
	       (st == IMM_STATE_SEALED || st == IMM_STATE_BREAKING ||
		st == IMM_STATE_DEFEATED);
}

/* ------------------------------------------------------------ operations */

static void op_ctx_new(struct rd *r)
{
	struct cslot *c = &S.c[next(r) % NCTX];
	struct imm_ctx *ctx;
	struct inst *in;

	if (c->in || S.ninst == NINST)
		return;
	if (imm_ctx_new(&ctx) < 0)
		fz_die("imm_ctx_new failed on a kernel that has leases");
	in = &S.inst[S.ninst++];
	in->ctx = ctx;
	c->in = in;
	c->refs = 1;
	if (next(r) & 1) {
		imm_ctx_set_log_fn(ctx, log_fn, NULL);
		imm_ctx_set_log_priority(ctx, LOG_DEBUG);
	}
}

static void op_ctx_ref(struct rd *r)
{
	struct cslot *c = live_ctx(r);

	if (!c)
		return;
	if (next(r) & 1) {
		if (imm_ctx_ref(c->in->ctx) != c->in->ctx)
			fz_die("imm_ctx_ref returned another context");
		c->refs++;
	} else {
		cslot_unref(c);
	}
}

static void op_ctx_settings(struct rd *r)
{
	static const int sigs[] = { 0, SIGIO, SIGUSR1, 65, -1, 1000 };
	struct cslot *c = live_ctx(r);
	struct imm_ctx *ctx;
	uint8_t b = next(r), v = next(r);
	uint32_t margin;

	if (!c)
		return;
	ctx = c->in->ctx;
	switch (b % 8) {
	case 0:
		imm_ctx_set_signal(ctx, v & 0x80 ? sigs[v % 6] : SIGRTMIN + v % 8);
		(void)imm_ctx_get_signal(ctx);
		break;
	case 1:
		margin = v & 0x80 ? 3600u * 1000u + v : v * 100u;
		imm_ctx_set_revoke_margin(ctx, margin);
		(void)imm_ctx_get_revoke_margin(ctx);
		break;
	case 2:
		imm_ctx_set_log_fn(ctx, v & 1 ? log_fn : NULL, NULL);
		imm_ctx_set_log_priority(ctx, (int)(v >> 1) - 8);
		(void)imm_ctx_get_log_priority(ctx);
		break;
	case 3:
		imm_ctx_set_userdata(ctx, &S);
		if (imm_ctx_get_userdata(ctx) != &S)
			fz_die("imm_ctx_get_userdata lost the pointer");
		break;
	case 4:
		if (imm_backend_name(imm_ctx_get_backend(ctx)) == NULL)
			fz_die("the context's backend has no name");
		(void)imm_backend_name(v);
		break;
	case 5:
		if (imm_ctx_get_fd(ctx) < 0)
			fz_die("imm_ctx_get_fd failed");
		break;
	case 6:
		(void)imm_ctx_get_leases_enabled(ctx);
		(void)imm_ctx_get_lease_break_time(ctx);
		break;
	default:	/* NULL and bogus arguments */
		imm_ctx_unref(NULL);
		(void)imm_ctx_ref(NULL);
		(void)imm_ctx_new(NULL);
		(void)imm_ctx_dispatch(NULL);
		(void)imm_handle_close(NULL);
		(void)imm_release(NULL);
		(void)imm_verify(NULL);
		(void)imm_unmap(NULL);
		(void)imm_event_unref(NULL);
		(void)imm_handle_open(ctx, NULL, 0, NULL);
		(void)imm_state_name(v);
		(void)imm_event_type_name(v);
		(void)imm_granularity_name(v);
		break;
	}
}

static void op_set_event_fn(struct rd *r)
{
	struct cslot *c = live_ctx(r);
	uint8_t b = next(r);
	struct inst *in;
	bool async = b & 0x10;
	int ret;

	if (!c)
		return;
	in = c->in;
	if (b & 0x80) {	/* what must be refused, changing nothing */
		ret = imm_ctx_set_event_fn(in->ctx, NULL, NULL, IMM_EVENT_FN_ASYNC);
		if (ret != -EINVAL)
			fz_die("IMM_EVENT_FN_ASYNC without a callback: %d", ret);
		ret = imm_ctx_set_event_fn(in->ctx, cb_sync, in, 0x100u << (b & 7));
		if (ret != -EINVAL)
			fz_die("unknown event fn flags accepted: %d", ret);
		return;
	}
	if (!async && (b & 0x20)) {	/* no callback: events queue */
		atomic_store(&in->async, false);
		imm_ctx_set_event_fn(in->ctx, NULL, NULL, 0);
		return;
	}
	atomic_store(&in->mode, (int)((b & 0xf) % CB_NR));
	if (async && atomic_load(&in->mode) == CB_UNREF_CTX &&
	    !atomic_exchange(&in->armed, true))
		imm_ctx_ref(in->ctx);	/* the one the callback drops */
	/* Before the switch: a callback may run on the notifier at once. */
	if (async)
		atomic_store(&in->async, true);
	if (imm_ctx_set_event_fn(in->ctx, async ? cb_async : cb_sync, in,
				 async ? IMM_EVENT_FN_ASYNC : 0) < 0)
		fz_die("imm_ctx_set_event_fn refused a valid callback");
}

static void add_handle(struct hslot *hs, struct inst *in, int f,
		       struct imm_handle *h)
{
	if (!h || imm_handle_get_ctx(h) != in->ctx)
		fz_die("a new handle without its context");
	if (imm_handle_get_state(h) != IMM_STATE_OPEN)
		fz_die("a new handle is not OPEN");
	hs->h = h;
	hs->in = in;
	hs->file = f;
}

static void op_open(struct rd *r)
{
	struct cslot *c = live_ctx(r);
	struct hslot *hs = free_hslot();
	uint8_t b = next(r);
	struct imm_handle *h = NULL;
	const char *path;
	int f = -1, ret;

	if (!c || !hs)
		return;
	if (b & 0x80) {
		path = fz_odd(b);
	} else {
		f = use_file(r);
		path = fz_file(f);
	}
	ret = imm_handle_open(c->in->ctx, path,
			      b & 0x40 ? (uint32_t)next(r) << 1 : b & IMM_RDWR, &h);
	if (ret == 0 && f < 0 && path != fz_odd(3))
		fz_die("imm_handle_open accepted %s", path);
	if (ret == 0)
		add_handle(hs, c->in, f < 0 ? 2 : f, h);
	else if (h)
		fz_die("imm_handle_open failed (%d) but wrote a handle", ret);
}

static void op_from_fd(struct rd *r)
{
	struct cslot *c = live_ctx(r);
	struct hslot *hs = free_hslot();
	uint8_t b = next(r);
	int *raw = &S.raw[b % NRAW], kind = (b >> 2) & 7, fd, f = 0, ret;
	struct imm_handle *h = NULL;

	if (!c || !hs)
		return;
	switch (kind) {
	case 0: case 1: case 2:	/* a file of ours, read-only or read-write */
		f = use_file(r);
		if (*raw >= 0)
			close(*raw);
		*raw = open(fz_file(f), (b & 0x20 ? O_RDWR : O_RDONLY) |
				O_CLOEXEC | O_NONBLOCK);
		S.raw_file[b % NRAW] = f;
		fd = *raw;
		break;
	case 3:	/* O_PATH */
		if (*raw >= 0)
			close(*raw);
		*raw = open(fz_file(0), O_PATH | O_CLOEXEC);
		fd = *raw;
		break;
	case 4:
		fd = -1;
		break;
	case 5:
		fd = 1000;	/* not open */
		break;
	case 6:
		fd = imm_ctx_get_fd(c->in->ctx);	/* an eventfd */
		break;
	default:
		fd = *raw;	/* whatever is there, maybe closed */
		f = S.raw_file[b % NRAW];
		break;
	}
	ret = imm_handle_from_fd(c->in->ctx, fd, b & 0x40 ? IMM_RDWR : 0, &h);
	if (ret == 0 && (kind == 3 || kind == 4 || kind == 5 || kind == 6 ||
			 (b & 0x40)))
		fz_die("imm_handle_from_fd accepted fd %d (kind %d, flags %#x)",
		       fd, kind, b & 0x40 ? IMM_RDWR : 0);
	if (ret == 0)
		add_handle(hs, c->in, f, h);
	if (b & 0x80 && *raw >= 0) {	/* the caller keeps its fd, or not */
		close(*raw);
		*raw = -1;
	}
}

static struct hslot *live_handle(struct rd *r)
{
	struct hslot *hs = &S.h[next(r) % NH];

	return hs->h ? hs : NULL;
}

static void op_close(struct rd *r)
{
	struct hslot *hs = live_handle(r);

	if (!hs)
		return;
	imm_handle_close(hs->h);
	hs->h = NULL;
}

static void op_seal(struct rd *r)
{
	struct hslot *hs = live_handle(r);
	uint8_t b = next(r);
	struct imm_seal_opts opts = IMM_SEAL_OPTS_INIT;
	uint64_t off, len, size;
	uint32_t flags;
	int ret;

	if (!hs)
		return;
	size = S.size[hs->file];
	off = pick_u64(r, size);
	len = pick_u64(r, size);
	flags = b & 0x80 ? (uint32_t)next(r) : (b & 0x40 ? IMM_SEAL_EXCLUSIVE :
						 IMM_SEAL_SHARED) | (b & 0x0c);
	switch (b & 3) {
	case 0:
		ret = imm_seal(hs->h, off, len, flags, NULL);
		break;
	case 1:
		opts.revoke_margin_ms = next(r) * 10u;
		ret = imm_seal(hs->h, off, len, flags, &opts);
		break;
	case 2: {	/* an older or a newer caller: a newer one's struct
			 * really is that long, maybe with a field set */
		struct {
			struct imm_seal_opts o;
			uint8_t tail[16];
		} big = { .o = IMM_SEAL_OPTS_INIT };
		uint8_t v = next(r);

		big.o.sz = v % (sizeof(big) + 1);
		if (v & 0x80)
			big.tail[v % sizeof(big.tail)] = v;
		ret = imm_seal(hs->h, off, len, flags, &big.o);
		break;
	}
	default:
		opts.reserved = 1;
		ret = imm_seal(hs->h, off, len, flags, &opts);
		break;
	}
	if (ret == 0) {
		uint64_t so, sl;

		S.stats.seals++;
		uint32_t sf;

		if (imm_handle_get_seal(hs->h, &so, &sl, &sf) < 0)
			fz_die("sealed, but imm_handle_get_seal fails");
		(void)imm_handle_get_backend(hs->h);
	}
}

/* imm_block_map() with odd sizes, flags and room; what it fills must
 * agree with the handle. */
static void block_map(struct rd *r, struct hslot *hs)
{
	struct imm_block_extent ext[4];
	struct imm_block_dev d = { .sz = sizeof(d) };
	uint8_t b = next(r);
	uint64_t gen, after;
	int n;

	if (b & 1)
		d.sz = next(r) % (sizeof(d) + 1);
	/* an async callback may release or re-seal meanwhile: compare only
	 * when the generation stayed put around the call */
	gen = imm_handle_get_generation(hs->h);
	n = imm_block_map(hs->h, (b >> 1) & 3, &d, ext, b >> 4 & 3);
	after = imm_handle_get_generation(hs->h);
	if (n < 0 || gen != after ||
	    d.sz < offsetof(struct imm_block_dev, generation) + 8)
		return;
	S.stats.block_maps += (d.flags & IMM_BDEV_SEALED) != 0;
	if ((d.flags & IMM_BDEV_SEALED) && d.generation != gen)
		fz_die("a block map of generation %llu from a handle at %llu",
		       (unsigned long long)d.generation, (unsigned long long)gen);
	if (n > 0 && (b >> 4 & 3) && ext[0].length == 0)
		fz_die("an empty extent in a block map");
}

static void op_handle_misc(struct rd *r)
{
	struct hslot *hs = live_handle(r);
	uint8_t b = next(r);
	struct imm_layout_info li;
	struct imm_badblock bb[4];
	uint64_t so, sl;
	uint32_t sf;

	if (!hs)
		return;
	switch (b % 8) {
	case 0:
		imm_release(hs->h);
		break;
	case 1:
		imm_verify(hs->h);
		break;
	case 2:
		if (!imm_state_name(imm_handle_get_state(hs->h)))
			fz_die("a handle in an unnamed state");
		(void)imm_handle_get_seal(hs->h, &so, &sl, &sf);
		(void)imm_handle_get_seal(hs->h, NULL, NULL, NULL);
		break;
	case 3:
		memset(&li, 0, sizeof(li));
		li.sz = b & 0x80 ? next(r) : sizeof(li);
		if (li.sz > sizeof(li))
			li.sz = sizeof(li);
		imm_layout_query(hs->h, pick_u64(r, S.size[hs->file]),
				 pick_u64(r, S.size[hs->file]), &li);
		break;
	case 4:
		(void)imm_handle_get_fd(hs->h);
		(void)imm_handle_get_fs_name(hs->h);
		imm_handle_set_userdata(hs->h, hs);
		if (imm_handle_get_userdata(hs->h) != hs)
			fz_die("imm_handle_get_userdata lost the pointer");
		break;
	case 5:
		(void)imm_badblocks(hs->h, bb, b & 0x80 ? 0 : 4);
		break;
	case 6: {
		struct imm_topology topo = { .sz = b & 0x80 ? next(r) : sizeof(topo) };

		if (topo.sz > sizeof(topo))
			topo.sz = sizeof(topo);
		(void)imm_topology_query(hs->h, &topo);
		break;
	}
	default:
		(void)imm_handle_get_backend(hs->h);
		if (b & 0x80)
			block_map(r, hs);
		break;
	}
}

static void op_map(struct rd *r)
{
	struct hslot *hs = live_handle(r);
	uint8_t b = next(r);
	struct imm_map *m = NULL;
	struct mslot *ms = NULL;
	uint64_t off, len, size;
	uint32_t flags;
	int ret;

	for (int i = 0; i < NMAP && !ms; i++)
		if (!S.m[i].m)
			ms = &S.m[i];
	if (!hs || !ms)
		return;
	size = S.size[hs->file];
	off = pick_u64(r, size);
	len = pick_u64(r, size);
	flags = b & 0x80 ? (uint32_t)next(r) : (b & 0xf) | IMM_MAP_PAGE_OK;
	ret = imm_map(hs->h, off, len, flags, &m);
	if (ret < 0) {
		if (m)
			fz_die("imm_map failed (%d) but left a map", ret);
		return;
	}
	if (!m || !imm_map_get_addr(m) || imm_map_get_handle(m) != hs->h ||
	    imm_map_get_offset(m) != off || imm_map_get_length(m) != len)
		fz_die("imm_map: a map that is not what was asked for");
	ms->m = m;
	ms->in = hs->in;
	ms->file = hs->file;
	ms->flags = flags;
	S.maps_made = true;
	S.stats.maps++;
}

static void op_map_use(struct rd *r)
{
	struct mslot *ms = &S.m[next(r) % NMAP];
	uint8_t b = next(r);
	uint64_t len, off;
	imm_persist_fn persist;
	imm_flush_fn flush;
	imm_drain_fn drain;
	uint8_t *addr;

	if (!ms->m)
		return;
	addr = imm_map_get_addr(ms->m);
	len = imm_map_get_length(ms->m);
	if (!addr)	/* torn down with its seal: nothing to store into */
		return;
	if (b & 0x80) {	/* the library checks the range, not us */
		off = pick_u64(r, len);
		(void)imm_map_deep_flush(ms->m, addr + (off % (len + 8192)),
					 (size_t)pick_u64(r, len));
		return;
	}
	off = len ? next(r) * 64u % len : 0;
	len = len - off < 4096 ? len - off : 4096;
	persist = imm_map_get_persist_fn(ms->m);
	flush = imm_map_get_flush_fn(ms->m);
	drain = imm_map_get_drain_fn(ms->m);
	(void)imm_granularity_name(imm_map_get_granularity(ms->m));
	if (!may_write(ms, ms->flags) || !len)
		return;
	memset(addr + off, b, (size_t)len);
	S.stats.writes++;
	if (b & 1 && persist) {
		persist(addr + off, (size_t)len);
	} else if (flush && drain) {
		flush(addr + off, (size_t)len);
		drain();
	}
}

static void op_unmap(struct rd *r)
{
	struct mslot *ms = &S.m[next(r) % NMAP];
	void *addr;
	uint64_t len;

	if (!ms->m)
		return;
	addr = imm_map_get_addr(ms->m);
	len = imm_map_get_length(ms->m);
	if (imm_unmap(ms->m) < 0)
		fz_die("imm_unmap failed on a map without registrations");
	ms->m = NULL;
	fz_check_unmapped(addr, len);
}

static void op_dispatch(struct rd *r)
{
	struct cslot *c = live_ctx(r);
	uint8_t b = next(r);
	struct imm_event *ev;

	if (!c)
		return;
	/* A break the breaker just caused is on its way: wait for the
	 * event fd itself, bounded, never a blind sleep. */
	if (b & 1)
		(void)fz_poll(imm_ctx_get_fd(c->in->ctx), POLLIN, b & 2 ? 2 : 0);
	if (b & 4) {
		/* keep a reference to the context across the callbacks: they
		 * may drop the harness's */
		struct imm_ctx *ctx = c->in->ctx;

		imm_ctx_ref(ctx);
		(void)imm_ctx_dispatch(ctx);
		imm_ctx_unref(ctx);
		return;
	}
	if (b & 8) {
		/* The callback runs with the harness's slot possibly gone: the
		 * bare call, as an application that dropped its ref would. */
		(void)imm_ctx_dispatch(c->in->ctx);
		return;
	}
	for (int i = 0; i < NEV; i++) {
		if (S.ev[i])
			continue;
		if (imm_ctx_next_event(c->in->ctx, &ev) < 0)
			break;
		look_at(ev);
		if (b & 0x10)
			imm_event_unref(ev);
		else
			S.ev[i] = ev;
	}
}

static void op_event_drop(struct rd *r)
{
	struct imm_event **ev = &S.ev[next(r) % NEV];

	if (*ev)
		look_at(*ev);
	*ev = imm_event_unref(*ev);
}

static void op_breaker(struct rd *r)
{
	uint8_t b = next(r);
	int f = use_file(r);
	enum fz_break_op op = (enum fz_break_op)(b % FZ_BRK_NR);
	uint64_t off = pick_u64(r, S.size[f]), len = pick_u64(r, S.size[f]);

	if (op == FZ_BRK_FTRUNCATE)
		S.shrunk[f] = true;	/* a store past EOF is a SIGBUS */
	if (op == FZ_BRK_WRITE && off > (1u << 22))
		off %= 1u << 22;	/* stay inside the small filesystems */
	if (op == FZ_BRK_FTRUNCATE && off > (1u << 22))
		off %= 1u << 22;
	if (fz_breaker(op, f, off, len) == 0 &&
	    (op == FZ_BRK_OPEN_TRUNC || op == FZ_BRK_FTRUNCATE))
		S.size[f] = op == FZ_BRK_OPEN_TRUNC ? 0 : off;
}

/*
 * A child process that touches the parent's handles must get a clear
 * error, no crash, no stolen lease -- and its open breaks a seal.
 * clone(CLONE_VM | CLONE_VFORK), as posix_spawn() does: a new process
 * (its own pid, a copy of the fd table) without copying an ASan address
 * space, which cost ~6 ms of system time per fork and halved the rate.
 * The parent sleeps until the child exits; a hang is libFuzzer's timeout.
 */
struct child_arg {
	struct imm_handle *h;
	int file;
};

static int child_main(void *arg)
{
	const struct child_arg *a = arg;
	int bad = 0, fd;

	if (a->h) {
		bad |= imm_seal(a->h, 0, 4096, IMM_SEAL_SHARED, NULL) >= 0;
		bad |= imm_handle_get_state(a->h) >= 0;
		bad |= imm_verify(a->h) >= 0;
		bad |= imm_release(a->h) >= 0;
		bad |= imm_map(a->h, 0, 4096, IMM_MAP_PAGE_OK, &(struct imm_map *){ 0 }) >= 0;
	}
	fd = open(fz_file(a->file), O_RDWR | O_NONBLOCK | O_CLOEXEC);
	if (fd >= 0)
		close(fd);
	_exit(bad ? 3 : 0);
}

static void op_fork(struct rd *r)
{
	static void *stack;
	const size_t stack_size = 256 * 1024;
	struct hslot *hs = live_handle(r);
	struct child_arg a = { .h = hs ? hs->h : NULL, .file = use_file(r) };
	int status = 0;
	pid_t pid;

	if (!stack) {
		stack = mmap(NULL, stack_size, PROT_READ | PROT_WRITE,
			     MAP_PRIVATE | MAP_ANONYMOUS | MAP_STACK, -1, 0);
		if (stack == MAP_FAILED)
			fz_die("mmap a child stack: %m");
	}
	S.stats.forks++;
	pid = clone(child_main, (char *)stack + stack_size,
		    CLONE_VM | CLONE_VFORK | SIGCHLD, &a);
	if (pid < 0)
		fz_die("clone: %m");
	if (waitpid(pid, &status, 0) != pid)
		fz_die("waitpid: %m");
	if (!WIFEXITED(status) || WEXITSTATUS(status))
		fz_die("in a child process, %s", WIFEXITED(status) ?
		       "a call on a parent's handle succeeded" :
		       "the library crashed");
}

typedef void (*op_fn)(struct rd *r);
static const op_fn ops[] = {
	op_ctx_new, op_ctx_ref, op_ctx_settings, op_set_event_fn,
	op_open, op_from_fd, op_close, op_seal, op_seal, op_handle_misc,
	op_map, op_map_use, op_unmap, op_dispatch, op_dispatch, op_event_drop,
	op_breaker, op_breaker, op_open, op_seal,
};
#define NOPCODES (sizeof(ops) / sizeof(ops[0]))
#define OP_FORK 0xff	/* 0xff 0xff, once per input: a fork costs 1 ms */

/* ------------------------------------------------------------ teardown */

/* Everything the input made goes; order chosen by the input. */
static void teardown(bool maps_first)
{
	for (int i = 0; i < NEV; i++)
		S.ev[i] = imm_event_unref(S.ev[i]);
	for (int pass = 0; pass < 2; pass++) {
		if (pass == !maps_first) {
			for (int i = 0; i < NMAP; i++) {
				if (!S.m[i].m)
					continue;
				if (imm_unmap(S.m[i].m) < 0)
					fz_die("imm_unmap failed at the end");
				S.m[i].m = NULL;
			}
		} else {
			for (int i = 0; i < NH; i++) {
				if (S.h[i].h)
					imm_handle_close(S.h[i].h);
				S.h[i].h = NULL;
			}
		}
	}
	for (int i = 0; i < NCTX; i++)
		while (S.c[i].in)
			cslot_unref(&S.c[i]);
	for (int i = 0; i < S.ninst; i++)
		if (atomic_exchange(&S.inst[i].armed, false))
			imm_ctx_unref(S.inst[i].ctx);
	for (int i = 0; i < NRAW; i++) {
		if (S.raw[i] >= 0)
			close(S.raw[i]);
		S.raw[i] = -1;
	}
	fz_breaker(FZ_BRK_RESET, 0, 0, 0);
}

static void reset_state(void)
{
	__typeof__(S.stats) keep = S.stats;

	memset(&S, 0, sizeof(S));
	S.stats = keep;
	for (int i = 0; i < NRAW; i++)
		S.raw[i] = -1;
}

static void print_stats(void)
{
	fprintf(stderr, "fuzz: %lu inputs: %lu seals, %lu maps, %lu writes "
			"through maps, %lu events, %lu forks, %lu block maps\n",
		S.stats.inputs, S.stats.seals, S.stats.maps, S.stats.writes,
		S.stats.events, S.stats.forks, S.stats.block_maps);
}

static void run(const uint8_t *data, size_t size)
{
	struct rd r = { data, size };
	bool maps_first = next(&r) & 1, forked = false;

	S.stats.inputs++;
	for (int n = 0; r.n && n < NOPS; n++) {
		uint8_t op = next(&r);

		if (op == OP_FORK && r.n && *r.p == OP_FORK && !forked) {
			next(&r);
			op_fork(&r);
			forked = true;
		} else {
			ops[op % NOPCODES](&r);
		}
	}
	teardown(maps_first);
	/* Only now can no notifier run a callback on S.inst. */
	fz_check_clean(S.maps_made);
	reset_state();
}

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	/* seal, map, break, dispatch, close: what libraries open once */
	static const uint8_t warmup[] = {
		0,			/* close handles before unmapping */
		0, 0, 1,		/* ctx_new in slot 0, with a log hook */
		4, 0, 1, 0, 2,		/* open file 0 rw, 12288 bytes */
		7, 0, 0x40, 0, 5,	/* seal it exclusive, [0, size) */
		10, 0, 0, 0, 5,		/* map [0, size) */
		11, 0, 1, 0,		/* store, persist */
		9, 0, 3, 0, 5,		/* layout query */
		9, 0, 5,		/* badblocks */
		9, 0, 6,		/* topology */
		16, 1, 0, 0, 0,		/* the breaker opens it rw: a break */
		13, 0, 3,		/* wait for it, next_event */
		6, 0,			/* close */
	};

	(void)argc;
	(void)argv;
	fz_env_init();
	memset(&S, 0, sizeof(S));
	for (int i = 0; i < NRAW; i++)
		S.raw[i] = -1;
	fz_env_baseline();
	run(warmup, sizeof(warmup));
	/* The harness must reach what it fuzzes, or every input passes. */
	if (!S.stats.seals || !S.stats.maps || !S.stats.writes || !S.stats.events)
		fz_die("warm-up: a seal, a map, a store and a break event were "
		       "expected; got %lu, %lu, %lu, %lu", S.stats.seals,
		       S.stats.maps, S.stats.writes, S.stats.events);
	atexit(print_stats);
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static bool counted;

	/* libFuzzer starts its own threads (the RSS watcher) after
	 * LLVMFuzzerInitialize(): count before the first input instead. */
	if (!counted) {
		fz_env_baseline();
		counted = true;
	}
	run(data, size);
	return 0;
}
