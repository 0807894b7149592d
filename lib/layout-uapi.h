/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The user layout seal interface of the libimmutable companion kernel patch
 * (fs/locks).  Defined here because no released <linux/fcntl.h> has it; if
 * the system headers ever do, theirs win.  Not included next to
 * <linux/fcntl.h>, whose struct flock clashes with glibc's.
 */
#ifndef IMM_LAYOUT_UAPI_H
#define IMM_LAYOUT_UAPI_H

#include <fcntl.h>

#ifndef F_LINUX_SPECIFIC_BASE
#define F_LINUX_SPECIFIC_BASE 1024
#endif
#ifndef F_SETLAYOUT
#define F_SETLAYOUT (F_LINUX_SPECIFIC_BASE + 64)
#endif
#ifndef F_GETLAYOUT
#define F_GETLAYOUT (F_LINUX_SPECIFIC_BASE + 65)
#endif

/* F_SETLAYOUT arguments and F_GETLAYOUT results */
#ifndef F_LAYOUT_UNSEAL
#define F_LAYOUT_UNSEAL 0
#endif
#ifndef F_LAYOUT_SEAL
#define F_LAYOUT_SEAL 1		/* breakable: a layout change recalls it */
#endif
#ifndef F_LAYOUT_SEAL_EXCL
#define F_LAYOUT_SEAL_EXCL 2	/* exclusive: a layout change fails, ETXTBSY */
#endif
#ifndef F_LAYOUT_BREAKING
#define F_LAYOUT_BREAKING 3	/* F_GETLAYOUT only: a break is pending */
#endif

/* Exists, and reads 1, on kernels with the patch. */
#define LAYOUT_SEAL_VERSION_PATH "/proc/sys/fs/layout-seal-version"
#define LAYOUT_SEAL_VERSION 1

#endif /* IMM_LAYOUT_UAPI_H */
