/* SPDX-License-Identifier: LGPL-2.1-or-later */
#ifndef IMMCTL_PROCLOCKS_H
#define IMMCTL_PROCLOCKS_H

#include <stdio.h>
#include <sys/types.h>

/* One lease (or NFS delegation) from /proc/locks. */
struct lease_holder {
	pid_t pid;
	char kind[8];	/* LEASE, DELEG */
	char state[12];	/* ACTIVE, BREAKING, BREAKER */
	char type[8];	/* READ, WRITE, UNLCK */
};

/*
 * Leases on (dev, ino) listed in f (a /proc/locks stream); fills at most
 * max entries, returns how many matched in all.
 */
size_t proclocks_leases(FILE *f, dev_t dev, ino_t ino,
			struct lease_holder *out, size_t max);

#endif
