// SPDX-License-Identifier: LGPL-2.1-or-later
/*
 * immctl extents: a file's physical block map and the device it is on,
 * from imm_block_map(3); with --seal, sealed first and held like
 * immctl seal holds it.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>
#include <linux/fiemap.h>

#include "immctl.h"
#include "json.h"

static const struct {
	uint32_t flag;
	const char *name;
} flag_names[] = {
	{ FIEMAP_EXTENT_LAST, "last" },
	{ FIEMAP_EXTENT_UNKNOWN, "unknown" },
	{ FIEMAP_EXTENT_DELALLOC, "delalloc" },
	{ FIEMAP_EXTENT_ENCODED, "encoded" },
	{ FIEMAP_EXTENT_DATA_ENCRYPTED, "encrypted" },
	{ FIEMAP_EXTENT_NOT_ALIGNED, "not_aligned" },
	{ FIEMAP_EXTENT_DATA_INLINE, "inline" },
	{ FIEMAP_EXTENT_DATA_TAIL, "tail" },
	{ FIEMAP_EXTENT_UNWRITTEN, "unwritten" },
	{ FIEMAP_EXTENT_MERGED, "merged" },
	{ FIEMAP_EXTENT_SHARED, "shared" },
};

#define N_FLAGS (sizeof(flag_names) / sizeof(flag_names[0]))

struct extents_args {
	bool json;
	bool seal;
	uint32_t mode;
	const char *path;
};

static int parse_args(int argc, char **argv, struct extents_args *a)
{
	static const struct option opts[] = {
		{ "json", no_argument, NULL, 'j' },
		{ "seal", no_argument, NULL, 's' },
		{ "shared", no_argument, NULL, 'S' },
		{ "help", no_argument, NULL, 'h' },
		{ 0 }
	};
	static const char usage[] =
		"usage: immctl extents [--json] [--seal [--shared]] FILE\n";
	int c;

	a->mode = IMM_SEAL_EXCLUSIVE;
	while ((c = getopt_long(argc, argv, "jsSh", opts, NULL)) != -1) {
		switch (c) {
		case 'j': a->json = true; break;
		case 's': a->seal = true; break;
		case 'S': a->mode = IMM_SEAL_SHARED; break;
		default:
			fputs(usage, stderr);
			return c == 'h' ? -1 : EXIT_USAGE;
		}
	}
	if (optind != argc - 1 || (a->mode == IMM_SEAL_SHARED && !a->seal)) {
		fputs(usage, stderr);
		return EXIT_USAGE;
	}
	a->path = argv[optind];
	return 0;
}

static void print_flags_json(uint32_t flags)
{
	bool first = true;

	putchar('[');
	for (size_t i = 0; i < N_FLAGS; i++) {
		if (!(flags & flag_names[i].flag))
			continue;
		printf("%s\"%s\"", first ? "" : ",", flag_names[i].name);
		first = false;
		flags &= ~flag_names[i].flag;
	}
	if (flags)
		printf("%s\"0x%x\"", first ? "" : ",", flags);
	putchar(']');
}

/* One line, so that the event lines of --seal --json follow it. */
static void print_json(const struct imm_block_dev *d,
		       const struct imm_block_extent *e, int n)
{
	printf("{\"device\":");
	json_string(stdout, d->path);
	printf(",\"dev\":\"%u:%u\",\"block_size\":%u,\"disk\":",
	       major(d->dev), minor(d->dev), d->logical_block_size);
	json_string(stdout, d->disk);
	printf(",\"part_start\":%" PRIu64 ",\"sealed\":%s,\"generation\":%"
	       PRIu64 ",\"realtime\":%s,\"dax\":%s,\"offset\":%" PRIu64
	       ",\"length\":%" PRIu64 ",\"extents\":[", d->part_start,
	       d->flags & IMM_BDEV_SEALED ? "true" : "false", d->generation,
	       d->flags & IMM_BDEV_REALTIME ? "true" : "false",
	       d->flags & IMM_BDEV_DAX ? "true" : "false", d->offset, d->length);
	for (int i = 0; i < n; i++) {
		printf("%s{\"logical\":%" PRIu64 ",\"physical\":%" PRIu64
		       ",\"length\":%" PRIu64 ",\"flags\":", i ? "," : "",
		       e[i].offset, e[i].dev_offset, e[i].length);
		print_flags_json(e[i].flags);
		putchar('}');
	}
	printf("]}\n");
	fflush(stdout);	/* --seal goes on holding */
}

static void print_text(const struct imm_block_dev *d,
		       const struct imm_block_extent *e, int n)
{
	printf("device:     %s (%u:%u), block size %u\n", d->path,
	       major(d->dev), minor(d->dev), d->logical_block_size);
	if (d->flags & IMM_BDEV_PARTITION)
		printf("disk:       %s, partition starts at byte %" PRIu64 "\n",
		       d->disk, d->part_start);
	if (d->flags & IMM_BDEV_SEALED)
		printf("seal:       generation %" PRIu64 ", [%" PRIu64 ", +%"
		       PRIu64 ")\n", d->generation, d->offset, d->length);
	else
		printf("seal:       none: the blocks may move at any time\n");
	printf("%4s %20s %20s %16s  %s\n", "#", "logical", "physical",
	       "length", "flags");
	for (int i = 0; i < n; i++) {
		printf("%4d %20" PRIu64 " %20" PRIu64 " %16" PRIu64 "  ", i,
		       e[i].offset, e[i].dev_offset, e[i].length);
		for (size_t f = 0; f < N_FLAGS; f++)
			if (e[i].flags & flag_names[f].flag)
				printf("%s ", flag_names[f].name);
		putchar('\n');
	}
	fflush(stdout);
}

/* The map, all of it: the count first, then room for every extent. */
static int print_map(struct imm_handle *h, uint32_t flags, bool json)
{
	struct imm_block_dev d = { .sz = sizeof(d) };
	struct imm_block_extent *e;
	int n;

	n = imm_block_map(h, flags, &d, NULL, 0);
	if (n < 0)
		return fail("cannot export the block map", n);
	e = calloc((size_t)n + 1, sizeof(*e));
	if (!e)
		return fail("cannot export the block map", -ENOMEM);
	n = imm_block_map(h, flags, &d, e, (size_t)n);
	if (n < 0) {
		free(e);
		return fail("cannot export the block map", n);
	}
	if (json)
		print_json(&d, e, n);
	else
		print_text(&d, e, n);
	free(e);
	return 0;
}

static int seal_whole(struct holder *o, uint32_t mode)
{
	struct stat st;
	int r;

	if (fstat(imm_handle_get_fd(o->h), &st) < 0)
		return fail("cannot stat", -errno);
	if (st.st_size == 0) {
		fprintf(stderr, "immctl: %s: the file is empty: there is "
				"nothing to seal\n", prog_target);
		return EXIT_FAILURE;
	}
	r = imm_seal(o->h, 0, (uint64_t)st.st_size, mode, NULL);
	return r < 0 ? fail("cannot seal", r) : 0;
}

int cmd_extents(int argc, char **argv)
{
	struct extents_args a = { 0 };
	struct holder o = { 0 };
	struct imm_ctx *ctx;
	int r;

	r = parse_args(argc, argv, &a);
	if (r)
		return r < 0 ? 0 : r;
	prog_target = a.path;
	o.json = a.json;
	o.auto_release = true;	/* a recall ends the hold */
	if ((a.seal && hold_signals(&o)) || new_ctx(&ctx))
		return EXIT_FAILURE;
	r = a.seal ? imm_ctx_set_event_fn(ctx, on_event, &o, 0) : 0;
	if (r == 0)
		r = imm_handle_open(ctx, a.path, a.seal && a.mode ==
				    IMM_SEAL_EXCLUSIVE ? IMM_RDWR : IMM_RDONLY,
				    &o.h);
	if (r < 0) {
		imm_ctx_unref(ctx);
		return fail(r == -EWOULDBLOCK ? "cannot open: another process "
			    "holds a lease on it" : "cannot open", r);
	}
	r = a.seal ? seal_whole(&o, a.mode) : 0;
	if (r == 0)
		r = print_map(o.h, a.seal ? 0 : IMM_BLOCK_UNSEALED, a.json);
	if (r == 0 && a.seal)
		r = hold(ctx, &o);
	imm_handle_close(o.h);
	imm_ctx_unref(ctx);
	return r;
}
