/*
 * test_restore.c - placeholders come back whole: in text with the shapes
 * models produce, in whole JSON answers, and in SSE streams split at
 * every byte and at every character of the placeholder across events.
 */
#include "buf.h"
#include "harness.h"
#include "restore.h"
#include "vault.h"

#include <jansson.h>
#include <openssl/evp.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const unsigned char secret[32] = {1, 2, 3};

#define MUST(x) do { if (!(x)) abort(); } while (0)

static bool
text_is(struct vault *v, const char *in, const char *want)
{
	struct buf out;
	bool ok, same;

	buf_init(&out, 1 << 20);
	restore_text(v, in, strlen(in), false, &out, &ok);
	same = ok && out.len == strlen(want) &&
	       memcmp(out.p ? out.p : "", want, out.len) == 0;
	if (!same)
		fprintf(stderr, "  got: %.*s\n", (int)out.len, out.p ? out.p : "");
	buf_free(&out);
	return same;
}

/* Join the delta.content of every OpenAI chunk in an SSE stream. */
static char *
joined_content(const char *sse, size_t n, int *events)
{
	struct buf acc;
	const char *p = sse, *end = sse + n;

	buf_init(&acc, 1 << 20);
	*events = 0;
	while (p < end) {
		const char *nl = memchr(p, '\n', (size_t)(end - p));
		const char *le = nl ? nl : end;
		if (le - p > 6 && memcmp(p, "data: {", 7) == 0) {
			json_t *j = json_loadb(p + 6, (size_t)(le - p - 6), 0, NULL);
			json_t *c = json_object_get(
			    json_object_get(json_array_get(json_object_get(j, "choices"),
			                                   0), "delta"), "content");
			if (json_is_string(c))
				MUST(buf_add(&acc, json_string_value(c),
				              json_string_length(c)));
			json_decref(j);
			(*events)++;
		} else if (le - p >= 6 && memcmp(p, "data: ", 6) == 0) {
			(*events)++;
		}
		p = nl ? nl + 1 : end;
	}
	char *r = malloc(acc.len + 1);
	memcpy(r, acc.p ? acc.p : "", acc.len);
	r[acc.len] = '\0';
	buf_free(&acc);
	return r;
}

static void
add_event(struct buf *b, const char *content)
{
	json_t *j = json_pack("{s:s, s:[{s:i, s:{s:s}}]}", "object",
	                      "chat.completion.chunk", "choices", "index", 0,
	                      "delta", "content", content);
	char *d = json_dumps(j, JSON_COMPACT);
	(void)buf_addf(b, "data: %s\n\n", d);
	free(d);
	json_decref(j);
}

static void
test_stream_splits(struct vault *v, const char *ph, const char *value)
{
	char text[256], want[256];
	size_t tl;
	bool all_ok = true;
	int worst = 0;

	snprintf(text, sizeof(text), "Mail %s today.", ph);
	snprintf(want, sizeof(want), "Mail %s today.", value);
	tl = strlen(text);
	/* The placeholder split between two events at every character, and
	 * the byte stream split at every byte. */
	for (size_t k = 1; k < tl && all_ok; k++) {
		char a[256], b2[256];
		struct buf stream;
		memcpy(a, text, k);
		a[k] = '\0';
		snprintf(b2, sizeof(b2), "%s", text + k);
		buf_init(&stream, 1 << 20);
		add_event(&stream, a);
		add_event(&stream, b2);
		{
			static const char fin[] =
			    "data: {\"choices\":[{\"index\":0,\"delta\":{},"
			    "\"finish_reason\":\"stop\"}]}\n\n";
			MUST(buf_add(&stream, fin, sizeof(fin) - 1));
		}
		MUST(buf_add(&stream, "data: [DONE]\n\n", 14));
		for (size_t cut = 0; cut <= stream.len && all_ok; cut++) {
			struct restore *r = restore_new(v, RESTORE_SSE, 1 << 20);
			struct buf out;
			int events;
			buf_init(&out, 1 << 20);
			bool ok = restore_feed(r, stream.p, cut, &out) &&
			          restore_feed(r, stream.p + cut, stream.len - cut, &out) &&
			          restore_finish(r, &out);
			char *got = joined_content(out.p, out.len, &events);
			if (!ok || strcmp(got, want) != 0) {
				fprintf(stderr, "  split k=%zu cut=%zu got '%s'\n", k, cut,
				        got);
				all_ok = false;
			}
			if (events > worst)
				worst = events;
			free(got);
			buf_free(&out);
			restore_free(r);
		}
		buf_free(&stream);
	}
	CHECK(all_ok, "SSE restore of %s at every split", ph);
	CHECK(worst <= 5, "no more than one extra event (%d)", worst);
}

/* Feed a stream in steps of step bytes, then finish; true when every
 * call succeeded. out receives what the client would get. */
static bool
sse_run(const struct vault *v, const char *in, size_t n, size_t step,
        struct buf *out)
{
	struct restore *r = restore_new(v, RESTORE_SSE, 1 << 20);
	bool ok = true;

	for (size_t i = 0; i < n && ok; i += step)
		ok = restore_feed(r, in + i, n - i < step ? n - i : step, out);
	ok = ok && restore_finish(r, out);
	restore_free(r);
	return ok;
}

static bool
has(const struct buf *b, const char *s)
{
	return b->p != NULL && memmem(b->p, b->len, s, strlen(s)) != NULL;
}

/* Branch coverage (RELIABILITY L1, 90 %): escapes, the holdback rule,
 * SSE framing variants, caps and the held-event queue. */
static void
test_branches(struct vault *v, const char *core, const char *value)
{
	char in[512], want[512];
	struct buf out;
	size_t cl = strlen(core);
	const char *us = strchr(core, '_');
	int pre = (int)(us - core);

	/* Text shapes. */
	snprintf(in, sizeof(in), "x %.*s\\\\%s y", pre, core, us);
	snprintf(want, sizeof(want), "x %s y", value);
	CHECK(text_is(v, in, want), "\\\\_ escape: %s", in);
	snprintf(in, sizeof(in), "&LT;%s&GT;", core);
	CHECK(text_is(v, in, value), "upper-case entities");
	snprintf(in, sizeof(in), "&lt;%s>", core);
	CHECK(text_is(v, in, value), "mixed opener and closer");
	snprintf(in, sizeof(in), "%sx", core);
	CHECK(text_is(v, in, in), "core followed by a letter stays");
	CHECK(text_is(v, "a < b &lt; c <", "a < b &lt; c <"), "lone openers");
	CHECK(text_is(v, "&lt;1 &lt;", "&lt;1 &lt;"), "opener then digit");

	CHECK(text_is(v, "", ""), "empty text");
	CHECK(text_is(v, "&", "&") && text_is(v, "&l", "&l") &&
	          text_is(v, "&gt", "&gt"), "short entities");
	snprintf(in, sizeof(in), "%s&g", core);
	snprintf(want, sizeof(want), "%s&g", value);
	CHECK(text_is(v, in, want), "core, then half a closer");
	snprintf(in, sizeof(in), "&lt;%s&amp; x", core);
	snprintf(want, sizeof(want), "%s&amp; x", value);
	CHECK(text_is(v, in, want), "an entity other than the closer");
	CHECK(text_is(v, "a\\", "a\\"), "a trailing backslash");
	CHECK(text_is(v, "x \\\\y <", "x \\\\y <"), "two backslashes, no _");
	snprintf(in, sizeof(in), "%s\\", core);
	snprintf(want, sizeof(want), "%s\\", value);
	CHECK(text_is(v, in, want), "core then a backslash");
	snprintf(in, sizeof(in), "<%s&gt", core);
	snprintf(want, sizeof(want), "%s&gt", value);
	CHECK(text_is(v, in, want), "closer cut short: the value, then the rest");
	{
		char lng[300];
		memset(lng, 'A', sizeof(lng) - 1);
		lng[0] = '<';
		lng[sizeof(lng) - 1] = '\0';
		CHECK(text_is(v, lng, lng), "a core longer than any");
		CHECK(restore_holdback(v, lng, strlen(lng)) == 0,
		      "no holdback for an over-long core");
		lng[100] = '\0';
		memcpy(lng + 1, core, (size_t)pre);
		lng[1 + pre] = '\\';
		lng[2 + pre] = 'q';
		lng[3 + pre] = '\0';
		CHECK(restore_holdback(v, lng, strlen(lng)) == 0,
		      "no holdback after a backslash that is not \\_");
	}

	/* What a stream holds back at the end of a read. */
	{
		static const struct {
			const char *tail;
			size_t want;
		} hb[] = {
			{"abc &", 1}, {"abc &l", 2}, {"abc &LT", 3}, {"abc &lt;", 4},
			{"abc &x y", 0}, {"abc &lt y", 0}, {"abc <", 1},
			{"abc <ZZZQ", 0}, {"abc 9", 0}, {"", 0},
		};
		for (size_t i = 0; i < SCRIM_ARRAY_LEN(hb); i++)
			CHECK(restore_holdback(v, hb[i].tail, strlen(hb[i].tail)) ==
			          hb[i].want, "holdback of \"%s\"", hb[i].tail);
		snprintf(in, sizeof(in), "abc <%.*s", pre, core);
		CHECK(restore_holdback(v, in, strlen(in)) == (size_t)pre + 1,
		      "holdback of a core prefix");
		snprintf(in, sizeof(in), "abc %.*s\\", pre, core);
		CHECK(restore_holdback(v, in, strlen(in)) == (size_t)pre + 1,
		      "holdback of a core and half of \\_");
		snprintf(in, sizeof(in), "abc %.*s\\%s", pre, core, us);
		CHECK(restore_holdback(v, in, strlen(in)) == cl + 1,
		      "holdback of a core with \\_");
		snprintf(in, sizeof(in), "abc &lt;%s&g", core);
		CHECK(restore_holdback(v, in, strlen(in)) == cl + 6,
		      "holdback of a whole core whose closer began");
		snprintf(in, sizeof(in), "abc &lt;%s&gx", core);
		CHECK(restore_holdback(v, in, strlen(in)) == 0,
		      "no holdback once the closer is broken");
		snprintf(in, sizeof(in), "abc ZZZ%s&g", core + 3);
		CHECK(restore_holdback(v, in, strlen(in)) == 0,
		      "no holdback for an unknown whole core");
	}

	/* SSE framing: CRLF events, "data:" without a space, data that is
	 * not one JSON object, comments, an unterminated last event. */
	{
		char ev[1024];
		int n = snprintf(ev, sizeof(ev),
		    "data:{\"choices\":[{\"index\":0,\"delta\":{\"content\":"
		    "\"a <%s> b\"}}]}\r\n\r\n"
		    ": ping\n\n"
		    "data: [DONE]\n\n"
		    "data: {bad <%s>\n\n"
		    "data: {}\ndata: {}\n\n"
		    "event: x\ndata:\n\n"
		    "data: {\"choices\":[{\"text\":\"<%s>\",\"index\":1}]}",
		    core, core, core);
		buf_init(&out, 1 << 20);
		CHECK(sse_run(v, ev, (size_t)n, 7, &out), "framing variants run");
		CHECK(!has(&out, core), "no placeholder left: %.*s", (int)out.len,
		      out.p ? out.p : "");
		CHECK(has(&out, ": ping\n\n") && has(&out, "data: [DONE]\n\n") &&
		          has(&out, "\r\n\r\n"), "framing kept");
		buf_free(&out);
	}

	/* Tool-call arguments: a placeholder split across events, restored
	 * JSON-escaped inside the arguments string. */
	{
		char ev[1024];
		int n = snprintf(ev, sizeof(ev),
		    "data: {\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":"
		    "[{\"index\":0,\"function\":{\"arguments\":\"{\\\"to\\\":"
		    "\\\"<%.*s\"}}]}}]}\n\n"
		    "data: {\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":"
		    "[{\"index\":0,\"function\":{\"arguments\":\"%s>\\\"}\"}}]}}]}"
		    "\n\n",
		    pre, core, us);
		buf_init(&out, 1 << 20);
		CHECK(sse_run(v, ev, (size_t)n, (size_t)n, &out) && !has(&out, us),
		      "split placeholder in arguments: %.*s", (int)out.len,
		      out.p ? out.p : "");
		buf_free(&out);
	}

	/* A tail held for choice 0 while 20 events of choice 1 pass: the
	 * queue fills, the oldest event's field is ended in place. */
	{
		struct buf st;
		buf_init(&st, 1 << 20);
		CHECK(buf_addf(&st, "data: {\"choices\":[{\"index\":0,\"delta\":"
		               "{\"content\":\"hi <%.*s\"}}]}\n\n", pre, core),
		      "stream");
		for (int i = 0; i < 20; i++)
			CHECK(buf_addf(&st, "data: {\"choices\":[{\"index\":1,"
			               "\"delta\":{\"content\":\"w%d \"}}]}\n\n", i),
			      "stream");
		buf_init(&out, 1 << 20);
		CHECK(sse_run(v, st.p, st.len, st.len, &out), "queue overflow runs");
		CHECK(has(&out, "w19 ") && has(&out, "hi "), "every event out");
		buf_free(&out);
		buf_free(&st);
	}

	/* Choice indices that are not small whole numbers, a completions
	 * "text" field and an Anthropic partial_json, each with a split
	 * placeholder; a "\n\r" that does not end an event. */
	{
		struct buf st;
		char txt[4096];
		int tn;
		buf_init(&st, 1 << 20);
		tn = snprintf(txt, sizeof(txt),
		    "data: {\"choices\":[{\"index\":\"x\",\"delta\":{\"content\":\"a\"}}]}\n\n"
		    "data: {\"choices\":[{\"index\":-1,\"delta\":{\"content\":\"b\"}}]}\n\n"
		    "data: {\"choices\":[{\"index\":2000000,\"delta\":{\"content\":\"c\"}}]}\n\n"
		    "data: {\"choices\":[{\"index\":1.5,\"delta\":{\"content\":\"d\"}}]}\n\n"
		    "data: {\"choices\":[{\"delta\":{\"content\":\"e\"}}]}\n\n"
		    "data: {\"choices\":[{\"text\":\"t <%.*s\",\"index\":0}]}\n\n"
		    "data: {\"choices\":[{\"text\":\"%s> t\",\"index\":0}]}\n\n"
		    "data: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":"
		    "{\"type\":\"input_json_delta\",\"partial_json\":\"{\\\"to\\\":"
		    "\\\"<%.*s\"}}\n\n"
		    "data: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":"
		    "{\"type\":\"input_json_delta\",\"partial_json\":\"%s>\\\"}\"}}\n\n"
		    ": x\n\rdata: y\n\r\n",
		    pre, core, us, pre, core, us);
		CHECK(tn > 0 && (size_t)tn < sizeof(txt) &&
		          buf_add(&st, txt, (size_t)tn), "stream");
		for (size_t step = 1; step <= st.len; step += st.len / 7 + 1) {
			buf_init(&out, 1 << 20);
			CHECK(sse_run(v, st.p, st.len, step, &out) && !has(&out, us) &&
			          has(&out, value), "odd indices, text, partial_json "
			          "(reads of %zu): %.*s", step, (int)out.len,
			          out.p ? out.p : "");
			buf_free(&out);
		}
		buf_free(&st);
	}

	/* More choices in one event than are tracked, and a choice index
	 * past them, each with a placeholder split across events. */
	{
		struct buf st;
		char txt[8192];
		size_t tn = 0;
		buf_init(&st, 1 << 20);
		tn += (size_t)snprintf(txt + tn, sizeof(txt) - tn, "data: {\"choices\":[");
		for (int i = 0; i < 20; i++)
			tn += (size_t)snprintf(txt + tn, sizeof(txt) - tn,
			    "%s{\"index\":%d,\"delta\":{\"content\":\"<%.*s\"}}",
			    i ? "," : "", i, pre, core);
		tn += (size_t)snprintf(txt + tn, sizeof(txt) - tn, "]}\n\n");
		tn += (size_t)snprintf(txt + tn, sizeof(txt) - tn,
		    "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":"
		    "\"%s>\"}}]}\n\ndata: {\"choices\":[{\"index\":19,\"delta\":"
		    "{\"content\":\"%s>\"}}]}\n\n", us, us);
		CHECK(tn < sizeof(txt) && buf_add(&st, txt, tn), "stream");
		buf_init(&out, 1 << 20);
		CHECK(sse_run(v, st.p, st.len, st.len, &out) && has(&out, value),
		      "20 choices run: %.*s", (int)out.len, out.p ? out.p : "");
		buf_free(&out);
		buf_free(&st);
	}

	/* An SSE event past its cap fails the stream, and later calls too. */
	{
		struct restore *r = restore_new(v, RESTORE_SSE, 1 << 20);
		char *big = calloc(1, (1 << 20) + 1);
		memset(big, 'a', 1 << 20);
		buf_init(&out, 1 << 20);
		CHECK(restore_feed(r, "data: ", 6, &out) &&
		          !restore_feed(r, big, 1 << 20, &out) &&
		          !restore_feed(r, "\n\n", 2, &out) &&
		          !restore_finish(r, &out), "event past its cap");
		restore_free(r);
		free(big);
		buf_free(&out);
	}

	/* Whole answers: past the cap, empty, not JSON. */
	{
		struct restore *r = restore_new(v, RESTORE_WHOLE, 8);
		buf_init(&out, 1 << 20);
		CHECK(!restore_feed(r, "0123456789", 10, &out) &&
		          !restore_finish(r, &out), "whole answer past its cap");
		restore_free(r);
		r = restore_new(v, RESTORE_WHOLE, 1 << 20);
		CHECK(restore_finish(r, &out) && out.len == 0, "empty answer");
		restore_free(r);
		r = restore_new(v, RESTORE_WHOLE, 1 << 20);
		snprintf(in, sizeof(in), "plain <%s> text", core);
		snprintf(want, sizeof(want), "plain %s text", value);
		CHECK(restore_feed(r, in, strlen(in), &out) &&
		          restore_finish(r, &out) && out.len == strlen(want) &&
		          memcmp(out.p, want, out.len) == 0, "non-JSON answer");
		restore_free(r);
		buf_free(&out);
	}
}

/* HMAC-SHA256 of the parts, each followed by a NUL, by OpenSSL's
 * one-shot: the reference for vault_hmac's kept, per-thread context. */
static bool
reference_mac(const unsigned char key[32], const char *const *parts,
              const size_t *lens, size_t n, unsigned char out[32])
{
	unsigned char data[256];
	size_t len = 0, outl = 0;

	for (size_t i = 0; i < n; i++) {
		if (len + lens[i] + 1 > sizeof(data))
			return false;
		memcpy(data + len, parts[i], lens[i]);
		len += lens[i];
		data[len++] = 0;
	}
	return EVP_Q_mac(NULL, "HMAC", NULL, "SHA256", NULL, key, 32, data, len,
	                 out, 32, &outl) != NULL &&
	       outl == 32;
}

struct mac_run {
	const unsigned char *key;
	bool same;
};

/* Calls with changing values and secrets, each checked on its own. */
static void *
mac_calls(void *arg)
{
	static const unsigned char other[32] = {9, 8, 7};
	struct mac_run *run = arg;
	const char *parts[3] = {"alice", "EMAIL", "john@example.com"};
	size_t lens[3] = {5, 5, 16};
	unsigned char a[32], b[32];

	run->same = true;
	for (int i = 0; i < 6; i++) {
		const unsigned char *k = i % 3 == 2 ? other : run->key;
		lens[2] = 16 - (size_t)i;
		run->same = run->same && vault_hmac(k, parts, lens, 3, a) &&
		            reference_mac(k, parts, lens, 3, b) &&
		            memcmp(a, b, 32) == 0;
	}
	return NULL;
}

/* vault_hmac keeps a keyed context per thread: it must give what a fresh
 * HMAC gives, call after call, follow a change of secret, and keep one
 * thread's key out of another's MACs. */
static void
test_keyed_mac(void)
{
	static const unsigned char third[32] = {1, 2, 3, 4};
	struct mac_run here = {secret, false}, there = {third, false};
	pthread_t t;

	mac_calls(&here);
	CHECK(here.same, "kept context equals a fresh HMAC, across secrets");
	CHECK(pthread_create(&t, NULL, mac_calls, &there) == 0 &&
	          pthread_join(t, NULL) == 0 && there.same,
	      "the same on another thread, with its own secret");
	mac_calls(&here);
	CHECK(here.same, "this thread's context after the other's");
}

int
main(void)
{
	test_keyed_mac();
	struct vault *v = vault_new();
	const struct vault_entry *e =
	    vault_put(v, secret, "alice", "EMAIL", "john@example.com", 16);
	const struct vault_entry *n =
	    vault_put(v, secret, "alice", "PERSON", "Ana \"Q\" Ruiz", 12);
	char ph[64], low[64], buf1[256], want1[256];

	CHECK(e && n && e != n, "vault entries");
	CHECK(vault_put(v, secret, "alice", "EMAIL", "john@example.com", 16) == e,
	      "same value, same placeholder");
	struct vault *v2 = vault_new();
	const struct vault_entry *e2 =
	    vault_put(v2, secret, "alice", "EMAIL", "john@example.com", 16);
	CHECK(e2 && strcmp(e2->core, e->core) == 0,
	      "stable across requests of the same key");
	vault_free(v2);
	v2 = vault_new();
	const struct vault_entry *e3 =
	    vault_put(v2, secret, "bob", "EMAIL", "john@example.com", 16);
	CHECK(e3 && strcmp(e3->core, e->core) != 0, "differs across keys");
	vault_free(v2);

	snprintf(ph, sizeof(ph), "<%s>", e->core);
	for (size_t i = 0; i < strlen(ph); i++)
		low[i] = (char)((ph[i] >= 'A' && ph[i] <= 'Z') ? ph[i] + 32 : ph[i]);
	low[strlen(ph)] = '\0';

#define SHAPE(fmt, wantfmt)                                                    \
	do {                                                                   \
		snprintf(buf1, sizeof(buf1), fmt, e->core);                    \
		snprintf(want1, sizeof(want1), wantfmt, "john@example.com");   \
		CHECK(text_is(v, buf1, want1), "shape %s", buf1);              \
	} while (0)
	SHAPE("write to <%s> now", "write to %s now");
	SHAPE("**<%s>**", "**%s**");
	SHAPE("`%s`", "`%s`");
	SHAPE("bare %s.", "bare %s.");
	SHAPE("&lt;%s&gt;", "%s");
	SHAPE("(%s)", "(%s)");
	CHECK(text_is(v, low, "john@example.com"), "lower case");
	{
		char esc[80];
		snprintf(esc, sizeof(esc), "%s", e->core);
		char *us = strchr(esc, '_');
		char md[96];
		snprintf(md, sizeof(md), "%.*s\\%s", (int)(us - esc), esc, us);
		CHECK(text_is(v, md, "john@example.com"), "markdown-escaped _: %s",
		      md);
	}
	CHECK(text_is(v, "<EMAIL_000000>", "<EMAIL_000000>"),
	      "unknown placeholder stays");
	snprintf(buf1, sizeof(buf1), "X%s", e->core);
	CHECK(text_is(v, buf1, buf1), "inside a word stays");

	/* JSON-in-string (tool arguments): the value is escaped. */
	{
		struct restore *r = restore_new(v, RESTORE_WHOLE, 1 << 20);
		struct buf out;
		char body[512];
		snprintf(body, sizeof(body),
		         "{\"choices\":[{\"message\":{\"content\":\"Hi <%s>\","
		         "\"tool_calls\":[{\"function\":{\"arguments\":"
		         "\"{\\\"who\\\":\\\"<%s>\\\"}\"}}]}}],\"temperature\":0.7}",
		         n->core, n->core);
		buf_init(&out, 1 << 20);
		bool ok = restore_feed(r, body, strlen(body), &out) &&
		          restore_finish(r, &out);
		json_t *j = ok ? json_loadb(out.p, out.len, 0, NULL) : NULL;
		json_t *msg = json_object_get(
		    json_object_get(json_array_get(json_object_get(j, "choices"), 0),
		                    "message"), "content");
		json_t *args = json_object_get(
		    json_object_get(json_array_get(
		        json_object_get(json_object_get(json_array_get(
		            json_object_get(j, "choices"), 0), "message"),
		            "tool_calls"), 0), "function"), "arguments");
		json_t *inner = json_is_string(args)
		                    ? json_loads(json_string_value(args), 0, NULL)
		                    : NULL;
		CHECK(j != NULL, "whole answer stays valid JSON");
		CHECK(json_is_string(msg) &&
		      strcmp(json_string_value(msg), "Hi Ana \"Q\" Ruiz") == 0,
		      "content restored");
		CHECK(inner && strcmp(json_string_value(json_object_get(inner, "who")),
		                      "Ana \"Q\" Ruiz") == 0,
		      "arguments stay valid JSON with the value inside");
		CHECK(out.p && strstr(out.p, "\"temperature\":0.7") != NULL,
		      "numbers untouched");
		json_decref(inner);
		json_decref(j);
		buf_free(&out);
		restore_free(r);
	}

	test_stream_splits(v, ph, "john@example.com");
	test_stream_splits(v, low, "john@example.com");
	test_branches(v, e->core, "john@example.com");
	vault_free(v);
	return harness_done();
}
