/* SPDX-License-Identifier: LGPL-2.1-or-later */
#ifndef IMMCTL_FSINFO_H
#define IMMCTL_FSINFO_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

/* The filesystem's name from mountinfo, "unknown" if not found: needs no
 * open of anything on it. */
void fs_type_of(dev_t dev, char *out, size_t len);

/* Does statx() report the file as accessed with DAX? */
bool path_is_dax(const char *path);

#endif
