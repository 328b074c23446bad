/*
 * fuzz.c - helpers shared by the libFuzzer drivers; see fuzz.h. Linked
 * into every driver, never into scrim itself.
 */
#include "fuzz.h"

#include "log.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define FUZZ_MAX_FILES 8

static char tmpdir[4096];
static char files[FUZZ_MAX_FILES][64];
static size_t nfiles;

static void cleanup(void);

void
fuzz_fail(const char *file, int line, const char *cond, const char *fmt, ...)
{
	va_list ap;

	fprintf(stderr, "\nORACLE FAILED %s:%d: %s: ", file, line, cond);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	cleanup(); /* abort() skips atexit; libFuzzer keeps the input */
	abort();
}

void
fuzz_quiet(void)
{
	/* Above every level log_at() compares with. */
	log_min_level = (enum log_level)(LOG_ERROR + 1);
}

static void
cleanup(void)
{
	char path[4200];

	for (size_t i = 0; i < nfiles; i++) {
		snprintf(path, sizeof(path), "%s/%s", tmpdir, files[i]);
		unlink(path);
	}
	if (tmpdir[0] != '\0')
		rmdir(tmpdir);
}

const char *
fuzz_tmpdir(void)
{
	const char *base = getenv("TMPDIR");

	if (tmpdir[0] != '\0')
		return tmpdir;
	if (base == NULL || base[0] == '\0')
		base = "/tmp";
	snprintf(tmpdir, sizeof(tmpdir), "%s/scrim-fuzz-XXXXXX", base);
	if (mkdtemp(tmpdir) == NULL) {
		fprintf(stderr, "fuzz: mkdtemp %s: %s\n", tmpdir, strerror(errno));
		abort();
	}
	atexit(cleanup);
	return tmpdir;
}

const char *
fuzz_write_file(const char *name, const uint8_t *data, size_t size)
{
	static char path[4200];
	bool known = false;
	FILE *f;

	snprintf(path, sizeof(path), "%s/%s", fuzz_tmpdir(), name);
	for (size_t i = 0; i < nfiles; i++)
		known = known || strcmp(files[i], name) == 0;
	if (!known && nfiles < FUZZ_MAX_FILES)
		snprintf(files[nfiles++], sizeof(files[0]), "%s", name);
	f = fopen(path, "wb");
	if (f == NULL || (size > 0 && fwrite(data, 1, size, f) != size) ||
	    fclose(f) != 0) {
		fprintf(stderr, "fuzz: cannot write %s: %s\n", path, strerror(errno));
		abort();
	}
	return path;
}
