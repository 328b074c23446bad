/*
 * test_http.c - the request head scanner/parser and the chunked decoder,
 * one case per row of RELIABILITY.md §1 and §6 that framing decides.
 */
#include "alloc.h"
#include "harness.h"
#include "http.h"

#include <stdlib.h>
#include <string.h>

static const struct http_limits lim = {8192, 16384, 100};

/* Scan then parse a whole head; returns the error (ERR_NONE if good). */
static enum scrim_err
parse(const char *raw, struct http_head *h)
{
	struct http_scan s = {0, 0};
	size_t n = strlen(raw), hl = 0;
	enum scrim_err err = ERR_NONE;
	enum http_scan_result r = http_head_scan(&s, raw, n, &lim, &hl, &err);

	memset(h, 0, sizeof(*h));
	if (r == HTTP_SCAN_ERROR)
		return err;
	if (r == HTTP_SCAN_MORE)
		return ERR__COUNT; /* incomplete */
	return http_head_parse(xstrndup(raw, hl), hl, &lim, h);
}

static enum scrim_err
parse_free(const char *raw)
{
	struct http_head h;
	enum scrim_err e = parse(raw, &h);
	http_head_free(&h);
	return e;
}

static void
test_good(void)
{
	struct http_head h;
	enum scrim_err e = parse("POST /v1/chat/completions?x=1 HTTP/1.1\r\n"
	                         "Host: localhost:8080\r\n"
	                         "Content-Type: application/json\r\n"
	                         "Content-Length:   42  \r\n"
	                         "X-Empty:\r\n"
	                         "\r\n",
	                         &h);
	CHECK(e == ERR_NONE, "good head parses (got %d)", e);
	CHECK(h.method == HTTP_POST, "method");
	CHECK(h.target_len == 24 && memcmp(h.target, "/v1/chat/completions?x=1",
	                                   24) == 0, "target");
	CHECK(h.version == 11 && h.keep_alive, "1.1 keep-alive by default");
	CHECK(h.content_length == 42, "content-length trimmed");
	CHECK(h.nheaders == 4, "header count %zu", h.nheaders);
	const struct http_header *ct = http_head_get(&h, "CONTENT-TYPE");
	CHECK(ct && ct->value_len == 16, "case-insensitive lookup");
	const struct http_header *em = http_head_get(&h, "x-empty");
	CHECK(em && em->value_len == 0, "empty value");
	http_head_free(&h);

	e = parse("GET / HTTP/1.0\r\n\r\n", &h);
	CHECK(e == ERR_NONE && !h.keep_alive && h.version == 10,
	      "HTTP/1.0 without Host, not keep-alive");
	http_head_free(&h);
	e = parse("GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n", &h);
	CHECK(e == ERR_NONE && h.keep_alive, "1.0 keep-alive");
	http_head_free(&h);
	e = parse("GET / HTTP/1.1\r\nHost: a\r\nConnection: foo, close\r\n\r\n",
	          &h);
	CHECK(e == ERR_NONE && !h.keep_alive, "Connection: close in a list");
	http_head_free(&h);
	e = parse("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: Chunked\r\n"
	          "Expect: 100-continue\r\n\r\n", &h);
	CHECK(e == ERR_NONE && h.chunked && h.expect_continue,
	      "chunked + expect");
	http_head_free(&h);
	e = parse("GET / HTTP/1.1\r\nHost: a\r\nX-Bin: caf\xc3\xa9\r\n\r\n", &h);
	CHECK(e == ERR_NONE, "obs-text (UTF-8) in a value is allowed");
	http_head_free(&h);
}

static void
test_smuggling(void)
{
	CHECK(parse_free("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n"
	                 "Transfer-Encoding: chunked\r\n\r\n") == ERR_BAD_REQUEST,
	      "CL + TE");
	CHECK(parse_free("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: "
	                 "chunked, gzip\r\n\r\n") == ERR_BAD_REQUEST,
	      "TE chunked, gzip");
	CHECK(parse_free("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: "
	                 "xchunked\r\n\r\n") == ERR_BAD_REQUEST, "TE xchunked");
	CHECK(parse_free("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: "
	                 "chunked\r\nTransfer-Encoding: chunked\r\n\r\n") ==
	          ERR_BAD_REQUEST, "two TE");
	CHECK(parse_free("POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n")
	          == ERR_BAD_REQUEST, "TE in HTTP/1.0");
	CHECK(parse_free("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n"
	                 "Content-Length: 4\r\n\r\n") == ERR_BAD_REQUEST,
	      "two different CL");
	CHECK(parse_free("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n"
	                 "Content-Length: 3\r\n\r\n") == ERR_BAD_REQUEST,
	      "two equal CL");
	CHECK(parse_free("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: +3\r\n"
	                 "\r\n") == ERR_BAD_REQUEST, "signed CL");
	CHECK(parse_free("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3, 3\r\n"
	                 "\r\n") == ERR_BAD_REQUEST, "CL list");
	CHECK(parse_free("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: "
	                 "99999999999999999999\r\n\r\n") == ERR_BAD_REQUEST,
	      "CL overflow");
	CHECK(parse_free("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding : "
	                 "chunked\r\n\r\n") == ERR_BAD_REQUEST,
	      "space before colon");
	CHECK(parse_free("GET / HTTP/1.1\r\nHost: a\r\nX-A: b\r\n c\r\n\r\n") ==
	          ERR_BAD_REQUEST, "obs-fold");
	CHECK(parse_free("GET / HTTP/1.1\r\n\r\n") == ERR_BAD_REQUEST, "no Host");
	CHECK(parse_free("GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n") ==
	          ERR_BAD_REQUEST, "two Hosts");
	CHECK(parse_free("GET / HTTP/1.1\r\nHost: a b\r\n\r\n") == ERR_BAD_REQUEST,
	      "space in Host");
	CHECK(parse_free("GET / HTTP/1.1\r\nHost: a\r\nX: \x01\r\n\r\n") ==
	          ERR_BAD_REQUEST, "CTL in value");
	CHECK(parse_free("GET / HTTP/1.1\r\nHost: a\r\nX: a\x7f\r\n\r\n") ==
	          ERR_BAD_REQUEST, "DEL in value");
	CHECK(parse_free("GET / HTTP/1.1\r\nHost: a\r\nX\x01Y: a\r\n\r\n") ==
	          ERR_BAD_REQUEST, "CTL in name");
	CHECK(parse_free("GET / HTTP/1.1\r\nHost: a\r\n: a\r\n\r\n") ==
	          ERR_BAD_REQUEST, "empty name");
	CHECK(parse_free("GET / HTTP/1.1\r\nHost: a\r\nExpect: gzip\r\n\r\n") ==
	          ERR_EXPECTATION_FAILED, "unknown Expect");
}

static void
test_nul(void)
{
	/* strlen-free: build with an embedded NUL. */
	static const char raw[] = "GET / HTTP/1.1\r\nHost: a\r\nX: a\0b\r\n\r\n";
	size_t n = sizeof(raw) - 1, hl = 0;
	struct http_scan s = {0, 0};
	enum scrim_err err = ERR_NONE;
	struct http_head h;

	CHECK(http_head_scan(&s, raw, n, &lim, &hl, &err) == HTTP_SCAN_DONE,
	      "scan finds the end past a NUL");
	CHECK(http_head_parse(xstrndup(raw, hl), hl, &lim, &h) ==
	          ERR_BAD_REQUEST, "NUL in a header value");
	http_head_free(&h);
}

static void
test_request_line(void)
{
	CHECK(parse_free("GET / HTTP/9.9\r\nHost: a\r\n\r\n") == ERR_VERSION,
	      "HTTP/9.9 -> 505");
	CHECK(parse_free("GET / HTTP/2.0\r\nHost: a\r\n\r\n") == ERR_VERSION,
	      "HTTP/2.0 -> 505");
	CHECK(parse_free("GET / FOO/1.1\r\nHost: a\r\n\r\n") == ERR_BAD_REQUEST,
	      "bad protocol");
	CHECK(parse_free("GET  / HTTP/1.1\r\nHost: a\r\n\r\n") == ERR_BAD_REQUEST,
	      "double space");
	CHECK(parse_free("GET /\r\nHost: a\r\n\r\n") == ERR_BAD_REQUEST,
	      "HTTP/0.9 style");
	CHECK(parse_free("G(T / HTTP/1.1\r\nHost: a\r\n\r\n") == ERR_BAD_REQUEST,
	      "non-token method");
	CHECK(parse_free("GET /a b HTTP/1.1\r\nHost: a\r\n\r\n") ==
	          ERR_BAD_REQUEST, "space in target");
	CHECK(parse_free("GET /\x80 HTTP/1.1\r\nHost: a\r\n\r\n") ==
	          ERR_BAD_REQUEST, "8-bit byte in target");
	CHECK(parse_free("GET / HTTP/1.1\nHost: a\n\n") == ERR_BAD_REQUEST,
	      "bare LF");
	CHECK(parse_free("GET / HTTP/1.1\r\nHost: a\nX: b\r\n\r\n") ==
	          ERR_BAD_REQUEST, "bare LF in headers");
}

static void
test_limits(void)
{
	char *big = xmalloc(70000);
	size_t n;
	struct http_scan s = {0, 0};
	size_t hl;
	enum scrim_err err = ERR_NONE;

	/* 64 KiB URI: refused while the line is still arriving. */
	n = (size_t)snprintf(big, 100, "GET /");
	memset(big + n, 'a', 65536);
	big[n + 65536] = '\0';
	CHECK(http_head_scan(&s, big, strlen(big), &lim, &hl, &err) ==
	          HTTP_SCAN_ERROR && err == ERR_URI_TOO_LONG,
	      "64 KiB URI -> 414 before its end");

	/* 64 KiB header. */
	memset(&s, 0, sizeof(s));
	n = (size_t)snprintf(big, 100, "GET / HTTP/1.1\r\nHost: a\r\nX: ");
	memset(big + n, 'b', 65536);
	big[n + 65536] = '\0';
	err = ERR_NONE;
	CHECK(http_head_scan(&s, big, strlen(big), &lim, &hl, &err) ==
	          HTTP_SCAN_ERROR && err == ERR_HEADERS_TOO_LARGE,
	      "64 KiB header -> 431");

	/* 1000 small headers fit in 16 KiB? No: 1000 * 6 bytes; count cap. */
	n = (size_t)snprintf(big, 100, "GET / HTTP/1.1\r\nHost: a\r\n");
	for (int i = 0; i < 1000; i++)
		n += (size_t)snprintf(big + n, 20, "a%d:\r\n", i % 10);
	memcpy(big + n, "\r\n", 3);
	CHECK(parse_free(big) == ERR_HEADERS_TOO_LARGE, "1000 headers -> 431");

	/* An 18 KB block of whole lines gets 431 whether it arrives in one
	 * read or two (fuzz finding: the cap was only checked mid-line). */
	n = (size_t)snprintf(big, 100, "GET / HTTP/1.1\r\nHost: a\r\n");
	for (int i = 0; i < 9; i++) {
		n += (size_t)snprintf(big + n, 20, "X-%d: ", i);
		memset(big + n, 'a', 2000);
		n += 2000;
		memcpy(big + n, "\r\n", 2);
		n += 2;
	}
	memcpy(big + n, "\r\n", 3);
	n += 2;
	for (size_t first = 17000; first <= n; first += n - 17000) {
		enum http_scan_result r;
		memset(&s, 0, sizeof(s));
		err = ERR_NONE;
		r = http_head_scan(&s, big, first, &lim, &hl, &err);
		if (r == HTTP_SCAN_MORE)
			r = http_head_scan(&s, big, n, &lim, &hl, &err);
		CHECK(r == HTTP_SCAN_ERROR && err == ERR_HEADERS_TOO_LARGE,
		      "18 KB header block, first read %zu bytes -> 431", first);
	}
	free(big);

	/* Incremental: byte by byte reaches the same verdict. */
	{
		const char *raw = "GET /x HTTP/1.1\r\nHost: a\r\n\r\nNEXT";
		size_t total = strlen(raw);
		enum http_scan_result r = HTTP_SCAN_MORE;
		size_t i;
		memset(&s, 0, sizeof(s));
		for (i = 1; i <= total && r == HTTP_SCAN_MORE; i++)
			r = http_head_scan(&s, raw, i, &lim, &hl, &err);
		CHECK(r == HTTP_SCAN_DONE && hl == total - 4,
		      "incremental scan stops at the blank line (%zu)", hl);
	}
}

struct sink {
	char buf[256];
	size_t n;
};

static void
emit(void *arg, const char *p, size_t n)
{
	struct sink *s = arg;
	if (s->n + n <= sizeof(s->buf)) {
		memcpy(s->buf + s->n, p, n);
		s->n += n;
	}
}

static enum http_chunk_result
chunk_all(const char *in, size_t cap, struct sink *out, size_t *used)
{
	struct http_chunked c;
	memset(&c, 0, sizeof(c));
	memset(out, 0, sizeof(*out));
	return http_chunked_feed(&c, in, strlen(in), used, cap, emit, out);
}

static void
test_chunked(void)
{
	struct sink out;
	size_t used;
	const char *body = "5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\nX-T: 1\r\n\r\n"
	                   "NEXT";

	CHECK(chunk_all(body, 1000, &out, &used) == HTTP_CHUNK_DONE &&
	          out.n == 11 && memcmp(out.buf, "hello world", 11) == 0 &&
	          used == strlen(body) - 4,
	      "chunked with extension and trailer");
	CHECK(chunk_all("zz\r\n", 1000, &out, &used) == HTTP_CHUNK_BAD,
	      "chunk size zz");
	CHECK(chunk_all("000000000000000001\r\na\r\n0\r\n\r\n", 1000, &out,
	                &used) == HTTP_CHUNK_BAD, "18 hex digits");
	CHECK(chunk_all("ffffffffffffffff\r\n", 1000, &out, &used) ==
	          HTTP_CHUNK_TOO_BIG, "huge chunk -> 413");
	CHECK(chunk_all("5\r\nhelloX\r\n", 1000, &out, &used) == HTTP_CHUNK_BAD,
	      "missing CRLF after data");
	CHECK(chunk_all("5\nhello\r\n", 1000, &out, &used) == HTTP_CHUNK_BAD,
	      "bare LF after size");
	CHECK(chunk_all(" 5\r\nhello\r\n", 1000, &out, &used) == HTTP_CHUNK_BAD,
	      "leading space");
	CHECK(chunk_all("-1\r\n", 1000, &out, &used) == HTTP_CHUNK_BAD,
	      "negative size");
	CHECK(chunk_all("a\r\n0123456789\r\na\r\n0123456789\r\n", 15, &out,
	                &used) == HTTP_CHUNK_TOO_BIG, "sum over cap -> 413");
	CHECK(chunk_all("5\r\nhel", 1000, &out, &used) == HTTP_CHUNK_MORE &&
	          out.n == 3, "truncated body waits");

	/* Every split point gives the same result. */
	{
		size_t len = strlen(body) - 4;
		bool all_ok = true;
		for (size_t split = 0; split <= len; split++) {
			struct http_chunked c;
			struct sink s;
			size_t u1 = 0, u2 = 0;
			enum http_chunk_result r;
			memset(&c, 0, sizeof(c));
			memset(&s, 0, sizeof(s));
			r = http_chunked_feed(&c, body, split, &u1, 1000, emit, &s);
			if (r == HTTP_CHUNK_MORE)
				r = http_chunked_feed(&c, body + u1, len - u1, &u2, 1000,
				                      emit, &s);
			if (r != HTTP_CHUNK_DONE || s.n != 11 ||
			    memcmp(s.buf, "hello world", 11) != 0)
				all_ok = false;
		}
		CHECK(all_ok, "same result at every split point");
	}
}

int
main(void)
{
	test_good();
	test_smuggling();
	test_nul();
	test_request_line();
	test_limits();
	test_chunked();
	return harness_done();
}
