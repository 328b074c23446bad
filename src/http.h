/*
 * http.h - HTTP/1.1 request framing, server side: finding and parsing a
 * request head, and decoding a chunked body. Pure functions over bytes, so
 * the unit tests and fuzzers drive them without sockets. Strict on
 * purpose: anything a front and a back end could read two ways (request
 * smuggling) is refused, as nginx does (../shared/RELIABILITY.md §1, §6).
 */
#ifndef SCRIM_HTTP_H
#define SCRIM_HTTP_H

#include "err.h"
#include "scrim.h"
#include <stdbool.h>
#include <stddef.h>
#include <string.h>
#include <strings.h>

struct http_limits {
	size_t max_request_line; /* bytes of the request line, CRLF excluded */
	size_t max_header_size;  /* bytes of the header block after it */
	size_t max_headers;      /* header lines */
};

struct http_header {
	const char *name; /* points into http_head.buf; not NUL-terminated */
	size_t name_len;
	const char *value; /* OWS trimmed */
	size_t value_len;
};

enum http_method {
	HTTP_OTHER,
	HTTP_GET,
	HTTP_HEAD,
	HTTP_POST,
	HTTP_PUT,
	HTTP_PATCH,
	HTTP_DELETE,
	HTTP_OPTIONS,
	HTTP_CONNECT,
};

struct http_head {
	char *buf; /* owned copy of the head; every pointer below is into it */
	size_t len;
	enum http_method method;
	const char *method_str;
	size_t method_len;
	const char *target;
	size_t target_len;
	int version; /* 10 or 11 */
	struct http_header *headers; /* owned array */
	size_t nheaders;
	int64_t content_length; /* -1 when absent */
	bool chunked;
	bool keep_alive;
	bool expect_continue;
	const char *host;
	size_t host_len;
};

/* Scanner state: lets http_head_scan resume where the last read ended. */
struct http_scan {
	size_t line_start;  /* offset of the line not yet complete */
	size_t reqline_end; /* offset just past the request line's LF, or 0 */
};

enum http_scan_result { HTTP_SCAN_MORE, HTTP_SCAN_DONE, HTTP_SCAN_ERROR };

/*
 * Look for the end of a request head in p[0..n). Checks line endings (bare
 * LF is an error) and the size caps as bytes arrive, so an oversized or
 * malformed head is refused without waiting for its end. On DONE, *head_len
 * is the length of the head including the blank line. On ERROR, *err says
 * why (ERR_BAD_REQUEST, ERR_URI_TOO_LONG, ERR_HEADERS_TOO_LARGE).
 */
enum http_scan_result http_head_scan(struct http_scan *s, const char *p,
                                     size_t n, const struct http_limits *lim,
                                     size_t *head_len, enum scrim_err *err);

/*
 * Parse a complete head (as found by http_head_scan). Takes ownership of
 * buf (malloc'd, len bytes) in every case; the caller frees the head with
 * http_head_free. Returns ERR_NONE or the reason to refuse the request.
 */
enum scrim_err http_head_parse(char *buf, size_t len,
                               const struct http_limits *lim,
                               struct http_head *out) SCRIM_MUSTCHECK;
void http_head_free(struct http_head *h);

/* Case-insensitive lookup; returns the first header called name or NULL. */
const struct http_header *http_head_get(const struct http_head *h,
                                        const char *name);
static inline bool
http_name_eq(const char *a, size_t alen, const char *b)
{
	/* Inline: b is nearly always a literal, whose strlen folds. */
	return strlen(b) == alen && strncasecmp(a, b, alen) == 0;
}

/* Chunked request body decoder. */
struct http_chunked {
	int state;
	uint64_t size;      /* size of the chunk being read */
	unsigned digits;    /* hex digits seen in the size line */
	size_t line_len;    /* bytes of the current extension/trailer line */
	size_t trailer_len; /* bytes of trailer section so far */
	size_t total;       /* decoded body bytes so far */
};

enum http_chunk_result {
	HTTP_CHUNK_MORE,
	HTTP_CHUNK_DONE,
	HTTP_CHUNK_BAD,     /* malformed framing: 400 and close */
	HTTP_CHUNK_TOO_BIG, /* decoded body would pass cap: 413 and close */
};

typedef void (*http_chunk_emit)(void *arg, const char *p, size_t n);

/*
 * Feed n bytes; decoded data goes to emit. *consumed says how many input
 * bytes were used (on DONE, bytes after the body belong to the next
 * request). cap bounds the decoded size.
 */
enum http_chunk_result http_chunked_feed(struct http_chunked *c, const char *in,
                                         size_t n, size_t *consumed,
                                         size_t cap, http_chunk_emit emit,
                                         void *arg);

const char *http_reason(int status);

#endif
