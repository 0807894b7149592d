// SPDX-License-Identifier: LGPL-2.1-or-later
/*
 * immctl probe's RDMA part: which registration the library would make of
 * each kind of memory on each device.  Not worked out from version numbers
 * but tried: a small file in a directory of each kind is sealed, mapped
 * and registered with IMM_MR_AUTO, the kernel and the device being the
 * judges, and everything is undone again.
 */
#define _GNU_SOURCE
#include <endian.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <mntent.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <syslog.h>
#include <unistd.h>

#include <libimmutable/verbs.h>

#include "fsinfo.h"
#include "json.h"
#include "rdmaprobe.h"

#define TRY_SIZE (2u << 20)
#define LOG_LEN 512
#define RW (IBV_ACCESS_LOCAL_WRITE | IBV_ACCESS_REMOTE_WRITE | \
	    IBV_ACCESS_REMOTE_READ)
#define RO IBV_ACCESS_REMOTE_READ

enum kind { ANON, PAGE_CACHE, TMPFS, FSDAX, NKINDS };
static const char *const kind_names[NKINDS] = {
	"anon", "page-cache", "tmpfs", "fsdax"
};

/* A kind of memory, and the directory its files are tried in. */
struct memory {
	bool usable;
	char dir[PATH_MAX];	/* "" if none was found */
	char fs[32];
	char why[PATH_MAX + 128]; /* not usable: why */
};

struct device {
	struct ibv_device *dev;
	struct ibv_context *vctx;
	struct ibv_pd *pd;
	struct ibv_device_attr_ex attr;
	struct ibv_port_attr port;
	bool have_port;
	char guid[24];		/* "" if the device has none */
	char error[160];	/* "" unless it could not be opened */
};

/* One registration tried. */
struct trial {
	const char *mode;	/* NULL: none could be made */
	int err;		/* the failing call's -errno */
	bool show_log;		/* text: the library's line says more */
	char why[PATH_MAX + 160];
	char log[LOG_LEN];	/* the library's last error line */
};

/* A sealed mapping of a fresh file: what is registered. */
struct sealed_map {
	struct imm_ctx *ctx;
	struct imm_handle *h;
	struct imm_map *m;
	char path[PATH_MAX];	/* "" once unlinked, or never created */
};

/* ------------------------------------------------------------ memory */

static bool skip(struct memory *m, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

static bool skip(struct memory *m, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(m->why, sizeof(m->why), fmt, ap);
	va_end(ap);
	m->usable = false;
	return false;
}

/* A file of size bytes of zeros in dir; on failure, path is "". */
static int new_file(const char *dir, uint64_t size, char *path, size_t len)
{
	static const char zeros[64 << 10];
	int fd, r = 0;

	if ((size_t)snprintf(path, len, "%s/.immctl-probe.XXXXXX", dir) >= len) {
		path[0] = '\0';
		return -ENAMETOOLONG;
	}
	fd = mkostemp(path, O_CLOEXEC);
	if (fd < 0) {
		path[0] = '\0';
		return -errno;
	}
	for (uint64_t off = 0; off < size && !r; off += sizeof(zeros))
		if (pwrite(fd, zeros, sizeof(zeros), (off_t)off) != sizeof(zeros))
			r = errno ? -errno : -EIO;
	if (!r && fsync(fd) < 0)
		r = -errno;
	close(fd);
	if (r) {
		unlink(path);
		path[0] = '\0';
	}
	return r;
}

/* Is dir where files of kind k live?  hint: how to choose another. */
static bool find_memory(struct memory *m, enum kind k, const char *dir,
			const char *hint)
{
	char probe[PATH_MAX];
	struct stat st;
	bool dax;
	int r;

	snprintf(m->dir, sizeof(m->dir), "%s", dir);
	if (stat(dir, &st) < 0)
		return skip(m, "%s: %s%s", dir, strerror(errno), hint);
	if (!S_ISDIR(st.st_mode))
		return skip(m, "%s is not a directory%s", dir, hint);
	fs_type_of(st.st_dev, m->fs, sizeof(m->fs));
	if (k == TMPFS)
		return strcmp(m->fs, "tmpfs") ?
			       skip(m, "%s is %s, not tmpfs%s", dir, m->fs, hint) :
			       (m->usable = true);
	if (strcmp(m->fs, "ext4") && strcmp(m->fs, "xfs"))
		return skip(m, "%s is %s, not ext4 or xfs%s", dir, m->fs, hint);
	r = new_file(dir, 0, probe, sizeof(probe));
	if (r < 0)
		return skip(m, "cannot create a file in %s: %s%s", dir,
			    strerror(-r), hint);
	dax = path_is_dax(probe);
	unlink(probe);
	if (dax != (k == FSDAX))
		return skip(m, "a new file in %s is %s%s", dir, dax ?
			    "DAX: fsdax, not page cache" : "not DAX", hint);
	return (m->usable = true);
}

static bool dax_option(const char *opts)
{
	char buf[1024], *save, *o;

	snprintf(buf, sizeof(buf), "%s", opts);
	for (o = strtok_r(buf, ",", &save); o; o = strtok_r(NULL, ",", &save))
		if (!strcmp(o, "dax") || !strcmp(o, "dax=always"))
			return true;
	return false;
}

/* The first ext4 or xfs mounted with dax=always (or the old "dax"). */
static bool first_dax_mount(char *out, size_t len)
{
	FILE *f = setmntent("/proc/self/mounts", "re");
	struct mntent *me;
	bool found = false;

	if (!f)
		return false;
	while (!found && (me = getmntent(f)))
		if ((!strcmp(me->mnt_type, "ext4") || !strcmp(me->mnt_type, "xfs")) &&
		    dax_option(me->mnt_opts)) {
			snprintf(out, len, "%s", me->mnt_dir);
			found = true;
		}
	endmntent(f);
	return found;
}

static void find_memories(const struct rdma_probe_dirs *d, struct memory *mem)
{
	const char *tmp = getenv("TMPDIR");
	char dax[PATH_MAX];

	memset(mem, 0, NKINDS * sizeof(*mem));
	mem[ANON].usable = true;
	if (d->page_cache)
		find_memory(&mem[PAGE_CACHE], PAGE_CACHE, d->page_cache, "");
	else
		find_memory(&mem[PAGE_CACHE], PAGE_CACHE, tmp && *tmp ? tmp :
			    "/var/tmp", "; choose one with --page-cache-dir");
	find_memory(&mem[TMPFS], TMPFS, d->tmpfs ? d->tmpfs : "/dev/shm",
		    d->tmpfs ? "" : "; choose one with --tmpfs-dir");
	if (d->dax)
		find_memory(&mem[FSDAX], FSDAX, d->dax, "");
	else if (first_dax_mount(dax, sizeof(dax)))
		find_memory(&mem[FSDAX], FSDAX, dax, "; choose one with --dax-dir");
	else
		skip(&mem[FSDAX], "no DAX filesystem mounted");
}

static void print_memories(const struct memory *mem)
{
	printf("anon: an anonymous buffer, registered with a raw ibv_reg_mr "
	       "(not through the library)\n");
	for (int k = PAGE_CACHE; k < NKINDS; k++) {
		if (mem[k].usable)
			printf("%s: %s (%s)\n", kind_names[k], mem[k].dir,
			       mem[k].fs);
		else
			printf("%s: %s\n", kind_names[k], mem[k].why);
	}
}

/* ------------------------------------------------------------ trials */

/* The log hook of a trial's context: keeps the last error line. */
static void keep_last(void *data, int priority, const char *file, int line,
		      const char *fn, const char *format, va_list args)
{
	(void)file;
	(void)line;
	(void)fn;
	if (getenv("LIBIMMUTABLE_LOG")) {
		va_list copy;

		va_copy(copy, args);
		fputs("libimmutable: ", stderr);
		vfprintf(stderr, format, copy);
		fputc('\n', stderr);
		va_end(copy);
	}
	if (priority <= LOG_ERR)
		vsnprintf(data, LOG_LEN, format, args);
}

static void failed(struct trial *t, int r, const char *what)
{
	t->err = r;
	t->show_log = true;
	snprintf(t->why, sizeof(t->why), "%s: %s", what, strerror(-r));
}

static int seal_map(struct sealed_map *s, const char *dir, bool ro,
		    struct trial *t)
{
	const char *step = "cannot create a file";
	int r;

	r = new_file(dir, TRY_SIZE, s->path, sizeof(s->path));
	if (r == 0) {
		step = "imm_ctx_new";
		r = imm_ctx_new(&s->ctx);
	}
	if (r == 0) {
		imm_ctx_set_log_fn(s->ctx, keep_last, t->log);
		step = "imm_handle_open";
		r = imm_handle_open(s->ctx, s->path, IMM_RDWR, &s->h);
	}
	if (r == 0) {
		step = "imm_seal";
		r = imm_seal(s->h, 0, TRY_SIZE, IMM_SEAL_EXCLUSIVE, NULL);
	}
	if (r == 0) {
		step = "imm_map";
		r = imm_map(s->h, 0, TRY_SIZE, IMM_MAP_PAGE_OK |
			    (ro ? IMM_MAP_READONLY : 0), &s->m);
	}
	if (r < 0)
		failed(t, r, step);
	return r;
}

static void unseal_map(struct sealed_map *s)
{
	if (s->ctx)	/* the trial's log line is kept: undoing it says no more */
		imm_ctx_set_log_fn(s->ctx, NULL, NULL);
	if (s->m)
		imm_unmap(s->m);
	if (s->h)
		imm_handle_close(s->h);
	if (s->ctx)
		imm_ctx_unref(s->ctx);
	if (s->path[0])
		unlink(s->path);
}

/* AUTO found no mode: ask for one mode alone, for its own reason. */
static int mode_error(struct sealed_map *s, struct ibv_pd *pd, int access,
		      uint32_t mode, char *log)
{
	char scratch[LOG_LEN] = "";
	struct imm_mr *mr;
	int r;

	imm_ctx_set_log_fn(s->ctx, keep_last, scratch);
	r = imm_reg_mr(s->m, pd, 0, TRY_SIZE, access, mode, &mr);
	imm_ctx_set_log_fn(s->ctx, keep_last, log);
	if (r == 0)
		imm_dereg_mr(mr);
	return r;
}

static void try_register(struct sealed_map *s, const struct device *d,
			 int access, struct trial *t)
{
	struct imm_mr *mr;
	int r, pin, odp;

	r = imm_reg_mr(s->m, d->pd, 0, TRY_SIZE, access, IMM_MR_AUTO, &mr);
	if (r == 0) {
		t->mode = imm_mr_mode_name(imm_mr_get_mode(mr));
		imm_dereg_mr(mr);
		return;
	}
	failed(t, r, "imm_reg_mr");
	if (r != -EOPNOTSUPP)
		return;
	pin = mode_error(s, d->pd, access, IMM_MR_PINNED, t->log);
	odp = mode_error(s, d->pd, access, IMM_MR_ODP | IMM_MR_NO_PREFETCH, t->log);
	if (pin == 0 || odp == 0)
		return;
	t->show_log = false;
	/* an explicit IMM_MR_ODP is -EOPNOTSUPP when the device has none */
	snprintf(t->why, sizeof(t->why), "kernel refused a pin: %s; %s%s",
		 strerror(-pin), odp == -EOPNOTSUPP ?
		 "no RC ODP for this access" : "ODP registration failed: ",
		 odp == -EOPNOTSUPP ? "" : strerror(-odp));
}

static void try_file(const struct device *d, const char *dir, bool ro,
		     struct trial *t)
{
	struct sealed_map s = { 0 };

	if (seal_map(&s, dir, ro, t) == 0)
		try_register(&s, d, ro ? RO : RW, t);
	unseal_map(&s);
}

/* Not through the library: what the device does with plain memory. */
static void try_anon(const struct device *d, bool ro, struct trial *t)
{
	struct ibv_mr *mr;
	void *p;

	p = mmap(NULL, TRY_SIZE, PROT_READ | PROT_WRITE,
		 MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);
	if (p == MAP_FAILED) {
		failed(t, -errno, "mmap");
		return;
	}
	if (ro && mprotect(p, TRY_SIZE, PROT_READ) < 0) {
		failed(t, -errno, "mprotect");
	} else {
		errno = 0;
		mr = ibv_reg_mr(d->pd, p, TRY_SIZE, ro ? RO : RW);
		if (mr) {
			t->mode = "pinned";
			ibv_dereg_mr(mr);
		} else {
			failed(t, errno ? -errno : -EIO, "ibv_reg_mr");
		}
	}
	munmap(p, TRY_SIZE);
}

/* ------------------------------------------------------------ output */

struct cap_word {
	uint64_t bit;
	const char *word;
};

static const struct cap_word general_words[] = {
	{ IBV_ODP_SUPPORT, "support" },
	{ IBV_ODP_SUPPORT_IMPLICIT, "implicit" },
	{ 0, NULL }
};

static const struct cap_word transport_words[] = {
	{ IBV_ODP_SUPPORT_SEND, "send" },
	{ IBV_ODP_SUPPORT_RECV, "recv" },
	{ IBV_ODP_SUPPORT_WRITE, "write" },
	{ IBV_ODP_SUPPORT_READ, "read" },
	{ IBV_ODP_SUPPORT_ATOMIC, "atomic" },
	{ IBV_ODP_SUPPORT_SRQ_RECV, "srq_recv" },
	{ 0, NULL }
};

/* JSON: a list of words; text: words and commas, or "none". */
static void print_words(uint64_t caps, const struct cap_word *w, bool json)
{
	int n = 0;

	if (json)
		putchar('[');
	for (; w->word; w++)
		if (caps & w->bit)
			printf(json ? "%s\"%s\"" : "%s%s", n++ ? "," : "", w->word);
	if (json)
		putchar(']');
	else if (!n)
		fputs("none", stdout);
}

static void print_odp(const struct ibv_odp_caps *c, bool json)
{
	static const char *const names[] = { "general", "rc", "uc", "ud" };
	const uint64_t caps[] = { c->general_caps,
				  c->per_transport_caps.rc_odp_caps,
				  c->per_transport_caps.uc_odp_caps,
				  c->per_transport_caps.ud_odp_caps };

	for (int i = 0; i < 4; i++) {
		if (json)
			printf("%s\"%s\":", i ? "," : "{", names[i]);
		else
			printf("%s%s ", i ? "; " : "", names[i]);
		print_words(caps[i], i ? transport_words : general_words, json);
	}
	fputs(json ? "}" : "\n", stdout);
}

static const char *transport_name(enum ibv_transport_type t)
{
	switch (t) {
	case IBV_TRANSPORT_IB: return "InfiniBand";
	case IBV_TRANSPORT_IWARP: return "iWARP";
	case IBV_TRANSPORT_USNIC: return "usNIC";
	case IBV_TRANSPORT_USNIC_UDP: return "usNIC UDP";
	case IBV_TRANSPORT_UNSPECIFIED: return "unspecified";
	default: return "unknown";
	}
}

static const char *link_layer_name(const struct device *d)
{
	if (!d->have_port)
		return "unknown";
	switch (d->port.link_layer) {
	case IBV_LINK_LAYER_INFINIBAND: return "InfiniBand";
	case IBV_LINK_LAYER_ETHERNET: return "Ethernet";
	default: return "unspecified";
	}
}

static void json_or_null(const char *s)
{
	if (s && *s)
		json_string(stdout, s);
	else
		fputs("null", stdout);
}

/* JSON: opens the device's object, up to the "modes" list. */
static void print_device(const struct device *d, bool json)
{
	const char *name = ibv_get_device_name(d->dev);

	if (!json) {
		printf("%s: %s%s%stransport %s, port 1 link layer %s\n", name,
		       d->guid[0] ? "node GUID " : "", d->guid,
		       d->guid[0] ? ", " : "", transport_name(d->dev->transport_type),
		       link_layer_name(d));
		if (d->error[0]) {
			printf("%s: cannot probe: %s\n", name, d->error);
		} else {
			printf("%s odp: ", name);
			print_odp(&d->attr.odp_caps, false);
		}
		return;
	}
	printf("{\"device\":");
	json_string(stdout, name);
	printf(",\"node_guid\":");
	json_or_null(d->guid);
	printf(",\"transport\":\"%s\",\"link_layer\":\"%s\"",
	       transport_name(d->dev->transport_type), link_layer_name(d));
	if (d->error[0]) {
		printf(",\"error\":");
		json_string(stdout, d->error);
	} else {
		printf(",\"odp\":");
		print_odp(&d->attr.odp_caps, true);
	}
	printf(",\"modes\":[");
}

static void print_trial_json(enum kind k, bool ro, const struct memory *m,
			     const struct trial *t, bool tried)
{
	printf("{\"memory\":\"%s\",\"access\":\"%s\",\"through\":\"%s\","
	       "\"dir\":", kind_names[k], ro ? "ro" : "rw",
	       k == ANON ? "ibv_reg_mr" : "imm_reg_mr");
	json_or_null(k == ANON ? NULL : m->dir);
	printf(",\"tried\":%s,\"mode\":", tried ? "true" : "false");
	json_or_null(t->mode);
	if (!t->mode) {
		printf(",\"why\":");
		json_string(stdout, tried ? t->why : m->why);
		printf(",\"error\":");
		json_or_null(t->err ? strerror(-t->err) : NULL);
		printf(",\"log\":");
		json_or_null(t->log);
	}
	putchar('}');
}

static void print_trial(const struct device *d, enum kind k, bool ro,
			const struct memory *m, const struct trial *t, bool json)
{
	bool tried = m->usable;

	if (json) {
		print_trial_json(k, ro, m, t, tried);
	} else {
		printf("%s %s %s: ", ibv_get_device_name(d->dev), kind_names[k],
		       ro ? "ro" : "rw");
		if (!tried)
			printf("not tried (%s)\n", m->why);
		else if (t->mode)
			printf("%s%s\n", t->mode, k == ANON ? " (raw ibv_reg_mr, "
			       "not through the library)" : "");
		else
			printf("none (%s%s%s)\n", t->why,
			       t->show_log && t->log[0] ? "; library: " : "",
			       t->show_log ? t->log : "");
	}
	fflush(stdout);
}

/* ------------------------------------------------------------ devices */

static void open_device(struct device *d)
{
	uint64_t g = be64toh(ibv_get_device_guid(d->dev));
	const char *what = "ibv_open_device";
	int r = 0;

	if (g)
		snprintf(d->guid, sizeof(d->guid), "%04x:%04x:%04x:%04x",
			 (unsigned)(g >> 48) & 0xffff, (unsigned)(g >> 32) & 0xffff,
			 (unsigned)(g >> 16) & 0xffff, (unsigned)g & 0xffff);
	errno = 0;
	d->vctx = ibv_open_device(d->dev);
	if (!d->vctx)
		r = errno ? errno : ENODEV;
	if (!r) {
		what = "ibv_query_device_ex";
		r = ibv_query_device_ex(d->vctx, NULL, &d->attr);
	}
	if (!r) {
		d->have_port = ibv_query_port(d->vctx, 1, &d->port) == 0;
		what = "ibv_alloc_pd";
		d->pd = ibv_alloc_pd(d->vctx);
		r = d->pd ? 0 : errno ? errno : ENOMEM;
	}
	if (r)
		snprintf(d->error, sizeof(d->error), "%s: %s", what, strerror(r));
}

static void close_device(struct device *d)
{
	if (d->pd)
		ibv_dealloc_pd(d->pd);
	if (d->vctx)
		ibv_close_device(d->vctx);
}

static void probe_device(struct ibv_device *dev, const struct memory *mem,
			 bool json)
{
	struct device d = { .dev = dev };

	open_device(&d);
	print_device(&d, json);
	for (int i = 0; d.pd && i < 2 * NKINDS; i++) {
		enum kind k = (enum kind)(i / 2);
		bool ro = i % 2;
		struct trial t = { 0 };

		if (json && i)
			putchar(',');
		if (mem[k].usable && k == ANON)
			try_anon(&d, ro, &t);
		else if (mem[k].usable)
			try_file(&d, mem[k].dir, ro, &t);
		print_trial(&d, k, ro, &mem[k], &t, json);
	}
	if (json)
		fputs("]}", stdout);
	close_device(&d);
}

void rdma_probe(const struct rdma_probe_dirs *dirs, bool json)
{
	struct memory mem[NKINDS];
	struct ibv_device **list;
	int n = 0;

	errno = 0;
	list = ibv_get_device_list(&n);
	if (!list || n <= 0) {
		if (json)
			fputs("[]", stdout);
		else if (!list && errno)
			printf("rdma: no devices (ibv_get_device_list: %s)\n",
			       strerror(errno));
		else
			printf("rdma: no devices\n");
		if (list)
			ibv_free_device_list(list);
		return;
	}
	find_memories(dirs, mem);
	if (json)
		putchar('[');
	else
		print_memories(mem);
	for (int i = 0; i < n; i++) {
		if (json && i)
			putchar(',');
		probe_device(list[i], mem, json);
	}
	if (json)
		putchar(']');
	ibv_free_device_list(list);
}
