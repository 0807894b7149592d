/* SPDX-License-Identifier: LGPL-2.1-or-later */
#ifndef IMMCTL_RDMAPROBE_H
#define IMMCTL_RDMAPROBE_H

#include <stdbool.h>

/* Where to create the files that registrations are tried on. */
struct rdma_probe_dirs {
	const char *page_cache;	/* NULL: $TMPDIR, else /var/tmp */
	const char *tmpfs;	/* NULL: /dev/shm */
	const char *dax;	/* NULL: the first ext4/xfs mount with dax */
};

/*
 * The RDMA devices, their ODP capabilities, and for each device and kind of
 * memory the registration mode the library chooses, found by trying it.
 * Text: lines of their own.  JSON: the value of the "rdma" key.
 */
void rdma_probe(const struct rdma_probe_dirs *dirs, bool json);

#endif
