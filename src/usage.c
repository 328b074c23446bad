/*
 * usage.c - see usage.h. Reading is a walk of the JSON (json.c) picking
 * numbers by their path; the largest value seen wins, because Anthropic
 * streams report output tokens cumulatively.
 */
#include "usage.h"

#include "json.h"

#include <stdlib.h>
#include <string.h>

#define USAGE_MAX_EVENT (1024 * 1024)

void
usage_init(struct usage *u)
{
	u->in = -1;
	u->out = -1;
}

static bool
key_is(const struct json_seg *s, const char *k)
{
	size_t n = strlen(k);
	return s->key != NULL && s->key_len == n && memcmp(s->key, k, n) == 0;
}

static void
scalar_cb(void *arg, const struct json_path *p, const char *raw, size_t n)
{
	struct usage *u = arg;
	const struct json_seg *last;
	long v;
	char tmp[24];

	if (p->depth < 2 || n == 0 || n >= sizeof(tmp) || raw[0] < '0' ||
	    raw[0] > '9')
		return;
	/* ...usage.<field>, at any depth (message.usage, response.usage). */
	if (!key_is(&p->seg[p->depth - 2], "usage"))
		return;
	last = &p->seg[p->depth - 1];
	memcpy(tmp, raw, n);
	tmp[n] = '\0';
	v = strtol(tmp, NULL, 10);
	if (key_is(last, "prompt_tokens") || key_is(last, "input_tokens")) {
		if (v > u->in)
			u->in = v;
	} else if (key_is(last, "completion_tokens") ||
	           key_is(last, "output_tokens")) {
		if (v > u->out)
			u->out = v;
	}
}

void
usage_from_json(const char *p, size_t n, struct usage *u)
{
	if (n == 0 || memmem(p, n, "\"usage\"", 7) == NULL)
		return; /* cheap: most stream events carry none */
	(void)json_walk(p, n, NULL, scalar_cb, u, n, NULL);
}

void
usage_tap_init(struct usage_tap *t, struct usage *u, bool strip)
{
	t->u = u;
	t->strip_usage_chunk = strip;
	buf_init(&t->line, USAGE_MAX_EVENT);
}

void
usage_tap_free(struct usage_tap *t)
{
	buf_free(&t->line);
}

/* One complete event: read it, pass it on unless it is ours to drop. */
/*
 * include_usage also puts "usage":null in every other chunk; a client
 * that did not ask for usage must not see it. Text is enough: outside
 * strings a JSON quote is never escaped, and inside one it always is, so
 * ,"usage":null (or "usage":null, first in an object) can only be a
 * member. Copies the event without the first one.
 */
static bool
add_without_null_usage(struct buf *out, const char *ev, size_t len,
                       const char *data, size_t dlen)
{
	static const char m1[] = ",\"usage\":null", m2[] = "\"usage\":null,";
	const char *hit = memmem(data, dlen, m1, sizeof(m1) - 1);
	size_t cut = sizeof(m1) - 1;

	if (hit == NULL) {
		hit = memmem(data, dlen, m2, sizeof(m2) - 1);
		cut = sizeof(m2) - 1;
	}
	if (hit == NULL)
		return buf_add(out, ev, len);
	return buf_add(out, ev, (size_t)(hit - ev)) &&
	       buf_add(out, hit + cut, len - (size_t)(hit - ev) - cut);
}

static bool
event(struct usage_tap *t, const char *ev, size_t len, struct buf *out)
{
	const char *data = NULL, *p = ev, *end = ev + len;
	size_t dlen = 0;

	while (p < end) {
		const char *nl = memchr(p, '\n', (size_t)(end - p));
		const char *le = nl ? nl : end;
		if ((size_t)(le - p) > 5 && memcmp(p, "data:", 5) == 0) {
			data = p + 5;
			while (data < le && *data == ' ')
				data++;
			dlen = (size_t)(le - data);
		}
		p = nl ? nl + 1 : end;
	}
	if (data != NULL && dlen > 0 && data[0] == '{') {
		usage_from_json(data, dlen, t->u);
		if (t->strip_usage_chunk) {
			/* The chunk include_usage adds: no choices, only usage. */
			if (memmem(data, dlen, "\"choices\":[]", 12) != NULL &&
			    memmem(data, dlen, "\"usage\":{", 9) != NULL)
				return true;
			return add_without_null_usage(out, ev, len, data, dlen);
		}
	}
	return buf_add(out, ev, len);
}

bool
usage_tap_feed(struct usage_tap *t, const char *p, size_t n, struct buf *out)
{
	size_t off = 0;

	if (!buf_add(&t->line, p, n))
		return false;
	for (;;) {
		const char *s = t->line.p + off;
		size_t left = t->line.len - off, e = 0;
		for (size_t i = 0; i + 1 < left; i++) {
			if (s[i] == '\n' && s[i + 1] == '\n') {
				e = i + 2;
				break;
			}
			if (s[i] == '\n' && s[i + 1] == '\r' && i + 2 < left &&
			    s[i + 2] == '\n') {
				e = i + 3;
				break;
			}
		}
		if (e == 0)
			break;
		if (!event(t, s, e, out))
			return false;
		off += e;
	}
	if (off > 0) {
		memmove(t->line.p, t->line.p + off, t->line.len - off);
		t->line.len -= off;
	}
	return true;
}

bool
usage_tap_finish(struct usage_tap *t, struct buf *out)
{
	bool ok = t->line.len == 0 || event(t, t->line.p, t->line.len, out);
	t->line.len = 0;
	return ok;
}
