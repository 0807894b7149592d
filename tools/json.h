/* SPDX-License-Identifier: LGPL-2.1-or-later */
#ifndef IMMCTL_JSON_H
#define IMMCTL_JSON_H

#include <stdio.h>

/* Write s as a JSON string literal, quotes included. */
void json_string(FILE *f, const char *s);

#endif
