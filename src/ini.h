/*
 * ini.h - the line reader behind scrim's two file formats, the
 * configuration (config.c) and the rule packs (rules.c): `[section]`
 * headers, `key = value` lines, `#`/`;` comment lines, line numbers for
 * every callback so errors can say where. Values run to the end of the
 * line: no inline comments, so regexes and header values keep `;` and `#`.
 */
#ifndef SCRIM_INI_H
#define SCRIM_INI_H

#include "scrim.h"

struct ini_handler {
	/* header is the text between the brackets, trimmed. */
	void (*section)(void *arg, int line, char *header);
	void (*key)(void *arg, int line, char *key, char *value);
	void (*error)(void *arg, int line, const char *msg);
};

/* Parse text in place (it is modified). */
void ini_parse(char *text, const struct ini_handler *h, void *arg);

/*
 * Read a whole file of at most max bytes, NUL-terminated. NULL with *err
 * set (errno, or EFBIG past max, or EINVAL for a NUL byte inside).
 */
char *ini_read_file(const char *path, size_t max, size_t *len, int *err);

/* The same for binary content (a secret): NUL bytes are data. */
char *ini_read_binary(const char *path, size_t max, size_t *len, int *err);

#endif
