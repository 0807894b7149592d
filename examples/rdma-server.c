// SPDX-License-Identifier: LGPL-2.1-or-later
/*
 * rdma-server: a small storage server on libimmutable's public API.
 *
 * It seals FILE (breakably, see breakable_seal()), maps it DAX-safely, registers the mapping and
 * lets clients RDMA READ and WRITE it directly: the address, rkey and seal
 * generation travel in the rdma_cm accept.  When another process wants to
 * truncate or punch the file, the server gets the recall, disconnects its
 * clients and releases -- which deregisters the MR before the mapping and
 * the seal go -- so the truncate proceeds.  Then it seals again (growing the
 * file back to SIZE first), and clients that reconnect get the new rkey.
 *
 *   rdma-server [-a ADDR] [-p PORT] FILE SIZE
 *
 * Prints one line per step on stdout; "ready" once it serves.  SIGINT or
 * SIGTERM end it cleanly.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/signalfd.h>
#include <sys/stat.h>
#include <unistd.h>

#include <libimmutable/verbs.h>
#include <rdma/rdma_cma.h>

#include "rdma-common.h"

#define MAX_CLIENTS 16

struct server {
	const char *path;
	uint64_t size;
	struct imm_ctx *ctx;
	struct imm_handle *h;
	struct imm_map *map;
	struct imm_mr *mr;
	uint32_t generation;
	bool recalled;
	struct rdma_event_channel *ch;
	struct rdma_cm_id *listen;
	struct ibv_pd *pd;
	struct rdma_cm_id *clients[MAX_CLIENTS];
};

static void say(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void say(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	fputs("server: ", stdout);
	vprintf(fmt, ap);
	fputc('\n', stdout);
	fflush(stdout);
	va_end(ap);
}

static void on_event(struct imm_event *ev, void *data)
{
	struct server *s = data;

	say("%s from the kernel: another process wants the file's blocks",
	    imm_event_type_name(imm_event_get_type(ev)));
	s->recalled = true;	/* acted on in the main loop, not here */
}

/* The file back to SIZE (a truncate may have shrunk it); the seal then
 * allocates what the truncate freed. */
static int grow(struct server *s)
{
	struct stat st;
	int fd = imm_handle_get_fd(s->h);

	if (fstat(fd, &st) < 0)
		return -errno;
	if ((uint64_t)st.st_size < s->size && ftruncate(fd, (off_t)s->size) < 0)
		return -errno;
	return 0;
}

static bool shrunk(struct server *s)
{
	struct stat st;

	return fstat(imm_handle_get_fd(s->h), &st) == 0 &&
	       (uint64_t)st.st_size < s->size;
}

/*
 * The seal that yields to a truncate or punch with a recall, for a holder
 * that writes: a write lease (IMM_SEAL_EXCLUSIVE) where the file is sealed
 * with leases, a breakable layout seal (IMM_SEAL_SHARED) where it has
 * layout seals (the companion kernel patch), whose exclusive seal would
 * make the truncate fail instead.
 */
static uint32_t breakable_seal(struct server *s)
{
	return imm_handle_get_backend(s->h) == IMM_BACKEND_LAYOUT ?
	       IMM_SEAL_SHARED : IMM_SEAL_EXCLUSIVE;
}

/* Seal, map, register.  1: retry later (someone else still has the file
 * open), 0: serving, <0: give up. */
/* Release the seal (which revokes MR and mapping), then free both. */
static void give_back(struct server *s)
{
	imm_release(s->h);
	if (s->mr)
		imm_dereg_mr(s->mr);
	if (s->map)
		imm_unmap(s->map);
	s->mr = NULL;
	s->map = NULL;
	s->recalled = false;
}

static int seal_and_register(struct server *s)
{
	struct imm_topology t = { .sz = sizeof(t) };
	int r;

	r = grow(s);
	if (r == 0)
		r = imm_seal(s->h, 0, s->size, breakable_seal(s), NULL);
	if (r == -EWOULDBLOCK || r == -EAGAIN || r == -EBUSY)
		return 1;
	/* the truncate landed after grow(), or while imm_seal() prepared the
	 * range (the seal then finds part of it a hole): again */
	if ((r == -EINVAL || r == -EUCLEAN) && shrunk(s))
		return 1;
	if (r == 0)
		r = imm_topology_query(s->h, &t);
	if (r == 0)
		r = imm_map(s->h, 0, s->size, IMM_MAP_POPULATE |
			    (t.gran_sync ? IMM_MAP_SYNC : IMM_MAP_PAGE_OK), &s->map);
	if (r == 0)
		r = imm_reg_mr(s->map, s->pd, 0, s->size, IBV_ACCESS_LOCAL_WRITE |
			       IBV_ACCESS_REMOTE_WRITE | IBV_ACCESS_REMOTE_READ,
			       IMM_MR_AUTO, &s->mr);
	if (r == -ESTALE) {
		/* recalled again before it could serve: give it back, again */
		give_back(s);
		say("recalled while sealing: released, sealing again");
		return 1;
	}
	if (r < 0) {
		say("cannot serve %s: %s", s->path, strerror(-r));
		return r;
	}
	s->generation++;
	say("sealed generation %" PRIu32 ": %s, %s granularity, %s registration, "
	    "rkey 0x%x", s->generation, t.flags & IMM_TOPO_DAX ? "DAX" : "not DAX",
	    imm_granularity_name(imm_map_get_granularity(s->map)),
	    imm_mr_mode_name(imm_mr_get_mode(s->mr)), imm_mr_get_rkey(s->mr));
	return 0;
}

static void drop_client(struct server *s, int i)
{
	rdma_destroy_qp(s->clients[i]);
	rdma_destroy_id(s->clients[i]);
	s->clients[i] = NULL;
}

/* The recall: release -- MR, mapping and seal go, in that order -- so that
 * the truncate can proceed; a client's next access meets the dead rkey
 * (remote access error) on a QP that is still there to say so.  Then the
 * clients are let go: they come back for the next generation's rkey. */
static void unseal(struct server *s)
{
	give_back(s);
	for (int i = 0; i < MAX_CLIENTS; i++)
		if (s->clients[i])
			rdma_disconnect(s->clients[i]);
	say("released generation %" PRIu32 ": the layout change may proceed",
	    s->generation);
}

static void accept_client(struct server *s, struct rdma_cm_id *id)
{
	struct example_advert ad = { .magic = EXAMPLE_MAGIC };
	struct ibv_qp_init_attr qa = {
		.qp_type = IBV_QPT_RC,
		.cap = { .max_send_wr = 4, .max_recv_wr = 4, .max_send_sge = 1,
			 .max_recv_sge = 1 },
	};
	struct rdma_conn_param cp = { .responder_resources = 8,
				      .initiator_depth = 8,
				      .private_data = &ad,
				      .private_data_len = sizeof(ad) };
	int i;

	for (i = 0; i < MAX_CLIENTS && s->clients[i]; i++)
		;
	if (!s->mr || i == MAX_CLIENTS || rdma_create_qp(id, s->pd, &qa)) {
		rdma_reject(id, NULL, 0);	/* not serving now: retry */
		rdma_destroy_id(id);
		return;
	}
	ad.generation = s->generation;
	ad.addr = (uintptr_t)imm_mr_get_addr(s->mr);
	ad.length = imm_mr_get_length(s->mr);
	ad.rkey = imm_mr_get_rkey(s->mr);
	s->clients[i] = id;
	if (rdma_accept(id, &cp)) {
		say("rdma_accept: %s", strerror(errno));
		drop_client(s, i);
	}
}

static void cm_event(struct server *s)
{
	struct rdma_cm_event *ev;
	struct rdma_cm_id *id;
	enum rdma_cm_event_type type;

	if (rdma_get_cm_event(s->ch, &ev))
		return;
	id = ev->id;
	type = ev->event;
	rdma_ack_cm_event(ev);
	if (type == RDMA_CM_EVENT_CONNECT_REQUEST) {
		accept_client(s, id);
	} else if (type == RDMA_CM_EVENT_DISCONNECTED) {
		for (int i = 0; i < MAX_CLIENTS; i++)
			if (s->clients[i] == id)
				drop_client(s, i);
	}
}

static int listen_on(struct server *s, const char *addr, const char *port)
{
	struct rdma_addrinfo hints = { .ai_flags = RAI_PASSIVE,
				       .ai_port_space = RDMA_PS_TCP }, *ai;

	if (rdma_getaddrinfo(addr, port, &hints, &ai))
		return -errno;
	s->ch = rdma_create_event_channel();
	if (!s->ch || rdma_create_id(s->ch, &s->listen, NULL, RDMA_PS_TCP) ||
	    rdma_bind_addr(s->listen, ai->ai_src_addr) ||
	    rdma_listen(s->listen, 8)) {
		rdma_freeaddrinfo(ai);
		return -errno;
	}
	rdma_freeaddrinfo(ai);
	/* bound to an address: the id knows its device, the PD goes there */
	s->pd = s->listen->verbs ? ibv_alloc_pd(s->listen->verbs) : NULL;
	return s->pd ? 0 : -ENODEV;
}

static int create(const char *path)
{
	int fd = open(path, O_CREAT | O_WRONLY | O_CLOEXEC, 0644);

	if (fd < 0)
		return -errno;
	close(fd);
	return 0;
}

static int stop_signals(void)
{
	sigset_t set;

	sigemptyset(&set);
	sigaddset(&set, SIGINT);
	sigaddset(&set, SIGTERM);
	sigprocmask(SIG_BLOCK, &set, NULL);
	return signalfd(-1, &set, SFD_CLOEXEC);
}

static int serve(struct server *s, int sigfd)
{
	bool ready = false;
	int r;

	for (;;) {
		struct pollfd p[3] = {
			{ .fd = s->ch->fd, .events = POLLIN },
			{ .fd = imm_ctx_get_fd(s->ctx), .events = POLLIN },
			{ .fd = sigfd, .events = POLLIN },
		};

		if (!s->mr) {
			r = seal_and_register(s);
			if (r < 0)
				return r;
			if (r == 0 && !ready) {
				say("ready: serving %s, %" PRIu64 " bytes", s->path,
				    s->size);
				ready = true;
			}
		}
		if (poll(p, 3, s->mr ? -1 : 50) < 0 && errno != EINTR)
			return -errno;
		if (p[2].revents)
			return 0;
		if (p[1].revents)
			imm_ctx_dispatch(s->ctx);
		if (s->recalled || (s->mr && imm_handle_get_state(s->h) !=
				    IMM_STATE_SEALED))
			unseal(s);
		if (p[0].revents)
			cm_event(s);
	}
}

int main(int argc, char **argv)
{
	struct server s = { 0 };
	const char *addr = "192.0.2.1", *port = EXAMPLE_PORT;
	int c, r, sigfd;

	while ((c = getopt(argc, argv, "a:p:")) != -1) {
		if (c == 'a')
			addr = optarg;
		else if (c == 'p')
			port = optarg;
		else
			goto usage;
	}
	if (argc - optind != 2)
		goto usage;
	s.path = argv[optind];
	s.size = strtoull(argv[optind + 1], NULL, 0);
	sigfd = stop_signals();
	r = listen_on(&s, addr, port);
	if (r < 0) {
		fprintf(stderr, "rdma-server: cannot listen on %s:%s: %s\n", addr,
			port, strerror(-r));
		return 1;
	}
	r = imm_ctx_new(&s.ctx);
	if (r == 0)
		r = imm_ctx_set_event_fn(s.ctx, on_event, &s, 0);
	if (r == 0)
		r = create(s.path);
	if (r == 0)
		r = imm_handle_open(s.ctx, s.path, IMM_RDWR, &s.h);
	if (r == 0)
		r = serve(&s, sigfd);
	if (s.mr)
		unseal(&s);
	say("stopping: %s", r ? strerror(-r) : "signal");
	imm_handle_close(s.h);
	imm_ctx_unref(s.ctx);
	return r ? 1 : 0;
usage:
	fprintf(stderr, "usage: rdma-server [-a ADDR] [-p PORT] FILE SIZE\n");
	return 2;
}
