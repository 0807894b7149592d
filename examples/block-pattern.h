/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * What the block examples share: a content for each version of each 4 KiB
 * page of a file, so that a read proves which write it sees, and the
 * lookup of a file offset in a block map.
 */
#ifndef BLOCK_PATTERN_H
#define BLOCK_PATTERN_H

#include <fcntl.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <libimmutable/libimmutable.h>

#define PAGE 4096u

static inline uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static inline uint64_t next_rand(uint64_t *s)
{
	*s ^= *s << 13;
	*s ^= *s >> 7;
	*s ^= *s << 17;
	return *s;
}

/* Page p at version v: every 8 bytes say which page and version. */
static inline void page_fill(unsigned char *b, uint64_t p, uint32_t v)
{
	uint64_t word = p << 20 ^ v;

	for (unsigned i = 0; i < PAGE / 8; i++) {
		uint64_t w = word * 0x9e3779b97f4a7c15ull + i;

		memcpy(b + 8 * i, &w, 8);
	}
}

static inline bool page_holds(const unsigned char *b, uint64_t p, uint32_t v)
{
	unsigned char want[PAGE];

	page_fill(want, p, v);
	return memcmp(b, want, PAGE) == 0;
}

/* The device offset of file offset off; the map is in file order and
 * covers it. */
static inline uint64_t dev_offset_of(const struct imm_block_extent *e, int n,
				     uint64_t off)
{
	int lo = 0, hi = n - 1;

	while (lo < hi) {
		int mid = (lo + hi + 1) / 2;

		if (e[mid].offset <= off)
			lo = mid;
		else
			hi = mid - 1;
	}
	return e[lo].dev_offset + (off - e[lo].offset);
}

/* path made or resized to size, every page at version 0, synced; 0 or -1
 * with errno. */
static inline int fill_file(const char *path, uint64_t size)
{
	unsigned char b[PAGE];
	int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0644), e = 0;

	if (fd < 0)
		return -1;
	if (ftruncate(fd, (off_t)size) < 0)
		e = errno;
	for (uint64_t p = 0; !e && p < size / PAGE; p++) {
		page_fill(b, p, 0);
		if (pwrite(fd, b, PAGE, (off_t)(p * PAGE)) != PAGE)
			e = errno ? errno : EIO;
	}
	if (!e && fsync(fd) < 0)
		e = errno;
	close(fd);
	errno = e;
	return e ? -1 : 0;
}

#endif
