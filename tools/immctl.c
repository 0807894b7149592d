// SPDX-License-Identifier: LGPL-2.1-or-later
/*
 * immctl: look at a file's block map and seals, and hold a seal from the
 * shell.  Built only on the public API.  Exit: 0 ok, 1 failure, 2 usage.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/signalfd.h>
#include <sys/stat.h>
#include <sys/utsname.h>
#include <syslog.h>
#include <time.h>
#include <unistd.h>

#include <libimmutable/libimmutable.h>

#include "fsinfo.h"
#include "immctl.h"
#include "json.h"
#include "proclocks.h"
#include "rdmaprobe.h"

#define MAX_HOLDERS 16

const char *prog_target;
/*
 * One line per failure, "immctl: FILE: REASON", with the library's
 * explanation as the reason: an error the library logs on the main thread
 * is held until fail() reports the failure it explains.  A held line that
 * no failure claims is printed before the next one, and at exit.
 */
static _Thread_local bool main_thread;
static _Thread_local char held[1024];
/* While status --force waits for a holder, the library's "leased, retry"
 * lines are expected: hold only the latest, print none of them. */
static bool log_deferred;

static void print_reason(const char *prefix, const char *msg)
{
	/* the library often names the file itself: do not say it twice */
	bool named = !prog_target || !strncmp(msg, prog_target, strlen(prog_target));

	fprintf(stderr, "immctl: %s%s%s%s\n", named ? "" : prog_target,
		named ? "" : ": ", prefix, msg);
}

static void flush_held(void)
{
	if (held[0])
		print_reason("", held);
	held[0] = '\0';
}

/* "imm_seal: range ..." is "range ...": immctl's user calls no imm_seal() */
static const char *without_call(const char *msg)
{
	size_t n = strspn(msg, "abcdefghijklmnopqrstuvwxyz_");

	return !strncmp(msg, "imm_", 4) && !strncmp(msg + n, ": ", 2) ?
		       msg + n + 2 : msg;
}

static void log_to_stderr(void *data, int priority, const char *file, int line,
			  const char *fn, const char *format, va_list args)
{
	char msg[1024];

	(void)data;
	(void)file;
	(void)line;
	(void)fn;
	vsnprintf(msg, sizeof(msg), format, args);
	if (main_thread && (priority <= LOG_ERR || log_deferred)) {
		if (!log_deferred)
			flush_held();
		snprintf(held, sizeof(held), "%s", without_call(msg));
		return;
	}
	print_reason(priority > LOG_ERR ? (priority >= LOG_DEBUG ? "(debug) " :
				   "(info) ") : "", msg);
}

int fail(const char *what, int r)
{
	if (held[0]) {
		flush_held();
		return EXIT_FAILURE;
	}
	fprintf(stderr, "immctl: %s%s%s: %s\n", prog_target ? prog_target : "",
		prog_target ? ": " : "", what, strerror(-r));
	return EXIT_FAILURE;
}

int new_ctx(struct imm_ctx **ctx)
{
	int r = imm_ctx_new(ctx);

	if (r < 0)
		return fail("cannot create a libimmutable context", r);
	/* The library's explanations are this tool's error messages. */
	if (!getenv("LIBIMMUTABLE_LOG"))
		imm_ctx_set_log_fn(*ctx, log_to_stderr, NULL);
	return 0;
}

uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

int parse_size(const char *s, uint64_t *ret)
{
	unsigned long long v;
	char *end;
	int shift = 0;

	if (!*s || *s == '-')
		return -EINVAL;
	errno = 0;
	v = strtoull(s, &end, 0);
	if (errno || end == s)
		return -EINVAL;
	switch (*end) {
	case 'k': case 'K': shift = 10; end++; break;
	case 'm': case 'M': shift = 20; end++; break;
	case 'g': case 'G': shift = 30; end++; break;
	case 't': case 'T': shift = 40; end++; break;
	}
	if (*end || (shift && v > (UINT64_MAX >> shift)))
		return -ERANGE;
	*ret = (uint64_t)v << shift;
	return 0;
}

/* ------------------------------------------------------------ probe */

static const char probe_usage[] =
	"usage: immctl probe [--json] [--page-cache-dir DIR] [--tmpfs-dir DIR]\n"
	"                    [--dax-dir DIR]\n";

/* 0: go on; else the exit status (-1: --help, exit 0). */
static int parse_probe_args(int argc, char **argv, bool *json,
			    struct rdma_probe_dirs *dirs)
{
	static const struct option opts[] = {
		{ "json", no_argument, NULL, 'j' },
		{ "page-cache-dir", required_argument, NULL, 'p' },
		{ "tmpfs-dir", required_argument, NULL, 't' },
		{ "dax-dir", required_argument, NULL, 'd' },
		{ "help", no_argument, NULL, 'h' },
		{ 0 }
	};
	int c;

	while ((c = getopt_long(argc, argv, "jh", opts, NULL)) != -1) {
		switch (c) {
		case 'j': *json = true; break;
		case 'p': dirs->page_cache = optarg; break;
		case 't': dirs->tmpfs = optarg; break;
		case 'd': dirs->dax = optarg; break;
		default:
			fputs(probe_usage, stderr);
			return c == 'h' ? -1 : EXIT_USAGE;
		}
	}
	if (optind != argc) {
		fputs(probe_usage, stderr);
		return EXIT_USAGE;
	}
	return 0;
}

/* The companion patch's interface version, for the layout backend; -1
 * where there is none. */
static int layout_seal_version(struct imm_ctx *ctx)
{
	FILE *f;
	int v = -1;

	if (imm_ctx_get_backend(ctx) != IMM_BACKEND_LAYOUT)
		return -1;
	f = fopen("/proc/sys/fs/layout-seal-version", "re");
	if (!f)
		return -1;
	if (fscanf(f, "%d", &v) != 1)
		v = -1;
	fclose(f);
	return v;
}

static int cmd_probe(int argc, char **argv)
{
	struct rdma_probe_dirs dirs = { 0 };
	struct imm_ctx *ctx;
	struct utsname u;
	bool json = false;
	int r, le, lbt, lsv;

	r = parse_probe_args(argc, argv, &json, &dirs);
	if (r)
		return r < 0 ? 0 : r;
	if (new_ctx(&ctx))
		return EXIT_FAILURE;
	uname(&u);
	le = imm_ctx_get_leases_enabled(ctx);
	lbt = imm_ctx_get_lease_break_time(ctx);
	lsv = layout_seal_version(ctx);
	if (json) {
		printf("{\"kernel\":");
		json_string(stdout, u.release);
		printf(",\"backend\":\"%s\",\"layout_seal_version\":",
		       imm_backend_name(imm_ctx_get_backend(ctx)));
		if (lsv < 0)
			printf("null");
		else
			printf("%d", lsv);
		printf(",\"leases_enable\":%d,"
		       "\"lease_break_time\":%d,\"signal\":%d,\"rdma\":",
		       le, lbt, imm_ctx_get_signal(ctx));
	} else {
		printf("kernel:           %s\n", u.release);
		printf("seal backend:     %s\n",
		       imm_backend_name(imm_ctx_get_backend(ctx)));
		if (lsv >= 0)
			printf("layout seals:     version %d "
			       "(/proc/sys/fs/layout-seal-version)\n", lsv);
		printf("leases-enable:    %d%s\n", le,
		       le == 0 ? "  (seals cannot be taken: sysctl fs.leases-enable=1)" : "");
		printf("lease-break-time: %d s\n", lbt);
		printf("notifier signal:  %d (SIGRTMAX-%d)\n", imm_ctx_get_signal(ctx),
		       SIGRTMAX - imm_ctx_get_signal(ctx));
	}
	fflush(stdout);
	rdma_probe(&dirs, json);
	if (json)
		printf("}\n");
	imm_ctx_unref(ctx);
	return 0;
}

/* ------------------------------------------------------------ status */

static size_t lease_holders(const struct stat *st, struct lease_holder *lh)
{
	FILE *f = fopen("/proc/locks", "re");
	size_t n;

	if (!f)
		return 0;
	n = proclocks_leases(f, st->st_dev, st->st_ino, lh, MAX_HOLDERS);
	fclose(f);
	return n < MAX_HOLDERS ? n : MAX_HOLDERS;
}

static void comm_of(pid_t pid, char *out, size_t len)
{
	char path[64];
	FILE *f;

	snprintf(out, len, "?");
	snprintf(path, sizeof(path), "/proc/%d/comm", (int)pid);
	f = fopen(path, "re");
	if (!f)
		return;
	if (fgets(out, (int)len, f))
		out[strcspn(out, "\n")] = '\0';
	fclose(f);
}

struct status {
	const char *path;
	struct stat st;
	char fstype[64];
	bool dax;
	struct lease_holder holders[MAX_HOLDERS];
	size_t nholders;
	bool have_map;
	const char *no_map_why;
	struct imm_layout_info li;
	struct imm_topology topo;
	struct imm_badblock bb[16];
	int nbb;		/* found, or -errno */
};

static void print_kind_json(const char *name, uint64_t n, uint64_t bytes)
{
	printf(",\"%s\":{\"count\":%" PRIu64 ",\"bytes\":%" PRIu64 "}", name, n,
	       bytes);
}

static void print_topology_json(const struct status *s)
{
	const struct imm_topology *t = &s->topo;

	printf(",\"device\":");
	if (t->blockdev[0]) {
		printf("{\"blockdev\":");
		json_string(stdout, t->blockdev);
		printf(",\"disk\":");
		json_string(stdout, t->disk);
		if (t->flags & IMM_TOPO_PARTITION)
			printf(",\"partition_start\":%" PRIu64 "}", t->part_start);
		else
			printf(",\"partition_start\":null}");
	} else {
		printf("null");
	}
	printf(",\"pmem\":");
	if (t->flags & IMM_TOPO_PMEM) {
		printf("{\"bus\":");
		json_string(stdout, t->bus);
		printf(",\"region\":");
		json_string(stdout, t->region);
		printf(",\"persistence_domain\":");
		json_string(stdout, t->persistence_domain);
		printf(",\"namespace\":");
		json_string(stdout, t->ns_name);
		printf(",\"mode\":");
		json_string(stdout, t->ns_mode);
		printf(",\"size\":%" PRIu64 ",\"align\":%" PRIu64
		       ",\"data_offset\":%" PRIu64 "}", t->ns_size, t->ns_align,
		       t->data_offset);
	} else {
		printf("null");
	}
	printf(",\"granularity\":{\"sync\":\"%s\",\"page_ok\":\"%s\"}",
	       imm_granularity_name(t->gran_sync),
	       imm_granularity_name(t->gran_page_ok));
	if (s->nbb < 0) {
		printf(",\"badblocks\":null,\"badblocks_error\":");
		json_string(stdout, strerror(-s->nbb));
		return;
	}
	printf(",\"badblocks_total\":%d,\"badblocks\":[", s->nbb);
	for (int i = 0; i < s->nbb && i < 16; i++)
		printf("%s{\"offset\":%" PRIu64 ",\"length\":%" PRIu64
		       ",\"sector\":%" PRIu64 "}", i ? "," : "", s->bb[i].offset,
		       s->bb[i].length, s->bb[i].sector);
	printf("]");
}

static void print_status_json(const struct status *s)
{
	printf("{\"file\":");
	json_string(stdout, s->path);
	printf(",\"size\":%lld,\"fs\":", (long long)s->st.st_size);
	json_string(stdout, s->fstype);
	printf(",\"dax\":%s", s->dax ? "true" : "false");
	if (s->have_map) {
		const struct imm_layout_info *li = &s->li;

		printf(",\"block_size\":%u,\"extents\":%" PRIu64, li->block_size,
		       li->extents);
		print_kind_json("holes", li->holes, li->hole_bytes);
		print_kind_json("unwritten", li->unwritten, li->unwritten_bytes);
		print_kind_json("shared", li->shared, li->shared_bytes);
		print_kind_json("delalloc", li->delalloc, li->delalloc_bytes);
		print_kind_json("inline", li->inline_data, li->inline_bytes);
		print_kind_json("other", li->other, li->other_bytes);
		printf(",\"final\":%s,\"alloc_only\":%s",
		       li->flags & IMM_LAYOUT_FINAL ? "true" : "false",
		       li->flags & IMM_LAYOUT_ALLOC_ONLY ? "true" : "false");
		print_topology_json(s);
	} else {
		printf(",\"extent_map\":null,\"extent_map_skipped\":");
		json_string(stdout, s->no_map_why);
	}
	printf(",\"leases\":[");
	for (size_t i = 0; i < s->nholders; i++) {
		char comm[32];

		comm_of(s->holders[i].pid, comm, sizeof(comm));
		printf("%s{\"pid\":%d,\"kind\":\"%s\",\"state\":\"%s\","
		       "\"type\":\"%s\",\"comm\":", i ? "," : "",
		       (int)s->holders[i].pid, s->holders[i].kind,
		       s->holders[i].state, s->holders[i].type);
		json_string(stdout, comm);
		printf("}");
	}
	printf("]}\n");
}

static void print_kind(const char *name, uint64_t n, uint64_t bytes)
{
	printf("  %-10s %8" PRIu64 " extents  %14" PRIu64 " bytes\n", name, n,
	       bytes);
}

static void print_topology(const struct status *s)
{
	const struct imm_topology *t = &s->topo;

	if (!t->blockdev[0])
		printf("device:      none (no block device under the filesystem)\n");
	else if (t->flags & IMM_TOPO_PARTITION)
		printf("device:      %s (partition of %s at byte %" PRIu64 ")\n",
		       t->blockdev, t->disk, t->part_start);
	else
		printf("device:      %s\n", t->blockdev);
	if (t->flags & IMM_TOPO_PMEM) {
		printf("pmem:        %s, %s, %" PRIu64 " bytes, align %" PRIu64
		       "\n", t->ns_name, t->ns_mode, t->ns_size, t->ns_align);
		printf("region:      %s on %s, persistence domain %s, data at "
		       "+%" PRIu64 "\n", t->region, t->bus,
		       t->persistence_domain, t->data_offset);
	} else {
		printf("pmem:        no (not on an nvdimm namespace)\n");
	}
	printf("mapping:     %s with IMM_MAP_SYNC, %s with IMM_MAP_PAGE_OK\n",
	       t->gran_sync ? imm_granularity_name(t->gran_sync) : "refused",
	       imm_granularity_name(t->gran_page_ok));
	if (s->nbb < 0)
		printf("badblocks:   unknown: %s\n", strerror(-s->nbb));
	else if (s->nbb == 0)
		printf("badblocks:   none known in the file\n");
	for (int i = 0; i < s->nbb && i < 16; i++)
		printf("badblock:    file offset %" PRIu64 ", %" PRIu64
		       " bytes (sector %" PRIu64 ")\n", s->bb[i].offset,
		       s->bb[i].length, s->bb[i].sector);
}

static void print_status(const struct status *s)
{
	printf("file:        %s\n", s->path);
	printf("size:        %lld bytes\n", (long long)s->st.st_size);
	printf("filesystem:  %s%s\n", s->fstype, s->dax ? " (DAX)" : "");
	if (s->have_map) {
		const struct imm_layout_info *li = &s->li;

		printf("block size:  %u\n", li->block_size);
		printf("extents:     %" PRIu64 "%s\n", li->extents,
		       li->flags & IMM_LAYOUT_ALLOC_ONLY ?
			       " (allocation map only: no FIEMAP)" : "");
		print_kind("holes", li->holes, li->hole_bytes);
		print_kind("unwritten", li->unwritten, li->unwritten_bytes);
		print_kind("shared", li->shared, li->shared_bytes);
		print_kind("delalloc", li->delalloc, li->delalloc_bytes);
		print_kind("inline", li->inline_data, li->inline_bytes);
		print_kind("other", li->other, li->other_bytes);
		printf("final:       %s\n", li->flags & IMM_LAYOUT_FINAL ?
			       "yes (sealable as is)" : "no (a seal prepares it first)");
		print_topology(s);
	} else {
		printf("extents:     not read: %s\n", s->no_map_why);
	}
	if (!s->nholders)
		printf("leases:      none\n");
	for (size_t i = 0; i < s->nholders; i++) {
		char comm[32];

		comm_of(s->holders[i].pid, comm, sizeof(comm));
		printf("lease:       pid %d (%s) %s %s %s\n",
		       (int)s->holders[i].pid, comm, s->holders[i].kind,
		       s->holders[i].type, s->holders[i].state);
	}
}

static int query_map(struct imm_ctx *ctx, struct status *s)
{
	struct imm_handle *h;
	int r;

	r = imm_handle_open(ctx, s->path, IMM_RDONLY, &h);
	if (r < 0)
		return r;
	s->li.sz = sizeof(s->li);
	s->topo.sz = sizeof(s->topo);
	r = imm_layout_query(h, 0, 0, &s->li);
	if (r == 0)
		r = imm_topology_query(h, &s->topo);
	if (r == 0)
		s->nbb = imm_badblocks(h, s->bb, 16);
	imm_handle_close(h);
	return r;
}

#define RETRY_NS 50000000ull	/* between opens of a leased file */

/*
 * Our open of a leased file (--force) fails with EWOULDBLOCK and starts
 * the recall.  The holder releases, its library revokes before the
 * kernel's deadline, or the kernel drops the lease at lease-break-time:
 * so retry until then, plus a second for a loaded machine.
 */
static int query_map_waiting(struct imm_ctx *ctx, struct status *s)
{
	int lbt = imm_ctx_get_lease_break_time(ctx);
	uint64_t deadline = now_ns() + ((uint64_t)(lbt > 0 ? lbt : 0) + 1) *
					       1000000000ull;
	const struct timespec pause_ts = { 0, (long)RETRY_NS };
	int r;

	log_deferred = true;
	while ((r = query_map(ctx, s)) == -EWOULDBLOCK &&
	       now_ns() + RETRY_NS < deadline)
		nanosleep(&pause_ts, NULL);
	log_deferred = false;
	if (r == -EWOULDBLOCK) {
		held[0] = '\0';	/* "leased, retry": what follows says it all */
		fprintf(stderr, "immctl: %s: cannot read the extent map: the "
				"lease holder did not release it within "
				"lease-break-time + 1 s (%d s); retry, or stop "
				"the holder\n", s->path, lbt + 1);
		return r;
	}
	if (r == 0)
		held[0] = '\0';	/* the retries it needed are not errors */
	return r;	/* a failure of its own: fail() shows the held reason */
}

static int read_map(struct status *s, bool force)
{
	struct imm_ctx *ctx;
	int r;

	if (new_ctx(&ctx))
		return -1;
	r = force ? query_map_waiting(ctx, s) : query_map(ctx, s);
	imm_ctx_unref(ctx);
	if (r == -EWOULDBLOCK && force)
		return -1;	/* said why already */
	if (r < 0) {
		fail("cannot read the extent map", r);
		return -1;
	}
	s->have_map = true;
	return 0;
}

static int cmd_status(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "json", no_argument, NULL, 'j' },
		{ "force", no_argument, NULL, 'f' },
		{ "help", no_argument, NULL, 'h' },
		{ 0 }
	};
	static const char usage[] = "usage: immctl status [--json] [--force] FILE\n";
	struct status s = { 0 };
	bool json = false, force = false;
	int c;

	while ((c = getopt_long(argc, argv, "jfh", opts, NULL)) != -1) {
		if (c == 'j')
			json = true;
		else if (c == 'f')
			force = true;
		else {
			fputs(usage, stderr);
			return c == 'h' ? 0 : EXIT_USAGE;
		}
	}
	if (optind != argc - 1) {
		fputs(usage, stderr);
		return EXIT_USAGE;
	}
	s.path = prog_target = argv[optind];
	if (stat(s.path, &s.st) < 0)
		return fail("cannot stat", -errno);
	fs_type_of(s.st.st_dev, s.fstype, sizeof(s.fstype));
	s.dax = path_is_dax(s.path);
	s.nholders = lease_holders(&s.st, s.holders);
	if (!S_ISREG(s.st.st_mode)) {
		fprintf(stderr, "immctl: %s: not a regular file; only regular "
				"files have an extent map\n", s.path);
		return EXIT_FAILURE;
	}
	if (s.nholders && !force) {
		/* Any open of the file, even O_RDONLY|O_NONBLOCK, would start
		 * breaking the holder's seal. */
		s.no_map_why = "the file is leased; opening it would break the "
			       "holder's seal (use --force to do it anyway)";
	} else if (read_map(&s, force) < 0) {
		return EXIT_FAILURE;
	}
	if (json)
		print_status_json(&s);
	else
		print_status(&s);
	return 0;
}

/* ------------------------------------------------------------ seal */

void emit(const struct holder *o, const char *event, uint64_t t,
		 const char *extra_json, const char *extra_text)
{
	if (o->json)
		printf("{\"event\":\"%s\",\"time_ns\":%" PRIu64 "%s}\n", event, t,
		       extra_json);
	else
		printf("%-16s t=%" PRIu64 " ns %s\n", event, t, extra_text);
	fflush(stdout);
}

void release_now(struct holder *o)
{
	int r = imm_release(o->h);

	if (r < 0) {
		fail("release failed", r);
		o->status = EXIT_FAILURE;
	} else {
		emit(o, "released", now_ns(), "", "");
	}
}

void on_event(struct imm_event *ev, void *userdata)
{
	struct holder *o = userdata;
	char j[160], t[160];
	int type = imm_event_get_type(ev);

	switch (type) {
	case IMM_EVENT_RECALL:
		snprintf(j, sizeof(j), ",\"deadline_ns\":%" PRIu64
			 ",\"revoke_ns\":%" PRIu64, imm_event_get_deadline_ns(ev),
			 imm_event_get_revoke_ns(ev));
		snprintf(t, sizeof(t), "deadline=%" PRIu64 " revoke_at=%" PRIu64,
			 imm_event_get_deadline_ns(ev), imm_event_get_revoke_ns(ev));
		break;
	case IMM_EVENT_VERIFY_MISMATCH:
		snprintf(j, sizeof(j), ",\"offset\":%" PRIu64,
			 imm_event_get_offset(ev));
		snprintf(t, sizeof(t), "offset=%" PRIu64, imm_event_get_offset(ev));
		break;
	default:
		j[0] = t[0] = '\0';
	}
	snprintf(j + strlen(j), sizeof(j) - strlen(j), ",\"generation\":%" PRIu64,
		 imm_event_get_generation(ev));
	/* "break" predates the library's "recall"; scripts read it */
	emit(o, type == IMM_EVENT_RECALL ? "break" : imm_event_type_name(type),
	     imm_event_get_time_ns(ev), j, t);
	if (type == IMM_EVENT_RECALL && o->auto_release) {
		release_now(o);
		o->done = true;
	}
}

struct seal_args {
	uint32_t flags;
	bool json;
	bool auto_release;
	bool have_offset;
	bool have_length;
	uint64_t offset;
	uint64_t length;
	const char *path;
};

static int parse_seal_args(int argc, char **argv, struct seal_args *a)
{
	static const struct option opts[] = {
		{ "shared", no_argument, NULL, 's' },
		{ "exclusive", no_argument, NULL, 'x' },
		{ "json", no_argument, NULL, 'j' },
		{ "auto-release", no_argument, NULL, 'a' },
		{ "offset", required_argument, NULL, 'o' },
		{ "length", required_argument, NULL, 'l' },
		{ "help", no_argument, NULL, 'h' },
		{ 0 }
	};
	static const char usage[] =
		"usage: immctl seal [--shared|--exclusive] [--json] [--auto-release]\n"
		"                   [--offset N] [--length N] FILE\n";
	int c;

	while ((c = getopt_long(argc, argv, "sxjao:l:h", opts, NULL)) != -1) {
		switch (c) {
		case 's':
		case 'x': {
			uint32_t f = c == 's' ? IMM_SEAL_SHARED : IMM_SEAL_EXCLUSIVE;

			/* the last one winning would hide a typo in a script */
			if (a->flags && a->flags != f) {
				fputs("immctl: seal: give one of --shared and "
				      "--exclusive, not both\n", stderr);
				return EXIT_USAGE;
			}
			a->flags = f;
			break;
		}
		case 'j': a->json = true; break;
		case 'a': a->auto_release = true; break;
		case 'o':
		case 'l': {
			uint64_t v;

			if (parse_size(optarg, &v) < 0) {
				fprintf(stderr, "immctl: seal: bad number '%s'\n",
					optarg);
				return EXIT_USAGE;
			}
			if (c == 'o')
				a->offset = v, a->have_offset = true;
			else
				a->length = v, a->have_length = true;
			break;
		}
		default:
			fputs(usage, stderr);
			return c == 'h' ? -1 : EXIT_USAGE;
		}
	}
	if (optind != argc - 1) {
		fputs(usage, stderr);
		return EXIT_USAGE;
	}
	if (!a->flags)
		a->flags = IMM_SEAL_EXCLUSIVE;
	a->path = argv[optind];
	return 0;
}

/* SIGINT/SIGTERM through a signalfd: the library's notifier never sees
 * them, and the process keeps its dispositions for everything else. */
int hold_signals(struct holder *o)
{
	sigset_t set;

	sigemptyset(&set);
	sigaddset(&set, SIGINT);
	sigaddset(&set, SIGTERM);
	if (sigprocmask(SIG_BLOCK, &set, NULL) < 0)
		return fail("cannot block SIGINT/SIGTERM", -errno);
	o->stop_fd = signalfd(-1, &set, SFD_CLOEXEC | SFD_NONBLOCK);
	if (o->stop_fd < 0)
		return fail("cannot watch SIGINT/SIGTERM", -errno);
	return 0;
}

int hold(struct imm_ctx *ctx, struct holder *o)
{
	struct pollfd pfd[2] = {
		{ .fd = imm_ctx_get_fd(ctx), .events = POLLIN },
		{ .fd = o->stop_fd, .events = POLLIN },
	};

	while (!o->done) {
		if (poll(pfd, 2, -1) < 0) {
			if (errno == EINTR)
				continue;
			return fail("poll", -errno);
		}
		if (pfd[0].revents && imm_ctx_dispatch(ctx) < 0)
			o->status = EXIT_FAILURE;
		flush_held();
		if (!o->done && pfd[1].revents) {
			release_now(o);
			o->done = true;
		}
	}
	return o->status;
}

static int cmd_seal(int argc, char **argv)
{
	struct seal_args a = { 0 };
	struct holder o = { 0 };
	struct imm_layout_info li = { .sz = sizeof(li) };
	struct imm_ctx *ctx;
	struct stat st;
	char j[200], t[200];
	int r;

	r = parse_seal_args(argc, argv, &a);
	if (r)
		return r < 0 ? 0 : r;
	prog_target = a.path;
	o.json = a.json;
	o.auto_release = a.auto_release;
	if (hold_signals(&o) || new_ctx(&ctx))
		return EXIT_FAILURE;
	r = imm_ctx_set_event_fn(ctx, on_event, &o, 0);
	if (r == 0)
		r = imm_handle_open(ctx, a.path, a.flags & IMM_SEAL_SHARED ?
						 IMM_RDONLY : IMM_RDWR, &o.h);
	if (r < 0) {
		imm_ctx_unref(ctx);
		return fail("cannot open", r);
	}
	if (!a.have_length) {
		if (fstat(imm_handle_get_fd(o.h), &st) < 0)
			st.st_size = 0;
		if (a.offset && a.offset >= (uint64_t)st.st_size) {
			/* not "range [N, +0) is empty": no length was given */
			fprintf(stderr, "immctl: %s: --offset %" PRIu64 " is at "
					"or past the end of the file (size %lld): "
					"nothing to seal\n", a.path, a.offset,
				(long long)st.st_size);
			imm_handle_close(o.h);
			imm_ctx_unref(ctx);
			return EXIT_FAILURE;
		}
		a.length = (uint64_t)st.st_size > a.offset ?
				   (uint64_t)st.st_size - a.offset : 0;
	}
	r = imm_seal(o.h, a.offset, a.length, a.flags, NULL);
	if (r < 0) {
		imm_handle_close(o.h);
		imm_ctx_unref(ctx);
		return fail("cannot seal", r);
	}
	imm_layout_query(o.h, a.offset, a.length, &li);
	snprintf(j, sizeof(j), ",\"offset\":%" PRIu64 ",\"length\":%" PRIu64
		 ",\"mode\":\"%s\",\"extents\":%" PRIu64 ",\"pid\":%d", a.offset,
		 a.length, a.flags & IMM_SEAL_SHARED ? "shared" : "exclusive",
		 li.extents, (int)getpid());
	snprintf(t, sizeof(t), "[%" PRIu64 ", +%" PRIu64 ") %s, %" PRIu64
		 " extents, pid %d", a.offset, a.length,
		 a.flags & IMM_SEAL_SHARED ? "shared" : "exclusive", li.extents,
		 (int)getpid());
	emit(&o, "sealed", now_ns(), j, t);
	r = hold(ctx, &o);
	imm_handle_close(o.h);
	imm_ctx_unref(ctx);
	return r;
}

/* ------------------------------------------------------------ main */

static void usage(FILE *f)
{
	fputs("usage: immctl COMMAND [OPTIONS]\n"
	      "  probe [--json] [--page-cache-dir DIR] [--tmpfs-dir DIR] [--dax-dir DIR]\n"
	      "                                 kernel, seal backend, lease settings,\n"
	      "                                 RDMA devices and registration modes\n"
	      "  status [--json] [--force] FILE block map, DAX, lease holders\n"
	      "  seal [--shared|--exclusive] [--json] [--auto-release]\n"
	      "       [--offset N] [--length N] FILE\n"
	      "                                 prepare, seal, print events\n"
	      "  extents [--json] [--seal [--shared]] FILE\n"
	      "                                 the physical block map and its device\n"
	      "See immctl(1).\n", f);
}

static int run(int argc, char **argv)
{
	if (argc < 2) {
		usage(stderr);
		return EXIT_USAGE;
	}
	if (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) {
		usage(stdout);
		return 0;
	}
	if (!strcmp(argv[1], "--version")) {
		puts("immctl (libimmutable) " IMMCTL_VERSION);
		return 0;
	}
	if (!strcmp(argv[1], "probe"))
		return cmd_probe(argc - 1, argv + 1);
	if (!strcmp(argv[1], "status"))
		return cmd_status(argc - 1, argv + 1);
	if (!strcmp(argv[1], "seal"))
		return cmd_seal(argc - 1, argv + 1);
	if (!strcmp(argv[1], "extents"))
		return cmd_extents(argc - 1, argv + 1);
	fprintf(stderr, "immctl: unknown command '%s'\n", argv[1]);
	usage(stderr);
	return EXIT_USAGE;
}

int main(int argc, char **argv)
{
	int r;

	main_thread = true;
	r = run(argc, argv);
	flush_held();
	return r;
}
