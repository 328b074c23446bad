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

int
main(void)
{
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
	vault_free(v);
	return harness_done();
}
