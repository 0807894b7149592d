// SPDX-License-Identifier: LGPL-2.1-or-later
/* What immctl needs to know about a filesystem and a file on it. */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>

#include "fsinfo.h"

void fs_type_of(dev_t dev, char *out, size_t len)
{
	char line[4096];
	FILE *f = fopen("/proc/self/mountinfo", "re");

	snprintf(out, len, "unknown");
	if (!f)
		return;
	while (fgets(line, sizeof(line), f)) {
		unsigned maj, min;
		char *sep, type[64];

		if (sscanf(line, "%*d %*d %u:%u", &maj, &min) != 2 ||
		    makedev(maj, min) != dev)
			continue;
		sep = strstr(line, " - ");
		if (sep && sscanf(sep + 3, "%63s", type) == 1)
			snprintf(out, len, "%s", type);
	}
	fclose(f);
}

bool path_is_dax(const char *path)
{
	struct statx stx;

	if (statx(AT_FDCWD, path, 0, STATX_BASIC_STATS, &stx) < 0)
		return false;
	return (stx.stx_attributes_mask & STATX_ATTR_DAX) &&
	       (stx.stx_attributes & STATX_ATTR_DAX);
}
