// SPDX-License-Identifier: LGPL-2.1-or-later
/*
 * The demo: seal a file, let a second process want its blocks, release.
 *
 *   seal-demo [DIR]
 *
 * It makes a 16 MiB file in DIR (default /var/tmp) with holes, preallocated
 * (unwritten) space and unsynced writes, so the seal has something to
 * prepare, and removes it at the end.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <libimmutable/libimmutable.h>

#define SIZE (16u << 20)

static uint64_t t0;

static uint64_t now_us(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u - t0;
}

#define say(...) do { printf("[%9.3f ms] ", now_us() / 1000.0); \
		      printf(__VA_ARGS__); fflush(stdout); } while (0)

static void show_layout(struct imm_handle *h, const char *when)
{
	struct imm_layout_info li = { .sz = sizeof(li) };

	if (imm_layout_query(h, 0, 0, &li) < 0)
		return;
	say("%s: %" PRIu64 " extents, %" PRIu64 " holes, %" PRIu64
	    " unwritten, %" PRIu64 " delalloc, %" PRIu64 " shared -> %s\n", when,
	    li.extents, li.holes, li.unwritten, li.delalloc, li.shared,
	    li.flags & IMM_LAYOUT_FINAL ? "final" : "not final");
}

static void on_event(struct imm_event *ev, void *data)
{
	struct imm_handle *h = imm_event_get_handle(ev);
	int *released = data;

	if (imm_event_get_type(ev) != IMM_EVENT_RECALL) {
		say("event: %s\n", imm_event_type_name(imm_event_get_type(ev)));
		return;
	}
	say("recall: another process wants the blocks; the kernel gives us "
	    "%.1f s, the library would revoke in %.1f s\n",
	    (imm_event_get_deadline_ns(ev) - imm_event_get_time_ns(ev)) / 1e9,
	    (imm_event_get_revoke_ns(ev) - imm_event_get_time_ns(ev)) / 1e9);
	say("quiesce I/O (here: nothing to do), then release\n");
	if (imm_release(h) == 0)
		*released = 1;
}

/* The second process: does one thing to the file and reports the wait. */
static pid_t second_process(const char *path, int trunc, uint64_t *waited_us)
{
	pid_t pid = fork();

	if (pid != 0)
		return pid;
	uint64_t a = now_us();
	int fd = trunc ? truncate(path, SIZE / 2) : open(path, O_RDWR | O_CLOEXEC);

	*waited_us = now_us() - a;
	_exit(fd < 0 ? 1 : 0);
}

static int make_demo_file(char *path)
{
	char buf[4096];
	int fd = mkstemp(path);

	if (fd < 0)
		return -1;
	memset(buf, 'x', sizeof(buf));
	if (ftruncate(fd, SIZE) < 0 || pwrite(fd, buf, sizeof(buf), 0) < 0 ||
	    fsync(fd) < 0 ||
	    fallocate(fd, FALLOC_FL_KEEP_SIZE, 4 << 20, 4 << 20) < 0 ||
	    pwrite(fd, buf, sizeof(buf), 12 << 20) < 0) {
		close(fd);
		return -1;
	}
	close(fd);
	return 0;
}

/* Map the sealed range the safest way this file allows: synchronous
 * faults on fsdax, page granularity (msync) elsewhere. */
static int map_sealed(struct imm_handle *h, struct imm_map **m)
{
	struct imm_topology t = { .sz = sizeof(t) };
	uint32_t how;
	char *a;
	int r;

	r = imm_topology_query(h, &t);
	if (r < 0)
		return r;
	how = t.gran_sync != IMM_GRANULARITY_NONE ? IMM_MAP_SYNC : IMM_MAP_PAGE_OK;
	r = imm_map(h, 0, SIZE, how | IMM_MAP_POPULATE, m);
	if (r < 0)
		return r;
	a = imm_map_get_addr(*m);
	memcpy(a, "sealed", 6);
	imm_map_get_persist_fn(*m)(a, 6);
	say("mapped on %s (%s): %s granularity; wrote and persisted through "
	    "the mapping\n", t.blockdev[0] ? t.blockdev : "no block device",
	    t.flags & IMM_TOPO_PMEM ? t.ns_mode : "not pmem",
	    imm_granularity_name(imm_map_get_granularity(*m)));
	return 0;
}

static int break_once(struct imm_ctx *ctx, struct imm_handle *h,
		      const char *path, int trunc, uint64_t *waited)
{
	int released = 0, st, r;
	struct imm_map *m;
	pid_t pid;

	imm_ctx_set_event_fn(ctx, on_event, &released, 0);
	r = imm_seal(h, 0, SIZE, IMM_SEAL_EXCLUSIVE, NULL);
	if (r < 0)
		return r;
	r = map_sealed(h, &m);
	if (r < 0)
		return r;
	say("sealed (exclusive); now a second process %s\n",
	    trunc ? "truncates the file" : "opens the file for writing");
	pid = second_process(path, trunc, waited);
	while (!released) {
		struct pollfd p = { .fd = imm_ctx_get_fd(ctx), .events = POLLIN };

		if (poll(&p, 1, 10000) <= 0)
			return -ETIMEDOUT;
		imm_ctx_dispatch(ctx);
	}
	waitpid(pid, &st, 0);
	say("the second process went on after waiting %.3f ms; our mapping "
	    "went with the seal (%s)\n", *waited / 1000.0,
	    imm_map_get_addr(m) ? "still mapped!" : "unmapped");
	imm_unmap(m);
	return WIFEXITED(st) && WEXITSTATUS(st) == 0 ? 0 : -EIO;
}

int main(int argc, char **argv)
{
	char path[4096];
	uint64_t *waited, t;
	struct imm_handle *h;
	struct imm_ctx *ctx;
	int r;

	t0 = now_us();
	waited = mmap(NULL, sizeof(*waited), PROT_READ | PROT_WRITE,
		      MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	snprintf(path, sizeof(path), "%s/imm-demo.XXXXXX",
		 argc > 1 ? argv[1] : "/var/tmp");
	if (waited == MAP_FAILED || make_demo_file(path) < 0) {
		perror("seal-demo: setting up");
		return 1;
	}
	r = imm_ctx_new(&ctx);
	if (r == 0)
		r = imm_handle_open(ctx, path, IMM_RDWR, &h);
	if (r < 0) {
		fprintf(stderr, "seal-demo: %s: %s (LIBIMMUTABLE_LOG=err says why)\n",
			path, strerror(-r));
		unlink(path);
		return 1;
	}
	say("file %s on %s, backend %s, lease-break-time %d s\n", path,
	    imm_handle_get_fs_name(h), imm_backend_name(imm_ctx_get_backend(ctx)),
	    imm_ctx_get_lease_break_time(ctx));
	show_layout(h, "before");
	t = now_us();
	r = imm_seal(h, 0, SIZE, IMM_SEAL_EXCLUSIVE, NULL);
	if (r == 0) {
		say("prepared and sealed in %.3f ms\n", (now_us() - t) / 1000.0);
		show_layout(h, "after ");
		r = imm_release(h);
	}
	if (r == 0)
		r = break_once(ctx, h, path, 0, waited);
	if (r == 0)
		r = break_once(ctx, h, path, 1, waited);
	if (r == 0)
		say("size after the truncate: %lld bytes; done\n",
		    (long long)lseek(imm_handle_get_fd(h), 0, SEEK_END));
	imm_handle_close(h);
	imm_ctx_unref(ctx);
	unlink(path);
	if (r < 0)
		fprintf(stderr, "seal-demo: %s\n", strerror(-r));
	return r < 0;
}
