// SPDX-License-Identifier: LGPL-2.1-or-later
/* The context's log hook: silent by default, stderr with LIBIMMUTABLE_LOG. */
#define _GNU_SOURCE
#include <errno.h>
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

void imm_log(const struct imm_ctx *ctx, int priority, const char *file,
	     int line, const char *fn, const char *format, ...)
{
	int saved = errno;	/* logging must not clobber the caller's errno */
	va_list args;

	if (!ctx->log_fn)
		return;
	va_start(args, format);
	ctx->log_fn(ctx->log_data, priority, file, line, fn, format, args);
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

	ctx->log_fn = NULL;
	ctx->log_data = NULL;
	ctx->log_priority = LOG_ERR;
	if (env && *env) {
		ctx->log_fn = log_stderr;
		ctx->log_priority = parse_priority(env);
	}
}

IMM_EXPORT void imm_ctx_set_log_fn(struct imm_ctx *ctx, imm_log_fn log_fn,
				   void *data)
{
	if (!ctx)
		return;
	ctx->log_fn = log_fn;
	ctx->log_data = data;
}

IMM_EXPORT int imm_ctx_get_log_priority(const struct imm_ctx *ctx)
{
	return ctx ? ctx->log_priority : -EINVAL;
}

IMM_EXPORT void imm_ctx_set_log_priority(struct imm_ctx *ctx, int priority)
{
	if (!ctx)
		return;
	ctx->log_priority = priority;
}
