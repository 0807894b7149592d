// SPDX-License-Identifier: LGPL-2.1-or-later
/*
 * Preparation must never lose another writer's bytes.  A writer (another
 * process, or another thread with its own open) stores numbered records at
 * random places of a range of unwritten extents while imm_seal() prepares
 * that range for a shared seal; afterwards every record the writer says it
 * wrote must be in the file.  Preparing by reading bytes and writing them
 * back loses the records that land in between, within a few rounds.
 *
 * The shared seal itself is refused (-EAGAIN) while the writer has the
 * file open, or taken when a round's writes ended first; either way the
 * preparation ran, which each round checks with its own FIEMAP.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>
#include <linux/falloc.h>
#include <linux/fiemap.h>
#include <linux/fs.h>

#include "fixture.h"

#define RANGE (256u << 10)
#define STRIDE 512u
#define SLOTS (RANGE / STRIDE)
#define ROUNDS 2000
#define WAIT_NS (10ull * 1000000000ull)

/* Shared between the test and its writer (MAP_SHARED for a process). */
struct race {
	atomic_uint round;	/* the round the writer is to write in */
	atomic_uint done;	/* the last round the writer finished */
	atomic_bool quit;
	_Atomic uint64_t writes;	/* by the writer */
	uint64_t rec[SLOTS];	/* last value written per slot, 0 = none */
	char path[PATH_MAX];
};

static uint64_t xorshift(uint64_t *s)
{
	*s ^= *s << 13;
	*s ^= *s >> 7;
	*s ^= *s << 17;
	return *s;
}

static bool wait_round(struct race *rc, unsigned round)
{
	uint64_t until = fx_now_ns() + WAIT_NS;

	while (atomic_load(&rc->round) != round && !atomic_load(&rc->quit))
		if (fx_now_ns() > until)
			return false;
		else
			sched_yield();
	return !atomic_load(&rc->quit);
}

/* Writes records until the round moves on; says which round it ended. */
static void writer(struct race *rc)
{
	int fd = open(rc->path, O_RDWR | O_CLOEXEC);
	uint64_t seed = 0x9e3779b97f4a7c15ull ^ (uint64_t)getpid(), seq = 0;

	if (fd < 0)
		return;
	for (unsigned round = 1; wait_round(rc, round); round++) {
		while (atomic_load(&rc->round) == round) {
			unsigned slot = (unsigned)(xorshift(&seed) % SLOTS);

			seq++;
			if (pwrite(fd, &seq, sizeof(seq), (off_t)slot * STRIDE) !=
			    (ssize_t)sizeof(seq))
				break;
			rc->rec[slot] = seq;
			atomic_fetch_add(&rc->writes, 1);
		}
		atomic_store(&rc->done, round);
	}
	close(fd);
}

static void *writer_thread(void *arg)
{
	writer(arg);
	return NULL;
}

static unsigned unwritten_or_holes(int fd)
{
	struct fiemap *fm = calloc(1, sizeof(*fm) + 64 * sizeof(struct fiemap_extent));
	uint64_t cursor = 0;
	unsigned bad = 0;

	assert_non_null(fm);
	fm->fm_length = RANGE;
	fm->fm_flags = FIEMAP_FLAG_SYNC;
	fm->fm_extent_count = 64;
	assert_int_equal(ioctl(fd, FS_IOC_FIEMAP, fm), 0);
	for (unsigned i = 0; i < fm->fm_mapped_extents; i++) {
		struct fiemap_extent *e = &fm->fm_extents[i];

		bad += e->fe_logical > cursor;
		bad += !!(e->fe_flags & FIEMAP_EXTENT_UNWRITTEN);
		cursor = e->fe_logical + e->fe_length;
	}
	bad += cursor < RANGE;
	free(fm);
	return bad;
}

/* Between rounds, with the writer idle: unwritten extents again. */
static void reset_range(struct race *rc, int fd)
{
	assert_int_equal(fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
				   0, RANGE), 0);
	assert_int_equal(fallocate(fd, 0, 0, RANGE), 0);
	memset(rc->rec, 0, sizeof(rc->rec));
	assert_true(unwritten_or_holes(fd) > 0);
}

static unsigned lost_records(const struct race *rc, int fd)
{
	unsigned lost = 0;

	for (unsigned s = 0; s < SLOTS; s++) {
		uint64_t v = 0;

		if (!rc->rec[s])
			continue;
		assert_int_equal(pread(fd, &v, sizeof(v), (off_t)s * STRIDE),
				 sizeof(v));
		lost += v != rc->rec[s];
	}
	return lost;
}

static void wait_done(struct race *rc, unsigned round)
{
	uint64_t until = fx_now_ns() + WAIT_NS;

	while (atomic_load(&rc->done) != round)
		if (fx_now_ns() > until)
			fail_msg("the writer did not finish round %u", round);
		else
			sched_yield();
}

static void race_rounds(const char *kind, unsigned size_mb, bool process)
{
	struct race *rc = mmap(NULL, sizeof(*rc), PROT_READ | PROT_WRITE,
			       MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	unsigned lost = 0, refused = 0, sealed = 0;
	struct imm_handle *h;
	struct imm_ctx *ctx;
	struct fx_log log;
	struct fx_fs fs;
	pthread_t thr;
	pid_t pid = 0;
	int fd, status;

	fx_need_root("ext4 and XFS on loop devices");
	assert_true(rc != MAP_FAILED);
	fx_mount(&fs, kind, size_mb, NULL);
	fx_path(&fs, "race", rc->path);
	fd = open(rc->path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
	assert_true(fd >= 0);
	assert_int_equal(ftruncate(fd, RANGE), 0);
	ctx = fx_ctx(&log);
	assert_int_equal(imm_handle_open(ctx, rc->path, IMM_RDONLY, &h), 0);
	if (process) {
		pid = fork();
		assert_true(pid >= 0);
		if (pid == 0) {
			writer(rc);
			_exit(0);
		}
	} else {
		assert_int_equal(pthread_create(&thr, NULL, writer_thread, rc), 0);
	}

	for (unsigned round = 1; round <= ROUNDS; round++) {
		uint64_t before = atomic_load(&rc->writes), until = fx_now_ns() + WAIT_NS;
		int r;

		reset_range(rc, fd);
		atomic_store(&rc->round, round);
		/* the writer is at work before the preparation starts */
		while (atomic_load(&rc->writes) == before && fx_now_ns() < until)
			sched_yield();
		r = imm_seal(h, 0, RANGE, IMM_SEAL_SHARED, NULL);
		atomic_store(&rc->round, round + ROUNDS);	/* stop writing */
		wait_done(rc, round);
		if (r == 0) {
			sealed++;
			assert_int_equal(imm_release(h), 0);
		} else {
			assert_int_equal(r, -EAGAIN);
			refused++;
		}
		assert_int_equal(unwritten_or_holes(fd), 0);	/* it prepared */
		lost += lost_records(rc, fd);
		if (lost)
			fail_msg("%s, writer %s: %u records lost by round %u",
				 kind, process ? "process" : "thread", lost, round);
	}
	atomic_store(&rc->quit, true);
	if (process) {
		assert_int_equal(waitpid(pid, &status, 0), pid);
		assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
	} else {
		pthread_join(thr, NULL);
	}
	fprintf(stderr, "%s, writer %s: %u rounds (%u sealed, %u refused), "
		"%llu writes, %u lost\n", kind, process ? "process" : "thread",
		ROUNDS, sealed, refused, (unsigned long long)atomic_load(&rc->writes), lost);
	assert_true(atomic_load(&rc->writes) >= ROUNDS);
	imm_handle_close(h);
	imm_ctx_unref(ctx);
	close(fd);
	fx_umount(&fs);
	munmap(rc, sizeof(*rc));
}

static void ext4_writer_process(void **state)
{
	(void)state;
	race_rounds("ext4", 64, true);
}

static void ext4_writer_thread(void **state)
{
	(void)state;
	race_rounds("ext4", 64, false);
}

static void xfs_writer_process(void **state)
{
	(void)state;
	race_rounds("xfs", 300, true);
}

static void xfs_writer_thread(void **state)
{
	(void)state;
	race_rounds("xfs", 300, false);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(ext4_writer_process),
		cmocka_unit_test(ext4_writer_thread),
		cmocka_unit_test(xfs_writer_process),
		cmocka_unit_test(xfs_writer_thread),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
