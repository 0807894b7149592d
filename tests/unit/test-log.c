// SPDX-License-Identifier: LGPL-2.1-or-later
/* The log hook: silent by default, priorities, errno kept, env override. */
#define _GNU_SOURCE
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>
#include <pthread.h>

#include "private.h"

struct got {
	int n;
	int prio;
	char msg[256];
};

static void hook(void *data, int priority, const char *file, int line,
		 const char *fn, const char *format, va_list args)
{
	struct got *g = data;

	assert_non_null(file);
	assert_true(line > 0);
	assert_non_null(fn);
	g->n++;
	g->prio = priority;
	vsnprintf(g->msg, sizeof(g->msg), format, args);
	errno = EIO;	/* a sloppy hook; the library must still keep errno */
}

static void silent_by_default(void **state)
{
	struct imm_handle *h;
	struct imm_ctx *ctx;
	int fds[2];

	(void)state;
	unsetenv("LIBIMMUTABLE_LOG");
	assert_int_equal(pipe(fds), 0);
	/* stderr goes to a pipe we can inspect */
	int saved = dup(2);

	dup2(fds[1], 2);
	assert_int_equal(imm_ctx_new(&ctx), 0);
	assert_int_equal(imm_handle_open(ctx, "/nonexistent/x", 0, &h), -ENOENT);
	imm_ctx_unref(ctx);
	dup2(saved, 2);
	close(saved);
	close(fds[1]);
	char buf[64];

	assert_int_equal(read(fds[0], buf, sizeof(buf)), 0);
	close(fds[0]);
}

static void hook_gets_errors_with_priority(void **state)
{
	struct imm_handle *h;
	struct imm_ctx *ctx;
	struct got g = { 0 };

	(void)state;
	unsetenv("LIBIMMUTABLE_LOG");
	assert_int_equal(imm_ctx_new(&ctx), 0);
	imm_ctx_set_log_fn(ctx, hook, &g);
	assert_int_equal(imm_ctx_get_log_priority(ctx), LOG_ERR);
	errno = 1234;
	assert_int_equal(imm_handle_open(ctx, "/nonexistent/x", 0, &h), -ENOENT);
	assert_int_equal(g.n, 1);
	assert_int_equal(g.prio, LOG_ERR);
	assert_non_null(strstr(g.msg, "does not exist"));
	/* debug lines only when asked for */
	imm_ctx_set_log_priority(ctx, LOG_DEBUG);
	assert_int_equal(imm_ctx_get_log_priority(ctx), LOG_DEBUG);
	imm_ctx_set_log_priority(ctx, LOG_ERR - 1);	/* silence errors too */
	g.n = 0;
	assert_int_equal(imm_handle_open(ctx, "/nonexistent/x", 0, &h), -ENOENT);
	assert_int_equal(g.n, 0);
	/* logging keeps the caller's errno */
	imm_ctx_set_log_priority(ctx, LOG_DEBUG);
	errno = 4321;
	err(ctx, "x");
	assert_int_equal(errno, 4321);
	imm_ctx_unref(ctx);
}

static void env_override(void **state)
{
	struct imm_ctx *ctx;

	(void)state;
	setenv("LIBIMMUTABLE_LOG", "debug", 1);
	assert_int_equal(imm_ctx_new(&ctx), 0);
	assert_int_equal(imm_ctx_get_log_priority(ctx), LOG_DEBUG);
	imm_ctx_unref(ctx);
	setenv("LIBIMMUTABLE_LOG", "6", 1);
	assert_int_equal(imm_ctx_new(&ctx), 0);
	assert_int_equal(imm_ctx_get_log_priority(ctx), LOG_INFO);
	imm_ctx_unref(ctx);
	setenv("LIBIMMUTABLE_LOG", "nonsense", 1);
	assert_int_equal(imm_ctx_new(&ctx), 0);
	assert_int_equal(imm_ctx_get_log_priority(ctx), LOG_ERR);
	imm_ctx_unref(ctx);
	unsetenv("LIBIMMUTABLE_LOG");
	assert_int_equal(imm_ctx_get_log_priority(NULL), -EINVAL);
}

/* Two hooks, each with its own data: a call of one with the other's data
 * is a torn swap. */
static int tag_a, tag_b;
static atomic_int torn, calls;

static void hook_a(void *data, int priority, const char *file, int line,
		   const char *fn, const char *format, va_list args)
{
	(void)priority, (void)file, (void)line, (void)fn, (void)format, (void)args;
	if (data != &tag_a)
		atomic_fetch_add(&torn, 1);
	atomic_fetch_add(&calls, 1);
}

static void hook_b(void *data, int priority, const char *file, int line,
		   const char *fn, const char *format, va_list args)
{
	(void)priority, (void)file, (void)line, (void)fn, (void)format, (void)args;
	if (data != &tag_b)
		atomic_fetch_add(&torn, 1);
	atomic_fetch_add(&calls, 1);
}

enum { LOGS = 300000, SWAPS = 300000 };

static void *logger(void *arg)
{
	struct imm_ctx *ctx = arg;

	for (int i = 0; i < LOGS; i++)
		err(ctx, "message %d", i);
	return NULL;
}

static void hook_swap_never_tears(void **state)
{
	pthread_t t[2];
	struct imm_ctx *ctx;

	(void)state;
	unsetenv("LIBIMMUTABLE_LOG");
	assert_int_equal(imm_ctx_new(&ctx), 0);
	imm_ctx_set_log_fn(ctx, hook_a, &tag_a);
	for (int i = 0; i < 2; i++)
		assert_int_equal(pthread_create(&t[i], NULL, logger, ctx), 0);
	for (int i = 0; i < SWAPS; i++) {
		if (i % 2)
			imm_ctx_set_log_fn(ctx, hook_a, &tag_a);
		else
			imm_ctx_set_log_fn(ctx, hook_b, &tag_b);
	}
	for (int i = 0; i < 2; i++)
		pthread_join(t[i], NULL);
	printf("# %d torn hook calls in %d\n", atomic_load(&torn),
	       atomic_load(&calls));
	assert_int_equal(atomic_load(&calls), 2 * LOGS);
	assert_int_equal(atomic_load(&torn), 0);
	imm_ctx_unref(ctx);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(silent_by_default),
		cmocka_unit_test(hook_gets_errors_with_priority),
		cmocka_unit_test(env_override),
		cmocka_unit_test(hook_swap_never_tears),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
