// SPDX-License-Identifier: LGPL-2.1-or-later
/*
 * The teardown of registrations when the NIC will not let go.  The host
 * has no RDMA device, so ibv_reg_mr (and the ibv_reg_mr_iova2 its inline
 * wrapper may call) and ibv_dereg_mr are wrapped (-Wl,--wrap); the file,
 * the lease, the mapping and the FIEMAP are real.  Checked: a failed
 * ibv_dereg_mr keeps the MR live and listed, keeps the seal, says so, and
 * is retried; a defeated seal (the map changed under it) deregisters its
 * MRs and then unmaps, as a revoke does.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <syslog.h>
#include <unistd.h>

#include <cmocka.h>

#include <libimmutable/verbs.h>

#include "private.h"

#define FILE_SIZE (1024 * 1024)

/* ------------------------------------------------------- fake verbs */

static struct {
	int reg_calls;
	int dereg_calls;
	int fail_dereg;			/* the next n deregistrations fail */
	struct imm_map *map;		/* the mapping being registered */
	bool mapped_at_dereg;		/* the mapping was live at every dereg */
	int live;			/* registered, not yet deregistered */
	struct imm_handle *release_during_reg;	/* released inside ibv_reg_mr */
} fv;

static struct ibv_mr *fake_reg(struct ibv_pd *pd, void *addr, size_t length)
{
	struct ibv_mr *mr = calloc(1, sizeof(*mr));

	assert_non_null(mr);
	mr->pd = pd;
	mr->context = pd->context;
	mr->addr = addr;
	mr->length = length;
	mr->lkey = 0x100 + (uint32_t)fv.reg_calls;
	mr->rkey = 0x200 + (uint32_t)fv.reg_calls;
	fv.reg_calls++;
	fv.live++;
	/* the seal goes while the NIC registers, as a recall's revoke may */
	if (fv.release_during_reg)
		assert_int_equal(imm_release(fv.release_during_reg), 0);
	fv.release_during_reg = NULL;
	return mr;
}

struct ibv_mr *__wrap_ibv_reg_mr(struct ibv_pd *pd, void *addr, size_t length,
				 int access);
struct ibv_mr *__wrap_ibv_reg_mr(struct ibv_pd *pd, void *addr, size_t length,
				 int access)
{
	(void)access;
	return fake_reg(pd, addr, length);
}

struct ibv_mr *__wrap_ibv_reg_mr_iova2(struct ibv_pd *pd, void *addr,
				       size_t length, uint64_t iova,
				       unsigned int access);
struct ibv_mr *__wrap_ibv_reg_mr_iova2(struct ibv_pd *pd, void *addr,
				       size_t length, uint64_t iova,
				       unsigned int access)
{
	(void)iova; (void)access;
	return fake_reg(pd, addr, length);
}

int __wrap_ibv_dereg_mr(struct ibv_mr *mr);
int __wrap_ibv_dereg_mr(struct ibv_mr *mr)
{
	fv.dereg_calls++;
	if (fv.map && !fv.map->pm)
		fv.mapped_at_dereg = false;
	if (fv.fail_dereg > 0) {
		fv.fail_dereg--;
		return EBUSY;	/* libibverbs returns the errno */
	}
	fv.live--;
	free(mr);
	return 0;
}

/* ------------------------------------------------------------ fixture */

static char last_log[1024];

static void log_fn(void *data, int priority, const char *file, int line,
		   const char *fn, const char *format, va_list args)
{
	(void)data; (void)priority; (void)file; (void)line; (void)fn;
	vsnprintf(last_log, sizeof(last_log), format, args);
}

static char file_path[PATH_MAX];
static struct ibv_context fake_dev;
static struct ibv_pd fake_pd = { .context = &fake_dev };

/* A fully written file of the test's own, so that a seal has nothing to
 * prepare, and a test that fails leaves no lease in the next one's way. */
static int make_file(const char *name)
{
	const char *dir = getenv("TMPDIR") ? getenv("TMPDIR") : "/var/tmp";
	char buf[4096];
	int fd;

	snprintf(file_path, sizeof(file_path), "%s/imm-verbs-%d-%s", dir,
		 (int)getpid(), name);
	fd = open(file_path, O_CREAT | O_TRUNC | O_RDWR | O_CLOEXEC, 0644);
	assert_true(fd >= 0);
	memset(buf, 'x', sizeof(buf));
	for (int off = 0; off < FILE_SIZE; off += (int)sizeof(buf))
		assert_int_equal(pwrite(fd, buf, sizeof(buf), off),
				 (ssize_t)sizeof(buf));
	assert_int_equal(fsync(fd), 0);
	/* the open file keeps it alive; nothing is left behind */
	assert_int_equal(unlink(file_path), 0);
	return fd;
}

struct rig {
	struct imm_ctx *ctx;
	struct imm_handle *h;
	struct imm_map *m;
	struct imm_mr *mr;
	int app_fd;		/* the application's own fd, same open file */
};

/* An exclusive seal over the file through from_fd, so that app_fd shares
 * the open file and can punch a hole without breaking the lease. */
static void rig_up(struct rig *r, const char *name)
{
	memset(&fv, 0, sizeof(fv));
	fv.mapped_at_dereg = true;
	assert_int_equal(imm_ctx_new(&r->ctx), 0);
	imm_ctx_set_log_fn(r->ctx, log_fn, NULL);
	imm_ctx_set_log_priority(r->ctx, LOG_INFO);
	r->app_fd = make_file(name);
	assert_true(r->app_fd >= 0);
	assert_int_equal(imm_handle_from_fd(r->ctx, r->app_fd, 0, &r->h), 0);
	assert_int_equal(imm_seal(r->h, 0, FILE_SIZE, IMM_SEAL_EXCLUSIVE, NULL), 0);
	assert_int_equal(imm_map(r->h, 0, FILE_SIZE, IMM_MAP_PAGE_OK, &r->m), 0);
	fv.map = r->m;
	assert_int_equal(imm_reg_mr(r->m, &fake_pd, 0, FILE_SIZE,
				    IBV_ACCESS_LOCAL_WRITE |
				    IBV_ACCESS_REMOTE_WRITE, IMM_MR_PINNED,
				    &r->mr), 0);
	assert_int_equal(fv.reg_calls, 1);
}

static void rig_down(struct rig *r)
{
	if (r->mr)
		assert_int_equal(imm_dereg_mr(r->mr), 0);
	assert_int_equal(imm_unmap(r->m), 0);
	assert_int_equal(imm_handle_close(r->h), 0);
	close(r->app_fd);
	imm_ctx_unref(r->ctx);
}

/* -------------------------------------------------------------- tests */

/* Release with an MR the NIC will not give back: the seal must stay. */
static void failed_dereg_keeps_seal(void **state)
{
	struct rig r;

	(void)state;
	rig_up(&r, "failed_dereg_keeps_seal");
	fv.fail_dereg = 1;
	assert_int_equal(imm_release(r.h), -EBUSY);
	assert_non_null(strstr(last_log, "ibv_dereg_mr"));
	assert_int_equal(imm_handle_get_state(r.h), IMM_STATE_SEALED);
	assert_int_equal(fcntl(r.app_fd, F_GETLEASE), F_WRLCK);
	assert_non_null(imm_mr_get_ibv_mr(r.mr));
	assert_non_null(imm_map_get_addr(r.m));
	/* the retry deregisters, then unmaps and unseals */
	assert_int_equal(imm_release(r.h), 0);
	assert_int_equal(fv.dereg_calls, 2);
	assert_true(fv.mapped_at_dereg);
	assert_null(imm_mr_get_ibv_mr(r.mr));
	assert_int_equal(imm_handle_get_state(r.h), IMM_STATE_OPEN);
	assert_int_equal(fcntl(r.app_fd, F_GETLEASE), F_UNLCK);
	rig_down(&r);
	assert_int_equal(fv.dereg_calls, 2);
}

/* imm_dereg_mr() that fails keeps the object, and unmap retries it. */
static void failed_dereg_mr_keeps_mr(void **state)
{
	struct rig r;

	(void)state;
	rig_up(&r, "failed_dereg_mr_keeps_mr");
	fv.fail_dereg = 2;
	assert_int_equal(imm_dereg_mr(r.mr), -EBUSY);
	assert_non_null(imm_mr_get_ibv_mr(r.mr));
	assert_int_equal(imm_unmap(r.m), -EBUSY);	/* retried, fails again */
	assert_int_equal(fv.dereg_calls, 2);
	assert_int_equal(imm_unmap(r.m), -EBUSY);	/* retried: gone now */
	assert_int_equal(fv.dereg_calls, 3);
	assert_null(imm_mr_get_ibv_mr(r.mr));
	assert_int_equal(imm_dereg_mr(r.mr), 0);	/* frees the object */
	r.mr = NULL;
	assert_int_equal(fv.dereg_calls, 3);
	rig_down(&r);
}

/* A close that cannot deregister stays open, and a second close works. */
static void failed_dereg_at_close(void **state)
{
	struct rig r;

	(void)state;
	rig_up(&r, "failed_dereg_at_close");
	fv.fail_dereg = 1;
	assert_int_equal(imm_handle_close(r.h), -EBUSY);
	assert_int_equal(imm_handle_get_state(r.h), IMM_STATE_SEALED);
	assert_int_equal(fcntl(r.app_fd, F_GETLEASE), F_WRLCK);
	assert_int_equal(imm_dereg_mr(r.mr), 0);
	r.mr = NULL;
	assert_int_equal(imm_release(r.h), 0);
	rig_down(&r);
}

/*
 * The seal went during the registration, and the registration cannot be
 * undone: the MR, which the caller never got, must not be forgotten while
 * the NIC has it; imm_unmap() retries it, and frees it once it is gone.
 */
static void failed_undo_of_late_registration(void **state)
{
	struct imm_mr *late = NULL;
	struct rig r;

	(void)state;
	rig_up(&r, "late");
	assert_int_equal(imm_dereg_mr(r.mr), 0);
	r.mr = NULL;
	assert_int_equal(fv.live, 0);
	fv.release_during_reg = r.h;
	fv.fail_dereg = 1;
	assert_int_equal(imm_reg_mr(r.m, &fake_pd, 0, FILE_SIZE,
				    IBV_ACCESS_LOCAL_WRITE, IMM_MR_PINNED,
				    &late), -ESTALE);
	assert_null(late);
	assert_int_equal(fv.dereg_calls, 2);
	assert_int_equal(fv.live, 1);		/* still in the NIC */
	assert_int_equal(imm_unmap(r.m), 0);	/* retried, gone, freed */
	assert_int_equal(fv.dereg_calls, 3);
	assert_int_equal(fv.live, 0);
	assert_int_equal(imm_handle_close(r.h), 0);
	close(r.app_fd);
	imm_ctx_unref(r.ctx);
}

/* The map changed under the seal: MRs go first, then the mapping. */
static void defeated_revokes(void **state)
{
	struct rig r;

	(void)state;
	rig_up(&r, "defeated_revokes");
	assert_int_equal(fallocate(r.app_fd, FALLOC_FL_PUNCH_HOLE |
				   FALLOC_FL_KEEP_SIZE, 4096, 4096), 0);
	assert_int_equal(imm_verify(r.h), -ESTALE);
	assert_int_equal(imm_handle_get_state(r.h), IMM_STATE_DEFEATED);
	assert_int_equal(fv.dereg_calls, 1);
	assert_true(fv.mapped_at_dereg);
	assert_null(imm_mr_get_ibv_mr(r.mr));
	assert_null(r.m->pm);
	assert_int_equal(imm_map_deep_flush(r.m, imm_map_get_addr(r.m), 64),
			 -ESTALE);
	/* the seal itself holds until the application releases it */
	assert_int_equal(fcntl(r.app_fd, F_GETLEASE), F_WRLCK);
	assert_int_equal(imm_release(r.h), 0);
	rig_down(&r);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(failed_dereg_keeps_seal),
		cmocka_unit_test(failed_dereg_mr_keeps_mr),
		cmocka_unit_test(failed_dereg_at_close),
		cmocka_unit_test(defeated_revokes),
		cmocka_unit_test(failed_undo_of_late_registration),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
