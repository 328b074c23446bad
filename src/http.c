/*
 * http.c - request head scanning and parsing, chunked decoding.
 *
 * Written by hand rather than on a library: Debian 12 ships neither llhttp
 * nor picohttpparser, its http-parser 2.9 is unmaintained and lenient, and
 * libevent's evhttp lets smuggling, NUL bytes and 1 MiB headers through.
 * The head is small (capped) and parsed once it is complete, so a simple
 * two-pass design is enough: scan for the end, then parse a private copy.
 */
#include "http.h"

#include "alloc.h"

#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* RFC 9110 tchar. */
static const unsigned char tchar[256] = {
	['!'] = 1, ['#'] = 1, ['$'] = 1, ['%'] = 1, ['&'] = 1, ['\''] = 1,
	['*'] = 1, ['+'] = 1, ['-'] = 1, ['.'] = 1, ['^'] = 1, ['_'] = 1,
	['`'] = 1, ['|'] = 1, ['~'] = 1,
	['0'] = 1, ['1'] = 1, ['2'] = 1, ['3'] = 1, ['4'] = 1, ['5'] = 1,
	['6'] = 1, ['7'] = 1, ['8'] = 1, ['9'] = 1,
	['A'] = 1, ['B'] = 1, ['C'] = 1, ['D'] = 1, ['E'] = 1, ['F'] = 1,
	['G'] = 1, ['H'] = 1, ['I'] = 1, ['J'] = 1, ['K'] = 1, ['L'] = 1,
	['M'] = 1, ['N'] = 1, ['O'] = 1, ['P'] = 1, ['Q'] = 1, ['R'] = 1,
	['S'] = 1, ['T'] = 1, ['U'] = 1, ['V'] = 1, ['W'] = 1, ['X'] = 1,
	['Y'] = 1, ['Z'] = 1,
	['a'] = 1, ['b'] = 1, ['c'] = 1, ['d'] = 1, ['e'] = 1, ['f'] = 1,
	['g'] = 1, ['h'] = 1, ['i'] = 1, ['j'] = 1, ['k'] = 1, ['l'] = 1,
	['m'] = 1, ['n'] = 1, ['o'] = 1, ['p'] = 1, ['q'] = 1, ['r'] = 1,
	['s'] = 1, ['t'] = 1, ['u'] = 1, ['v'] = 1, ['w'] = 1, ['x'] = 1,
	['y'] = 1, ['z'] = 1,
};

enum http_scan_result
http_head_scan(struct http_scan *s, const char *p, size_t n,
               const struct http_limits *lim, size_t *head_len,
               enum scrim_err *err)
{
	size_t i = s->line_start;

	for (;;) {
		const char *lf = i < n ? memchr(p + i, '\n', n - i) : NULL;
		size_t line_len;

		if (lf == NULL)
			break;
		size_t at = (size_t)(lf - p);
		if (at == i || p[at - 1] != '\r') {
			*err = ERR_BAD_REQUEST; /* bare LF */
			return HTTP_SCAN_ERROR;
		}
		line_len = at - 1 - i;
		if (s->reqline_end == 0) {
			if (line_len > lim->max_request_line) {
				*err = ERR_URI_TOO_LONG;
				return HTTP_SCAN_ERROR;
			}
			s->reqline_end = at + 1;
		} else if (at + 1 - s->reqline_end > lim->max_header_size) {
			/* Checked on every complete line too, so the verdict does
			 * not depend on how the bytes were split into reads. */
			*err = ERR_HEADERS_TOO_LARGE;
			return HTTP_SCAN_ERROR;
		} else if (line_len == 0) {
			*head_len = at + 1;
			return HTTP_SCAN_DONE;
		}
		i = at + 1;
		s->line_start = i;
	}
	/* The line in progress, or the block so far, is already too long. */
	if (s->reqline_end == 0) {
		if (n - s->line_start > lim->max_request_line + 1) {
			*err = ERR_URI_TOO_LONG;
			return HTTP_SCAN_ERROR;
		}
	} else if (n - s->reqline_end > lim->max_header_size) {
		*err = ERR_HEADERS_TOO_LARGE;
		return HTTP_SCAN_ERROR;
	}
	return HTTP_SCAN_MORE;
}

static enum http_method
method_of(const char *m, size_t n)
{
	static const struct {
		const char *name;
		enum http_method m;
	} methods[] = {
		{"GET", HTTP_GET},         {"HEAD", HTTP_HEAD},
		{"POST", HTTP_POST},       {"PUT", HTTP_PUT},
		{"PATCH", HTTP_PATCH},     {"DELETE", HTTP_DELETE},
		{"OPTIONS", HTTP_OPTIONS}, {"CONNECT", HTTP_CONNECT},
	};
	/* Methods are case-sensitive (RFC 9110 §9.1). */
	for (size_t i = 0; i < SCRIM_ARRAY_LEN(methods); i++)
		if (strlen(methods[i].name) == n &&
		    memcmp(methods[i].name, m, n) == 0)
			return methods[i].m;
	return HTTP_OTHER;
}

static enum scrim_err
parse_request_line(struct http_head *h, char *p, size_t n)
{
	size_t i = 0, start;

	start = i;
	while (i < n && tchar[(unsigned char)p[i]])
		i++;
	if (i == start || i >= n || p[i] != ' ')
		return ERR_BAD_REQUEST;
	h->method_str = p + start;
	h->method_len = i - start;
	h->method = method_of(h->method_str, h->method_len);
	i++;

	start = i;
	while (i < n && p[i] > 0x20 && p[i] < 0x7f)
		i++;
	if (i == start || i >= n || p[i] != ' ')
		return ERR_BAD_REQUEST;
	h->target = p + start;
	h->target_len = i - start;
	i++;

	if (n - i != 8 || memcmp(p + i, "HTTP/", 5) != 0 ||
	    p[i + 5] < '0' || p[i + 5] > '9' || p[i + 6] != '.' ||
	    p[i + 7] < '0' || p[i + 7] > '9')
		return ERR_BAD_REQUEST;
	if (p[i + 5] != '1' || (p[i + 7] != '0' && p[i + 7] != '1'))
		return ERR_VERSION;
	h->version = p[i + 7] == '1' ? 11 : 10;
	return ERR_NONE;
}

/* Comma-separated token list contains tok (case-insensitive)? */
static bool
list_has(const char *v, size_t n, const char *tok)
{
	size_t tl = strlen(tok), i = 0;

	while (i < n) {
		while (i < n && (v[i] == ' ' || v[i] == '\t' || v[i] == ','))
			i++;
		size_t s = i;
		while (i < n && v[i] != ',')
			i++;
		size_t e = i;
		while (e > s && (v[e - 1] == ' ' || v[e - 1] == '\t'))
			e--;
		if (e - s == tl && strncasecmp(v + s, tok, tl) == 0)
			return true;
	}
	return false;
}

static bool
host_valid(const char *v, size_t n)
{
	if (n == 0 || n > 255)
		return false;
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)v[i];
		/* reg-name / IP-literal / port characters only. */
		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
		      (c >= '0' && c <= '9') || strchr("-._~:[]%!$&'()*+,;=", c)))
			return false;
	}
	return true;
}

static enum scrim_err
apply_header(struct http_head *h, const struct http_header *hd, bool *seen_cl,
             bool *seen_te)
{
	const char *v = hd->value;
	size_t n = hd->value_len;

	if (http_name_eq(hd->name, hd->name_len, "content-length")) {
		int64_t cl = 0;
		/* Digits only: no sign, no list, no repeat (two CLs are how
		 * smuggling starts, even when they agree). */
		if (*seen_cl || n == 0 || n > 18)
			return ERR_BAD_REQUEST;
		for (size_t i = 0; i < n; i++) {
			if (v[i] < '0' || v[i] > '9')
				return ERR_BAD_REQUEST;
			cl = cl * 10 + (v[i] - '0');
		}
		*seen_cl = true;
		h->content_length = cl;
	} else if (http_name_eq(hd->name, hd->name_len, "transfer-encoding")) {
		/* chunked alone: a coding we would not undo is a body we could
		 * misframe. */
		if (*seen_te || n != 7 || strncasecmp(v, "chunked", 7) != 0)
			return ERR_BAD_REQUEST;
		*seen_te = true;
		h->chunked = true;
	} else if (http_name_eq(hd->name, hd->name_len, "host")) {
		if (h->host != NULL || !host_valid(v, n))
			return ERR_BAD_REQUEST;
		h->host = v;
		h->host_len = n;
	} else if (http_name_eq(hd->name, hd->name_len, "connection")) {
		if (list_has(v, n, "close"))
			h->keep_alive = false;
		else if (list_has(v, n, "keep-alive"))
			h->keep_alive = true;
	} else if (http_name_eq(hd->name, hd->name_len, "expect")) {
		if (n != 12 || strncasecmp(v, "100-continue", 12) != 0)
			return ERR_EXPECTATION_FAILED;
		h->expect_continue = true;
	}
	return ERR_NONE;
}

enum scrim_err
http_head_parse(char *buf, size_t len, const struct http_limits *lim,
                struct http_head *h)
{
	enum scrim_err e;
	size_t i, cap;
	bool seen_cl = false, seen_te = false;
	char *lf;

	memset(h, 0, sizeof(*h));
	h->buf = buf;
	h->len = len;
	h->content_length = -1;

	lf = memchr(buf, '\n', len);
	if (lf == NULL || lf == buf || lf[-1] != '\r')
		return ERR_BAD_REQUEST;
	e = parse_request_line(h, buf, (size_t)(lf - 1 - buf));
	if (e != ERR_NONE)
		return e;
	h->keep_alive = h->version == 11;

	cap = lim->max_headers < 16 ? lim->max_headers : 16;
	h->headers = xmalloc(sizeof(*h->headers) * (cap ? cap : 1));
	i = (size_t)(lf + 1 - buf);
	for (;;) {
		char *eol = memchr(buf + i, '\n', len - i);
		size_t s, ln, ne, vs, ve;
		struct http_header hd;

		if (eol == NULL || eol == buf + i || eol[-1] != '\r')
			return ERR_BAD_REQUEST;
		ln = (size_t)(eol - 1 - (buf + i));
		if (ln == 0)
			break; /* the blank line */
		s = i;
		if (buf[s] == ' ' || buf[s] == '\t')
			return ERR_BAD_REQUEST; /* obs-fold */
		ne = s;
		while (ne < s + ln && tchar[(unsigned char)buf[ne]])
			ne++;
		/* Name must be a token followed directly by a colon: a space
		 * before the colon is a classic desync (RFC 9112 §5.1). */
		if (ne == s || ne >= s + ln || buf[ne] != ':')
			return ERR_BAD_REQUEST;
		vs = ne + 1;
		ve = s + ln;
		for (size_t k = vs; k < ve; k++) {
			unsigned char c = (unsigned char)buf[k];
			if ((c < 0x20 && c != '\t') || c == 0x7f)
				return ERR_BAD_REQUEST; /* NUL, CR, CTL */
		}
		while (vs < ve && (buf[vs] == ' ' || buf[vs] == '\t'))
			vs++;
		while (ve > vs && (buf[ve - 1] == ' ' || buf[ve - 1] == '\t'))
			ve--;
		if (h->nheaders == lim->max_headers)
			return ERR_HEADERS_TOO_LARGE;
		if (h->nheaders == cap) {
			cap = cap * 2 < lim->max_headers ? cap * 2 : lim->max_headers;
			h->headers = xrealloc(h->headers, sizeof(*h->headers) * cap);
		}
		hd.name = buf + s;
		hd.name_len = ne - s;
		hd.value = buf + vs;
		hd.value_len = ve - vs;
		h->headers[h->nheaders++] = hd;
		e = apply_header(h, &hd, &seen_cl, &seen_te);
		if (e != ERR_NONE)
			return e;
		i = (size_t)(eol + 1 - buf);
	}

	if (seen_cl && seen_te)
		return ERR_BAD_REQUEST;
	if (seen_te && h->version == 10)
		return ERR_BAD_REQUEST;
	if (h->version == 11 && h->host == NULL)
		return ERR_BAD_REQUEST;
	return ERR_NONE;
}

void
http_head_free(struct http_head *h)
{
	free(h->headers);
	free(h->buf);
	memset(h, 0, sizeof(*h));
}

const struct http_header *
http_head_get(const struct http_head *h, const char *name)
{
	for (size_t i = 0; i < h->nheaders; i++)
		if (http_name_eq(h->headers[i].name, h->headers[i].name_len, name))
			return &h->headers[i];
	return NULL;
}

enum {
	CH_SIZE,
	CH_EXT,
	CH_SIZE_LF,
	CH_DATA,
	CH_DATA_CR,
	CH_DATA_LF,
	CH_TRAILER,
	CH_TRAILER_LF,
	CH_DONE,
};

#define CHUNK_MAX_DIGITS 16
#define CHUNK_MAX_EXT 1024
#define CHUNK_MAX_TRAILERS 8192

static int
hexval(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

enum http_chunk_result
http_chunked_feed(struct http_chunked *c, const char *in, size_t n,
                  size_t *consumed, size_t cap, http_chunk_emit emit,
                  void *arg)
{
	size_t i = 0;

	while (i < n && c->state != CH_DONE) {
		char ch = in[i];
		int hv;

		switch (c->state) {
		case CH_SIZE:
			hv = hexval(ch);
			if (hv >= 0) {
				if (++c->digits > CHUNK_MAX_DIGITS)
					goto bad;
				c->size = (c->size << 4) | (uint64_t)hv;
				i++;
				break;
			}
			if (c->digits == 0)
				goto bad;
			if (ch == ';') {
				c->state = CH_EXT;
				c->line_len = 0;
			} else if (ch == '\r') {
				c->state = CH_SIZE_LF;
			} else {
				goto bad;
			}
			i++;
			break;
		case CH_EXT:
			/* Extensions are allowed and ignored, within a bound. */
			if (ch == '\r') {
				c->state = CH_SIZE_LF;
			} else if (ch == '\n' || (unsigned char)ch < 0x09 ||
			           (ch > 0x0d && (unsigned char)ch < 0x20) ||
			           ++c->line_len > CHUNK_MAX_EXT) {
				goto bad;
			}
			i++;
			break;
		case CH_SIZE_LF:
			if (ch != '\n')
				goto bad;
			i++;
			if (c->size > cap || c->total > cap - c->size) {
				*consumed = i;
				return HTTP_CHUNK_TOO_BIG;
			}
			c->state = c->size == 0 ? CH_TRAILER : CH_DATA;
			c->line_len = 0;
			break;
		case CH_DATA: {
			size_t take = n - i;
			if (take > c->size)
				take = (size_t)c->size;
			emit(arg, in + i, take);
			c->size -= take;
			c->total += take;
			i += take;
			if (c->size == 0)
				c->state = CH_DATA_CR;
			break;
		}
		case CH_DATA_CR:
			if (ch != '\r')
				goto bad;
			c->state = CH_DATA_LF;
			i++;
			break;
		case CH_DATA_LF:
			if (ch != '\n')
				goto bad;
			c->state = CH_SIZE;
			c->digits = 0;
			c->size = 0;
			i++;
			break;
		case CH_TRAILER:
			/* Trailer fields are read and dropped: nothing upstream
			 * needs them and forwarding them would be a smuggling
			 * channel. */
			if (ch == '\r') {
				c->state = CH_TRAILER_LF;
			} else if (ch == '\n' || ch == '\0') {
				goto bad;
			} else {
				c->line_len++;
			}
			if (++c->trailer_len > CHUNK_MAX_TRAILERS)
				goto bad;
			i++;
			break;
		case CH_TRAILER_LF:
			if (ch != '\n')
				goto bad;
			i++;
			if (c->line_len == 0)
				c->state = CH_DONE;
			else
				c->state = CH_TRAILER;
			c->line_len = 0;
			break;
		default:
			goto bad;
		}
	}
	*consumed = i;
	return c->state == CH_DONE ? HTTP_CHUNK_DONE : HTTP_CHUNK_MORE;
bad:
	*consumed = i;
	return HTTP_CHUNK_BAD;
}

const char *
http_reason(int status)
{
	switch (status) {
	case 100: return "Continue";
	case 200: return "OK";
	case 201: return "Created";
	case 204: return "No Content";
	case 400: return "Bad Request";
	case 401: return "Unauthorized";
	case 403: return "Forbidden";
	case 404: return "Not Found";
	case 405: return "Method Not Allowed";
	case 407: return "Proxy Authentication Required";
	case 408: return "Request Timeout";
	case 409: return "Conflict";
	case 413: return "Content Too Large";
	case 414: return "URI Too Long";
	case 415: return "Unsupported Media Type";
	case 417: return "Expectation Failed";
	case 422: return "Unprocessable Content";
	case 429: return "Too Many Requests";
	case 431: return "Request Header Fields Too Large";
	case 500: return "Internal Server Error";
	case 501: return "Not Implemented";
	case 502: return "Bad Gateway";
	case 503: return "Service Unavailable";
	case 504: return "Gateway Timeout";
	case 505: return "HTTP Version Not Supported";
	default: return "Unknown";
	}
}
