// SPDX-License-Identifier: LGPL-2.1-or-later
/*
 * Which files can hold a seal: regular files, not swapfiles, on a
 * filesystem whose block map stays put while nobody changes it.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <unistd.h>

#include "private.h"

#define EXT4_MAGIC 0xEF53u
#define XFS_MAGIC 0x58465342u
#define TMPFS_MAGIC 0x01021994u
#define BTRFS_MAGIC 0x9123683Eu
#define F2FS_MAGIC 0xF2F52010u
#define NFS_MAGIC 0x6969u
#define RAMFS_MAGIC 0x858458f6u
#define OVERLAY_MAGIC 0x794c7630u
#define FUSE_MAGIC 0x65735546u
#define V9FS_MAGIC 0x01021997u
#define PROC_MAGIC 0x9fa0u
#define SYSFS_MAGIC 0x62656572u
#define CIFS_MAGIC 0xFF534D42u
#define ZFS_MAGIC 0x2fc12fc1u
#define BCACHEFS_MAGIC 0xca451a4eu

static const struct fs_policy {
	uint64_t magic;
	const char *name;
	bool supported;
	bool fiemap;		/* false: allocation map through SEEK_HOLE */
	const char *why;	/* for the unsupported ones */
} policies[] = {
	{ EXT4_MAGIC, "ext4", true, true, NULL },
	{ XFS_MAGIC, "xfs", true, true, NULL },
	{ TMPFS_MAGIC, "tmpfs", true, false, NULL },
	{ BTRFS_MAGIC, "btrfs", false, true,
	  "btrfs writes out of place (copy-on-write), so every write moves "
	  "blocks, checksums them, and may keep them on several devices (RAID): "
	  "a write straight to a block would not be the file's" },
	{ F2FS_MAGIC, "f2fs", false, true,
	  "f2fs is log-structured: its cleaner moves blocks at any time" },
	{ ZFS_MAGIC, "zfs", false, false,
	  "zfs writes out of place, checksums every block and spreads them over "
	  "its pool: it has no stable block map" },
	{ BCACHEFS_MAGIC, "bcachefs", false, true,
	  "bcachefs writes out of place (copy-on-write), checksums and may "
	  "compress or replicate extents: it has no stable block map" },
	{ NFS_MAGIC, "nfs", false, false,
	  "the block map of an NFS file lives on the server; clients cannot lease it" },
	{ CIFS_MAGIC, "cifs", false, false,
	  "the block map of an SMB file lives on the server" },
	{ V9FS_MAGIC, "9p", false, false,
	  "9p forwards to a host filesystem the guest cannot seal" },
	{ OVERLAY_MAGIC, "overlay", false, false,
	  "overlayfs copies a file up on first write, replacing its blocks" },
	{ FUSE_MAGIC, "fuse", false, false,
	  "a FUSE filesystem gives no guarantee about its block map" },
	{ RAMFS_MAGIC, "ramfs", false, false,
	  "ramfs has neither FIEMAP nor hole reporting to snapshot" },
	{ PROC_MAGIC, "proc", false, false, "procfs files have no blocks" },
	{ SYSFS_MAGIC, "sysfs", false, false, "sysfs files have no blocks" },
};

static const struct fs_policy *policy_of(uint64_t magic)
{
	for (size_t i = 0; i < sizeof(policies) / sizeof(policies[0]); i++)
		if (policies[i].magic == magic)
			return &policies[i];
	return NULL;
}

const char *imm_fs_name(uint64_t magic)
{
	const struct fs_policy *p = policy_of(magic);

	return p ? p->name : "unknown";
}

bool imm_fs_has_fiemap(uint64_t magic)
{
	const struct fs_policy *p = policy_of(magic);

	return p && p->fiemap;
}

/* /proc/swaps escapes blanks as \040 and friends, like /proc/mounts. */
static void unescape_octal(char *s)
{
	char *w = s;

	for (char *r = s; *r; r++) {
		if (r[0] == '\\' && r[1] >= '0' && r[1] <= '7' && r[2] >= '0' &&
		    r[2] <= '7' && r[3] >= '0' && r[3] <= '7') {
			*w++ = (char)((r[1] - '0') * 64 + (r[2] - '0') * 8 +
				      (r[3] - '0'));
			r += 3;
		} else {
			*w++ = *r;
		}
	}
	*w = '\0';
}

/* The swap code owns a swapfile's blocks; the kernel exposes that only
 * through the list of active swap areas. */
static bool is_active_swapfile(const struct stat *st)
{
	char line[4096];
	bool found = false;
	FILE *f;

	f = fopen("/proc/swaps", "re");
	if (!f)
		return false;
	while (!found && fgets(line, sizeof(line), f)) {
		char *sp = strpbrk(line, " \t");
		struct stat sw;

		if (line[0] != '/' || !sp)
			continue;
		*sp = '\0';
		unescape_octal(line);
		found = !stat(line, &sw) && S_ISREG(sw.st_mode) &&
			sw.st_dev == st->st_dev && sw.st_ino == st->st_ino;
	}
	fclose(f);
	return found;
}

static int check_type(struct imm_ctx *ctx, const struct stat *st,
		      const char *what)
{
	if (S_ISREG(st->st_mode))
		return 0;
	if (S_ISDIR(st->st_mode)) {
		err(ctx, "%s is a directory; seals apply to regular files", what);
		return -EISDIR;
	}
	err(ctx, "%s is a %s, not a regular file; only regular files have an "
		 "extent map to seal", what,
	    S_ISFIFO(st->st_mode) ? "FIFO" :
	    S_ISSOCK(st->st_mode) ? "socket" :
	    S_ISCHR(st->st_mode) ? "character device" :
	    S_ISBLK(st->st_mode) ? "block device (use device-dax for raw pmem)" :
				   "special file");
	return -EINVAL;
}

/* Non-opening check of a path or O_PATH fd: refuse before any real open. */
int imm_fscheck_type(struct imm_ctx *ctx, int fd, const char *what)
{
	struct stat st;

	if (fstat(fd, &st) < 0) {
		int r = -errno;

		err(ctx, "%s: fstat: %s", what, strerror(-r));
		return r;
	}
	return check_type(ctx, &st, what);
}

int imm_fscheck_fd(struct imm_ctx *ctx, int fd, const char *what,
		   uint64_t *ret_magic, uint32_t *ret_block)
{
	const struct fs_policy *p;
	struct statfs sfs;
	struct stat st;
	int r;

	if (fstat(fd, &st) < 0 || fstatfs(fd, &sfs) < 0) {
		r = -errno;
		err(ctx, "%s: fstat: %s", what, strerror(-r));
		return r;
	}
	r = check_type(ctx, &st, what);
	if (r < 0)
		return r;
	p = policy_of((uint64_t)(unsigned long)sfs.f_type);
	if (!p) {
		err(ctx, "%s is on a filesystem (magic 0x%lx) that is not known to "
			 "keep a stable block map; libimmutable seals files on "
			 "ext4, xfs and tmpfs", what, (unsigned long)sfs.f_type);
		return -EOPNOTSUPP;
	}
	if (!p->supported) {
		err(ctx, "%s is on %s, which cannot hold a seal: %s; use ext4 or xfs",
		    what, p->name, p->why);
		return -EOPNOTSUPP;
	}
	if (is_active_swapfile(&st)) {
		err(ctx, "%s is an active swapfile: the swap code owns its blocks; "
			 "swapoff it first", what);
		return -ETXTBSY;
	}
	*ret_magic = (uint64_t)(unsigned long)sfs.f_type;
	*ret_block = sfs.f_bsize > 0 && sfs.f_bsize <= (1 << 24) ?
			     (uint32_t)sfs.f_bsize : 4096;
	return 0;
}
