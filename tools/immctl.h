/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* What immctl's commands share: error lines, contexts, holding a seal. */
#ifndef IMMCTL_H
#define IMMCTL_H

#include <stdbool.h>
#include <stdint.h>

#include <libimmutable/libimmutable.h>

#define EXIT_USAGE 2

extern const char *prog_target;	/* what error lines are about */

/* "immctl: TARGET: what: strerror(-r)" on stderr; EXIT_FAILURE */
int fail(const char *what, int r);
/* A context whose log lines are immctl's error messages; 0 or EXIT_FAILURE */
int new_ctx(struct imm_ctx **ctx);
uint64_t now_ns(void);
/* 4096, 64K, 1M, 2G: binary suffixes. */
int parse_size(const char *s, uint64_t *ret);

/* A sealed handle held from the shell until a recall or SIGINT/SIGTERM. */
struct holder {
	bool json;
	bool auto_release;
	bool done;
	int status;
	int stop_fd;	/* signalfd of SIGINT/SIGTERM from hold_signals(); open until exit */
	struct imm_handle *h;
};
/* One event line: JSON with extra_json appended, or text. */
void emit(const struct holder *o, const char *event, uint64_t t,
	  const char *extra_json, const char *extra_text);
void release_now(struct holder *o);
/* imm_ctx_set_event_fn() callback: prints, releases if auto_release */
void on_event(struct imm_event *ev, void *userdata);
/* Block SIGINT/SIGTERM into o->stop_fd; before anything is sealed, so
 * that a signal sent once the first event line is out cannot kill the
 * process before hold() watches for it.  0 or EXIT_FAILURE. */
int hold_signals(struct holder *o);
/* Dispatch until done; SIGINT/SIGTERM release.  The exit status. */
int hold(struct imm_ctx *ctx, struct holder *o);

int cmd_extents(int argc, char **argv);

#endif
