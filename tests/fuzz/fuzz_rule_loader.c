/*
 * fuzz_rule_loader.c - a rule pack as an operator might write it. The
 * input becomes the only .rules file of a private folder and is loaded;
 * a pack that loads runs its own examples, then the whole engine over a
 * fixed 20 KB text of letters and digits runs, and its hits are applied.
 * Beyond "no crash, no leak":
 *  - scrub_find returns, within the ReDoS budget: a rule that runs away
 *    must stop at its PCRE2 limits, so libFuzzer's -timeout (1 s in
 *    scripts/fuzz.sh) is the oracle for hangs;
 *  - it succeeds with hits that are in bounds, sorted and disjoint, or
 *    fails with a message, never silently.
 */
#include "fuzz.h"

#include "buf.h"
#include "rules.h"
#include "scrub.h"
#include "vault.h"

#include <stdlib.h>
#include <string.h>

#define TEXT_LEN (20 * 1024)

static char text[TEXT_LEN + 1];

/* Runs of 'a' and of digits, of lengths 1 to 23, so every digit anchor
 * (a run of at least N digits) and token anchor has something to see. */
static void
make_text(void)
{
	size_t i = 0;
	unsigned k = 0;

	while (i < TEXT_LEN) {
		size_t run = (k * 7) % 23 + 1;
		for (size_t j = 0; j < run && i < TEXT_LEN; j++, i++)
			text[i] = k % 2 ? (char)('0' + (i * 3 + k) % 10) : 'a';
		k++;
	}
	text[TEXT_LEN] = '\0';
}

static void
check_hits(const struct ruleset *rs, const struct scrub_hits *h)
{
	for (size_t i = 0; i < h->n; i++) {
		const struct scrub_hit *x = &h->v[i];
		FUZZ_CHECK(x->start < x->end && x->end <= TEXT_LEN,
		           "hit %zu at %zu-%zu", i, x->start, x->end);
		FUZZ_CHECK(x->rule >= rs->rules && x->rule < rs->rules + rs->nrules,
		           "hit %zu names no rule of the pack", i);
		if (i > 0)
			FUZZ_CHECK(h->v[i - 1].end <= x->start,
			           "hits %zu and %zu overlap or are out of order",
			           i - 1, i);
	}
}

int
LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc;
	(void)argv;
	fuzz_quiet();
	make_text();
	(void)fuzz_tmpdir();
	return 0;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct ruleset *rs;
	struct scrub_hits hits;
	struct scrub_ctx ctx;
	struct buf out;
	char err[256];
	int rc;

	(void)fuzz_write_file("fuzz.rules", data, size);
	rs = rules_load(fuzz_tmpdir(), false);
	if (rs == NULL)
		return 0;
	(void)rules_check_examples(rs, false);

	scrub_hits_init(&hits);
	err[0] = '\0';
	rc = scrub_find(rs, text, TEXT_LEN, &hits, err, sizeof(err));
	FUZZ_CHECK(rc == 0 || rc == -1, "scrub_find returned %d", rc);
	if (rc != 0) {
		FUZZ_CHECK(err[0] != '\0', "scrub_find failed without a message");
	} else {
		check_hits(rs, &hits);
		memset(&ctx, 0, sizeof(ctx));
		memset(ctx.secret, 0xa5, sizeof(ctx.secret));
		ctx.key_id = "fuzz";
		ctx.vault = vault_new();
		buf_init(&out, 4 * TEXT_LEN);
		(void)scrub_apply(&ctx, text, TEXT_LEN, &hits, &out);
		buf_wipe(&out);
		vault_free(ctx.vault);
	}
	scrub_hits_free(&hits);
	rules_unref(rs);
	return 0;
}
