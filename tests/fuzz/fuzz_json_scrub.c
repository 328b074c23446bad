/*
 * fuzz_json_scrub.c - a request body through the JSON rewriter and the
 * scrubber, with the repository's own rules (loaded once) and a vault,
 * as request.c scrubs a body. The driver puts a known e-mail address, set
 * off by spaces, at the start of the first string value of the input
 * when it has one. Beyond "no crash, no leak":
 *  - the rewriter accepts exactly what the validator accepts;
 *  - when the input is valid JSON and the scrub ran to the end, the
 *    output is valid JSON, is the input byte for byte when nothing was
 *    replaced, and never contains the seeded address.
 * An input that itself spells out the address (raw or escaped) is not
 * held to the last rule: the fuzzer may hide it where no rule looks.
 */
#include "fuzz.h"

#include "buf.h"
#include "json.h"
#include "rules.h"
#include "scrub.h"
#include "vault.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifndef SCRIM_SOURCE_DIR
#error "SCRIM_SOURCE_DIR must name the source tree (CMakeLists.txt sets it)"
#endif

#define SEED "fuzz.seed@example.com"
#define SEED_PADDED " " SEED " "
#define MAX_STRING (1024 * 1024)

static struct ruleset *rules;

struct scrub_arg {
	struct scrub_ctx ctx;
	struct scrub_hits hits;
	char err[256];
};

/* As request.c's scrub_cb, without its skipped fields. */
static enum json_cb_result
scrub_cb(void *arg, const struct json_path *p, const char *s, size_t n,
         struct buf *repl)
{
	struct scrub_arg *a = arg;

	(void)p;
	if (n == 0)
		return JSON_KEEP;
	if (scrub_find(rules, s, n, &a->hits, a->err, sizeof(a->err)) != 0)
		return JSON_CB_ERROR;
	if (a->hits.n == 0)
		return JSON_KEEP;
	if (!scrub_apply(&a->ctx, s, n, &a->hits, repl))
		return JSON_CB_ERROR;
	return JSON_REPLACE;
}

static enum json_cb_result
seed_cb(void *arg, const struct json_path *p, const char *s, size_t n,
        struct buf *repl)
{
	bool *seen = arg;

	(void)p;
	(void)repl;
	if (memmem(s, n, SEED, strlen(SEED)) != NULL)
		*seen = true;
	return JSON_KEEP;
}

/*
 * Offset just inside the opening quote of the first string that is not
 * an object key, or SIZE_MAX. Meaningful for valid JSON, where a quote
 * outside a string always opens one.
 */
static size_t
first_value_string(const char *s, size_t n)
{
	size_t i = 0;

	while (i < n) {
		size_t start, j;

		if (s[i] != '"') {
			i++;
			continue;
		}
		start = i + 1;
		for (j = start; j < n && s[j] != '"'; j++)
			if (s[j] == '\\')
				j++;
		if (j >= n)
			return SIZE_MAX;
		j++;
		while (j < n && (s[j] == ' ' || s[j] == '\t' || s[j] == '\r' ||
		                 s[j] == '\n'))
			j++;
		if (j >= n || s[j] != ':')
			return start;
		i = j;
	}
	return SIZE_MAX;
}

int
LLVMFuzzerInitialize(int *argc, char ***argv)
{
	struct scrub_hits h;
	char err[256];
	const char *probe = "write to " SEED " today";
	bool found = false;

	(void)argc;
	(void)argv;
	fuzz_quiet();
	rules = rules_load(SCRIM_SOURCE_DIR "/rules", true);
	if (rules == NULL) {
		fprintf(stderr, "fuzz_json_scrub: cannot load %s/rules\n",
		        SCRIM_SOURCE_DIR);
		abort();
	}
	/* The oracle means something only if the rules find the seed. */
	scrub_hits_init(&h);
	if (scrub_find(rules, probe, strlen(probe), &h, err, sizeof(err)) != 0) {
		fprintf(stderr, "fuzz_json_scrub: scrub_find: %s\n", err);
		abort();
	}
	for (size_t i = 0; i < h.n; i++)
		found = found || (h.v[i].start == 9 && h.v[i].end == 9 + strlen(SEED));
	scrub_hits_free(&h);
	if (!found) {
		fprintf(stderr, "fuzz_json_scrub: the rules do not find %s\n", SEED);
		abort();
	}
	return 0;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const char *in = (const char *)data;
	struct scrub_arg a;
	struct buf out;
	enum json_result valid, jr;
	size_t at, n, replaced = 0, pos = 0;
	bool spelled = false, seeded;
	char *doc;

	/* The input's own copy of the address, raw or decoded. */
	if (memmem(in, size, SEED, strlen(SEED)) != NULL)
		spelled = true;
	else
		(void)json_walk(in, size, seed_cb, NULL, &spelled, MAX_STRING,
		                &pos);

	at = first_value_string(in, size);
	seeded = at != SIZE_MAX;
	n = size + (seeded ? strlen(SEED_PADDED) : 0);
	doc = malloc(n ? n : 1);
	FUZZ_CHECK(doc != NULL, "malloc %zu", n);
	if (seeded) {
		memcpy(doc, in, at);
		memcpy(doc + at, SEED_PADDED, strlen(SEED_PADDED));
		memcpy(doc + at + strlen(SEED_PADDED), in + at, size - at);
	} else if (size > 0) {
		memcpy(doc, in, size);
	}

	valid = json_walk(doc, n, NULL, NULL, NULL, MAX_STRING, &pos);
	if (seeded && json_walk(in, size, NULL, NULL, NULL, MAX_STRING, &pos) ==
	                  JSON_OK)
		FUZZ_CHECK(valid == JSON_OK, "seeding made valid JSON invalid "
		           "(result %d at %zu)", (int)valid, pos);

	memset(&a, 0, sizeof(a));
	memset(a.ctx.secret, 0x5c, sizeof(a.ctx.secret));
	a.ctx.key_id = "fuzz";
	a.ctx.vault = vault_new();
	scrub_hits_init(&a.hits);
	buf_init(&out, 4 * n + 65536);
	jr = json_rewrite(doc, n, scrub_cb, &a, &out, MAX_STRING, &replaced,
	                  &pos);

	if (valid != JSON_OK)
		FUZZ_CHECK(jr != JSON_OK, "rewriter accepted what the validator "
		           "refused (%d)", (int)valid);
	else
		FUZZ_CHECK(jr != JSON_INVALID && jr != JSON_TOO_DEEP,
		           "rewriter refused valid JSON (%d at %zu)", (int)jr, pos);
	if (jr == JSON_OK) {
		enum json_result again = json_walk(out.p ? out.p : "", out.len, NULL,
		                                   NULL, NULL, MAX_STRING, &pos);
		FUZZ_CHECK(again == JSON_OK, "output is not valid JSON (%d at %zu)",
		           (int)again, pos);
		if (replaced == 0)
			FUZZ_CHECK(out.len == n &&
			           (n == 0 || memcmp(out.p, doc, n) == 0),
			           "nothing replaced, yet the output differs");
		if (seeded && !spelled && a.ctx.stats.block == NULL &&
		    a.ctx.stats.local == NULL)
			FUZZ_CHECK(out.p == NULL ||
			           memmem(out.p, out.len, SEED, strlen(SEED)) == NULL,
			           "the seeded address went out unscrubbed");
	}

	buf_wipe(&out);
	scrub_hits_free(&a.hits);
	vault_free(a.ctx.vault);
	free(doc);
	return 0;
}
