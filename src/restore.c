/*
 * restore.c - see restore.h.
 *
 * SSE answers are restored event by event: each event's JSON goes through
 * the JSON rewriter. Fields that carry pieces of the answer (deltas) may
 * end with the start of a placeholder; that tail is held back and joined
 * to the same field in a later event. The event it came from waits (see
 * struct held) until the field goes on, or ends and takes its tail back:
 * no event is invented, duplicated or reordered. Whole texts ("done"
 * events, snapshots) are restored in place and never wait.
 */
#include "restore.h"

#include "alloc.h"
#include "json.h"
#include "vault.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define RESTORE_MAX_EVENT (1024 * 1024)
#define RESTORE_MAX_HELD 16
#define RESTORE_MAX_TAILS 8
#define RESTORE_MAX_PATH 256
#define RESTORE_MAX_CHOICES 16

/* A piece of an incremental field held back at the end of an event. */
struct tail {
	char path[RESTORE_MAX_PATH];
	long choice;       /* the choice it belongs to, or -1 */
	struct buf text;   /* raw, not yet restored */
	bool json_text;    /* the field holds JSON text (arguments) */
	enum { TAIL_PENDING, TAIL_MOVED, TAIL_ENDED } state;
};

/*
 * An event waiting to be sent: its bytes as they go out if its tails move
 * on to later events, and the tails. It leaves the queue, in order, once
 * no tail of it is pending; a tail whose field ends (an event for the same
 * choice without that field, [DONE], the end of the answer) is put back
 * into its own event. Nothing is reordered or duplicated, and the delay is
 * the one event that shows how a field goes on.
 */
struct held {
	struct buf out;    /* the event, rendered without its tails */
	size_t head_len;   /* bytes before the JSON in out */
	size_t json_len;   /* the JSON in out */
	struct tail tails[RESTORE_MAX_TAILS];
	size_t ntails;
};

struct restore {
	const struct vault *vault;
	enum restore_mode mode;
	size_t max_whole;
	struct buf pending; /* incomplete event, or the whole answer */
	/* Streams only (RESTORE_MAX_HELD entries, ~40 KB): a whole answer
	 * never holds events back, and zeroing them was most of the cost of
	 * restoring one. */
	struct held *queue;
	size_t nqueue;
	bool failed;
	long choice_index[RESTORE_MAX_CHOICES]; /* position -> "index" */
	struct held *cur;   /* the event being processed */
	char seen[RESTORE_MAX_TAILS * 2][RESTORE_MAX_PATH];
	size_t nseen;       /* incremental fields the current event has */
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
		} else if (s[j] == '\\' && j + 2 < n && s[j + 1] == '\\' &&
		           s[j + 2] == '_') {
			/* "\\_": the markdown escape inside JSON text (tool-call
			 * arguments), escaped once more. */
			core[k++] = '_';
			j += 3;
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
		if (i != n) {
			/* A whole core whose closer has begun: "&", "&g", "&gt". */
			static const char gt[] = "&gt;";
			size_t m = 0;
			while (i + m < n && m < 3 && (s[i + m] | 0x20) == (gt[m] | 0x20))
				m++;
			if (m == 0 || i + m != n)
				continue;
			for (size_t e = 0; e < v->n; e++)
				if (k == v->v[e].core_len &&
				    strncasecmp(core, v->v[e].core, k) == 0)
					return n - j;
			continue;
		}
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

	if (mode == RESTORE_SSE)
		r->queue = xcalloc(RESTORE_MAX_HELD, sizeof(*r->queue));
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
	for (size_t i = 0; r->queue != NULL && i < RESTORE_MAX_HELD; i++) {
		buf_wipe(&r->queue[i].out);
		for (size_t k = 0; k < RESTORE_MAX_TAILS; k++)
			buf_wipe(&r->queue[i].tails[k].text);
	}
	free(r->queue);
	free(r);
}

/*
 * The carry key of a field. Positions in a "choices" array are replaced
 * by the choice's own "index" (streams with n > 1 send one choice per
 * event, always at position 0), as read from the event beforehand.
 */
static bool
path_string(const struct restore *r, const struct json_path *p, char *out,
            size_t cap)
{
	size_t n = 0;

	for (int d = 0; d < p->depth; d++) {
		const struct json_seg *sg = &p->seg[d];
		int w;
		if (sg->key != NULL)
			w = snprintf(out + n, cap - n, "/%.*s", (int)sg->key_len,
			             sg->key);
		else if (d > 0 && json_seg_is(p, d - 1, "choices") && sg->index >= 0 &&
		         sg->index < RESTORE_MAX_CHOICES &&
		         r->choice_index[sg->index] >= 0)
			w = snprintf(out + n, cap - n, "/%ld",
			             r->choice_index[sg->index]);
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

/*
 * Fields that carry a piece of the answer (to be joined with the next
 * piece) rather than a whole text: anything under a "delta" key (chat,
 * Responses, Anthropic, tool-call arguments), and the choices' "text" of
 * streamed legacy completions. Whole texts ("done" events, final
 * snapshots) are restored in place and never held back.
 */
static bool
incremental(const struct json_path *p)
{
	const struct json_seg *last = json_path_last(p);

	for (int d = 0; d < p->depth; d++)
		if (p->seg[d].key_len == 5 && memcmp(p->seg[d].key, "delta", 5) == 0)
			return true;
	return p->depth == 3 && json_seg_is(p, 0, "choices") && last != NULL &&
	       last->key_len == 4 && memcmp(last->key, "text", 4) == 0;
}

/* Read each choice's "index" so carries follow choices, not positions. */
static void
map_choices(struct restore *r, const char *payload, size_t len)
{
	json_t *j, *choices;

	for (size_t i = 0; i < RESTORE_MAX_CHOICES; i++)
		r->choice_index[i] = -1;
	if (memmem(payload, len, "\"choices\"", 9) == NULL)
		return;
	j = json_loadb(payload, len, JSON_DECODE_INT_AS_REAL | JSON_ALLOW_NUL,
	               NULL);
	choices = json_object_get(j, "choices");
	for (size_t i = 0; i < json_array_size(choices) && i < RESTORE_MAX_CHOICES;
	     i++) {
		json_t *ix = json_object_get(json_array_get(choices, i), "index");
		double d = json_number_value(ix);
		/* The provider's number: cast only what fits a choice index. */
		if (json_is_number(ix) && d >= 0 && d <= 1e6 && d == (double)(long)d)
			r->choice_index[i] = (long)d;
	}
	json_decref(j);
}

/* The newest pending tail of a field, or NULL. */
static struct tail *
pending_tail(struct restore *r, const char *path)
{
	for (size_t q = r->nqueue; q-- > 0;)
		for (size_t t = 0; t < r->queue[q].ntails; t++) {
			struct tail *tl = &r->queue[q].tails[t];
			if (tl->state == TAIL_PENDING && strcmp(tl->path, path) == 0)
				return tl;
		}
	return NULL;
}

static long
choice_of(const char *path)
{
	/* "/choices/K/..." */
	if (strncmp(path, "/choices/", 9) != 0)
		return -1;
	return strtol(path + 9, NULL, 10);
}

static enum json_cb_result
event_cb(void *arg, const struct json_path *p, const char *s, size_t n,
         struct buf *repl)
{
	struct restore *r = arg;
	char path[RESTORE_MAX_PATH];
	struct tail *prev;
	struct buf joined;
	size_t hold;
	bool ok;

	if (!incremental(p) || !path_string(r, p, path, sizeof(path))) {
		if (restore_text(r->vault, s, n, holds_json(p), repl, &ok) == 0)
			return ok ? JSON_KEEP : JSON_CB_ERROR;
		return ok ? JSON_REPLACE : JSON_CB_ERROR;
	}
	if (r->nseen < SCRIM_ARRAY_LEN(r->seen))
		snprintf(r->seen[r->nseen++], RESTORE_MAX_PATH, "%s", path);
	prev = pending_tail(r, path);
	buf_init(&joined, RESTORE_MAX_EVENT * 2);
	ok = (prev == NULL || buf_add(&joined, prev->text.p, prev->text.len)) &&
	     buf_add(&joined, s, n);
	if (!ok) {
		buf_wipe(&joined);
		return JSON_CB_ERROR;
	}
	if (prev != NULL)
		prev->state = TAIL_MOVED; /* it goes on here */
	/* Hold back, unrestored, the end that may still grow into a
	 * placeholder (or gain its closer); restore the rest. */
	hold = r->cur->ntails < RESTORE_MAX_TAILS
	           ? restore_holdback(r->vault, joined.p ? joined.p : "", joined.len)
	           : 0;
	restore_text(r->vault, joined.p ? joined.p : "", joined.len - hold,
	             holds_json(p), repl, &ok);
	if (ok && hold > 0) {
		struct tail *tl = &r->cur->tails[r->cur->ntails++];
		snprintf(tl->path, sizeof(tl->path), "%s", path);
		tl->choice = choice_of(path);
		tl->json_text = holds_json(p);
		tl->state = TAIL_PENDING;
		buf_init(&tl->text, RESTORE_MAX_EVENT);
		ok = buf_add(&tl->text, joined.p + joined.len - hold, hold);
	}
	buf_wipe(&joined);
	if (!ok)
		return JSON_CB_ERROR;
	if (repl->len == n && (n == 0 || memcmp(repl->p, s, n) == 0))
		return JSON_KEEP;
	return JSON_REPLACE;
}

struct end_arg {
	struct restore *r;
	struct held *h;
};

/* Put ended tails back at the end of their field. */
static enum json_cb_result
end_cb(void *arg, const struct json_path *p, const char *s, size_t n,
       struct buf *repl)
{
	struct end_arg *ea = arg;
	char path[RESTORE_MAX_PATH];
	bool changed = false, ok = true;

	if (!incremental(p) || !path_string(ea->r, p, path, sizeof(path)))
		return JSON_KEEP;
	for (size_t t = 0; t < ea->h->ntails && ok; t++) {
		struct tail *tl = &ea->h->tails[t];
		if (tl->state != TAIL_ENDED || strcmp(tl->path, path) != 0)
			continue;
		if (!changed)
			ok = buf_add(repl, s, n);
		changed = true;
		if (ok)
			restore_text(ea->r->vault, tl->text.p ? tl->text.p : "",
			             tl->text.len, tl->json_text, repl, &ok);
		tl->state = TAIL_MOVED; /* placed */
	}
	if (!ok)
		return JSON_CB_ERROR;
	return changed ? JSON_REPLACE : JSON_KEEP;
}

static bool
held_ready(const struct held *h)
{
	for (size_t t = 0; t < h->ntails; t++)
		if (h->tails[t].state == TAIL_PENDING)
			return false;
	return true;
}

static void
held_clear(struct held *h)
{
	buf_wipe(&h->out);
	for (size_t t = 0; t < RESTORE_MAX_TAILS; t++)
		buf_wipe(&h->tails[t].text);
	h->ntails = 0;
}

/* Send the queue's head events whose tails all found their place. */
static bool
emit_ready(struct restore *r, struct buf *out)
{
	while (r->nqueue > 0 && held_ready(&r->queue[0])) {
		struct held *h = &r->queue[0], tmp;
		bool ended = false, ok;

		for (size_t t = 0; t < h->ntails; t++)
			ended = ended || h->tails[t].state == TAIL_ENDED;
		if (!ended) {
			ok = buf_add(out, h->out.p, h->out.len);
		} else {
			struct end_arg ea = {r, h};
			long saved[RESTORE_MAX_CHOICES];
			memcpy(saved, r->choice_index, sizeof(saved));
			map_choices(r, h->out.p + h->head_len, h->json_len);
			ok = buf_add(out, h->out.p, h->head_len) &&
			     json_rewrite(h->out.p + h->head_len, h->json_len, end_cb,
			                  &ea, out, RESTORE_MAX_EVENT, NULL, NULL) ==
			         JSON_OK &&
			     buf_add(out, h->out.p + h->head_len + h->json_len,
			             h->out.len - h->head_len - h->json_len);
			memcpy(r->choice_index, saved, sizeof(saved));
		}
		if (!ok)
			return false;
		/* The slot goes behind the events still held, emptied; the
		 * free slots past them stay where they are (moving all of
		 * them was ~36 KB a streamed event). */
		tmp = r->queue[0];
		held_clear(&tmp);
		memmove(&r->queue[0], &r->queue[1],
		        (r->nqueue - 1) * sizeof(r->queue[0]));
		r->queue[r->nqueue - 1] = tmp;
		r->nqueue--;
	}
	return true;
}

/* Fields that stopped: their tails end where they were held. */
static void
end_tails(struct restore *r, bool all)
{
	for (size_t q = 0; q < r->nqueue; q++)
		for (size_t t = 0; t < r->queue[q].ntails; t++) {
			struct tail *tl = &r->queue[q].tails[t];
			bool seen = false, about = tl->choice < 0;
			if (tl->state != TAIL_PENDING)
				continue;
			if (!all) {
				for (size_t i = 0; i < r->nseen; i++)
					seen = seen || strcmp(r->seen[i], tl->path) == 0;
				for (size_t i = 0; i < RESTORE_MAX_CHOICES; i++)
					about = about || r->choice_index[i] == tl->choice;
				/* Another choice's event says nothing about this one. */
				if (seen || !about)
					continue;
			}
			tl->state = TAIL_ENDED;
		}
}

static bool
process_event(struct restore *r, const char *ev, size_t len, struct buf *out)
{
	const char *data = NULL, *p = ev, *end = ev + len;
	size_t ndata = 0, dlen = 0, head_len;
	struct held *h;
	enum json_result jr;
	bool ok;

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
	if (ndata != 1 || dlen == 0 || data[0] != '{')
		goto as_text;
	if (r->nqueue == RESTORE_MAX_HELD) {
		/* Too much waiting: the oldest event's fields end here. */
		for (size_t t = 0; t < r->queue[0].ntails; t++)
			if (r->queue[0].tails[t].state == TAIL_PENDING)
				r->queue[0].tails[t].state = TAIL_ENDED;
		if (!emit_ready(r, out))
			return false;
	}
	h = &r->queue[r->nqueue];
	held_clear(h);
	buf_init(&h->out, RESTORE_MAX_EVENT * 3);
	head_len = (size_t)(data - ev);
	r->cur = h;
	r->nseen = 0;
	map_choices(r, data, dlen);
	if (!buf_add(&h->out, ev, head_len))
		return false;
	jr = json_rewrite(data, dlen, event_cb, r, &h->out, RESTORE_MAX_EVENT,
	                  NULL, NULL);
	if (jr == JSON_ABORTED || jr == JSON_TOO_BIG) {
		/* The event is JSON but could not be rewritten (no memory,
		 * a cap): sent as text it would carry its placeholders, and
		 * those of tails already moved into it, out unrestored. */
		held_clear(h);
		return false;
	}
	if (jr != JSON_OK) {
		held_clear(h);
		goto as_text;
	}
	h->head_len = head_len;
	h->json_len = h->out.len - head_len;
	if (!buf_add(&h->out, data + dlen, len - head_len - dlen))
		return false;
	r->nqueue++;
	end_tails(r, false);
	return emit_ready(r, out);
as_text:
	/* [DONE], pings, comments, non-JSON data: every field has ended. */
	end_tails(r, true);
	if (!emit_ready(r, out))
		return false;
	restore_text(r->vault, ev, len, false, out, &ok);
	return ok;
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
		end_tails(r, true);
		ok = ok && emit_ready(r, out);
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
