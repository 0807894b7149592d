// SPDX-License-Identifier: LGPL-2.1-or-later
/* The context's log hook: silent by default, stderr with LIBIMMUTABLE_LOG. */
#define _GNU_SOURCE
#include <errno.h>
#include <sched.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "private.h"

static void log_stderr(void *data, int priority, const char *file, int line,
		       const char *fn, const char *format, va_list args)
{
	(void)data;
	(void)file;
	(void)line;
	fprintf(stderr, "libimmutable[%d] %s: ", priority, fn);
	vfprintf(stderr, format, args);
	fputc('\n', stderr);
}

/*
 * Read fn and data as one pair: a hook swapped on another thread must never
 * be called with the other hook's data.  No lock is held while the hook
 * runs, so it may log or swap the hook itself.  A writer is in its odd
 * window for two stores; yield rather than spin if it was preempted there.
 */
static imm_log_fn hook_get(const struct imm_ctx *ctx, void **ret_data)
{
	struct imm_ctx *c = (struct imm_ctx *)ctx;	/* atomics are read only */

	for (;;) {
		unsigned seq = atomic_load(&c->log_seq);
		imm_log_fn fn;

		if (seq & 1) {
			sched_yield();
			continue;
		}
		fn = atomic_load(&c->log_fn);
		*ret_data = atomic_load(&c->log_data);
		if (atomic_load(&c->log_seq) == seq)
			return fn;
	}
}

static void hook_set(struct imm_ctx *ctx, imm_log_fn fn, void *data)
{
	pthread_mutex_lock(&ctx->log_lock);
	atomic_fetch_add(&ctx->log_seq, 1);
	atomic_store(&ctx->log_fn, fn);
	atomic_store(&ctx->log_data, data);
	atomic_fetch_add(&ctx->log_seq, 1);
	pthread_mutex_unlock(&ctx->log_lock);
}

void imm_log(const struct imm_ctx *ctx, int priority, const char *file,
	     int line, const char *fn, const char *format, ...)
{
	int saved = errno;	/* logging must not clobber the caller's errno */
	imm_log_fn hook;
	va_list args;
	void *data;

	hook = hook_get(ctx, &data);
	if (!hook)
		return;
	va_start(args, format);
	hook(data, priority, file, line, fn, format, args);
	va_end(args);
	errno = saved;
}

static int parse_priority(const char *s)
{
	static const struct {
		const char *name;
		int prio;
	} names[] = {
		{ "err", LOG_ERR },	{ "error", LOG_ERR },
		{ "warning", LOG_WARNING }, { "warn", LOG_WARNING },
		{ "notice", LOG_NOTICE }, { "info", LOG_INFO },
		{ "debug", LOG_DEBUG },
	};
	char *end;
	long v;

	errno = 0;
	v = strtol(s, &end, 10);
	if (!errno && end != s && *end == '\0' && v >= 0 && v <= LOG_DEBUG)
		return (int)v;
	for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
		if (!strcasecmp(s, names[i].name))
			return names[i].prio;
	return LOG_ERR;
}

void imm_log_init(struct imm_ctx *ctx)
{
	const char *env = secure_getenv("LIBIMMUTABLE_LOG");

	/* before any other thread exists: plain initialization */
	atomic_init(&ctx->log_seq, 0);
	atomic_init(&ctx->log_fn, NULL);
	atomic_init(&ctx->log_data, NULL);
	atomic_init(&ctx->log_priority, LOG_ERR);
	if (env && *env) {
		atomic_store(&ctx->log_fn, log_stderr);
		atomic_store(&ctx->log_priority, parse_priority(env));
	}
}

IMM_EXPORT void imm_ctx_set_log_fn(struct imm_ctx *ctx, imm_log_fn log_fn,
				   void *data)
{
	if (!ctx)
		return;
	hook_set(ctx, log_fn, data);
}

IMM_EXPORT int imm_ctx_get_log_priority(const struct imm_ctx *ctx)
{
	return ctx ? atomic_load(&((struct imm_ctx *)ctx)->log_priority) : -EINVAL;
}

IMM_EXPORT void imm_ctx_set_log_priority(struct imm_ctx *ctx, int priority)
{
	if (!ctx)
		return;
	atomic_store(&ctx->log_priority, priority);
}
