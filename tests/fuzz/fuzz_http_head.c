/*
 * fuzz_http_head.c - the request head scanner and parser. The input is
 * the bytes a client sent. Beyond "no crash, no leak":
 *  - the scanner's verdict does not depend on how the bytes arrive (the
 *    whole input at once, or a prefix then the rest, cut at three
 *    places);
 *  - an accepted head's pointers all lie inside its buffer, and it never
 *    has both a Content-Length and chunked framing;
 *  - re-serialising an accepted head (method SP target SP version CRLF,
 *    "name: value" CRLF per header, CRLF) and parsing it again gives the
 *    same request: method, target, version, headers, framing, host.
 */
#include "fuzz.h"

#include "http.h"

#include <stdlib.h>
#include <string.h>

static const struct http_limits lim = {8 * 1024, 16 * 1024, 100};

static bool
inside(const struct http_head *h, const char *p, size_t n)
{
	return p >= h->buf && n <= h->len && (size_t)(p - h->buf) <= h->len - n;
}

static bool
same_bytes(const char *a, size_t an, const char *b, size_t bn)
{
	return an == bn && (an == 0 || memcmp(a, b, an) == 0);
}

static void
check_pointers(const struct http_head *h)
{
	FUZZ_CHECK(inside(h, h->method_str, h->method_len), "method");
	FUZZ_CHECK(inside(h, h->target, h->target_len), "target");
	FUZZ_CHECK(h->method_len > 0 && h->target_len > 0, "empty field");
	FUZZ_CHECK(h->version == 10 || h->version == 11, "version %d",
	           h->version);
	for (size_t i = 0; i < h->nheaders; i++) {
		const struct http_header *hd = &h->headers[i];
		FUZZ_CHECK(inside(h, hd->name, hd->name_len) && hd->name_len > 0,
		           "header %zu name", i);
		FUZZ_CHECK(inside(h, hd->value, hd->value_len), "header %zu value",
		           i);
	}
	FUZZ_CHECK(h->nheaders <= lim.max_headers, "%zu headers", h->nheaders);
	if (h->host != NULL)
		FUZZ_CHECK(inside(h, h->host, h->host_len), "host");
	FUZZ_CHECK(!(h->chunked && h->content_length >= 0),
	           "both Content-Length %lld and chunked",
	           (long long)h->content_length);
	FUZZ_CHECK(h->content_length >= -1, "content_length %lld",
	           (long long)h->content_length);
}

/* method SP target SP version CRLF, then "name: value" CRLF, CRLF. */
static char *
serialise(const struct http_head *h, size_t *len)
{
	size_t n = h->method_len + h->target_len + 8 + 4 + 2;
	char *out, *p;

	for (size_t i = 0; i < h->nheaders; i++)
		n += h->headers[i].name_len + 2 + h->headers[i].value_len + 2;
	out = malloc(n);
	FUZZ_CHECK(out != NULL, "malloc %zu", n);
	p = out;
	memcpy(p, h->method_str, h->method_len);
	p += h->method_len;
	*p++ = ' ';
	memcpy(p, h->target, h->target_len);
	p += h->target_len;
	memcpy(p, h->version == 11 ? " HTTP/1.1\r\n" : " HTTP/1.0\r\n", 11);
	p += 11;
	for (size_t i = 0; i < h->nheaders; i++) {
		const struct http_header *hd = &h->headers[i];
		memcpy(p, hd->name, hd->name_len);
		p += hd->name_len;
		*p++ = ':';
		*p++ = ' ';
		if (hd->value_len > 0)
			memcpy(p, hd->value, hd->value_len);
		p += hd->value_len;
		*p++ = '\r';
		*p++ = '\n';
	}
	*p++ = '\r';
	*p++ = '\n';
	*len = (size_t)(p - out);
	FUZZ_CHECK(*len <= n, "serialised %zu of %zu", *len, n);
	return out;
}

static void
check_reparse(const struct http_head *h)
{
	struct http_head h2;
	size_t len;
	char *again = serialise(h, &len);
	enum scrim_err e = http_head_parse(again, len, &lim, &h2);

	FUZZ_CHECK(e == ERR_NONE, "re-serialised head refused (err %d)", (int)e);
	check_pointers(&h2);
	FUZZ_CHECK(h2.method == h->method &&
	           same_bytes(h2.method_str, h2.method_len, h->method_str,
	                      h->method_len), "method differs");
	FUZZ_CHECK(same_bytes(h2.target, h2.target_len, h->target,
	                      h->target_len), "target differs");
	FUZZ_CHECK(h2.version == h->version, "version differs");
	FUZZ_CHECK(h2.nheaders == h->nheaders, "header count %zu, was %zu",
	           h2.nheaders, h->nheaders);
	for (size_t i = 0; i < h->nheaders; i++) {
		FUZZ_CHECK(same_bytes(h2.headers[i].name, h2.headers[i].name_len,
		                      h->headers[i].name, h->headers[i].name_len),
		           "header %zu name differs", i);
		FUZZ_CHECK(same_bytes(h2.headers[i].value, h2.headers[i].value_len,
		                      h->headers[i].value, h->headers[i].value_len),
		           "header %zu value differs", i);
	}
	FUZZ_CHECK(h2.content_length == h->content_length &&
	           h2.chunked == h->chunked, "framing differs");
	FUZZ_CHECK(h2.keep_alive == h->keep_alive &&
	           h2.expect_continue == h->expect_continue, "flags differ");
	FUZZ_CHECK((h2.host == NULL) == (h->host == NULL) &&
	           (h->host == NULL ||
	            same_bytes(h2.host, h2.host_len, h->host, h->host_len)),
	           "host differs");
	http_head_free(&h2);
}

int
LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc;
	(void)argv;
	fuzz_quiet();
	return 0;
}

/* Scan p[0..size) fed as p[0..cut) then all of it, as reads arrive. */
static enum http_scan_result
scan_in_two(const char *p, size_t size, size_t cut, size_t *len,
            enum scrim_err *err)
{
	struct http_scan s;
	enum http_scan_result r;

	memset(&s, 0, sizeof(s));
	r = http_head_scan(&s, p, cut, &lim, len, err);
	if (r == HTTP_SCAN_MORE)
		r = http_head_scan(&s, p, size, &lim, len, err);
	return r;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const char *p = (const char *)data;
	struct http_scan s1;
	enum http_scan_result r1;
	enum scrim_err e1 = ERR_NONE;
	size_t len1 = 0, cuts[3];
	uint32_t hash = 2166136261u;
	struct http_head h;
	char *buf;

	/* All at once. */
	memset(&s1, 0, sizeof(s1));
	r1 = http_head_scan(&s1, p, size, &lim, &len1, &e1);

	/* The same bytes in two reads, cut in the middle, near the end, and
	 * at a place the input's hash picks: the verdict must not depend on
	 * how the network split them. (The reason for a refusal may: a bare
	 * LF past the cut is a 400 at once, a 431 when the bytes before it
	 * are already too many.) */
	for (size_t i = 0; i < size; i++)
		hash = (hash ^ data[i]) * 16777619u;
	cuts[0] = size / 2;
	cuts[1] = size > 16 ? size - 1 - hash % 16 : size / 3;
	cuts[2] = hash % (size + 1);
	for (size_t k = 0; k < 3; k++) {
		enum scrim_err e2 = ERR_NONE;
		size_t len2 = 0;
		enum http_scan_result r2 = scan_in_two(p, size, cuts[k], &len2, &e2);

		FUZZ_CHECK(r1 == r2, "scan verdict %d at once, %d when the first "
		           "read ends at %zu of %zu (err %d)", (int)r1, (int)r2,
		           cuts[k], size, (int)(r1 == HTTP_SCAN_ERROR ? e1 : e2));
		if (r1 == HTTP_SCAN_DONE)
			FUZZ_CHECK(len1 == len2, "head length %zu at once, %zu in two "
			           "reads", len1, len2);
	}
	if (r1 != HTTP_SCAN_DONE)
		return 0;
	FUZZ_CHECK(len1 >= 4 && len1 <= size, "head length %zu of %zu", len1,
	           size);
	FUZZ_CHECK(memcmp(p + len1 - 4, "\r\n\r\n", 4) == 0,
	           "head does not end with a blank line");

	/* An exact-size private copy, as conn.c makes, so ASan sees any
	 * read past it. */
	buf = malloc(len1);
	FUZZ_CHECK(buf != NULL, "malloc %zu", len1);
	memcpy(buf, p, len1);
	if (http_head_parse(buf, len1, &lim, &h) == ERR_NONE) {
		check_pointers(&h);
		check_reparse(&h);
	}
	http_head_free(&h);
	return 0;
}
