/*
 * scrim.h - forward declarations and the few definitions every module
 * shares. No module's internals live here: each concern has its own header.
 */
#ifndef SCRIM_H
#define SCRIM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define SCRIM_VERSION "0.1.0"

#if defined(__GNUC__)
#define SCRIM_MUSTCHECK __attribute__((warn_unused_result))
#define SCRIM_PRINTF(f, a) __attribute__((format(printf, f, a)))
#define SCRIM_NORETURN __attribute__((noreturn))
#else
#define SCRIM_MUSTCHECK
#define SCRIM_PRINTF(f, a)
#define SCRIM_NORETURN
#endif

/* Unit tests reach file-local functions through this (curl's UNITTEST). */
#ifdef SCRIM_TESTING
#define SCRIM_STATIC
#else
#define SCRIM_STATIC static
#endif

#define SCRIM_ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))

/* v in decimal at o (at most 20 bytes, no NUL); returns the end. For the
 * request path, where an snprintf costs more than the work around it. */
static inline char *
scrim_put_u64(char *o, uint64_t v)
{
	char tmp[20];
	int n = 0;

	do {
		tmp[n++] = (char)('0' + v % 10);
		v /= 10;
	} while (v != 0);
	while (n > 0)
		*o++ = tmp[--n];
	return o;
}

/* The same, signed (at most 20 bytes). */
static inline char *
scrim_put_i64(char *o, int64_t v)
{
	if (v < 0) {
		*o++ = '-';
		return scrim_put_u64(o, 0 - (uint64_t)v);
	}
	return scrim_put_u64(o, (uint64_t)v);
}

struct scrim_config;
struct scrim_server;
struct scrim_conn;
struct scrim_req;
struct scrim_upstream;
struct http_head;

#endif
