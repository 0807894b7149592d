// SPDX-License-Identifier: LGPL-2.1-or-later
/*
 * Where a file's blocks live: the block device under its filesystem and,
 * when that is an nvdimm namespace, the namespace, region and persistence
 * domain, found through libndctl.
 *
 * The block device comes from st_dev through /sys/dev/block, so a
 * partition is recognised and its start recorded: FIEMAP's physical
 * offsets are relative to the partition, media errors to the region.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <ndctl/libndctl.h>

#include "private.h"

static void ndctl_log_fwd(struct ndctl_ctx *nd, int priority, const char *file,
			  int line, const char *fn, const char *format,
			  va_list args)
{
	struct imm_ctx *ctx = ndctl_get_userdata(nd);
	char msg[512];

	vsnprintf(msg, sizeof(msg), format, args);
	msg[strcspn(msg, "\n")] = '\0';
	imm_log(ctx, priority, file, line, fn, "libndctl: %s", msg);
}

/* libndctl is not thread-safe: one context per ours, used under a lock */
struct ndctl_state {
	pthread_mutex_t lock;
	struct ndctl_ctx *nd;		/* made on first use */
};

static void *ndctl_state_make(struct imm_ctx *ctx)
{
	struct ndctl_state *s = calloc(1, sizeof(*s));

	(void)ctx;
	if (s && pthread_mutex_init(&s->lock, NULL)) {
		free(s);
		s = NULL;
	}
	return s;
}

static void ndctl_state_free(struct imm_ctx *ctx, void *data)
{
	struct ndctl_state *s = data;

	if (s->nd)
		ndctl_unref(s->nd);
	/* a child's copy of the lock may be held by a parent's thread */
	if (!imm_forked(ctx))
		pthread_mutex_destroy(&s->lock);
	free(s);
}

static const struct imm_module_ops ndctl_module = {
	.make = ndctl_state_make,
	.free = ndctl_state_free,
};

int imm_ndctl_lock(struct imm_ctx *ctx)
{
	struct ndctl_state *s = imm_ctx_module(ctx, IMM_MODULE_NDCTL,
					       &ndctl_module);

	if (!s)
		return -ENOMEM;
	pthread_mutex_lock(&s->lock);
	return 0;
}

void imm_ndctl_unlock(struct imm_ctx *ctx)
{
	struct ndctl_state *s = ctx->modules[IMM_MODULE_NDCTL].data;

	pthread_mutex_unlock(&s->lock);
}

/* imm_ndctl_lock() held */
static int ndctl_get(struct imm_ctx *ctx, struct ndctl_ctx **ret)
{
	struct ndctl_state *s = ctx->modules[IMM_MODULE_NDCTL].data;
	int r;

	if (!s->nd) {
		r = ndctl_new(&s->nd);
		if (r < 0) {
			err(ctx, "ndctl_new: %s", strerror(-r));
			s->nd = NULL;
			return r;
		}
		ndctl_set_userdata(s->nd, ctx);
		ndctl_set_log_fn(s->nd, ndctl_log_fwd);
		ndctl_set_log_priority(s->nd, ctx->log_priority);
	} else {
		/* namespaces may have been reconfigured since the last look */
		ndctl_invalidate(s->nd);
		ndctl_set_log_priority(s->nd, ctx->log_priority);
	}
	*ret = s->nd;
	return 0;
}

static void copy_name(char *dst, size_t n, const char *src)
{
	snprintf(dst, n, "%s", src ? src : "");
}

/* The block device under fd's filesystem, and its disk if a partition.
 * 0 with an empty name when there is none (tmpfs, 9p, overlay). */
static int find_blockdev(int fd, struct imm_topology *t)
{
	char path[64], real[PATH_MAX], *slash;
	unsigned long long start;
	struct stat st;
	FILE *f;

	if (fstat(fd, &st) < 0)
		return -errno;
	snprintf(path, sizeof(path), "/sys/dev/block/%u:%u",
		 major(st.st_dev), minor(st.st_dev));
	if (!realpath(path, real))
		return errno == ENOENT ? 0 : -errno;
	slash = strrchr(real, '/');
	copy_name(t->blockdev, sizeof(t->blockdev), slash + 1);
	copy_name(t->disk, sizeof(t->disk), slash + 1);
	snprintf(path, sizeof(path), "/sys/dev/block/%u:%u/start",
		 major(st.st_dev), minor(st.st_dev));
	f = fopen(path, "re");
	if (!f)
		return 0;	/* a whole disk */
	if (fscanf(f, "%llu", &start) == 1) {
		t->flags |= IMM_TOPO_PARTITION;
		t->part_start = start * 512;
		*slash = '\0';
		slash = strrchr(real, '/');
		copy_name(t->disk, sizeof(t->disk), slash + 1);
	}
	fclose(f);
	return 0;
}

static const char *domain_name(enum ndctl_persistence_domain d)
{
	switch (d) {
	case PERSISTENCE_CPU_CACHE:
		return "cpu_cache";
	case PERSISTENCE_MEM_CTRL:
		return "memory_controller";
	case PERSISTENCE_NONE:
		return "none";
	default:
		return "unknown";
	}
}

static const char *mode_name(enum ndctl_namespace_mode m)
{
	switch (m) {
	case NDCTL_NS_MODE_FSDAX:
		return "fsdax";
	case NDCTL_NS_MODE_DEVDAX:
		return "devdax";
	case NDCTL_NS_MODE_SECTOR:
		return "sector";
	case NDCTL_NS_MODE_RAW:
		return "raw";
	default:
		return "unknown";
	}
}

/* The block device a namespace exposes, whichever personality claims it. */
static const char *ns_blockdev(struct ndctl_namespace *ns)
{
	struct ndctl_pfn *pfn = ndctl_namespace_get_pfn(ns);
	struct ndctl_btt *btt = ndctl_namespace_get_btt(ns);

	if (pfn)
		return ndctl_pfn_get_block_device(pfn);
	if (btt)
		return ndctl_btt_get_block_device(btt);
	return ndctl_namespace_get_block_device(ns);
}

static void fill_namespace(struct ndctl_region *region,
			   struct ndctl_namespace *ns, struct imm_topology *t,
			   struct imm_pmem_loc *loc)
{
	struct ndctl_bus *bus = ndctl_region_get_bus(region);
	struct ndctl_pfn *pfn = ndctl_namespace_get_pfn(ns);
	unsigned long long rstart = ndctl_region_get_resource(region);
	unsigned long long dstart;

	t->flags |= IMM_TOPO_PMEM;
	copy_name(t->bus, sizeof(t->bus), ndctl_bus_get_provider(bus));
	copy_name(t->region, sizeof(t->region), ndctl_region_get_devname(region));
	copy_name(t->persistence_domain, sizeof(t->persistence_domain),
		  domain_name(ndctl_region_get_persistence_domain(region)));
	copy_name(t->ns_name, sizeof(t->ns_name), ndctl_namespace_get_devname(ns));
	copy_name(t->ns_mode, sizeof(t->ns_mode),
		  mode_name(ndctl_namespace_get_mode(ns)));
	t->ns_size = pfn ? ndctl_pfn_get_size(pfn) : ndctl_namespace_get_size(ns);
	t->ns_align = pfn ? ndctl_pfn_get_align(pfn) : ndctl_region_get_align(region);
	/* a pfn device's resource is where its data starts, past the info
	 * block and the page map; sector mode (BTT) remaps every block */
	dstart = pfn ? ndctl_pfn_get_resource(pfn) : ndctl_namespace_get_resource(ns);
	loc->region = region;
	loc->part_start = t->part_start;
	loc->linear = !ndctl_namespace_get_btt(ns) && rstart != ULLONG_MAX &&
		      dstart != ULLONG_MAX && dstart >= rstart;
	loc->data_offset = loc->linear ? dstart - rstart : 0;
	t->data_offset = loc->data_offset;
}

/* imm_ndctl_lock() held: fill what is known about the device under fd; loc
 * (valid until the lock is dropped) when it is an nvdimm namespace. */
int imm_pmem_locate(struct imm_handle *h, int fd, struct imm_topology *t,
		    struct imm_pmem_loc *loc)
{
	struct ndctl_namespace *ns;
	struct ndctl_region *region;
	struct ndctl_bus *bus;
	struct ndctl_ctx *nd;
	const char *name;
	int r;

	*loc = (struct imm_pmem_loc){ 0 };
	r = find_blockdev(fd, t);
	if (r < 0)
		err(h->ctx, "cannot find the block device under the file in "
			    "/sys/dev/block: %s; is sysfs mounted?", strerror(-r));
	if (r < 0 || !t->disk[0])
		return r;
	r = ndctl_get(h->ctx, &nd);
	if (r < 0)
		return r;
	ndctl_bus_foreach(nd, bus)
		ndctl_region_foreach(bus, region)
			ndctl_namespace_foreach(region, ns) {
				name = ns_blockdev(ns);
				if (name && strcmp(name, t->disk) == 0) {
					fill_namespace(region, ns, t, loc);
					return 0;
				}
			}
	return 0;
}

IMM_EXPORT int imm_topology_query(struct imm_handle *h, struct imm_topology *topo)
{
	struct imm_topology t = { 0 };
	struct imm_pmem_loc loc;
	int fd, r;

	if (!h || !topo)
		return -EINVAL;
	r = imm_check_fork(h->ctx, "imm_topology_query");
	if (r < 0)
		return r;
	if (topo->sz < sizeof(size_t)) {
		err(h->ctx, "imm_topology_query: set topo->sz = sizeof(struct "
			    "imm_topology)");
		return -EINVAL;
	}
	pthread_mutex_lock(&h->lock);
	fd = imm_handle_dup_fd(h);
	pthread_mutex_unlock(&h->lock);
	if (fd < 0)
		return fd;

	r = imm_ndctl_lock(h->ctx);
	if (r == 0) {
		r = imm_pmem_locate(h, fd, &t, &loc);
		imm_ndctl_unlock(h->ctx);
	}
	if (r == 0) {
		if (imm_fd_is_dax(fd))
			t.flags |= IMM_TOPO_DAX;
		t.gran_sync = imm_map_probe(h, fd, IMM_MAP_SYNC);
		t.gran_page_ok = imm_map_probe(h, fd, IMM_MAP_PAGE_OK);
		/* what the caller's (maybe older, smaller) struct has room
		 * for, and how much that was (as imm_layout_query() says) */
		t.sz = topo->sz < sizeof(t) ? topo->sz : sizeof(t);
		memcpy(topo, &t, t.sz);
	}
	close(fd);
	return r;
}
