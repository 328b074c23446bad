/*
 * test_scrub.c - the scrubber with the repository's own rules: every
 * rule's examples (RELIABILITY L1 asks for at least 5 positive and 5
 * negative cases per rule), every action as scrub_apply writes it,
 * overrides by type and by rule id glob, overlaps, and UTF-8 validation.
 */
#include "buf.h"
#include "harness.h"
#include "rules.h"
#include "scrub.h"
#include "vault.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifndef SCRIM_SOURCE_DIR
#error "SCRIM_SOURCE_DIR must name the source tree (CMakeLists.txt sets it)"
#endif

static struct ruleset *rules;

/* Scrub s with ctx; returns the output (static, overwritten per call) or
 * NULL when scrub_find or scrub_apply failed. */
static const char *
scrub(struct scrub_ctx *ctx, const char *s)
{
	static char res[1024];
	struct scrub_hits h;
	struct buf out;
	char err[256];
	bool ok;

	scrub_hits_init(&h);
	buf_init(&out, 1 << 16);
	ok = scrub_find(rules, s, strlen(s), &h, err, sizeof(err)) == 0 &&
	     scrub_apply(ctx, s, strlen(s), &h, &out);
	if (ok)
		snprintf(res, sizeof(res), "%.*s", (int)out.len, out.p ? out.p : "");
	scrub_hits_free(&h);
	buf_free(&out);
	return ok ? res : NULL;
}

/* RELIABILITY L1: at least this many match and nomatch examples per
 * shipped rule. */
#define MIN_EXAMPLES 5

static void
test_examples(void)
{
	CHECK(rules_check_examples(rules, true) == 0,
	      "every rule finds its match examples and none of its nomatch");
	for (size_t i = 0; i < rules->nrules; i++) {
		const struct rule *r = &rules->rules[i];
		size_t pos = 0, neg = 0;
		for (size_t k = 0; k < r->nexamples; k++)
			r->examples[k].positive ? pos++ : neg++;
		CHECK(pos >= MIN_EXAMPLES && neg >= MIN_EXAMPLES,
		      "rule %s: %zu match, %zu nomatch examples (at least %d "
		      "of each)", r->id, pos, neg, MIN_EXAMPLES);
	}
}

static void
test_actions(void)
{
	static const char text[] = "mail jane.doe@example.com now";
	static const struct {
		const char *match;
		enum scrub_action act;
		const char *want; /* NULL: checked below */
	} cases[] = {
		{"EMAIL", ACT_REDACT, "mail [EMAIL] now"},
		{"contact.*", ACT_MASK, "mail ****.***@******e.com now"},
		{"EMAIL", ACT_ALLOW, "mail jane.doe@example.com now"},
		{"contact.email", ACT_HASH, NULL},
		{"EMAIL", ACT_TOKENIZE, NULL},
		{"EMAIL", ACT_BLOCK, NULL},
		{"EMAIL", ACT_LOCAL, NULL},
	};
	char got[1024];

	for (size_t i = 0; i < SCRIM_ARRAY_LEN(cases); i++) {
		struct scrub_override ov = {cases[i].match, cases[i].act};
		struct scrub_ctx ctx;
		const char *o;

		memset(&ctx, 0, sizeof(ctx));
		memset(ctx.secret, 7, sizeof(ctx.secret));
		ctx.key_id = "k";
		ctx.vault = vault_new();
		ctx.overrides = &ov;
		ctx.noverrides = 1;
		o = scrub(&ctx, text);
		CHECK(o != NULL, "action %d runs", (int)cases[i].act);
		if (o == NULL) {
			vault_free(ctx.vault);
			continue;
		}
		snprintf(got, sizeof(got), "%s", o);
		if (cases[i].want != NULL)
			CHECK(strcmp(got, cases[i].want) == 0, "action %d: %s",
			      (int)cases[i].act, got);
		else if (cases[i].act == ACT_HASH)
			CHECK(strncmp(got, "mail EMAIL-", 11) == 0 &&
			          strlen(got) == strlen("mail EMAIL-") + 12 + 4 &&
			          strcmp(scrub(&ctx, text), got) == 0,
			      "hash is stable: %s", got);
		else
			CHECK(strncmp(got, "mail <EMAIL_", 12) == 0 &&
			          strstr(got, "> now") != NULL,
			      "placeholder: %s", got);
		CHECK(ctx.stats.by_action[cases[i].act] >= 1, "counted");
		if (cases[i].act == ACT_BLOCK)
			CHECK(ctx.stats.block != NULL, "block noted");
		if (cases[i].act == ACT_LOCAL)
			CHECK(ctx.stats.local != NULL, "local noted");
		if (cases[i].act == ACT_ALLOW)
			CHECK(ctx.stats.allowed == 1 && ctx.stats.replaced == 0,
			      "allowed, not replaced");
		else
			CHECK(ctx.stats.replaced >= 1 && ctx.stats.ntypes == 1,
			      "action %d replaced once (%u, %zu types)",
			      (int)cases[i].act, ctx.stats.replaced, ctx.stats.ntypes);
		vault_free(ctx.vault);
	}

	/* Tokenize without a vault: nothing could restore it, so redact. */
	{
		struct scrub_ctx ctx;
		memset(&ctx, 0, sizeof(ctx));
		CHECK(scrub(&ctx, text) != NULL &&
		          strcmp(scrub(&ctx, text), "mail [EMAIL] now") == 0,
		      "tokenize without a vault redacts");
	}
	/* Mask of short and non-ASCII values. */
	{
		struct scrub_override ov = {"EMAIL", ACT_MASK};
		struct scrub_ctx ctx;
		const char *o;
		memset(&ctx, 0, sizeof(ctx));
		ctx.overrides = &ov;
		ctx.noverrides = 1;
		o = scrub(&ctx, "an abcd@efgh.io here");
		CHECK(o != NULL && strcmp(o, "an ****@**gh.io here") == 0,
		      "mask keeps the last 4: %s", o ? o : "(failed)");
		o = scrub(&ctx, "an ab@cd.io here");
		CHECK(o != NULL && strcmp(o, "an **@*d.io here") == 0,
		      "mask keeps at most half: %s", o ? o : "(failed)");
		o = scrub(&ctx, "an a@b.io here");
		CHECK(o != NULL && strcmp(o, "an *@*.io here") == 0,
		      "a short value is never left whole: %s", o ? o : "(failed)");
	}
}

static void
test_find(void)
{
	struct scrub_ctx ctx;
	const char *o;

	memset(&ctx, 0, sizeof(ctx));
	/* Several types in one string, in order, the rest untouched. */
	o = scrub(&ctx, "a@b.io, card 4111 1111 1111 1111, ip 192.168.1.10, "
	                "IBAN DE89 3704 0044 0532 0130 00, call +1 415 555 2671");
	CHECK(o != NULL && strstr(o, "a@b.io") == NULL &&
	          strstr(o, "4111") == NULL && strstr(o, "DE89") == NULL &&
	          strstr(o, "555 2671") == NULL && strncmp(o, "[EMAIL], card ", 14) == 0,
	      "mixed: %s", o ? o : "(failed)");
	CHECK(ctx.stats.replaced >= 4, "replaced %u", ctx.stats.replaced);
	/* Nothing to find: the same bytes. */
	o = scrub(&ctx, "just prose, 12 apples and 3 pears @ noon");
	CHECK(o != NULL && strcmp(o, "just prose, 12 apples and 3 pears @ noon") == 0,
	      "prose unchanged: %s", o ? o : "(failed)");
	o = scrub(&ctx, "");
	CHECK(o != NULL && *o == '\0', "empty");
	/* Many hits: the hit array grows. */
	{
		char big[8192];
		size_t n = 0;
		for (int i = 0; i < 200; i++)
			n += (size_t)snprintf(big + n, sizeof(big) - n, "u%d@x.io ", i);
		o = scrub(&ctx, big);
		CHECK(o != NULL && strstr(o, "@x.io") == NULL, "200 addresses");
	}
}

static void
test_utf8(void)
{
	static const struct {
		const char *s;
		bool ok;
	} cases[] = {
		{"plain", true},
		{"\xc3\xa9", true},
		{"\xe2\x82\xac", true},
		{"\xf0\x9f\x98\x80", true},
		{"\xf4\x8f\xbf\xbf", true},
		{"\xe0\xa0\x80", true},
		{"\xed\x9f\xbf", true},
		{"\xc1\xbf", false},         /* overlong */
		{"\xe0\x9f\xbf", false},     /* overlong */
		{"\xed\xa0\x80", false},     /* surrogate */
		{"\xf0\x8f\xbf\xbf", false}, /* overlong */
		{"\xf4\x90\x80\x80", false}, /* past U+10FFFF */
		{"\xf5\x80\x80\x80", false},
		{"\x80", false},
		{"\xc3", false},             /* truncated */
		{"\xe2\x82", false},
		{"\xe2\x28\xa1", false},
		{"\xf0\x9f\x98\x28", false},
	};

	for (size_t i = 0; i < SCRIM_ARRAY_LEN(cases); i++)
		CHECK(scrub_utf8_valid(cases[i].s, strlen(cases[i].s)) ==
		          cases[i].ok, "utf8 case %zu", i);
	CHECK(scrub_utf8_valid("a\0b", 3), "NUL is valid UTF-8");
}

int
main(void)
{
	rules = rules_load(SCRIM_SOURCE_DIR "/rules", true);
	CHECK(rules != NULL, "the repository's rules load");
	if (rules == NULL)
		return harness_done();
	test_examples();
	test_actions();
	test_find();
	test_utf8();
	rules_unref(rules);
	return harness_done();
}
