// SPDX-License-Identifier: LGPL-2.1-or-later
/* Handles: what opens, what is refused, and that every refusal says why. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include "fixture.h"

static void expect_refused(const char *path, uint32_t flags, int want)
{
	struct imm_handle *h = (struct imm_handle *)0x1;
	struct fx_log log;
	struct imm_ctx *ctx = fx_ctx(&log);

	assert_int_equal(imm_handle_open(ctx, path, flags, &h), want);
	assert_ptr_equal(h, (struct imm_handle *)0x1);	/* untouched */
	assert_logged(&log);
	imm_ctx_unref(ctx);
}

static void open_regular_file(void **state)
{
	char p[PATH_MAX];
	struct imm_handle *h;
	struct imm_ctx *ctx;
	struct fx_log log;

	(void)state;
	fx_need_root("a scratch ext4 on a loop device");
	fx_path(&fx_ext4, "plain", p);
	fx_write_pattern(p, 0, 8192, 1);
	ctx = fx_ctx(&log);
	assert_int_equal(imm_handle_open(ctx, p, IMM_RDWR, &h), 0);
	assert_int_equal(imm_handle_get_state(h), IMM_STATE_OPEN);
	assert_string_equal(imm_handle_get_fs_name(h), "ext4");
	assert_ptr_equal(imm_handle_get_ctx(h), ctx);
	assert_true(imm_handle_get_fd(h) >= 0);
	assert_true(fcntl(imm_handle_get_fd(h), F_GETFD) & FD_CLOEXEC);
	assert_int_equal(fcntl(imm_handle_get_fd(h), F_GETFL) & O_ACCMODE, O_RDWR);
	imm_handle_set_userdata(h, p);
	assert_ptr_equal(imm_handle_get_userdata(h), p);
	assert_int_equal(imm_handle_close(h), 0);
	assert_int_equal(log.errors, 0);
	imm_ctx_unref(ctx);
}

static void refuse_missing_and_bad_flags(void **state)
{
	char p[PATH_MAX];

	(void)state;
	fx_need_root("a scratch ext4 on a loop device");
	fx_path(&fx_ext4, "does-not-exist", p);
	expect_refused(p, IMM_RDONLY, -ENOENT);
	fx_path(&fx_ext4, "plain2", p);
	fx_write_pattern(p, 0, 4096, 1);
	expect_refused(p, 0x80, -EINVAL);
}

static void refuse_directory(void **state)
{
	(void)state;
	fx_need_root("a scratch ext4 on a loop device");
	expect_refused(fx_ext4.mnt, IMM_RDONLY, -EISDIR);
}

/* Opening a FIFO for reading blocks until a writer comes: the check must
 * happen before any real open, or this test hangs. */
static void refuse_fifo_without_blocking(void **state)
{
	char p[PATH_MAX];

	(void)state;
	fx_need_root("a scratch ext4 on a loop device");
	fx_path(&fx_ext4, "fifo", p);
	assert_int_equal(mkfifo(p, 0644), 0);
	alarm(10);
	expect_refused(p, IMM_RDONLY, -EINVAL);
	alarm(0);
}

struct swapper {
	char a[PATH_MAX], b[PATH_MAX];
	atomic_bool stop;
	atomic_int swaps;
};

/* Exchange the regular file and the FIFO under their names, again and
 * again, until told to stop. */
static void *swap_names(void *arg)
{
	struct swapper *sw = arg;

	while (!atomic_load(&sw->stop)) {
		if (renameat2(AT_FDCWD, sw->a, AT_FDCWD, sw->b, RENAME_EXCHANGE))
			break;
		atomic_fetch_add(&sw->swaps, 1);
	}
	return NULL;
}

/*
 * imm_handle_open() checks what the path names, then opens it: what it
 * opens must be what it checked, even when the path is made to name a
 * FIFO in between.  The old code opened the path a second time, so opened
 * the FIFO and then refused spuriously (-ESTALE: 132 of 4,000 opens here);
 * now every open either refuses the FIFO at the check or is a handle on
 * the regular file.
 */
static void open_refers_to_the_checked_file(void **state)
{
	struct swapper sw = { 0 };
	int ok = 0, fifo = 0, stale = 0, other = 0;
	struct imm_ctx *ctx;
	struct fx_log log;
	struct stat reg, st;
	pthread_t t;

	(void)state;
	/* tmpfs: renames cost no journal, the swaps come fast */
	snprintf(sw.a, sizeof(sw.a), "/dev/shm/imm-swapped-%d", (int)getpid());
	snprintf(sw.b, sizeof(sw.b), "/dev/shm/imm-swapped-fifo-%d",
		 (int)getpid());
	unlink(sw.a);
	unlink(sw.b);
	fx_write_pattern(sw.a, 0, 4096, 5);
	assert_int_equal(stat(sw.a, &reg), 0);
	assert_int_equal(mkfifo(sw.b, 0644), 0);
	ctx = fx_ctx(&log);
	assert_int_equal(pthread_create(&t, NULL, swap_names, &sw), 0);
	alarm(60);
	for (int i = 0; i < 4000; i++) {
		struct imm_handle *h;
		int r = imm_handle_open(ctx, sw.a, IMM_RDONLY, &h);

		if (r == 0) {
			assert_int_equal(fstat(imm_handle_get_fd(h), &st), 0);
			assert_true(S_ISREG(st.st_mode));
			assert_int_equal(st.st_ino, reg.st_ino);
			assert_int_equal(imm_handle_close(h), 0);
			ok++;
		} else if (r == -EINVAL) {
			fifo++;		/* the check saw the FIFO */
		} else if (r == -ESTALE) {
			stale++;
		} else {
			other++;
		}
	}
	alarm(0);
	atomic_store(&sw.stop, true);
	assert_int_equal(pthread_join(t, NULL), 0);
	print_message("%d swaps: %d handles on the file, %d FIFOs refused, %d "
		      "spurious -ESTALE, %d other\n", atomic_load(&sw.swaps), ok,
		      fifo, stale, other);
	assert_true(atomic_load(&sw.swaps) > 100);
	assert_true(ok > 0 && fifo > 0);	/* both sides were seen */
	assert_int_equal(stale, 0);
	assert_int_equal(other, 0);
	imm_ctx_unref(ctx);
	unlink(sw.a);
	unlink(sw.b);
}

static void refuse_devices_and_sockets(void **state)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	int s;

	(void)state;
	fx_need_root("a scratch ext4 on a loop device");
	expect_refused("/dev/null", IMM_RDONLY, -EINVAL);
	assert_true(snprintf(sa.sun_path, sizeof(sa.sun_path), "%s/sock",
			     fx_ext4.mnt) < (int)sizeof(sa.sun_path));
	s = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	assert_true(s >= 0);
	assert_int_equal(bind(s, (struct sockaddr *)&sa, sizeof(sa)), 0);
	expect_refused(sa.sun_path, IMM_RDONLY, -EINVAL);
	close(s);
}

static void refuse_unsupported_filesystems(void **state)
{
	struct fx_fs ramfs;
	char p[PATH_MAX];

	(void)state;
	fx_need_root("mounting a ramfs");
	/* procfs files are regular files with no blocks */
	expect_refused("/proc/self/status", IMM_RDONLY, -EOPNOTSUPP);
	fx_mount(&ramfs, "ramfs", 0, NULL);
	fx_path(&ramfs, "f", p);
	fx_write_pattern(p, 0, 4096, 3);
	expect_refused(p, IMM_RDWR, -EOPNOTSUPP);
	fx_umount(&ramfs);
}

/* A real btrfs: refused at open, and the line says why (copy-on-write,
 * checksums, RAID), not just "not supported". */
static void refuse_btrfs_and_say_why(void **state)
{
	struct imm_handle *h = NULL;
	struct fx_fs btrfs;
	struct fx_log log;
	struct imm_ctx *ctx;
	char p[PATH_MAX];

	(void)state;
	fx_need_root("mounting a btrfs on a loop device");
	if (fx_run("grep -qw btrfs /proc/filesystems || modprobe -q btrfs") != 0) {
		printf("SKIP: this kernel has no btrfs (not in /proc/filesystems, "
		       "no module); unit-fscheck checks the refusal by magic\n");
		skip();
	}
	fx_mount(&btrfs, "btrfs", 128, NULL);
	fx_path(&btrfs, "f", p);
	fx_write_pattern(p, 0, 65536, 3);
	ctx = fx_ctx(&log);
	assert_int_equal(imm_handle_open(ctx, p, IMM_RDWR, &h), -EOPNOTSUPP);
	assert_null(h);
	printf("# %s\n", log.last);
	assert_non_null(strstr(log.last, "on btrfs"));
	assert_non_null(strstr(log.last, "checksums"));
	imm_ctx_unref(ctx);
	fx_umount(&btrfs);
}

static void refuse_active_swapfile(void **state)
{
	char p[PATH_MAX], cmd[PATH_MAX * 5];

	(void)state;
	fx_need_root("swapon of a swapfile on a loop ext4");
	fx_path(&fx_ext4, "swap", p);
	assert_true(snprintf(cmd, sizeof(cmd),
			     "dd if=/dev/zero of=%s bs=1M count=16 status=none && "
			     "chmod 600 %s && mkswap %s >/dev/null && swapon %s",
			     p, p, p, p) < (int)sizeof(cmd));
	if (system(cmd) != 0) {
		/* A kernel without CONFIG_SWAP cannot have swapfiles at all. */
		if (access("/proc/swaps", F_OK) != 0) {
			fprintf(stderr, "SKIP: kernel has no swap support\n");
			skip();
		}
		fail_msg("swapon %s failed on a kernel with swap", p);
	}
	expect_refused(p, IMM_RDONLY, -ETXTBSY);
	snprintf(cmd, sizeof(cmd), "swapoff %s", p);
	assert_int_equal(system(cmd), 0);
	unlink(p);
}

static void from_fd_shares_the_open_file(void **state)
{
	struct imm_handle *h;
	struct imm_ctx *ctx;
	struct fx_log log;
	char p[PATH_MAX];
	int fd, hfd;

	(void)state;
	fx_need_root("a scratch ext4 on a loop device");
	fx_path(&fx_ext4, "adopt", p);
	fx_write_pattern(p, 0, 4096, 4);
	fd = open(p, O_RDONLY | O_CLOEXEC);
	assert_true(fd >= 0);
	ctx = fx_ctx(&log);
	assert_int_equal(imm_handle_from_fd(ctx, fd, 0, &h), 0);
	hfd = imm_handle_get_fd(h);
	assert_int_not_equal(hfd, fd);
	/* same open file description: the offset moves together */
	assert_int_equal(lseek(fd, 100, SEEK_SET), 100);
	assert_int_equal(lseek(hfd, 0, SEEK_CUR), 100);
	assert_int_equal(imm_handle_close(h), 0);
	/* the caller's fd stays open */
	assert_true(fcntl(fd, F_GETFD) >= 0);
	close(fd);
	imm_ctx_unref(ctx);
}

static void from_fd_refusals(void **state)
{
	struct imm_handle *h = NULL;
	struct imm_ctx *ctx;
	struct fx_log log;
	int fd;

	(void)state;
	fx_need_root("a scratch ext4 on a loop device");
	ctx = fx_ctx(&log);
	assert_int_equal(imm_handle_from_fd(ctx, 987, 0, &h), -EBADF);
	assert_logged(&log);
	fd = open(fx_ext4.mnt, O_PATH | O_CLOEXEC);
	assert_int_equal(imm_handle_from_fd(ctx, fd, 0, &h), -EBADF);
	close(fd);
	fd = open(fx_ext4.mnt, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	assert_int_equal(imm_handle_from_fd(ctx, fd, 0, &h), -EISDIR);
	assert_int_equal(imm_handle_from_fd(ctx, fd, 1, &h), -EINVAL);
	close(fd);
	assert_null(h);
	imm_ctx_unref(ctx);
}

/* An open of a file another process has leased fails at once with
 * EWOULDBLOCK instead of sleeping for up to lease-break-time. */
static void open_of_leased_file_does_not_block(void **state)
{
	struct imm_handle *h = NULL;
	struct imm_ctx *ctx;
	struct fx_log log;
	char p[PATH_MAX];
	int pfd[2], st;
	pid_t pid;

	(void)state;
	fx_need_root("a scratch ext4 on a loop device");
	/* Only leases make opens wait: a layout seal ignores them. */
	if (getenv("LIBIMMUTABLE_BACKEND") == NULL ||
	    strcmp(getenv("LIBIMMUTABLE_BACKEND"), "lease")) {
		if (access("/proc/sys/fs/layout-seal-version", F_OK) == 0) {
			print_message("skipped: layout seals here; an open does "
				      "not conflict with them (vm-layout checks "
				      "that)\n");
			skip();
		}
	}
	fx_path(&fx_ext4, "leased", p);
	fx_write_pattern(p, 0, 4096, 5);
	assert_int_equal(pipe2(pfd, O_CLOEXEC), 0);
	pid = fork();
	if (pid == 0) {
		struct imm_ctx *c;
		struct imm_handle *hh;
		char x = 1;

		if (imm_ctx_new(&c) || imm_handle_open(c, p, IMM_RDWR, &hh) ||
		    imm_seal(hh, 0, 4096, IMM_SEAL_EXCLUSIVE, NULL))
			_exit(1);
		if (write(pfd[1], &x, 1) != 1)
			_exit(1);
		pause();	/* never releases; killed below */
		_exit(0);
	}
	close(pfd[1]);
	{
		char x;

		assert_int_equal(read(pfd[0], &x, 1), 1);
	}
	close(pfd[0]);
	ctx = fx_ctx(&log);
	uint64_t t0 = fx_now_ns();

	assert_int_equal(imm_handle_open(ctx, p, IMM_RDONLY, &h), -EWOULDBLOCK);
	/* bounded by far less than the 45 s the kernel would make it wait */
	assert_true(fx_now_ns() - t0 < 5000000000ull);
	assert_logged(&log);
	assert_non_null(strstr(log.last, "leased"));
	kill(pid, SIGKILL);
	waitpid(pid, &st, 0);
	imm_ctx_unref(ctx);
}

static void null_arguments(void **state)
{
	struct imm_handle *h;
	struct imm_ctx *ctx;

	(void)state;
	assert_int_equal(imm_ctx_new(NULL), -EINVAL);
	assert_int_equal(imm_ctx_new(&ctx), 0);
	assert_int_equal(imm_handle_open(ctx, NULL, 0, &h), -EINVAL);
	assert_int_equal(imm_handle_open(NULL, "/x", 0, &h), -EINVAL);
	assert_int_equal(imm_handle_open(ctx, "/x", 0, NULL), -EINVAL);
	assert_int_equal(imm_handle_close(NULL), -EINVAL);
	assert_int_equal(imm_handle_get_fd(NULL), -EINVAL);
	assert_null(imm_handle_get_ctx(NULL));
	assert_null(imm_handle_get_fs_name(NULL));
	assert_null(imm_ctx_unref(ctx));
	assert_null(imm_ctx_unref(NULL));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(open_regular_file),
		cmocka_unit_test(refuse_missing_and_bad_flags),
		cmocka_unit_test(refuse_directory),
		cmocka_unit_test(refuse_fifo_without_blocking),
		cmocka_unit_test(open_refers_to_the_checked_file),
		cmocka_unit_test(refuse_devices_and_sockets),
		cmocka_unit_test(refuse_unsupported_filesystems),
		cmocka_unit_test(refuse_btrfs_and_say_why),
		cmocka_unit_test(refuse_active_swapfile),
		cmocka_unit_test(from_fd_shares_the_open_file),
		cmocka_unit_test(from_fd_refusals),
		cmocka_unit_test(open_of_leased_file_does_not_block),
		cmocka_unit_test(null_arguments),
	};

	return cmocka_run_group_tests(tests, fx_group_ext4_setup,
				      fx_group_ext4_teardown);
}
