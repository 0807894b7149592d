// SPDX-License-Identifier: LGPL-2.1-or-later
/* Who holds a lease on a file, from /proc/locks. */
#define _GNU_SOURCE
#include <stdio.h>
#include <string.h>
#include <sys/sysmacros.h>

#include "proclocks.h"

/*
 *   1: LEASE  ACTIVE    WRITE 2320 fe:00:1234 0 EOF
 *   1: -> LEASE  BREAKER  READ 2401 fe:00:1234 0 EOF   (a blocked breaker)
 */
static int parse_line(const char *line, struct lease_holder *lh,
		      unsigned *maj, unsigned *min, unsigned long *ino)
{
	const char *p = strchr(line, ':');
	int pid;

	if (!p)
		return -1;
	p++;
	while (*p == ' ')
		p++;
	if (!strncmp(p, "->", 2))
		return -1;	/* waiters are not holders */
	if (sscanf(p, "%7s %11s %7s %d %x:%x:%lu", lh->kind, lh->state,
		   lh->type, &pid, maj, min, ino) != 7)
		return -1;
	if (strcmp(lh->kind, "LEASE") && strcmp(lh->kind, "DELEG"))
		return -1;
	lh->pid = pid;
	return 0;
}

size_t proclocks_leases(FILE *f, dev_t dev, ino_t ino,
			struct lease_holder *out, size_t max)
{
	char line[512];
	size_t n = 0;

	while (fgets(line, sizeof(line), f)) {
		struct lease_holder lh;
		unsigned maj, min;
		unsigned long i;

		if (parse_line(line, &lh, &maj, &min, &i) < 0)
			continue;
		if (makedev(maj, min) != dev || (ino_t)i != ino)
			continue;
		if (n < max)
			out[n] = lh;
		n++;
	}
	return n;
}
