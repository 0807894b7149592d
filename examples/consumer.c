// SPDX-License-Identifier: LGPL-2.1-or-later
/*
 * The smallest useful program: seal a file, wait for someone to want its
 * blocks, let go.  Built against the installed library by the test suite
 * (pkg-config and find_package).  usage: consumer [FILE]
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <libimmutable/libimmutable.h>

static void on_event(struct imm_event *ev, void *data)
{
	(void)data;
	if (imm_event_get_type(ev) == IMM_EVENT_RECALL)
		imm_release(imm_event_get_handle(ev));	/* quiesce first, then this */
}

int main(int argc, char **argv)
{
	char tmp[] = "/var/tmp/imm-consumer.XXXXXX";
	const char *path = argc > 1 ? argv[1] : tmp;
	struct imm_handle *h;
	struct imm_ctx *ctx;
	int r, fd = -1;

	if (argc < 2) {
		fd = mkstemp(tmp);
		if (fd < 0 || ftruncate(fd, 1 << 20) < 0)
			return 1;
		close(fd);
	}
	r = imm_ctx_new(&ctx);
	if (r == 0)
		r = imm_ctx_set_event_fn(ctx, on_event, NULL, 0);
	if (r == 0)
		r = imm_handle_open(ctx, path, IMM_RDWR, &h);
	if (r == 0) {
		r = imm_seal(h, 0, 1 << 20, IMM_SEAL_EXCLUSIVE, NULL);
		if (r == 0 && argc > 1) {	/* with a file: hold until recalled */
			struct pollfd p = { .fd = imm_ctx_get_fd(ctx), .events = POLLIN };

			while (imm_handle_get_state(h) == IMM_STATE_SEALED &&
			       poll(&p, 1, -1) > 0)
				imm_ctx_dispatch(ctx);
		}
		if (r == 0)
			printf("sealed and released %s (%s)\n", path,
			       imm_handle_get_fs_name(h));
		imm_handle_close(h);
	}
	imm_ctx_unref(ctx);
	if (argc < 2)
		unlink(tmp);
	if (r < 0)
		fprintf(stderr, "consumer: %s\n", strerror(-r));
	return r < 0;
}
