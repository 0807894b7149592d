// SPDX-License-Identifier: LGPL-2.1-or-later
/*
 * The physical map of a sealed range, for I/O straight to the block device
 * that holds it (dma-to-storage, swap-style I/O): the seal's extent
 * snapshot in bytes of that device, and the device.
 *
 * A device write is the file's new content only if the blocks hold the
 * file's bytes as they are: no encryption, compression, inline data or
 * data journal.  And a read of the file returns it only if the page cache
 * holds no older copy: the range is written back and dropped when the map
 * is handed out, and dropped again when the seal ends.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>
#include <linux/fiemap.h>
#include <linux/fs.h>

#include "private.h"

#ifndef FS_INLINE_DATA_FL
#define FS_INLINE_DATA_FL 0x10000000
#endif
#ifndef STATX_ATTR_VERITY
#define STATX_ATTR_VERITY 0x00100000
#endif
#ifndef FIEMAP_EXTENT_DATA_ENCRYPTED
#define FIEMAP_EXTENT_DATA_ENCRYPTED 0x80
#endif

#define EXT4_MAGIC 0xEF53u

/* Extent flags under which fe_physical is not where the bytes are. */
#define NOT_AS_IS (FIEMAP_EXTENT_UNKNOWN | FIEMAP_EXTENT_DELALLOC |          \
		   FIEMAP_EXTENT_ENCODED | FIEMAP_EXTENT_DATA_ENCRYPTED |      \
		   FIEMAP_EXTENT_NOT_ALIGNED | FIEMAP_EXTENT_DATA_INLINE |    \
		   FIEMAP_EXTENT_DATA_TAIL)

/* mincore() looks at this much of the range per mapping */
#define PROBE_CHUNK (1ull << 30)

/* One line of a small sysfs or procfs file, newline dropped. */
static int read_line(const char *path, char *buf, size_t n)
{
	FILE *f = fopen(path, "re");
	int r = 0;

	if (!f)
		return -errno;
	if (!fgets(buf, (int)n, f))
		r = -EIO;
	fclose(f);
	buf[strcspn(buf, "\n")] = '\0';
	return r;
}

/* ext4 lists every mount option, defaults included, under /proc/fs/ext4. */
static bool ext4_journals_data(const char *kname)
{
	char path[96], line[128];
	bool found = false;
	FILE *f;

	snprintf(path, sizeof(path), "/proc/fs/ext4/%s/options", kname);
	f = fopen(path, "re");
	if (!f)
		return false;
	while (!found && fgets(line, sizeof(line), f))
		found = strncmp(line, "data=journal", 12) == 0;
	fclose(f);
	return found;
}

/* Why the blocks of fd do not hold its bytes as they are, or NULL. */
static const char *not_as_is(int fd, uint64_t magic, const char *kname)
{
	struct statx stx;
	int fl = 0;

	if (statx(fd, "", AT_EMPTY_PATH, 0, &stx) == 0) {
		if (stx.stx_attributes & STATX_ATTR_ENCRYPTED)
			return "it is encrypted (fscrypt): its blocks hold "
			       "ciphertext";
		if (stx.stx_attributes & STATX_ATTR_COMPRESSED)
			return "it is compressed: its blocks do not hold its "
			       "bytes one for one";
		if (stx.stx_attributes & STATX_ATTR_VERITY)
			return "it has fs-verity: bytes written past the "
			       "filesystem fail every later read's hash check";
	}
	if (ioctl(fd, FS_IOC_GETFLAGS, &fl) == 0) {
		if (fl & FS_INLINE_DATA_FL)
			return "its data is inline in the inode: it has no data "
			       "blocks";
		if (fl & FS_JOURNAL_DATA_FL)
			return "its data is journalled (chattr +j): the journal "
			       "writes its own copy of the bytes over the blocks";
		if (fl & FS_ENCRYPT_FL)
			return "it is encrypted: its blocks hold ciphertext";
		if (fl & FS_COMPR_FL)
			return "it is compressed (chattr +c)";
	}
	if (magic == EXT4_MAGIC && ext4_journals_data(kname))
		return "its ext4 filesystem is mounted data=journal: the journal "
		       "writes its own copy of the bytes over the blocks";
	return NULL;
}

/* The rtdev= of the XFS mounted from st_dev, from the superblock options
 * in /proc/self/mountinfo; 0 when it has none. */
static int xfs_rtdev(dev_t st_dev, dev_t *ret)
{
	char want[32], *line = NULL, *p, *q;
	size_t cap = 0;
	struct stat st;
	int r = 0;
	FILE *f;

	f = fopen("/proc/self/mountinfo", "re");
	if (!f)
		return -errno;
	snprintf(want, sizeof(want), " %u:%u ", major(st_dev), minor(st_dev));
	while (!r && getline(&line, &cap, f) > 0) {
		if (!strstr(line, want) || !(p = strstr(line, " - ")))
			continue;
		p = strstr(p, "rtdev=");
		if (!p)
			continue;
		p += 6;
		q = p + strcspn(p, ", \n");
		*q = '\0';
		if (stat(p, &st) < 0)
			r = -errno;
		else if (!S_ISBLK(st.st_mode))
			r = -ENOTBLK;
		else
			r = 1, *ret = st.st_rdev;
	}
	free(line);
	fclose(f);
	return r;
}

/* The device that holds fd's data blocks: st_dev, or an XFS realtime
 * file's realtime device. */
static int data_device(struct imm_handle *h, int fd, dev_t *ret, bool *rt)
{
	struct fsxattr fsx;
	struct stat st;
	int r;

	if (fstat(fd, &st) < 0)
		return -errno;
	*ret = st.st_dev;
	*rt = ioctl(fd, FS_IOC_FSGETXATTR, &fsx) == 0 &&
	      (fsx.fsx_xflags & FS_XFLAG_REALTIME);
	if (!*rt)
		return 0;
	r = xfs_rtdev(st.st_dev, ret);
	if (r == 0) {
		err(h->ctx, "imm_block_map: the file is on the XFS realtime "
			    "section, but the mount names no external realtime "
			    "device (rtdev=); an internal realtime section is "
			    "not supported");
		return -EOPNOTSUPP;
	}
	if (r < 0)
		err(h->ctx, "imm_block_map: cannot find the XFS realtime device "
			    "from /proc/self/mountinfo: %s", strerror(-r));
	return r < 0 ? r : 0;
}

/* sysfs dir -> "/dev/NAME" from its uevent, checked to be devno. */
static int dev_node(const char *sysdir, dev_t devno, char *out, size_t n)
{
	char path[PATH_MAX], line[256];
	struct stat st;
	bool found = false;
	FILE *f;

	snprintf(path, sizeof(path), "%s/uevent", sysdir);
	f = fopen(path, "re");
	if (!f)
		return -errno;
	while (!found && fgets(line, sizeof(line), f))
		found = strncmp(line, "DEVNAME=", 8) == 0;
	fclose(f);
	if (!found)
		return -ENODEV;
	line[strcspn(line, "\n")] = '\0';
	if ((size_t)snprintf(out, n, "/dev/%s", line + 8) >= n)
		return -ENAMETOOLONG;
	if (stat(out, &st) < 0 || !S_ISBLK(st.st_mode) || st.st_rdev != devno)
		return -ENODEV;
	return 0;
}

/* The device's /dev node, whole disk, partition start and block size;
 * its kernel name in kname. */
static int describe_device(struct imm_handle *h, dev_t devno,
			   struct imm_block_dev *d, char *kname, size_t n)
{
	char sys[64], real[PATH_MAX], path[PATH_MAX + 32], line[64];
	char *slash;
	int r;

	snprintf(sys, sizeof(sys), "/sys/dev/block/%u:%u", major(devno),
		 minor(devno));
	if (!realpath(sys, real)) {
		err(h->ctx, "imm_block_map: the file's filesystem has no block "
			    "device (%u:%u is not in /sys/dev/block): there "
			    "are no blocks to address", major(devno),
		    minor(devno));
		return errno == ENOENT ? -EOPNOTSUPP : -errno;
	}
	slash = strrchr(real, '/');
	snprintf(kname, n, "%s", slash + 1);
	d->dev = devno;
	r = dev_node(real, devno, d->path, sizeof(d->path));
	if (r < 0) {
		err(h->ctx, "imm_block_map: no block device node in /dev for "
			    "%s (%u:%u): %s; mount devtmpfs on /dev or mknod it",
		    kname, major(devno), minor(devno), strerror(-r));
		return r;
	}
	snprintf(d->disk, sizeof(d->disk), "%s", d->path);
	snprintf(path, sizeof(path), "%s/start", real);
	if (read_line(path, line, sizeof(line)) == 0) {
		unsigned int ma, mi;

		d->flags |= IMM_BDEV_PARTITION;
		d->part_start = strtoull(line, NULL, 10) * 512;
		*slash = '\0';	/* the disk's directory holds the partition's */
		snprintf(path, sizeof(path), "%s/dev", real);
		r = read_line(path, line, sizeof(line));
		if (r == 0 && sscanf(line, "%u:%u", &ma, &mi) != 2)
			r = -EIO;
		if (r == 0)
			r = dev_node(real, makedev(ma, mi), d->disk,
				     sizeof(d->disk));
		if (r < 0) {
			err(h->ctx, "imm_block_map: cannot find the disk of "
				    "partition %s in sysfs and /dev: %s",
			    d->path, strerror(-r));
			return r;
		}
	}
	snprintf(path, sizeof(path), "%s/queue/logical_block_size", real);
	r = read_line(path, line, sizeof(line));
	if (r < 0)
		return r;
	d->logical_block_size = (uint32_t)strtoul(line, NULL, 10);
	return 0;
}

/* How many pages of [start, end) the page cache holds, or -errno. */
static long cached_pages(int fd, uint64_t start, uint64_t end)
{
	uint64_t pg = (uint64_t)sysconf(_SC_PAGESIZE), at, len;
	unsigned char *vec;
	long n = 0;

	start -= start % pg;
	end = (end + pg - 1) / pg * pg;
	vec = malloc(PROBE_CHUNK / pg);
	if (!vec)
		return -ENOMEM;
	for (at = start; at < end && n >= 0; at += len) {
		void *p;

		len = end - at < PROBE_CHUNK ? end - at : PROBE_CHUNK;
		p = mmap(NULL, len, PROT_READ, MAP_SHARED, fd, (off_t)at);
		if (p == MAP_FAILED) {
			n = -errno;
			break;
		}
		if (mincore(p, len, vec) < 0)
			n = -errno;
		for (uint64_t i = 0; n >= 0 && i < len / pg; i++)
			n += vec[i] & 1;
		munmap(p, len);
	}
	free(vec);
	return n;
}

/* Write the range back and drop it from the page cache, so that reads of
 * the file after a device write go to the device.  How many pages stay
 * cached (a process maps them), or -errno. */
static long cache_drop(int fd, uint64_t start, uint64_t end, bool writeback)
{
	int r;

	if (writeback &&
	    sync_file_range(fd, (off_t)start, (off_t)(end - start),
			    SYNC_FILE_RANGE_WAIT_BEFORE | SYNC_FILE_RANGE_WRITE |
			    SYNC_FILE_RANGE_WAIT_AFTER) < 0)
		return -errno;
	r = posix_fadvise(fd, (off_t)start, (off_t)(end - start),
			  POSIX_FADV_DONTNEED);
	if (r)
		return -r;
	return cached_pages(fd, start, end);
}

/* h->lock held: the seal ends; readers of the file must not see copies
 * cached while the map was out. */
static int forget(struct imm_handle *h)
{
	uint64_t start, end;
	long left;

	if (!h->block_exported)
		return 0;
	h->block_exported = false;
	imm_range_align(h->seal_off, h->seal_len, h->block_size, &start, &end);
	left = cache_drop(h->fd, start, end, false);
	if (left > 0)
		warn(h->ctx, "fd %d: %ld page(s) of the sealed range stay in the "
			     "page cache (a process maps them): its reads may "
			     "return bytes older than the device's", h->fd, left);
	return 0;
}

static const struct imm_attach_ops block_map_attach = { .teardown = forget };

/* h->lock held: the seal's map to hand out, copied; 0 with an empty map
 * when the handle has no live seal. */
static int take_snapshot(struct imm_handle *h, struct imm_extent_map *out,
			 uint64_t *start, uint64_t *end, uint64_t *gen)
{
	if (h->state != IMM_STATE_SEALED || h->sealing)
		return 0;
	imm_range_align(h->seal_off, h->seal_len, h->block_size, start, end);
	*gen = h->seal_gen;
	return imm_extent_map_copy(out, &h->snapshot);
}

static int not_sealed(struct imm_handle *h)
{
	err(h->ctx, "imm_block_map: the handle is %s; the map of a file is "
		    "only fixed while it is sealed: %s",
	    imm_state_name(h->state),
	    h->state == IMM_STATE_OPEN ? "imm_seal() it first, or pass "
	    "IMM_BLOCK_UNSEALED to look at it" : "release and re-seal");
	return h->state == IMM_STATE_CLOSED ? -EBADF :
	       h->state == IMM_STATE_OPEN ? -EINVAL : -ESTALE;
}

/* Every extent must say where its bytes are. */
static int check_extents(struct imm_handle *h, const struct imm_extent_map *m)
{
	for (size_t i = 0; i < m->n; i++) {
		if (!(m->ext[i].flags & NOT_AS_IS))
			continue;
		err(h->ctx, "imm_block_map: the extent at file offset %llu has "
			    "FIEMAP flags 0x%x: the filesystem does not store "
			    "those bytes as-is at a device address",
		    (unsigned long long)m->ext[i].logical, m->ext[i].flags);
		return -EOPNOTSUPP;
	}
	return 0;
}

/* The file and its device, whatever the seal: may its blocks be
 * addressed, and where? */
static int locate(struct imm_handle *h, int fd, struct imm_block_dev *d)
{
	char kname[64];
	const char *why;
	dev_t devno = 0;
	bool rt = false;
	int r;

	if (!imm_fs_has_fiemap(h->fs_magic)) {
		err(h->ctx, "imm_block_map: %s keeps files in memory, not in "
			    "device blocks: there is no block map to export",
		    imm_fs_name(h->fs_magic));
		return -EOPNOTSUPP;
	}
	r = data_device(h, fd, &devno, &rt);
	if (r == 0)
		r = describe_device(h, devno, d, kname, sizeof(kname));
	if (r < 0)
		return r;
	if (rt)
		d->flags |= IMM_BDEV_REALTIME;
	why = not_as_is(fd, h->fs_magic, kname);
	if (why) {
		err(h->ctx, "imm_block_map: I/O to this file's blocks would not "
			    "be I/O to the file: %s", why);
		return -EOPNOTSUPP;
	}
	if (imm_fd_is_dax(fd))
		d->flags |= IMM_BDEV_DAX;
	return 0;
}

/* The page cache must hold no copy a device write would leave stale. */
static int drop_cache(struct imm_handle *h, int fd, uint64_t start,
		      uint64_t end)
{
	long left = cache_drop(fd, start, end, true);

	if (left < 0) {
		err(h->ctx, "imm_block_map: cannot write back and drop the "
			    "range's page cache: %s", strerror((int)-left));
		return (int)left;
	}
	if (left > 0) {
		err(h->ctx, "imm_block_map: %ld page(s) of the sealed range stay "
			    "in the page cache because a process maps them; its "
			    "reads would miss device writes: unmap them (or seal "
			    "IMM_SEAL_EXCLUSIVE, which no other open can share) "
			    "and retry", left);
		return -EBUSY;
	}
	return 0;
}

static void fill_extents(const struct imm_extent_map *m,
			 struct imm_block_extent *ext, size_t max)
{
	for (size_t i = 0; i < m->n && i < max; i++)
		ext[i] = (struct imm_block_extent){
			.offset = m->ext[i].logical,
			.dev_offset = m->ext[i].physical,
			.length = m->ext[i].length,
			.flags = m->ext[i].flags,
		};
}

/* h->lock held: the seal the map was taken from is still the live one. */
static int commit(struct imm_handle *h, uint64_t gen)
{
	if (gen != h->seal_gen || h->state != IMM_STATE_SEALED || h->sealing) {
		err(h->ctx, "imm_block_map: the seal was %s while its map was "
			    "being exported; release and re-seal",
		    h->state == IMM_STATE_BREAKING ? "recalled" :
		    imm_state_name(h->state));
		return h->state == IMM_STATE_CLOSED ? -EBADF : -ESTALE;
	}
	h->block_exported = true;
	imm_handle_attach(h, IMM_ATTACH_BLOCK_MAP, &block_map_attach);
	return 0;
}

static int check_args(struct imm_handle *h, uint32_t flags,
		      const struct imm_block_dev *dev)
{
	if (flags & ~IMM_BLOCK_UNSEALED) {
		err(h->ctx, "imm_block_map: unknown flags 0x%x",
		    flags & ~IMM_BLOCK_UNSEALED);
		return -EINVAL;
	}
	if (dev->sz < sizeof(size_t)) {
		err(h->ctx, "imm_block_map: set dev->sz = sizeof(struct "
			    "imm_block_dev)");
		return -EINVAL;
	}
	return 0;
}

/* Under h->lock: the seal's map and a dup of the fd, or the reason why
 * there is no map to give. */
static int begin(struct imm_handle *h, uint32_t flags,
		 struct imm_extent_map *map, uint64_t *start, uint64_t *end,
		 uint64_t *gen)
{
	int fd, r;

	pthread_mutex_lock(&h->lock);
	fd = imm_handle_dup_fd(h);
	r = fd < 0 ? fd : take_snapshot(h, map, start, end, gen);
	if (r == 0 && !*gen && !(flags & IMM_BLOCK_UNSEALED))
		r = not_sealed(h);
	pthread_mutex_unlock(&h->lock);
	if (r < 0 && fd >= 0)
		close(fd);
	return r < 0 ? r : fd;
}

IMM_EXPORT int imm_block_map(struct imm_handle *h, uint32_t flags,
			     struct imm_block_dev *dev,
			     struct imm_block_extent *ext, size_t max)
{
	struct imm_block_dev d = { 0 };
	struct imm_extent_map map = { 0 };
	uint64_t start = 0, end = 0, gen = 0;
	int fd, r;

	if (!h || !dev || (!ext && max))
		return -EINVAL;
	r = imm_check_fork(h->ctx, "imm_block_map");
	if (r == 0)
		r = check_args(h, flags, dev);
	if (r < 0)
		return r;
	fd = begin(h, flags, &map, &start, &end, &gen);
	if (fd < 0)
		return fd;
	r = locate(h, fd, &d);
	if (r == 0 && !gen)
		r = imm_extent_map_read_file(h, fd, true, &map, &start, &end);
	if (r == 0)
		r = check_extents(h, &map);
	if (r == 0 && map.n > INT_MAX) {
		err(h->ctx, "imm_block_map: the range has %zu extents, more than "
			    "the int return value can count: seal a smaller "
			    "range", map.n);
		r = -EOVERFLOW;
	}
	if (r == 0 && gen && !(d.flags & IMM_BDEV_DAX))
		r = drop_cache(h, fd, start, end);
	if (r == 0 && gen) {
		pthread_mutex_lock(&h->lock);
		r = commit(h, gen);
		pthread_mutex_unlock(&h->lock);
		d.flags |= IMM_BDEV_SEALED;
	}
	close(fd);
	if (r == 0) {
		d.generation = gen;
		d.offset = start;
		d.length = end - start;
		d.sz = dev->sz < sizeof(d) ? dev->sz : sizeof(d);
		memcpy(dev, &d, d.sz);
		fill_extents(&map, ext, max);
		r = (int)map.n;
	}
	imm_extent_map_free(&map);
	return r;
}
