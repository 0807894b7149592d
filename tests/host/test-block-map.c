// SPDX-License-Identifier: LGPL-2.1-or-later
/*
 * imm_block_map(): the sealed range's blocks, written on the loop device
 * under a real ext4 or XFS, are the file's bytes -- through O_DIRECT during
 * the seal, and through the page cache after it.  Files whose blocks do not
 * hold their bytes as-is are refused.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#include <linux/fs.h>
#include <linux/fscrypt.h>

#include "fixture.h"

#define MiB (1024ull * 1024)
#define FILE_SIZE (4 * MiB)
#define CHUNK (256 * 1024ull)

static unsigned char pat(unsigned seed, uint64_t off)
{
	return (unsigned char)(seed * 131u + off * 7u + (off >> 12) * 13u);
}

static void *aligned_buf(size_t n)
{
	void *p = NULL;

	assert_int_equal(posix_memalign(&p, 4096, n), 0);
	return p;
}

static void write_file(const char *path, uint64_t size, unsigned seed)
{
	unsigned char *b = aligned_buf(CHUNK);
	int fd = open(path, O_CREAT | O_TRUNC | O_WRONLY | O_CLOEXEC, 0644);

	assert_true(fd >= 0);
	for (uint64_t at = 0; at < size; at += CHUNK) {
		for (uint64_t i = 0; i < CHUNK; i++)
			b[i] = pat(seed, at + i);
		assert_int_equal(pwrite(fd, b, CHUNK, (off_t)at), (ssize_t)CHUNK);
	}
	assert_int_equal(fsync(fd), 0);
	close(fd);
	free(b);
}

/* Does [off, +len) of path read as seed's pattern? */
static bool reads_as(const char *path, bool direct, uint64_t off,
		     uint64_t len, unsigned seed)
{
	unsigned char *b = aligned_buf(CHUNK);
	int fd = open(path, O_RDONLY | O_CLOEXEC | (direct ? O_DIRECT : 0));
	bool same = fd >= 0;

	/* no readahead: only the range read gets cached */
	if (same && !direct)
		assert_int_equal(posix_fadvise(fd, 0, 0, POSIX_FADV_RANDOM), 0);
	for (uint64_t at = off; same && at < off + len; at += CHUNK) {
		same = pread(fd, b, CHUNK, (off_t)at) == (ssize_t)CHUNK;
		for (uint64_t i = 0; same && i < CHUNK; i++)
			same = b[i] == pat(seed, at + i);
	}
	if (fd >= 0)
		close(fd);
	free(b);
	return same;
}

/* The map of a sealed (or, with flags, unsealed) handle, all of it. */
static int map_all(struct imm_handle *h, uint32_t flags,
		   struct imm_block_dev *dev, struct imm_block_extent **ext)
{
	int n;

	*dev = (struct imm_block_dev){ .sz = sizeof(*dev) };
	*ext = NULL;
	n = imm_block_map(h, flags, dev, NULL, 0);
	if (n < 0)
		return n;
	*ext = calloc((size_t)n + 1, sizeof(**ext));
	assert_non_null(*ext);
	assert_int_equal(imm_block_map(h, flags, dev, *ext, (size_t)n), n);
	return n;
}

/* Write seed's pattern for the file range [off, +len) at the device
 * offsets the map gives, base bytes into node. */
static void device_write(const char *node, uint64_t base,
			 const struct imm_block_extent *ext, int n,
			 unsigned seed)
{
	unsigned char *b = aligned_buf(CHUNK);
	int fd = open(node, O_WRONLY | O_DIRECT | O_CLOEXEC);

	assert_true(fd >= 0);
	for (int e = 0; e < n; e++) {
		for (uint64_t at = 0; at < ext[e].length; at += CHUNK) {
			uint64_t len = ext[e].length - at < CHUNK ?
				       ext[e].length - at : CHUNK;

			for (uint64_t i = 0; i < len; i++)
				b[i] = pat(seed, ext[e].offset + at + i);
			assert_int_equal(pwrite(fd, b, len, (off_t)(base +
					 ext[e].dev_offset + at)), (ssize_t)len);
		}
	}
	close(fd);
	free(b);
}

/* The extents tile the described range, in order, and name the device
 * the file's filesystem is on. */
static void assert_map_sane(const char *path, const struct imm_block_dev *d,
			    const struct imm_block_extent *ext, int n)
{
	struct stat file, node;
	uint64_t at = d->offset;

	assert_int_equal(stat(path, &file), 0);
	assert_int_equal(stat(d->path, &node), 0);
	assert_true(S_ISBLK(node.st_mode));
	assert_true(node.st_rdev == d->dev);
	assert_true(file.st_dev == d->dev);
	assert_int_equal(d->sz, sizeof(*d));
	assert_true(d->logical_block_size >= 512);
	assert_true(n >= 1);
	for (int i = 0; i < n; i++) {
		assert_int_equal(ext[i].offset, at);
		assert_true(ext[i].length > 0);
		assert_int_equal(ext[i].dev_offset % d->logical_block_size, 0);
		at += ext[i].length;
	}
	assert_int_equal(at, d->offset + d->length);
}

/*
 * Before the seal the whole file is cached; after the export its first
 * quarter is read (cached) again, then the device is written.  O_DIRECT
 * sees the device at once; a buffered read of the second half does because
 * the export dropped it; the first quarter only once the release drops it.
 */
static void device_writes_are_file_bytes(const char *kind)
{
	struct imm_block_extent *ext;
	struct imm_block_dev dev;
	struct imm_handle *h;
	struct imm_ctx *ctx;
	struct fx_log log;
	char path[PATH_MAX];
	struct fx_fs fs;
	uint64_t gen;
	int n;

	fx_need_root("a loop device to write straight to");
	fx_mount(&fs, kind, 320, NULL);	/* mkfs.xfs wants 300 MB */
	fx_path(&fs, "data", path);
	write_file(path, FILE_SIZE, 1);
	assert_true(reads_as(path, false, 0, FILE_SIZE, 1));
	ctx = fx_ctx(&log);
	h = fx_seal(ctx, path, IMM_SEAL_SHARED, FILE_SIZE);
	n = map_all(h, 0, &dev, &ext);
	assert_true(n >= 1);
	assert_map_sane(path, &dev, ext, n);
	gen = imm_handle_get_generation(h);
	assert_true(gen != 0);
	assert_int_equal(dev.generation, gen);
	assert_int_equal(dev.flags & (IMM_BDEV_SEALED | IMM_BDEV_PARTITION),
			 IMM_BDEV_SEALED);
	assert_int_equal(dev.offset, 0);
	assert_int_equal(dev.length, FILE_SIZE);
	assert_string_equal(dev.path, dev.disk);
	assert_int_equal(dev.part_start, 0);
	printf("# %s: %d extent(s) on %s, block size %u, generation %llu\n",
	       kind, n, dev.path, dev.logical_block_size,
	       (unsigned long long)gen);

	assert_true(reads_as(path, false, 0, FILE_SIZE / 4, 1));
	device_write(dev.path, 0, ext, n, 2);
	assert_true(reads_as(path, true, 0, FILE_SIZE, 2));
	assert_true(reads_as(path, false, FILE_SIZE / 2, FILE_SIZE / 2, 2));
	assert_true(reads_as(path, false, 0, FILE_SIZE / 4, 1));	/* stale */
	assert_int_equal(imm_release(h), 0);
	assert_true(reads_as(path, false, 0, FILE_SIZE, 2));
	assert_int_equal(imm_handle_get_generation(h), 0);
	assert_int_equal(imm_block_map(h, 0, &dev, NULL, 0), -EINVAL);
	assert_non_null(strstr(log.last, "imm_seal() it first"));
	imm_handle_close(h);
	imm_ctx_unref(ctx);
	free(ext);
	fx_umount(&fs);
}

static void ext4_device_writes_are_file_bytes(void **state)
{
	(void)state;
	device_writes_are_file_bytes("ext4");
}

static void xfs_device_writes_are_file_bytes(void **state)
{
	(void)state;
	device_writes_are_file_bytes("xfs");
}

/* Every seal has its own generation; its recall names it, and a recalled
 * seal's map is not handed out. */
static void generation_names_the_seal(void **state)
{
	struct imm_block_extent *ext;
	struct imm_block_dev dev;
	struct imm_event *ev;
	struct imm_handle *h;
	struct imm_ctx *ctx;
	struct fx_log log;
	char path[PATH_MAX];
	uint64_t g1, g2;

	(void)state;
	fx_need_root("a scratch ext4 on a loop device");
	fx_path(&fx_ext4, "gen", path);
	write_file(path, MiB, 3);
	ctx = fx_ctx(&log);
	h = fx_seal(ctx, path, IMM_SEAL_SHARED, MiB);
	g1 = imm_handle_get_generation(h);
	assert_int_equal(imm_release(h), 0);
	assert_int_equal(imm_seal(h, 0, MiB, IMM_SEAL_SHARED, NULL), 0);
	g2 = imm_handle_get_generation(h);
	assert_true(g1 != 0 && g2 != 0 && g1 != g2);
	assert_true(map_all(h, 0, &dev, &ext) >= 1);
	assert_int_equal(dev.generation, g2);
	free(ext);

	fx_breaker_start(path, FX_OPEN_RDWR);
	assert_until(fx_dispatch_wait(ctx, 100) > 0, 10000);
	assert_int_equal(imm_ctx_next_event(ctx, &ev), 0);
	assert_int_equal(imm_event_get_type(ev), IMM_EVENT_RECALL);
	assert_int_equal(imm_event_get_generation(ev), g2);
	imm_event_unref(ev);
	assert_int_equal(imm_handle_get_state(h), IMM_STATE_BREAKING);
	assert_int_equal(imm_handle_get_generation(h), g2);
	dev.sz = sizeof(dev);
	assert_int_equal(imm_block_map(h, 0, &dev, NULL, 0), -ESTALE);
	assert_non_null(strstr(log.last, "release and re-seal"));
	assert_int_equal(imm_release(h), 0);
	imm_handle_close(h);
	imm_ctx_unref(ctx);
}

/* IMM_BLOCK_UNSEALED looks at a file as it is: holes left out, unwritten
 * extents flagged, no seal, no generation. */
static void unsealed_map_is_for_looking(void **state)
{
	struct imm_block_extent *ext;
	struct imm_block_dev dev;
	struct imm_handle *h;
	struct imm_ctx *ctx;
	char path[PATH_MAX];
	uint64_t covered = 0;
	bool unwritten = false;
	int fd, n;

	(void)state;
	fx_need_root("a scratch ext4 on a loop device");
	fx_path(&fx_ext4, "holes", path);
	write_file(path, 4 * MiB, 4);
	fd = open(path, O_RDWR | O_CLOEXEC);
	assert_true(fd >= 0);
	assert_int_equal(fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
				   MiB, MiB), 0);
	assert_int_equal(fallocate(fd, FALLOC_FL_ZERO_RANGE, 3 * MiB, MiB), 0);
	close(fd);
	ctx = fx_ctx(NULL);
	assert_int_equal(imm_handle_open(ctx, path, IMM_RDONLY, &h), 0);
	n = map_all(h, IMM_BLOCK_UNSEALED, &dev, &ext);
	assert_true(n >= 2);
	assert_int_equal(dev.generation, 0);
	assert_int_equal(dev.flags & IMM_BDEV_SEALED, 0);
	for (int i = 0; i < n; i++) {
		assert_false(ext[i].offset < 2 * MiB &&
			     ext[i].offset + ext[i].length > MiB);
		unwritten |= ext[i].flags & 0x800;	/* FIEMAP_EXTENT_UNWRITTEN */
		covered += ext[i].length;
	}
	assert_true(unwritten);
	assert_int_equal(covered, 3 * MiB);
	free(ext);
	imm_handle_close(h);
	imm_ctx_unref(ctx);
}

/* A page another mapping keeps in the cache would hide device writes from
 * that mapping: the export says so, and works once it is gone. */
static void mapped_pages_block_the_export(void **state)
{
	struct imm_block_extent *ext;
	struct imm_block_dev dev;
	struct imm_handle *h;
	struct imm_ctx *ctx;
	struct fx_log log;
	char path[PATH_MAX];
	volatile unsigned char *p;
	int fd;

	(void)state;
	fx_need_root("a scratch ext4 on a loop device");
	fx_path(&fx_ext4, "mapped", path);
	write_file(path, MiB, 5);
	ctx = fx_ctx(&log);
	h = fx_seal(ctx, path, IMM_SEAL_SHARED, MiB);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	assert_true(fd >= 0);
	p = mmap(NULL, MiB, PROT_READ, MAP_SHARED, fd, 0);
	assert_true(p != MAP_FAILED);
	assert_int_equal(p[8192], pat(5, 8192));
	dev = (struct imm_block_dev){ .sz = sizeof(dev) };
	assert_int_equal(imm_block_map(h, 0, &dev, NULL, 0), -EBUSY);
	assert_non_null(strstr(log.last, "a process maps them"));
	munmap((void *)p, MiB);
	close(fd);
	assert_true(map_all(h, 0, &dev, &ext) >= 1);
	free(ext);
	imm_handle_close(h);
	imm_ctx_unref(ctx);
}

/* The map of a filesystem on a partition: offsets on the partition, and
 * where the partition starts on the disk. */
static void partition_start_is_given(void **state)
{
	char img[PATH_MAX], mnt[PATH_MAX], loop[64], part[80];
	char cmd[PATH_MAX + 64], path[PATH_MAX + 16];
	struct imm_block_extent *ext;
	struct imm_block_dev dev;
	struct imm_handle *h;
	struct imm_ctx *ctx;
	FILE *f;
	int n;

	(void)state;
	fx_need_root("a partitioned loop device");
	fx_path(&fx_ext4, "part.img", img);
	fx_path(&fx_ext4, "part.mnt", mnt);
	assert_int_equal(fx_run("truncate -s 64M %s && echo 'start=2048, type=83'"
				" | sfdisk -q %s", img, img), 0);
	snprintf(cmd, sizeof(cmd), "losetup -f --show -P %s", img);
	f = popen(cmd, "r");
	assert_non_null(f);
	assert_non_null(fgets(loop, sizeof(loop), f));
	pclose(f);
	loop[strcspn(loop, "\n")] = '\0';
	snprintf(part, sizeof(part), "%sp1", loop);
	/* partx: a kernel without CONFIG_MSDOS_PARTITION reads no table */
	assert_int_equal(fx_run("{ [ -b %s ] || partx -a %s; } && mkfs.ext4 -q "
				"-F %s >/dev/null && mkdir -p %s && mount %s %s",
				part, loop, part, mnt, part, mnt), 0);
	snprintf(path, sizeof(path), "%s/data", mnt);
	write_file(path, MiB, 6);
	ctx = fx_ctx(NULL);
	h = fx_seal(ctx, path, IMM_SEAL_SHARED, MiB);
	n = map_all(h, 0, &dev, &ext);
	assert_map_sane(path, &dev, ext, n);
	assert_true(dev.flags & IMM_BDEV_PARTITION);
	assert_string_equal(dev.path, part);
	assert_string_equal(dev.disk, loop);
	assert_int_equal(dev.part_start, MiB);
	device_write(dev.disk, dev.part_start, ext, n, 7);
	assert_int_equal(imm_release(h), 0);
	assert_true(reads_as(path, false, 0, MiB, 7));
	imm_handle_close(h);
	imm_ctx_unref(ctx);
	free(ext);
	assert_int_equal(fx_run("umount %s && { partx -d %s 2>/dev/null; "
				"losetup -d %s; } && rmdir %s && rm %s", mnt,
				loop, loop, mnt, img), 0);
}

/* imm_block_map(IMM_BLOCK_UNSEALED) of path: -EOPNOTSUPP, saying why */
static void assert_refused(const char *path, const char *why)
{
	struct imm_block_dev dev = { .sz = sizeof(dev) };
	struct imm_handle *h;
	struct imm_ctx *ctx;
	struct fx_log log;

	ctx = fx_ctx(&log);
	assert_int_equal(imm_handle_open(ctx, path, IMM_RDONLY, &h), 0);
	assert_int_equal(imm_block_map(h, IMM_BLOCK_UNSEALED, &dev, NULL, 0),
			 -EOPNOTSUPP);
	if (!strstr(log.last, why))
		fail_msg("%s: refused, but the log says \"%s\", not \"%s\"",
			 path, log.last, why);
	imm_handle_close(h);
	imm_ctx_unref(ctx);
}

static void refuses_memory_and_journalled_data(void **state)
{
	char path[PATH_MAX];
	struct fx_fs fs;
	int fd, fl;

	(void)state;
	fx_need_root("mounts of tmpfs and ext4 data=journal");
	fx_mount(&fs, "tmpfs", 16, NULL);
	fx_path(&fs, "mem", path);
	write_file(path, MiB, 8);
	assert_refused(path, "not in device blocks");
	fx_umount(&fs);

	fx_mount_opts(&fs, "ext4", 64, NULL, "data=journal");
	fx_path(&fs, "journalled", path);
	write_file(path, MiB, 8);
	assert_refused(path, "mounted data=journal");
	fx_umount(&fs);

	/* chattr +j needs CAP_SYS_RESOURCE, which a container's root may
	 * lack: set the flag (EXT4_JOURNAL_DATA_FL | EXTENTS_FL) offline */
	fx_mount(&fs, "ext4", 64, NULL);
	fx_path(&fs, "plus-j", path);
	write_file(path, MiB, 8);
	assert_int_equal(fx_run("umount %s && debugfs -w -R 'set_inode_field "
				"/plus-j flags 0x84000' %s >/dev/null 2>&1 && "
				"mount -o loop %s %s", fs.mnt, fs.img, fs.img,
				fs.mnt), 0);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	assert_true(fd >= 0);
	assert_int_equal(ioctl(fd, FS_IOC_GETFLAGS, &fl), 0);
	assert_true(fl & FS_JOURNAL_DATA_FL);
	close(fd);
	assert_refused(path, "chattr +j");
	fx_umount(&fs);
}

static void refuses_inline_data(void **state)
{
	char path[PATH_MAX];
	struct fx_fs fs;
	int fd;

	(void)state;
	fx_need_root("an ext4 with inline_data on a loop device");
	fx_mount(&fs, "ext4", 64, "-O inline_data");
	fx_path(&fs, "tiny", path);
	fd = open(path, O_CREAT | O_WRONLY | O_CLOEXEC, 0644);
	assert_true(fd >= 0);
	assert_int_equal(write(fd, "inline", 6), 6);
	assert_int_equal(fsync(fd), 0);
	close(fd);
	assert_refused(path, "inline in the inode");
	fx_umount(&fs);
}

/* An fscrypt v2 policy on dir with a key added for the filesystem. */
static int encrypt_dir(const char *mnt, const char *dir)
{
	unsigned char buf[sizeof(struct fscrypt_add_key_arg) + 64]
		__attribute__((aligned(8))) = { 0 };
	struct fscrypt_add_key_arg *k = (struct fscrypt_add_key_arg *)buf;
	struct fscrypt_policy_v2 pol = {
		.version = FSCRYPT_POLICY_V2,
		.contents_encryption_mode = FSCRYPT_MODE_AES_256_XTS,
		.filenames_encryption_mode = FSCRYPT_MODE_AES_256_CTS,
		.flags = FSCRYPT_POLICY_FLAGS_PAD_32,
	};
	int mfd, dfd, r = 0;

	k->key_spec.type = FSCRYPT_KEY_SPEC_TYPE_IDENTIFIER;
	k->raw_size = 64;
	memset(buf + sizeof(*k), 0x5a, 64);
	mfd = open(mnt, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	assert_true(mfd >= 0);
	if (ioctl(mfd, FS_IOC_ADD_ENCRYPTION_KEY, k) < 0)
		r = -errno;
	close(mfd);
	if (r < 0)
		return r;
	memcpy(pol.master_key_identifier, k->key_spec.u.identifier,
	       FSCRYPT_KEY_IDENTIFIER_SIZE);
	assert_int_equal(mkdir(dir, 0755), 0);
	dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	assert_true(dfd >= 0);
	if (ioctl(dfd, FS_IOC_SET_ENCRYPTION_POLICY, &pol) < 0)
		r = -errno;
	close(dfd);
	return r;
}

static void refuses_encrypted_files(void **state)
{
	char dir[PATH_MAX], path[PATH_MAX + 16];
	struct fx_fs fs;
	int r;

	(void)state;
	fx_need_root("an ext4 with the encrypt feature on a loop device");
	fx_mount(&fs, "ext4", 64, "-O encrypt");
	fx_path(&fs, "secret", dir);
	r = encrypt_dir(fs.mnt, dir);
	if (r == -EOPNOTSUPP || r == -ENOTTY || r == -ENOPKG) {
		fprintf(stderr, "SKIP: this kernel cannot encrypt ext4 files "
			"(%s): CONFIG_FS_ENCRYPTION or AES-XTS missing\n",
			strerror(-r));
		fx_umount(&fs);
		skip();
	}
	assert_int_equal(r, 0);
	snprintf(path, sizeof(path), "%s/file", dir);
	write_file(path, MiB, 9);
	assert_refused(path, "encrypted (fscrypt)");
	fx_umount(&fs);
}

/*
 * Where the kernel has no device-mapper or no XFS realtime support (this
 * project's host kernel has neither), the test skips, saying so; the VM
 * tier's stock Debian guests have both and run it with IMM_BLOCK_EXTRAS=1,
 * under which a skip fails.
 */
static void need_kernel(bool have, const char *what)
{
	const char *req = getenv("IMM_BLOCK_EXTRAS");

	if (have)
		return;
	if (req && !strcmp(req, "1"))
		fail_msg("IMM_BLOCK_EXTRAS=1 but this kernel has no %s", what);
	fprintf(stderr, "SKIP: this kernel has no %s; the VM tier's stock "
		"guests run this test\n", what);
	skip();
}

/* A loop device over a new sparse image of size_mb under dir. */
static void loop_attach(const char *img, unsigned size_mb, char *dev,
			size_t n)
{
	char cmd[PATH_MAX + 64];
	FILE *f;

	assert_int_equal(fx_run("truncate -s %uM %s", size_mb, img), 0);
	snprintf(cmd, sizeof(cmd), "losetup -f --show %s", img);
	f = popen(cmd, "r");
	assert_non_null(f);
	assert_non_null(fgets(dev, (int)n, f));
	pclose(f);
	dev[strcspn(dev, "\n")] = '\0';
}

/* Seal path, write seed at the map's device offsets on the map's own node,
 * release, and read the file back: the node must be want_dev. */
static void write_through_map(const char *path, const char *want_dev,
			      uint32_t want_flags, unsigned seed)
{
	struct imm_block_extent *ext;
	struct imm_block_dev dev;
	struct imm_handle *h;
	struct imm_ctx *ctx;
	struct stat node;
	int n;

	ctx = fx_ctx(NULL);
	h = fx_seal(ctx, path, IMM_SEAL_SHARED, MiB);
	n = map_all(h, 0, &dev, &ext);
	assert_true(n >= 1);
	assert_string_equal(dev.path, want_dev);
	assert_int_equal(stat(want_dev, &node), 0);
	assert_true(node.st_rdev == dev.dev);
	assert_int_equal(dev.flags & want_flags, want_flags);
	device_write(dev.path, 0, ext, n, seed);
	assert_int_equal(imm_release(h), 0);
	assert_true(reads_as(path, false, 0, MiB, seed));
	imm_handle_close(h);
	imm_ctx_unref(ctx);
	free(ext);
}

/* ext4 made on dev and mounted on mnt: a file written through the
 * filesystem, then through the map at dev, read back through the file. */
static void ext4_through_map(const char *dev, const char *mnt, unsigned seed)
{
	char path[PATH_MAX + 16];

	assert_int_equal(fx_run("mkfs.ext4 -q -F %s >/dev/null && mkdir -p %s && "
				"mount %s %s", dev, mnt, dev, mnt), 0);
	snprintf(path, sizeof(path), "%s/data", mnt);
	write_file(path, MiB, seed);
	write_through_map(path, dev, IMM_BDEV_SEALED, seed + 1);
}

/* ext4 on a dm-linear target: the dm node, not the loop under it. */
static void device_mapper_node(void **state)
{
	char img[PATH_MAX], mnt[PATH_MAX], loop[64];
	char dm[64] = "";
	FILE *f;

	(void)state;
	fx_need_root("device-mapper and a loop device");
	need_kernel(access("/dev/mapper/control", F_OK) == 0 ||
		    fx_run("modprobe dm_mod 2>/dev/null") == 0,
		    "device-mapper (CONFIG_BLK_DEV_DM)");
	fx_path(&fx_ext4, "dm.img", img);
	fx_path(&fx_ext4, "dm.mnt", mnt);
	loop_attach(img, 64, loop, sizeof(loop));
	assert_int_equal(fx_run("DM_DISABLE_UDEV=1 dmsetup create imm-test-dm "
				"--noudevsync --table \"0 131072 linear %s 0\"",
				loop), 0);
	f = popen("for d in /sys/block/dm-*; do [ \"$(cat $d/dm/name)\" = "
		  "imm-test-dm ] && echo /dev/${d##*/}; done", "r");
	assert_non_null(f);
	assert_non_null(fgets(dm, sizeof(dm), f));
	pclose(f);
	dm[strcspn(dm, "\n")] = '\0';
	ext4_through_map(dm, mnt, 11);
	assert_int_equal(fx_run("umount %s && DM_DISABLE_UDEV=1 dmsetup remove "
				"--noudevsync imm-test-dm && losetup -d %s && "
				"rmdir %s && rm %s", mnt, loop, mnt, img), 0);
}

/* ext4 on an md RAID1 of two loop devices: the md node, not a member
 * (a write there reaches both mirrors; one to a member would not). */
static void md_node(void **state)
{
	char img[2][PATH_MAX], mnt[PATH_MAX], loop[2][64];
	char md[64];

	(void)state;
	fx_need_root("md RAID1 on two loop devices");
	need_kernel((access("/proc/mdstat", F_OK) == 0 ||
		     fx_run("modprobe -a md_mod raid1 2>/dev/null") == 0) &&
		    fx_run("command -v mdadm >/dev/null") == 0,
		    "md RAID1 (CONFIG_MD_RAID1) and mdadm");
	for (int i = 0; i < 2; i++) {
		fx_path(&fx_ext4, i ? "md1.img" : "md0.img", img[i]);
		loop_attach(img[i], 64, loop[i], sizeof(loop[i]));
	}
	fx_path(&fx_ext4, "md.mnt", mnt);
	/* a number of its own: without udev no /dev/md/NAME link appears */
	snprintf(md, sizeof(md), "/dev/md127");
	assert_int_equal(fx_run("mdadm --create %s --run --quiet --level=1 "
				"--raid-devices=2 --metadata=1.2 --assume-clean "
				"--homehost=any %s %s 2>/dev/null", md, loop[0],
				loop[1]), 0);
	ext4_through_map(md, mnt, 15);
	assert_int_equal(fx_run("umount %s && mdadm --stop --quiet %s && "
				"losetup -d %s %s && rmdir %s && rm %s %s", mnt,
				md, loop[0], loop[1], mnt, img[0], img[1]), 0);
}

/* A file in the realtime section of an XFS: its blocks are on the rt
 * device, and FIEMAP's addresses are that device's. */
static void xfs_realtime_device(void **state)
{
	char img[PATH_MAX], rtimg[PATH_MAX], mnt[PATH_MAX], path[PATH_MAX + 16];
	char loop[64], rtloop[64];
	struct fsxattr fsx;
	int fd, r;

	(void)state;
	fx_need_root("an XFS with a realtime device on two loop devices");
	fx_path(&fx_ext4, "xfs.img", img);
	fx_path(&fx_ext4, "rt.img", rtimg);
	fx_path(&fx_ext4, "rt.mnt", mnt);
	loop_attach(img, 320, loop, sizeof(loop));
	loop_attach(rtimg, 64, rtloop, sizeof(rtloop));
	assert_int_equal(fx_run("mkfs.xfs -q -f -m reflink=0 -r rtdev=%s %s",
				rtloop, loop), 0);
	assert_int_equal(fx_run("mkdir -p %s", mnt), 0);
	r = fx_run("mount -o rtdev=%s %s %s 2>/dev/null", rtloop, loop, mnt);
	if (r != 0)
		assert_int_equal(fx_run("losetup -d %s %s && rm %s %s", loop,
					rtloop, img, rtimg), 0);
	need_kernel(r == 0, "XFS realtime support (CONFIG_XFS_RT)");
	snprintf(path, sizeof(path), "%s/rt", mnt);
	fd = open(path, O_CREAT | O_WRONLY | O_CLOEXEC, 0644);
	assert_true(fd >= 0);
	assert_int_equal(ioctl(fd, FS_IOC_FSGETXATTR, &fsx), 0);
	fsx.fsx_xflags |= FS_XFLAG_REALTIME;
	assert_int_equal(ioctl(fd, FS_IOC_FSSETXATTR, &fsx), 0);
	close(fd);
	write_file(path, MiB, 13);	/* O_TRUNC keeps the flag */
	write_through_map(path, rtloop, IMM_BDEV_SEALED | IMM_BDEV_REALTIME, 14);
	assert_int_equal(fx_run("umount %s && losetup -d %s %s && rmdir %s && "
				"rm %s %s", mnt, loop, rtloop, mnt, img, rtimg),
			 0);
}

static void bad_arguments(void **state)
{
	struct imm_block_extent e;
	struct imm_block_dev dev = { .sz = sizeof(dev) };
	struct imm_handle *h;
	struct imm_ctx *ctx;
	char path[PATH_MAX];

	(void)state;
	fx_need_root("a scratch ext4 on a loop device");
	fx_path(&fx_ext4, "args", path);
	write_file(path, MiB, 10);
	ctx = fx_ctx(NULL);
	h = fx_seal(ctx, path, IMM_SEAL_SHARED, MiB);
	assert_int_equal(imm_block_map(NULL, 0, &dev, NULL, 0), -EINVAL);
	assert_int_equal(imm_block_map(h, 0, NULL, NULL, 0), -EINVAL);
	assert_int_equal(imm_block_map(h, 0, &dev, NULL, 1), -EINVAL);
	assert_int_equal(imm_block_map(h, 0x80, &dev, &e, 1), -EINVAL);
	dev.sz = 0;
	assert_int_equal(imm_block_map(h, 0, &dev, &e, 1), -EINVAL);
	/* an older, smaller struct: only its own fields are filled */
	memset(&dev, 0xee, sizeof(dev));
	dev.sz = offsetof(struct imm_block_dev, generation);
	assert_true(imm_block_map(h, 0, &dev, &e, 1) >= 1);
	assert_int_equal(dev.sz, offsetof(struct imm_block_dev, generation));
	assert_int_equal(dev.offset, 0xeeeeeeeeeeeeeeeeull);
	assert_int_equal(imm_handle_close(h), 0);
	imm_ctx_unref(ctx);
	assert_int_equal(imm_handle_get_generation(NULL), 0);
	assert_int_equal(imm_event_get_generation(NULL), 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(ext4_device_writes_are_file_bytes),
		cmocka_unit_test(xfs_device_writes_are_file_bytes),
		cmocka_unit_test(generation_names_the_seal),
		cmocka_unit_test(unsealed_map_is_for_looking),
		cmocka_unit_test(mapped_pages_block_the_export),
		cmocka_unit_test(partition_start_is_given),
		cmocka_unit_test(refuses_memory_and_journalled_data),
		cmocka_unit_test(refuses_inline_data),
		cmocka_unit_test(refuses_encrypted_files),
		cmocka_unit_test(device_mapper_node),
		cmocka_unit_test(md_node),
		cmocka_unit_test(xfs_realtime_device),
		cmocka_unit_test(bad_arguments),
	};

	return cmocka_run_group_tests(tests, fx_group_ext4_setup,
				      fx_group_ext4_teardown);
}
