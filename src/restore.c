/*
 * restore.c - see restore.h.
 *
 * SSE answers are restored event by event: each event's JSON goes through
 * the JSON rewriter, and each string field (by its path, such as
 * choices/0/delta/content) keeps a small carry: the tail of the last
 * piece that could still become a placeholder when the next piece
 * arrives. Only such tails are held back; everything else goes out with
 * the event it came in. When a later event no longer carries that field,
 * the held tail is sent first in an event shaped like the one it came
 * from, so nothing is lost and nothing is reordered.
 */
#include "restore.h"

#include "alloc.h"
#include "json.h"
#include "vault.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define RESTORE_MAX_EVENT (1024 * 1024)
#define RESTORE_MAX_CARRIES 64
#define RESTORE_MAX_PATH 256

struct carry {
	char path[RESTORE_MAX_PATH];
	struct buf text;     /* held back, already restored */
	struct buf head;     /* template event: bytes before the JSON */
	struct buf payload;  /* template event: its JSON */
	struct buf tail;     /* template event: bytes after the JSON */
	bool seen;           /* appeared in the event being processed */
	bool json_text;      /* the field holds JSON text (arguments) */
};

struct restore {
	const struct vault *vault;
	enum restore_mode mode;
	size_t max_whole;
	struct buf pending; /* incomplete event, or the whole answer */
	struct carry carries[RESTORE_MAX_CARRIES];
	size_t ncarries;
	bool failed;
	/* The event being processed, for carries that start in it. */
	const char *ev_head, *ev_payload, *ev_tail;
	size_t ev_head_len, ev_payload_len, ev_tail_len;
};

static bool
is_alpha(unsigned char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}

static bool
is_alnum(unsigned char c)
{
	return is_alpha(c) || (c >= '0' && c <= '9');
}

/*
 * Read a placeholder core at s[i..n): letters, digits, '_' (or "\_",
 * as markdown escapes it). Writes the normalised core to core and
 * returns the bytes consumed, 0 if none.
 */
static size_t
read_core(const char *s, size_t i, size_t n, char *core, size_t *core_len)
{
	size_t j = i, k = 0;

	while (j < n && k < VAULT_CORE_MAX - 1) {
		if (s[j] == '\\' && j + 1 < n && s[j + 1] == '_') {
			core[k++] = '_';
			j += 2;
		} else if (is_alnum((unsigned char)s[j]) || s[j] == '_') {
			core[k++] = s[j++];
		} else {
			break;
		}
	}
	*core_len = k;
	return j - i;
}

static size_t
opener_len(const char *s, size_t i, size_t n)
{
	if (i < n && s[i] == '<')
		return 1;
	if (n - i >= 4 && strncasecmp(s + i, "&lt;", 4) == 0)
		return 4;
	return 0;
}

static size_t
closer_len(const char *s, size_t i, size_t n)
{
	if (i < n && s[i] == '>')
		return 1;
	if (n - i >= 4 && strncasecmp(s + i, "&gt;", 4) == 0)
		return 4;
	return 0;
}

static bool
put_value(struct buf *out, const struct vault_entry *e, bool json_text)
{
	if (json_text)
		return json_escape_into(out, e->value, e->value_len);
	return buf_add(out, e->value, e->value_len);
}

size_t
restore_text(const struct vault *v, const char *s, size_t n, bool json_text,
             struct buf *out, bool *ok)
{
	size_t i = 0, run = 0, count = 0;

	*ok = true;
	while (i < n) {
		size_t op = opener_len(s, i, n), used, cl, core_len;
		char core[VAULT_CORE_MAX];
		const struct vault_entry *e;

		if (op == 0 && !(is_alpha((unsigned char)s[i]) &&
		                 (i == 0 || !is_alnum((unsigned char)s[i - 1])))) {
			i++;
			continue;
		}
		if (op > 0 && !(i + op < n && is_alpha((unsigned char)s[i + op]))) {
			i++;
			continue;
		}
		used = read_core(s, i + op, n, core, &core_len);
		e = used > 0 ? vault_find(v, core, core_len) : NULL;
		if (e == NULL || (i + op + used < n &&
		                  is_alnum((unsigned char)s[i + op + used]))) {
			/* Not ours: skip the whole word so its inside is not
			 * mistaken for a word start. */
			i += op + (used ? used : 1);
			continue;
		}
		cl = op > 0 ? closer_len(s, i + op + used, n) : 0;
		if (op == 0)
			cl = closer_len(s, i + used, n);
		if (!buf_add(out, s + run, i - run) || !put_value(out, e, json_text)) {
			*ok = false;
			return count;
		}
		count++;
		i += op + used + cl;
		run = i;
	}
	if (!buf_add(out, s + run, n - run))
		*ok = false;
	return count;
}

size_t
restore_holdback(const struct vault *v, const char *s, size_t n)
{
	size_t from = n > v->max_core + 8 ? n - (v->max_core + 8) : 0;

	for (size_t j = from; j < n; j++) {
		size_t i = j, k = 0;
		char core[VAULT_CORE_MAX];
		unsigned char c = (unsigned char)s[j];

		if (c == '<') {
			i++;
		} else if (c == '&') {
			/* "&", "&l", "&lt", "&lt;" */
			static const char lt[] = "&lt;";
			size_t m = 0;
			while (j + m < n && m < 4 && (s[j + m] | 0x20) == (lt[m] | 0x20))
				m++;
			if (j + m == n)
				return n - j;
			if (m < 4)
				continue;
			i = j + 4;
		} else if (!is_alpha(c) || (j > 0 && is_alnum((unsigned char)s[j - 1]))) {
			continue;
		}
		/* The rest must be a prefix of some core (a trailing "\" may
		 * be half of "\_"). */
		while (i < n && k < VAULT_CORE_MAX - 1) {
			if (s[i] == '\\' && i + 1 == n) {
				i++;
				break;
			}
			if (s[i] == '\\' && s[i + 1] == '_') {
				core[k++] = '_';
				i += 2;
				continue;
			}
			if (!is_alnum((unsigned char)s[i]) && s[i] != '_')
				break;
			core[k++] = s[i++];
		}
		if (i != n)
			continue;
		if (k == 0)
			return n - j; /* an opener alone */
		for (size_t e = 0; e < v->n; e++)
			if (k <= v->v[e].core_len &&
			    strncasecmp(core, v->v[e].core, k) == 0)
				return n - j;
	}
	return 0;
}

struct restore *
restore_new(const struct vault *v, enum restore_mode mode, size_t max_whole)
{
	struct restore *r = xcalloc(1, sizeof(*r));

	r->vault = v;
	r->mode = mode;
	r->max_whole = max_whole;
	buf_init(&r->pending, mode == RESTORE_SSE ? RESTORE_MAX_EVENT : max_whole);
	return r;
}

void
restore_free(struct restore *r)
{
	if (r == NULL)
		return;
	buf_wipe(&r->pending);
	for (size_t i = 0; i < r->ncarries; i++) {
		buf_wipe(&r->carries[i].text);
		buf_wipe(&r->carries[i].head);
		buf_wipe(&r->carries[i].payload);
		buf_wipe(&r->carries[i].tail);
	}
	free(r);
}

static bool
path_string(const struct json_path *p, char *out, size_t cap)
{
	size_t n = 0;

	for (int d = 0; d < p->depth; d++) {
		const struct json_seg *sg = &p->seg[d];
		int w;
		if (sg->key != NULL)
			w = snprintf(out + n, cap - n, "/%.*s", (int)sg->key_len,
			             sg->key);
		else
			w = snprintf(out + n, cap - n, "/%ld", sg->index);
		if (w < 0 || (size_t)w >= cap - n)
			return false;
		n += (size_t)w;
	}
	return true;
}

static bool
holds_json(const struct json_path *p)
{
	const struct json_seg *l = json_path_last(p);

	return l != NULL &&
	       ((l->key_len == 9 && memcmp(l->key, "arguments", 9) == 0) ||
	        (l->key_len == 12 && memcmp(l->key, "partial_json", 12) == 0));
}

/* Whole answers: every string restored, nothing held. */
static enum json_cb_result
whole_cb(void *arg, const struct json_path *p, const char *s, size_t n,
         struct buf *repl)
{
	struct restore *r = arg;
	bool ok;

	if (restore_text(r->vault, s, n, holds_json(p), repl, &ok) == 0)
		return ok ? JSON_KEEP : JSON_CB_ERROR;
	return ok ? JSON_REPLACE : JSON_CB_ERROR;
}

static struct carry *
carry_for(struct restore *r, const char *path)
{
	for (size_t i = 0; i < r->ncarries; i++)
		if (strcmp(r->carries[i].path, path) == 0)
			return &r->carries[i];
	if (r->ncarries == RESTORE_MAX_CARRIES)
		return NULL;
	struct carry *c = &r->carries[r->ncarries++];
	memset(c, 0, sizeof(*c));
	snprintf(c->path, sizeof(c->path), "%s", path);
	buf_init(&c->text, RESTORE_MAX_EVENT);
	buf_init(&c->head, RESTORE_MAX_EVENT);
	buf_init(&c->payload, RESTORE_MAX_EVENT);
	buf_init(&c->tail, RESTORE_MAX_EVENT);
	return c;
}

static enum json_cb_result
event_cb(void *arg, const struct json_path *p, const char *s, size_t n,
         struct buf *repl)
{
	struct restore *r = arg;
	char path[RESTORE_MAX_PATH];
	struct carry *c;
	struct buf joined;
	size_t hold;
	bool ok;

	if (!path_string(p, path, sizeof(path)))
		return JSON_KEEP;
	c = carry_for(r, path);
	if (c == NULL)
		return JSON_CB_ERROR;
	c->seen = true;
	if (c->text.len == 0 && r->vault->n > 0 &&
	    restore_holdback(r->vault, s, n) == 0 &&
	    restore_text(r->vault, s, n, holds_json(p), repl, &ok) == 0)
		return ok ? JSON_KEEP : JSON_CB_ERROR;
	buf_reset(repl);
	buf_init(&joined, RESTORE_MAX_EVENT);
	if (!buf_add(&joined, c->text.p, c->text.len) ||
	    !buf_add(&joined, s, n)) {
		buf_wipe(&joined);
		return JSON_CB_ERROR;
	}
	/* Hold back, unrestored, the tail that may still grow into a
	 * placeholder (or gain its closing '>'); restore the rest. */
	hold = restore_holdback(r->vault, joined.p, joined.len);
	restore_text(r->vault, joined.p, joined.len - hold, holds_json(p), repl,
	             &ok);
	buf_reset(&c->text);
	if (ok && hold > 0) {
		ok = buf_add(&c->text, joined.p + joined.len - hold, hold);
		/* Keep this event as the shape to send the tail in. */
		buf_reset(&c->head);
		buf_reset(&c->payload);
		buf_reset(&c->tail);
		ok = ok && buf_add(&c->head, r->ev_head, r->ev_head_len) &&
		     buf_add(&c->payload, r->ev_payload, r->ev_payload_len) &&
		     buf_add(&c->tail, r->ev_tail, r->ev_tail_len);
		c->json_text = holds_json(p);
	}
	buf_wipe(&joined);
	if (!ok)
		return JSON_CB_ERROR;
	if (repl->len == n && (n == 0 || memcmp(repl->p, s, n) == 0))
		return JSON_KEEP;
	return JSON_REPLACE;
}

struct flush_arg {
	const char *path;
	const struct buf *text; /* held tail, not yet restored */
	const struct vault *vault;
	bool json_text;
};

static enum json_cb_result
flush_cb(void *arg, const struct json_path *p, const char *s, size_t n,
         struct buf *repl)
{
	struct flush_arg *fa = arg;
	char path[RESTORE_MAX_PATH];

	(void)s;
	(void)n;
	bool ok;

	if (!path_string(p, path, sizeof(path)) || strcmp(path, fa->path) != 0)
		return JSON_KEEP;
	restore_text(fa->vault, fa->text->p ? fa->text->p : "", fa->text->len,
	             fa->json_text, repl, &ok);
	return ok ? JSON_REPLACE : JSON_CB_ERROR;
}

/* Send held tails of fields this event did not carry (all when all). */
static bool
flush_carries(struct restore *r, bool all, struct buf *out)
{
	for (size_t i = 0; i < r->ncarries; i++) {
		struct carry *c = &r->carries[i];
		struct flush_arg fa = {c->path, &c->text, r->vault, c->json_text};

		if (c->text.len == 0 || (!all && c->seen))
			continue;
		if (!buf_add(out, c->head.p, c->head.len) ||
		    json_rewrite(c->payload.p, c->payload.len, flush_cb, &fa, out,
		                 RESTORE_MAX_EVENT, NULL, NULL) != JSON_OK ||
		    !buf_add(out, c->tail.p, c->tail.len))
			return false;
		buf_reset(&c->text);
	}
	return true;
}

static bool
process_event(struct restore *r, const char *ev, size_t len, struct buf *out)
{
	const char *data = NULL, *p = ev, *end = ev + len;
	size_t ndata = 0, dlen = 0;
	struct buf payload;
	enum json_result jr;

	/* Find the data line(s). */
	while (p < end) {
		const char *nl = memchr(p, '\n', (size_t)(end - p));
		const char *le = nl ? nl : end;
		if ((size_t)(le - p) >= 5 && memcmp(p, "data:", 5) == 0) {
			ndata++;
			data = p + 5;
			if (data < le && *data == ' ')
				data++;
			dlen = (size_t)(le - data);
			if (dlen > 0 && data[dlen - 1] == '\r')
				dlen--;
		}
		p = nl ? nl + 1 : end;
	}
	for (size_t i = 0; i < r->ncarries; i++)
		r->carries[i].seen = false;
	if (ndata != 1 || dlen == 0 || data[0] != '{') {
		/* [DONE], pings, comments: what was held goes out first. */
		return flush_carries(r, true, out) && buf_add(out, ev, len);
	}
	r->ev_head = ev;
	r->ev_head_len = (size_t)(data - ev);
	r->ev_payload = data;
	r->ev_payload_len = dlen;
	r->ev_tail = data + dlen;
	r->ev_tail_len = len - r->ev_head_len - dlen;
	buf_init(&payload, RESTORE_MAX_EVENT * 2);
	jr = json_rewrite(data, dlen, event_cb, r, &payload, RESTORE_MAX_EVENT,
	                  NULL, NULL);
	if (jr != JSON_OK) {
		buf_wipe(&payload);
		/* Not JSON after all: pass it on, restored as text. */
		bool ok;
		if (!flush_carries(r, true, out))
			return false;
		restore_text(r->vault, ev, len, false, out, &ok);
		return ok;
	}
	if (!flush_carries(r, false, out) ||
	    !buf_add(out, ev, r->ev_head_len) ||
	    !buf_add(out, payload.p, payload.len) ||
	    !buf_add(out, r->ev_tail, r->ev_tail_len)) {
		buf_wipe(&payload);
		return false;
	}
	buf_wipe(&payload);
	return true;
}

static size_t
event_end(const char *p, size_t n)
{
	for (size_t i = 0; i + 1 < n; i++) {
		if (p[i] != '\n')
			continue;
		if (p[i + 1] == '\n')
			return i + 2;
		if (p[i + 1] == '\r' && i + 2 < n && p[i + 2] == '\n')
			return i + 3;
	}
	return 0;
}

bool
restore_feed(struct restore *r, const char *p, size_t n, struct buf *out)
{
	size_t e, off = 0;

	if (r->failed)
		return false;
	if (!buf_add(&r->pending, p, n)) {
		r->failed = true;
		return false;
	}
	if (r->mode == RESTORE_WHOLE)
		return true;
	while ((e = event_end(r->pending.p + off, r->pending.len - off)) > 0) {
		if (!process_event(r, r->pending.p + off, e, out)) {
			r->failed = true;
			return false;
		}
		off += e;
	}
	if (off > 0) {
		memmove(r->pending.p, r->pending.p + off, r->pending.len - off);
		r->pending.len -= off;
	}
	return true;
}

bool
restore_finish(struct restore *r, struct buf *out)
{
	bool ok = true;

	if (r->failed)
		return false;
	if (r->mode == RESTORE_SSE) {
		if (r->pending.len > 0)
			ok = process_event(r, r->pending.p, r->pending.len, out);
		ok = ok && flush_carries(r, true, out);
		buf_reset(&r->pending);
		return ok;
	}
	if (r->pending.len == 0)
		return true;
	size_t mark = out->len;
	if (json_rewrite(r->pending.p, r->pending.len, whole_cb, r, out,
	                 r->max_whole, NULL, NULL) != JSON_OK) {
		/* Not JSON: restore it as text. */
		out->len = mark;
		restore_text(r->vault, r->pending.p, r->pending.len, false, out, &ok);
	}
	buf_reset(&r->pending);
	return ok;
}
