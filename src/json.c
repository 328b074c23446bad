/*
 * json.c - the rewriter described in json.h. Written for scrim rather
 * than taken from a library: jansson, cJSON and json-c all build a tree
 * and serialise it anew (reformatting numbers such as 0.7 into
 * 0.69999999999999996), while the scrubber must change strings and
 * nothing else.
 */
#include "json.h"

#include <string.h>
/* SSE2 is in every x86-64; SCRIM_NO_SIMD builds the byte-at-a-time paths
 * alone, which the unit tests also run (tests/unit/CMakeLists.txt). */
#if defined(__SSE2__) && !defined(SCRIM_NO_SIMD)
#define SCRIM_SIMD 1
#include <emmintrin.h>

/*
 * From s[i], 16 bytes at a time, the offset of the first control, '"' or
 * '\\', and with high also of the first byte from 0x80 up (the reader
 * checks UTF-8 there; the escaper lets it pass). Stops short of the last
 * 15 bytes, which the caller takes byte by byte.
 */
static inline size_t
plain_run16(const char *s, size_t i, size_t n, bool high)
{
	while (i + 16 <= n) {
		__m128i x = _mm_loadu_si128((const __m128i *)(const void *)(s + i));
		/* Signed, bytes from 0x80 up are below 0x20 too; unsigned
		 * (max), only the controls are. */
		__m128i ctl = high ? _mm_cmplt_epi8(x, _mm_set1_epi8(0x20))
		                   : _mm_cmpeq_epi8(_mm_max_epu8(x, _mm_set1_epi8(0x1f)),
		                                    _mm_set1_epi8(0x1f));
		__m128i sp = _mm_or_si128(
		    ctl, _mm_or_si128(_mm_cmpeq_epi8(x, _mm_set1_epi8('"')),
		                      _mm_cmpeq_epi8(x, _mm_set1_epi8('\\'))));
		unsigned m = (unsigned)_mm_movemask_epi8(sp);

		if (m != 0)
			return i + (size_t)__builtin_ctz(m);
		i += 16;
	}
	return i;
}
#endif

struct walker {
	const char *in;
	size_t n;
	size_t pos;
	json_string_cb cb;
	json_scalar_cb scalar_cb;
	const struct json_walk_cbs *cbs; /* open/close, or NULL */
	void *arg;
	struct buf *out;
	size_t copied; /* input bytes already copied to out */
	size_t max_string;
	size_t replaced;
	/* The decoded string: the raw bytes in place when it has no escape
	 * (most strings: nothing copied, allocated or wiped), else decoded
	 * into scratch from the first escape on. */
	const char *str;
	size_t str_len;
	struct buf scratch;
	struct buf repl;
	struct json_path path;
	char kind[JSON_MAX_DEPTH]; /* '{' or '[' per open container */
};

static void
skip_ws(struct walker *w)
{
	while (w->pos < w->n) {
		char c = w->in[w->pos];
		if (c != ' ' && c != '\t' && c != '\n' && c != '\r')
			return;
		w->pos++;
	}
}

static int
hex4(const char *p)
{
	int v = 0;
	for (int i = 0; i < 4; i++) {
		char c = p[i];
		v <<= 4;
		if (c >= '0' && c <= '9')
			v |= c - '0';
		else if (c >= 'a' && c <= 'f')
			v |= c - 'a' + 10;
		else if (c >= 'A' && c <= 'F')
			v |= c - 'A' + 10;
		else
			return -1;
	}
	return v;
}

static bool
put_utf8(struct buf *b, unsigned cp)
{
	char u[4];
	size_t n;

	if (cp < 0x80) {
		u[0] = (char)cp;
		n = 1;
	} else if (cp < 0x800) {
		u[0] = (char)(0xc0 | (cp >> 6));
		u[1] = (char)(0x80 | (cp & 0x3f));
		n = 2;
	} else if (cp < 0x10000) {
		u[0] = (char)(0xe0 | (cp >> 12));
		u[1] = (char)(0x80 | ((cp >> 6) & 0x3f));
		u[2] = (char)(0x80 | (cp & 0x3f));
		n = 3;
	} else {
		u[0] = (char)(0xf0 | (cp >> 18));
		u[1] = (char)(0x80 | ((cp >> 12) & 0x3f));
		u[2] = (char)(0x80 | ((cp >> 6) & 0x3f));
		u[3] = (char)(0x80 | (cp & 0x3f));
		n = 4;
	}
	return buf_add(b, u, n);
}

/* Length of the valid UTF-8 sequence at p (n bytes left), or 0. */
static size_t
utf8_len(const unsigned char *p, size_t n)
{
	unsigned char c = p[0];

	if (c < 0x80)
		return 1;
	if (c >= 0xc2 && c <= 0xdf)
		return n >= 2 && (p[1] & 0xc0) == 0x80 ? 2 : 0;
	if (c >= 0xe0 && c <= 0xef) {
		unsigned char lo = c == 0xe0 ? 0xa0 : 0x80;
		unsigned char hi = c == 0xed ? 0x9f : 0xbf;
		return n >= 3 && p[1] >= lo && p[1] <= hi &&
		               (p[2] & 0xc0) == 0x80 ? 3 : 0;
	}
	if (c >= 0xf0 && c <= 0xf4) {
		unsigned char lo = c == 0xf0 ? 0x90 : 0x80;
		unsigned char hi = c == 0xf4 ? 0x8f : 0xbf;
		return n >= 4 && p[1] >= lo && p[1] <= hi &&
		               (p[2] & 0xc0) == 0x80 && (p[3] & 0xc0) == 0x80 ? 4 : 0;
	}
	return 0;
}

/*
 * Scan the string starting at w->pos (on the opening quote). When decode,
 * w->str and w->str_len are its decoded bytes. Leaves pos after the
 * closing quote.
 */
static enum json_result
scan_string(struct walker *w, bool decode)
{
	size_t start = w->pos + 1, i = start;
	bool copying = false; /* an escape was seen: bytes go to scratch */

	while (i < w->n) {
		unsigned char c = (unsigned char)w->in[i];
		size_t run = i;

		/* Fast path: a run of plain ASCII, 16 bytes at a time with
		 * SSE2 (most of a prompt is), then byte by byte. */
#ifdef SCRIM_SIMD
		i = plain_run16(w->in, i, w->n, true);
#endif
		while (i < w->n && (c = (unsigned char)w->in[i]) >= 0x20 &&
		       c < 0x80 && c != '"' && c != '\\')
			i++;
		if (copying && i > run && !buf_add(&w->scratch, w->in + run, i - run))
			return JSON_TOO_BIG;
		if (i >= w->n)
			break;
		if (c == '"') {
			w->pos = i + 1;
			if (copying) {
				w->str = w->scratch.p;
				w->str_len = w->scratch.len;
			} else {
				w->str = w->in + start;
				w->str_len = i - start;
			}
			return JSON_OK;
		}
		if (c < 0x20)
			goto bad;
		if (c >= 0x80) {
			size_t l = utf8_len((const unsigned char *)w->in + i, w->n - i);
			if (l == 0)
				goto bad;
			if (copying && !buf_add(&w->scratch, w->in + i, l))
				return JSON_TOO_BIG;
			i += l;
			continue;
		}
		/* Backslash escape. */
		if (i + 1 >= w->n)
			goto bad;
		if (decode && !copying) {
			buf_reset(&w->scratch);
			if (!buf_add(&w->scratch, w->in + start, i - start))
				return JSON_TOO_BIG;
			copying = true;
		}
		char e = w->in[i + 1];
		char lit = 0;
		switch (e) {
		case '"': lit = '"'; break;
		case '\\': lit = '\\'; break;
		case '/': lit = '/'; break;
		case 'b': lit = '\b'; break;
		case 'f': lit = '\f'; break;
		case 'n': lit = '\n'; break;
		case 'r': lit = '\r'; break;
		case 't': lit = '\t'; break;
		case 'u': {
			int cp, lo;
			if (i + 6 > w->n || (cp = hex4(w->in + i + 2)) < 0)
				goto bad;
			i += 6;
			if (cp >= 0xdc00 && cp <= 0xdfff)
				goto bad; /* lone low surrogate */
			if (cp >= 0xd800 && cp <= 0xdbff) {
				if (i + 6 > w->n || w->in[i] != '\\' ||
				    w->in[i + 1] != 'u' ||
				    (lo = hex4(w->in + i + 2)) < 0xdc00 || lo > 0xdfff)
					goto bad; /* lone high surrogate */
				cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
				i += 6;
			}
			if (copying && !put_utf8(&w->scratch, (unsigned)cp))
				return JSON_TOO_BIG;
			continue;
		}
		default:
			goto bad;
		}
		if (copying && !buf_addc(&w->scratch, lit))
			return JSON_TOO_BIG;
		i += 2;
	}
bad:
	w->pos = i;
	return JSON_INVALID;
}

static bool
scan_number(struct walker *w)
{
	size_t i = w->pos;
	const char *s = w->in;

	if (i < w->n && s[i] == '-')
		i++;
	if (i >= w->n)
		return false;
	if (s[i] == '0') {
		i++;
	} else if (s[i] >= '1' && s[i] <= '9') {
		while (i < w->n && s[i] >= '0' && s[i] <= '9')
			i++;
	} else {
		return false;
	}
	if (i < w->n && s[i] == '.') {
		size_t d = ++i;
		while (i < w->n && s[i] >= '0' && s[i] <= '9')
			i++;
		if (i == d)
			return false;
	}
	if (i < w->n && (s[i] == 'e' || s[i] == 'E')) {
		size_t d;
		i++;
		if (i < w->n && (s[i] == '+' || s[i] == '-'))
			i++;
		d = i;
		while (i < w->n && s[i] >= '0' && s[i] <= '9')
			i++;
		if (i == d)
			return false;
	}
	w->pos = i;
	return true;
}

static bool
scan_literal(struct walker *w, const char *lit)
{
	size_t l = strlen(lit);

	if (w->n - w->pos < l || memcmp(w->in + w->pos, lit, l) != 0)
		return false;
	w->pos += l;
	return true;
}

bool
json_escape_into(struct buf *b, const char *s, size_t n)
{
	static const char hx[] = "0123456789abcdef";
	size_t run = 0, i = 0;

	while (i < n) {
		unsigned char c;
		char esc[6];
		size_t el = 2;

#ifdef SCRIM_SIMD
		/* Runs that need no escape: a restored answer or a scrubbed
		 * prompt is mostly one. UTF-8 bytes pass. */
		i = plain_run16(s, i, n, false);
		if (i >= n)
			break;
#endif
		c = (unsigned char)s[i];
		if (c >= 0x20 && c != '"' && c != '\\') {
			i++;
			continue;
		}
		if (!buf_add(b, s + run, i - run))
			return false;
		esc[0] = '\\';
		switch (c) {
		case '"': esc[1] = '"'; break;
		case '\\': esc[1] = '\\'; break;
		case '\n': esc[1] = 'n'; break;
		case '\r': esc[1] = 'r'; break;
		case '\t': esc[1] = 't'; break;
		case '\b': esc[1] = 'b'; break;
		case '\f': esc[1] = 'f'; break;
		default:
			esc[1] = 'u';
			esc[2] = '0';
			esc[3] = '0';
			esc[4] = hx[c >> 4];
			esc[5] = hx[c & 15];
			el = 6;
		}
		if (!buf_add(b, esc, el))
			return false;
		run = ++i;
	}
	return buf_add(b, s + run, n - run);
}

/* A string value: ask the callback, splice in its replacement. */
static enum json_result
string_value(struct walker *w)
{
	size_t start = w->pos;
	enum json_result r;

	if (w->cb == NULL)
		return scan_string(w, false);
	r = scan_string(w, true);
	if (r != JSON_OK)
		return r;
	w->path.value_start = start;
	w->path.value_end = w->pos;
	if (w->str_len > w->max_string)
		return JSON_TOO_BIG;
	buf_reset(&w->repl);
	switch (w->cb(w->arg, &w->path, w->str_len > 0 ? w->str : "",
	              w->str_len, &w->repl)) {
	case JSON_KEEP:
		return JSON_OK;
	case JSON_CB_ERROR:
		return JSON_ABORTED;
	case JSON_REPLACE:
		break;
	}
	w->replaced++;
	if (w->out == NULL)
		return JSON_OK;
	/* The first replacement: room for about the whole text at once
	 * (a hint; growing stays possible, and each grow copies and wipes). */
	if (w->replaced == 1)
		buf_hint(w->out, w->n + w->n / 8);
	if (!buf_add(w->out, w->in + w->copied, start - w->copied) ||
	    !buf_addc(w->out, '"') ||
	    !json_escape_into(w->out, w->repl.p ? w->repl.p : "", w->repl.len) ||
	    !buf_addc(w->out, '"'))
		return JSON_TOO_BIG;
	w->copied = w->pos;
	return JSON_OK;
}

static enum json_result
walk(struct walker *w)
{
	int depth = 0;

	for (;;) {
		/* A value is expected here. */
		skip_ws(w);
		if (w->pos >= w->n)
			return JSON_INVALID;
		switch (w->in[w->pos]) {
		case '{':
		case '[': {
			char open = w->in[w->pos];
			if (depth == JSON_MAX_DEPTH)
				return JSON_TOO_DEEP;
			if (w->cbs != NULL && w->cbs->open != NULL)
				w->cbs->open(w->arg, &w->path, w->pos, open);
			w->pos++;
			w->kind[depth] = open;
			w->path.seg[depth].key = NULL;
			w->path.seg[depth].key_len = 0;
			w->path.seg[depth].index = open == '[' ? 0 : -1;
			depth++;
			w->path.depth = depth;
			skip_ws(w);
			if (w->pos < w->n &&
			    w->in[w->pos] == (open == '{' ? '}' : ']')) {
				depth--;
				w->path.depth = depth;
				if (w->cbs != NULL && w->cbs->close != NULL)
					w->cbs->close(w->arg, &w->path, w->pos, open);
				w->pos++;
				break; /* empty container is a complete value */
			}
			if (open == '{')
				goto member_key;
			continue;
		}
		case '"': {
			enum json_result r = string_value(w);
			if (r != JSON_OK)
				return r;
			break;
		}
		default: {
			size_t st = w->pos;
			char c0 = w->in[w->pos];
			bool ok = c0 == 't'   ? scan_literal(w, "true")
			          : c0 == 'f' ? scan_literal(w, "false")
			          : c0 == 'n' ? scan_literal(w, "null")
			                      : scan_number(w);
			if (!ok)
				return JSON_INVALID;
			w->path.value_start = st;
			w->path.value_end = w->pos;
			if (w->scalar_cb != NULL)
				w->scalar_cb(w->arg, &w->path, w->in + st, w->pos - st);
			break;
		}
		}
		/* After a complete value: close containers or move on. */
		for (;;) {
			skip_ws(w);
			if (depth == 0)
				return w->pos == w->n ? JSON_OK : JSON_INVALID;
			if (w->pos >= w->n)
				return JSON_INVALID;
			char c = w->in[w->pos];
			char close = w->kind[depth - 1] == '{' ? '}' : ']';
			if (c == close) {
				depth--;
				w->path.depth = depth;
				if (w->cbs != NULL && w->cbs->close != NULL)
					w->cbs->close(w->arg, &w->path, w->pos,
					              w->kind[depth]);
				w->pos++;
				continue;
			}
			if (c != ',')
				return JSON_INVALID;
			w->pos++;
			if (w->kind[depth - 1] == '[') {
				w->path.seg[depth - 1].index++;
				break; /* next element */
			}
			goto member_key;
		}
		continue;
	member_key:
		skip_ws(w);
		if (w->pos >= w->n || w->in[w->pos] != '"')
			return JSON_INVALID;
		{
			size_t ks = w->pos + 1;
			enum json_result r = scan_string(w, false);
			if (r != JSON_OK)
				return r;
			w->path.seg[depth - 1].key = w->in + ks;
			w->path.seg[depth - 1].key_len = w->pos - 1 - ks;
		}
		skip_ws(w);
		if (w->pos >= w->n || w->in[w->pos] != ':')
			return JSON_INVALID;
		w->pos++;
	}
}

static enum json_result
rewrite(const char *in, size_t n, json_string_cb cb, void *arg,
        struct buf *out, size_t max_string, size_t *replaced,
        size_t *err_pos, bool always)
{
	struct walker w;
	enum json_result r;

	memset(&w, 0, sizeof(w));
	w.in = in;
	w.n = n;
	w.cb = cb;
	w.arg = arg;
	w.out = out;
	w.max_string = max_string;
	buf_init(&w.scratch, max_string + 8);
	buf_init(&w.repl, (max_string + 8) * 4);
	r = walk(&w);
	if (r == JSON_OK && out != NULL && (always || w.replaced > 0) &&
	    !buf_add(out, in + w.copied, n - w.copied))
		r = JSON_TOO_BIG;
	if (replaced)
		*replaced = w.replaced;
	if (err_pos)
		*err_pos = w.pos;
	/* Decoded strings may hold personal data. */
	buf_wipe(&w.scratch);
	buf_wipe(&w.repl);
	return r;
}

enum json_result
json_rewrite(const char *in, size_t n, json_string_cb cb, void *arg,
             struct buf *out, size_t max_string, size_t *replaced,
             size_t *err_pos)
{
	return rewrite(in, n, cb, arg, out, max_string, replaced, err_pos, true);
}

enum json_result
json_rewrite_changed(const char *in, size_t n, json_string_cb cb, void *arg,
                     struct buf *out, size_t max_string, size_t *replaced,
                     size_t *err_pos)
{
	return rewrite(in, n, cb, arg, out, max_string, replaced, err_pos, false);
}

enum json_result
json_walk(const char *in, size_t n, json_string_cb cb, json_scalar_cb scalar_cb,
          void *arg, size_t max_string, size_t *err_pos)
{
	struct walker w;
	enum json_result r;

	memset(&w, 0, sizeof(w));
	w.in = in;
	w.n = n;
	w.cb = cb;
	w.scalar_cb = scalar_cb;
	w.arg = arg;
	w.max_string = max_string;
	buf_init(&w.scratch, max_string + 8);
	buf_init(&w.repl, (max_string + 8) * 4);
	r = walk(&w);
	if (err_pos)
		*err_pos = w.pos;
	buf_wipe(&w.scratch);
	buf_wipe(&w.repl);
	return r;
}

enum json_result
json_walk_all(const char *in, size_t n, const struct json_walk_cbs *cbs,
              size_t max_string, size_t *err_pos)
{
	struct walker w;
	enum json_result r;

	memset(&w, 0, sizeof(w));
	w.in = in;
	w.n = n;
	w.cb = cbs->str;
	w.scalar_cb = cbs->scalar;
	w.cbs = cbs;
	w.arg = cbs->arg;
	w.max_string = max_string;
	buf_init(&w.scratch, max_string + 8);
	buf_init(&w.repl, (max_string + 8) * 4);
	r = walk(&w);
	if (err_pos)
		*err_pos = w.pos;
	buf_wipe(&w.scratch);
	buf_wipe(&w.repl);
	return r;
}

bool
json_seg_is(const struct json_path *p, int level, const char *key)
{
	size_t kl = strlen(key);

	if (level < 0 || level >= p->depth || p->seg[level].key == NULL)
		return false;
	return p->seg[level].key_len == kl &&
	       memcmp(p->seg[level].key, key, kl) == 0;
}


const struct json_seg *
json_path_last(const struct json_path *p)
{
	if (p->depth == 0 || p->seg[p->depth - 1].key == NULL)
		return NULL;
	return &p->seg[p->depth - 1];
}
