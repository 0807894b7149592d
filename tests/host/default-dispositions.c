// SPDX-License-Identifier: LGPL-2.1-or-later
/*
 * A host process with every signal at its default action and unblocked,
 * holding a seal through many break / release / re-seal cycles.  If the
 * library ever let a lease signal (SIGIO or its RT signal) reach the
 * process, the default action would kill it.
 *
 * usage: default-dispositions FILE ROUNDS
 * Protocol on stdin/stdout: prints "sealed\n", waits for the break, prints
 * "released\n", reads one byte before sealing again.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <libimmutable/libimmutable.h>

static void on_event(struct imm_event *ev, void *data)
{
	int *released = data;

	if (imm_event_get_type(ev) == IMM_EVENT_RECALL &&
	    imm_release(imm_event_get_handle(ev)) == 0)
		__atomic_store_n(released, 1, __ATOMIC_SEQ_CST);
}

static void reset_signals(void)
{
	struct sigaction sa = { .sa_handler = SIG_DFL };
	sigset_t none;

	for (int s = 1; s <= SIGRTMAX; s++)
		sigaction(s, &sa, NULL);	/* SIGKILL/SIGSTOP just fail */
	sigemptyset(&none);
	sigprocmask(SIG_SETMASK, &none, NULL);
}

int main(int argc, char **argv)
{
	struct imm_handle *h;
	struct imm_ctx *ctx;
	int rounds, released;

	if (argc != 3)
		return 2;
	reset_signals();
	rounds = atoi(argv[2]);
	setvbuf(stdout, NULL, _IONBF, 0);
	if (imm_ctx_new(&ctx) || imm_handle_open(ctx, argv[1], IMM_RDWR, &h))
		return 3;
	for (int i = 0; i < rounds; i++) {
		/* alternate the two delivery paths */
		imm_ctx_set_event_fn(ctx, on_event, &released,
				     i % 2 ? IMM_EVENT_FN_ASYNC : 0);
		released = 0;
		/* a breaker may have truncated it: grow it back first */
		if (ftruncate(imm_handle_get_fd(h), 4096) < 0)
			return 6;
		if (imm_seal(h, 0, 4096, IMM_SEAL_EXCLUSIVE, NULL))
			return 4;
		printf("sealed\n");
		while (!__atomic_load_n(&released, __ATOMIC_SEQ_CST)) {
			struct pollfd p = { .fd = imm_ctx_get_fd(ctx),
					    .events = POLLIN };

			if (poll(&p, 1, 50) > 0)
				imm_ctx_dispatch(ctx);
		}
		printf("released\n");
		char go;

		if (read(0, &go, 1) != 1)
			return 5;
	}
	imm_handle_close(h);
	imm_ctx_unref(ctx);
	return 0;
}
