/*
 * ini.c - see ini.h. Not libinih: Debian 12's build truncates lines at
 * 200 bytes (a long regex or `models =` list would be cut) and gives the
 * handler no line number.
 */
#include "ini.h"

#include "alloc.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

static char *
trim(char *s)
{
	char *e;

	while (*s == ' ' || *s == '\t')
		s++;
	e = s + strlen(s);
	while (e > s && (e[-1] == ' ' || e[-1] == '\t' || e[-1] == '\r'))
		e--;
	*e = '\0';
	return s;
}

void
ini_parse(char *text, const struct ini_handler *h, void *arg)
{
	int line = 0;
	char *next = text;

	while (next != NULL && *next) {
		char *l = next, *nl = strchr(next, '\n'), *eq;

		line++;
		if (nl != NULL) {
			*nl = '\0';
			next = nl + 1;
		} else {
			next = NULL;
		}
		l = trim(l);
		if (*l == '\0' || *l == '#' || *l == ';')
			continue;
		if (*l == '[') {
			char *close = strrchr(l, ']');
			if (close == NULL || close[1] != '\0') {
				h->error(arg, line, "malformed section header");
				continue;
			}
			*close = '\0';
			h->section(arg, line, trim(l + 1));
			continue;
		}
		eq = strchr(l, '=');
		if (eq == NULL) {
			h->error(arg, line, "expected 'key = value'");
			continue;
		}
		*eq = '\0';
		h->key(arg, line, trim(l), trim(eq + 1));
	}
}

char *
ini_read_binary(const char *path, size_t max, size_t *len, int *err)
{
	FILE *f = fopen(path, "rb");
	struct stat st;
	char *buf;
	size_t n = 0, cap;

	if (f == NULL) {
		*err = errno;
		return NULL;
	}
	/* Sized from the file, not the limit: rules and config are loaded
	 * often (reload, check) and are far below it. The file may still
	 * grow while we read, so the limit is enforced on what we read. */
	cap = fstat(fileno(f), &st) == 0 && st.st_size >= 0 &&
	              (size_t)st.st_size < max
	          ? (size_t)st.st_size + 1
	          : max + 1;
	buf = xmalloc(cap + 1);
	for (;;) {
		n += fread(buf + n, 1, cap - n, f);
		if (ferror(f) || n > max) {
			*err = ferror(f) ? EIO : EFBIG;
			(void)fclose(f);
			free(buf);
			return NULL;
		}
		if (n < cap)
			break; /* EOF */
		cap = cap * 2 > max + 1 ? max + 1 : cap * 2;
		buf = xrealloc(buf, cap + 1);
	}
	(void)fclose(f);
	buf[n] = '\0';
	*len = n;
	return buf;
}

char *
ini_read_file(const char *path, size_t max, size_t *len, int *err)
{
	char *buf = ini_read_binary(path, max, len, err);

	if (buf != NULL && strlen(buf) != *len) {
		*err = EINVAL;
		free(buf);
		return NULL;
	}
	return buf;
}
