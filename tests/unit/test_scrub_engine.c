/*
 * test_scrub_engine.c - the detection engine of scrub.c with small rule
 * packs written for each case: the exact spans found and by which rule,
 * overlap resolution (same type union; then allow, score, length,
 * position), context and negative words (whole words only),
 * context_required, validators, value groups and empty matches, the
 * windows of every anchor kind (out of order, merged, grown; digit runs
 * and their separators; token lengths that are powers of two or past a
 * block; more than 16 spot key bytes), the scalar tails of the vector
 * scans, UTF-8 validation (every invalid class at every offset of the
 * vector and word paths, NUL bytes), the fail-closed errors (a ReDoS
 * rule hitting PCRE2's match limit, with and without the JIT; the hit
 * cap), scrub_find_rule, and scrub_apply's actions, overrides, counts
 * and output cap.
 */
#include "buf.h"
#include "harness.h"
#include "rules.h"
#include "scrub.h"
#include "vault.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static char dir[64];

static struct ruleset *
load(const char *text)
{
	char path[128];
	FILE *f;

	snprintf(path, sizeof(path), "%s/a.rules", dir);
	f = fopen(path, "w");
	if (f == NULL)
		abort();
	fputs(text, f);
	fclose(f);
	return rules_load(dir, true);
}

static void
hits_str(const struct scrub_hits *h, char *res, size_t cap)
{
	size_t at = 0;

	res[0] = '\0';
	for (size_t i = 0; i < h->n && at + 64 < cap; i++)
		at += (size_t)snprintf(res + at, cap - at, "%zu-%zu:%s;",
		                       h->v[i].start, h->v[i].end, h->v[i].rule->id);
}

/* What scrub_find finds in s[0..n), as "start-end:rule;" (static), or
 * "error: ..." when it failed. */
static const char *
spans(struct ruleset *rs, const char *s, size_t n)
{
	static char res[8192];
	struct scrub_hits h;
	char err[256];

	scrub_hits_init(&h);
	err[0] = '\0';
	if (scrub_find(rs, s, n, &h, err, sizeof(err)) != 0)
		snprintf(res, sizeof(res), "error: %s", err);
	else
		hits_str(&h, res, sizeof(res));
	scrub_hits_free(&h);
	return res;
}

static const char *
spans0(struct ruleset *rs, const char *s)
{
	return spans(rs, s, strlen(s));
}

/* scrub_find_rule for the rule named id. */
static const char *
rule_spans(struct ruleset *rs, const char *id, const char *s)
{
	static char res[4096];
	struct scrub_hits h;
	const struct rule *r = NULL;
	char err[256];

	for (size_t i = 0; i < rs->nrules; i++)
		if (strcmp(rs->rules[i].id, id) == 0)
			r = &rs->rules[i];
	if (r == NULL)
		return "no such rule";
	scrub_hits_init(&h);
	if (scrub_find_rule(rs, r, s, strlen(s), &h, err, sizeof(err)) != 0)
		snprintf(res, sizeof(res), "error: %s", err);
	else
		hits_str(&h, res, sizeof(res));
	scrub_hits_free(&h);
	return res;
}

#define EXPECT(rs, text, want)                                                 \
	do {                                                                   \
		const char *got_ = spans0((rs), (text));                      \
		CHECK(strcmp(got_, (want)) == 0, "%s: got \"%s\", want \"%s\"", \
		      (text), got_, (want));                                   \
	} while (0)

/* ------------------------- overlaps ---------------------------------- */

static void
test_union(void)
{
	struct ruleset *rs = load(
	    /* Same type, same action, overlapping: one entity, the union,
	     * credited to the rule with the higher score. */
	    "[rule u.a]\ntype = U\npattern = \\bab\\d+\nscore = 0.7\n"
	    "match = [[ab12]]\n"
	    "[rule u.b]\ntype = U\npattern = \\d+cd\\b\nscore = 0.9\n"
	    "match = [[12cd]]\n"
	    /* Contained, lower score: the first stays as it is. */
	    "[rule u.c]\ntype = V\npattern = \\bef\\d+gh\\b\nscore = 0.9\n"
	    "match = [[ef12gh]]\n"
	    "[rule u.d]\ntype = V\npattern = (?<=ef)\\d+\nscore = 0.6\n"
	    "match = ef[[12]]gh\n"
	    /* The later rule finds the earlier span. */
	    "[rule u.a2]\ntype = Y\npattern = \\d+zz\\b\nscore = 0.8\n"
	    "match = [[12zz]]\n"
	    "[rule u.b2]\ntype = Y\npattern = \\byy\\d+\nscore = 0.7\n"
	    "match = [[yy12]]\n"
	    /* Same type, other action: still one entity, under allow. */
	    "[rule u.e]\ntype = W\npattern = \\bmn\\d+\naction = redact\n"
	    "match = [[mn12]]\n"
	    "[rule u.f]\ntype = W\npattern = \\d+op\\b\naction = allow\n"
	    "score = 0.6\nmatch = [[12op]]\n"
	    /* Same type, two actions that change the text: one entity,
	     * under the better score; no byte of it left behind. */
	    "[rule u.g]\ntype = Z\npattern = \\bqr\\d+\naction = redact\n"
	    "score = 0.9\nmatch = [[qr12]]\n"
	    "[rule u.h]\ntype = Z\npattern = \\d+st\\b\naction = tokenize\n"
	    "score = 0.7\nmatch = [[12st]]\n");

	CHECK(rs != NULL, "union rules load");
	if (rs == NULL)
		return;
	EXPECT(rs, "x ab12cd y", "2-8:u.b;");
	EXPECT(rs, "x ef12gh y", "2-8:u.c;");
	EXPECT(rs, "x mn12op y", "2-8:u.f;");
	EXPECT(rs, "x qr12st y", "2-8:u.g;");
	EXPECT(rs, "x yy12zz y", "2-8:u.a2;");
	/* Apart, they stay apart. */
	EXPECT(rs, "ab1 and 2cd", "0-3:u.a;8-11:u.b;");
	rules_unref(rs);
}

static void
test_priority(void)
{
	struct ruleset *rs = load(
	    "[rule p.allow]\ntype = ALLOWED\npattern = \\bACME-\\d+\\b\n"
	    "action = allow\nscore = 0.6\nmatch = [[ACME-1]]\n"
	    "[rule p.allow2]\ntype = ZALLOW\npattern = \\bZED-\\d+\\b\n"
	    "action = allow\nscore = 0.6\nmatch = [[ZED-1]]\n"
	    "[rule p.num]\ntype = NUM\npattern = \\b\\d{5,}\\b\nscore = 0.9\n"
	    "action = redact\nmatch = [[12345]]\n"
	    /* score */
	    "[rule p.hi]\ntype = HI\npattern = \\bX\\d+\nscore = 0.9\n"
	    "match = [[X1]]\n"
	    "[rule p.lo]\ntype = LO\npattern = \\d+Y\\b\nscore = 0.6\n"
	    "match = [[1Y]]\n"
	    /* length, the longer first or second */
	    "[rule p.long]\ntype = L\npattern = \\bQ\\d+\nscore = 0.7\n"
	    "match = [[Q1]]\n"
	    "[rule p.short]\ntype = S\npattern = \\d\\dR\\b\nscore = 0.7\n"
	    "match = [[12R]]\n"
	    "[rule p.s2]\ntype = A2\npattern = \\bW\\d\\d\nscore = 0.7\n"
	    "match = [[W12]]\n"
	    "[rule p.l2]\ntype = B2\npattern = \\d+V\\b\nscore = 0.7\n"
	    "match = [[12V]]\n"
	    /* position: same score and length, the earlier wins */
	    "[rule p.pa]\ntype = PB\npattern = \\bK\\d\\d\nscore = 0.7\n"
	    "match = [[K12]]\n"
	    "[rule p.pb]\ntype = PA\npattern = \\d\\dJ\\b\nscore = 0.7\n"
	    "match = [[12J]]\n"
	    /* a full tie: the rule id decides */
	    "[rule p.t2]\ntype = T1\npattern = \\bTIE\\d\nscore = 0.7\n"
	    "match = [[TIE1]]\n"
	    "[rule p.t1]\ntype = T2\npattern = TIE\\d\\b\nscore = 0.7\n"
	    "match = [[TIE1]]\n");

	CHECK(rs != NULL, "priority rules load");
	if (rs == NULL)
		return;
	/* An allow span protects its bytes from a higher score. */
	EXPECT(rs, "order ACME-12345 and 67890", "6-16:p.allow;21-26:p.num;");
	EXPECT(rs, "ZED-98765 ACME-12345", "0-9:p.allow2;10-20:p.allow;");
	EXPECT(rs, "id X123Y", "3-7:p.hi;");
	EXPECT(rs, "id Q1234R", "3-8:p.long;");
	EXPECT(rs, "id W1234V", "4-9:p.l2;");
	EXPECT(rs, "id K12J", "3-6:p.pa;");
	EXPECT(rs, "id TIE5", "3-7:p.t1;");
	/* All at once, each in its place. */
	EXPECT(rs, "X123Y Q1234R W1234V K12J TIE5 ACME-55555",
	       "0-4:p.hi;6-11:p.long;14-19:p.l2;20-23:p.pa;25-29:p.t1;"
	       "30-40:p.allow;");
	rules_unref(rs);
}

/* ------------------------- scoring ----------------------------------- */

static void
test_context(void)
{
	struct ruleset *rs = load(
	    "[rule c.ssn]\ntype = SSN\npattern = \\b\\d{3}-\\d{2}-\\d{4}\\b\n"
	    "anchor = digits 3\nscore = 0.4\ncontext = ssn|#acct|no.\n"
	    "negative = example\ncontext_window = 20\n"
	    "match = ssn [[123-45-6789]]\n"
	    "[rule c.req]\ntype = REQ\npattern = \\bR\\d{6}\\b\n"
	    "anchor = digits 6\nscore = 0.9\ncontext = ref\n"
	    "context_required = yes\nmatch = ref [[R123456]]\n"
	    "[rule c.top]\ntype = TOP\npattern = \\bT\\d{6}\\b\n"
	    "anchor = digits 6\nscore = 0.9\ncontext = top\n"
	    "match = top [[T123456]]\n");
	struct scrub_hits h;
	char err[256];
	const char *s;

	CHECK(rs != NULL, "context rules load");
	if (rs == NULL)
		return;
	/* Below the threshold alone, above with a context word. */
	EXPECT(rs, "is 123-45-6789", "");
	EXPECT(rs, "ssn 123-45-6789", "4-15:c.ssn;");
	EXPECT(rs, "SSN: 123-45-6789", "5-16:c.ssn;");
	EXPECT(rs, "123-45-6789 (ssn)", "0-11:c.ssn;");
	/* Whole words only: not inside a longer word ... */
	EXPECT(rs, "ssns 123-45-6789", "");
	EXPECT(rs, "xssn 123-45-6789", "");
	EXPECT(rs, "ssn9 123-45-6789", "");
	EXPECT(rs, "ssnX 123-45-6789", "");
	EXPECT(rs, "Xssn 123-45-6789", "");
	/* ... not cut short at the end of the text ("xssn", then "sn") ... */
	EXPECT(rs, "123-45-6789 xssn", "");
	/* ... but '_' and other scripts are boundaries. */
	EXPECT(rs, "ssn_no 123-45-6789", "7-18:c.ssn;");
	EXPECT(rs, "\xc3\xa9ssn\xc3\xa9 123-45-6789", "8-19:c.ssn;");
	EXPECT(rs, "{ssn} 123-45-6789", "6-17:c.ssn;");
	EXPECT(rs, "~ssn~ 123-45-6789", "6-17:c.ssn;");
	/* Words that begin or end with punctuation need no boundary there. */
	EXPECT(rs, "x#acct 123-45-6789", "7-18:c.ssn;");
	EXPECT(rs, "acct 123-45-6789", "");
	EXPECT(rs, "no.123-45-6789", "3-14:c.ssn;");
	EXPECT(rs, "no 123-45-6789", "");
	/* Only within the window: 20 bytes before, 24 after. */
	EXPECT(rs, "ssn ................ 123-45-6789", "");
	EXPECT(rs, "x ssn ............... 123-45-6789", "22-33:c.ssn;");
	EXPECT(rs, "123-45-6789 .................... ssn", "");
	EXPECT(rs, "123-45-6789 ................... ssn", "0-11:c.ssn;");
	/* A negative word lowers it back below the threshold, whole words
	 * only. */
	EXPECT(rs, "ssn example 123-45-6789", "");
	EXPECT(rs, "ssn examples 123-45-6789", "13-24:c.ssn;");
	/* context_required: no context, no hit, whatever the score. */
	EXPECT(rs, "is R123456", "");
	EXPECT(rs, "ref R123456", "4-11:c.req;");
	EXPECT(rs, "refs R123456", "");

	/* The bonus is capped at 1. */
	s = "top T123456 and T654321";
	scrub_hits_init(&h);
	CHECK(scrub_find(rs, s, strlen(s), &h, err, sizeof(err)) == 0 &&
	          h.n == 2 && h.v[0].score == 1.0 && h.v[1].score == 1.0,
	      "scores capped at 1 (%zu hits)", h.n);
	s = "ssn 123-45-6789";
	CHECK(scrub_find(rs, s, strlen(s), &h, err, sizeof(err)) == 0 &&
	          h.n == 1 && h.v[0].score > 0.59 && h.v[0].score < 0.61,
	      "0.4 plus the context bonus");
	scrub_hits_free(&h);
	rules_unref(rs);
}

static void
test_validator_and_groups(void)
{
	struct ruleset *rs = load(
	    "[rule v.card]\ntype = CARD\n"
	    "pattern = \\b\\d{4}(?: \\d{4}){3}\\b\nanchor = digits 16\n"
	    "validator = luhn\nmatch = [[4111 1111 1111 1111]]\n"
	    /* The value group: whole match when it did not take part. */
	    "[rule v.grp]\ntype = GRP\n"
	    "pattern = \\bid (?:(\\d+)x|(?<v>Z\\d+))\nanchor = words id\n"
	    "window = 0 16\nmatch = id [[Z12]]\n"
	    "[rule v.unset]\ntype = UNSET\n"
	    "pattern = \\b(?:(?<v>a\\d)|b\\d)(y)\nanchor = char y\n"
	    "window = 4 0\nmatch = [[a1]]y\n");

	CHECK(rs != NULL, "validator rules load");
	if (rs == NULL)
		return;
	EXPECT(rs, "card 4111 1111 1111 1111.", "5-24:v.card;");
	EXPECT(rs, "card 4111 1111 1111 1112.", "");
	EXPECT(rs, "id Z12 ok", "3-6:v.grp;");
	EXPECT(rs, "id 12x ok", "0-6:v.grp;");
	EXPECT(rs, "it a1y", "3-5:v.unset;");
	EXPECT(rs, "it b1y", "3-6:v.unset;");
	rules_unref(rs);
}

/* A pattern that can match the empty string: empty matches are no hits,
 * and the next attempt starts on a character boundary, never inside
 * a multi-byte character. */
static void
test_empty_matches(void)
{
	struct ruleset *rs =
	    load("[rule e.z]\ntype = Z\npattern = z*\nmatch = [[zz]]\n");

	CHECK(rs != NULL, "an empty-matching rule loads");
	if (rs == NULL)
		return;
	EXPECT(rs, "abc", "");
	EXPECT(rs, "\xc3\xa9" "a zz", "4-6:e.z;");
	EXPECT(rs, "\xe2\x82\xac\xf0\x9f\x98\x80zz\xc3\xa9", "7-9:e.z;");
	EXPECT(rs, "", "");
	rules_unref(rs);
}

/* ------------------------- anchors and windows ------------------------ */

static void
test_windows(void)
{
	/* Word entries at word starts and "*x" entries anywhere, in one
	 * rule: the spots pass adds windows before the word's, and they are
	 * merged back in order. */
	struct ruleset *rs = load(
	    "[rule w.m]\ntype = M\n"
	    "pattern = (?i)x_hello_world|hello|name:\n"
	    "anchor = words hello|*name:|*x_hello_world\nwindow = 0 2\n"
	    "match = [[hello]]\n");
	char buf[512];
	size_t n = 0;
	char want[1024];
	size_t wn = 0;

	CHECK(rs != NULL, "mixed words load");
	if (rs == NULL)
		return;
	EXPECT(rs, "myname: hello world", "2-7:w.m;8-13:w.m;");
	EXPECT(rs, "x_hello_world", "0-13:w.m;");
	EXPECT(rs, "myname: hello world, yourname: x",
	       "2-7:w.m;8-13:w.m;25-30:w.m;");
	EXPECT(rs, "Hello, NAME: HELLO", "0-5:w.m;7-12:w.m;13-18:w.m;");
	/* Not at a word start, not followed by a letter. */
	EXPECT(rs, "othello helloo", "");
	rules_unref(rs);

	/* Many windows of one rule: the array grows. */
	rs = load("[rule w.at]\ntype = AT\npattern = [a-z]@[a-z]\n"
	          "anchor = char @\nwindow = 1 1\nmatch = [[a@b]]\n");
	CHECK(rs != NULL, "char rule loads");
	if (rs == NULL)
		return;
	for (int i = 0; i < 40; i++) {
		n += (size_t)snprintf(buf + n, sizeof(buf) - n, "%c@%c ....... ",
		                      'a' + i % 26, 'b' + i % 20);
		wn += (size_t)snprintf(want + wn, sizeof(want) - wn, "%d-%d:w.at;",
		                       i * 12, i * 12 + 3);
	}
	EXPECT(rs, buf, want);
	EXPECT(rs, "@x y@ @", "");
	rules_unref(rs);

	/* The whole text as the window, even when it is empty. */
	rs = load("[rule w.any]\ntype = ANY\npattern = \\bq\\w*\n"
	          "match = [[qq]]\n");
	CHECK(rs != NULL && strcmp(spans(rs, "", 0), "") == 0 &&
	          strcmp(spans0(rs, "a qx"), "2-4:w.any;") == 0,
	      "anchor any");
	rules_unref(rs);
}

static void
test_word_edges(void)
{
	/* Entries ending in punctuation carry their own right boundary. */
	struct ruleset *rs = load(
	    "[rule we.p]\ntype = P\npattern = (?i)pass:\\S*\n"
	    "anchor = words pass:\nwindow = 0 16\nmatch = [[pass:x]]\n");
	char buf[200];

	CHECK(rs != NULL, "punctuation word loads");
	if (rs == NULL)
		return;
	EXPECT(rs, "pass:x", "0-6:we.p;");
	EXPECT(rs, "PASS:hunter2 ok", "0-12:we.p;");
	EXPECT(rs, "bypass:x", "");
	EXPECT(rs, "by-pass:x", "3-9:we.p;");
	/* Texts shorter than a block, and ending in the middle of one, with
	 * the word at the very end (the scalar tail of the word scan). */
	for (size_t len = 5; len < 140; len++) {
		char want[64];
		memset(buf, ' ', len);
		memcpy(buf + len - 5, "pass:", 5);
		snprintf(want, sizeof(want), "%zu-%zu:we.p;", len - 5, len);
		CHECK(strcmp(spans(rs, buf, len), want) == 0,
		      "pass: at the end of %zu bytes: %s", len,
		      spans(rs, buf, len));
	}
	/* A word glued to the previous block's last byte is no word. */
	memset(buf, 'a', 128);
	memcpy(buf + 64, "pass: ", 6);
	CHECK(strcmp(spans(rs, buf, 128), "") == 0, "glued across blocks");
	buf[63] = '.';
	CHECK(strcmp(spans(rs, buf, 128), "64-69:we.p;") == 0,
	      "at a block start: %s", spans(rs, buf, 128));
	rules_unref(rs);
}

static void
test_digit_runs(void)
{
	struct ruleset *rs = load(
	    "[rule d.four]\ntype = D4\npattern = \\d[\\d -]*\\d\n"
	    "anchor = digits 4\nwindow = 0 0\nmatch = [[1234]]\n"
	    "[rule d.six]\ntype = D6\npattern = \\d{6}\n"
	    "anchor = digits 6\nwindow = 0 0\nmatch = [[123456]]\n");

	CHECK(rs != NULL, "digit rules load");
	if (rs == NULL)
		return;
	/* Up to two separators join a run; three end it. */
	EXPECT(rs, "12 -34", "0-6:d.four;");
	EXPECT(rs, "12 - 34", "");
	EXPECT(rs, "1 2 3 4", "0-7:d.four;");
	/* Runs shorter than any digit rule wants open nothing. */
	EXPECT(rs, "a 1 b 22 c 333 d", "");
	EXPECT(rs, "a 1 b 4444 c 123456", "6-10:d.four;13-19:d.four;");
	/* A run at the end of the text. */
	EXPECT(rs, "tail 98765", "5-10:d.four;");
	rules_unref(rs);
}

static void
test_tokens(void)
{
	/* token 16 and 32: powers of two (the doubling reaches want
	 * exactly); token 100: longer than a block, found only by runs that
	 * cross one. */
	struct ruleset *rs = load(
	    "[rule k.16]\ntype = K16\npattern = \\b[a-z]{16}\\b\n"
	    "anchor = token 16\nwindow = 0 0\nmatch = [[abcdefghijklmnop]]\n"
	    "[rule k.32]\ntype = K32\npattern = \\b[A-Z]{32}\\b\n"
	    "anchor = token 32\nwindow = 0 0\n"
	    "match = [[ABCDEFGHIJKLMNOPABCDEFGHIJKLMNOP]]\n"
	    "[rule k.100]\ntype = K100\npattern = \\b[0-9]{100,}\\b\n"
	    "anchor = token 100\nwindow = 0 0\nmatch = "
	    "[[0000000000000000000000000000000000000000000000000000000000"
	    "000000000000000000000000000000000000000000]]\n");
	char buf[400], want[128];
	size_t bad = 0;

	CHECK(rs != NULL, "token rules load");
	if (rs == NULL)
		return;
	for (size_t at = 0; at + 130 < sizeof(buf); at += 5) {
		/* 16 lower-case letters, 15 and 17 of them, 32 capitals. */
		memset(buf, ' ', sizeof(buf));
		memset(buf + at, 'q', 16);
		snprintf(want, sizeof(want), "%zu-%zu:k.16;", at, at + 16);
		bad += strcmp(spans(rs, buf, sizeof(buf)), want) != 0;
		buf[at + 15] = ' ';
		bad += strcmp(spans(rs, buf, sizeof(buf)), "") != 0;
		memset(buf + at, 'Q', 32);
		snprintf(want, sizeof(want), "%zu-%zu:k.32;", at, at + 32);
		bad += strcmp(spans(rs, buf, sizeof(buf)), want) != 0;
		/* 100 digits, and 99 */
		memset(buf + at, '7', 100);
		snprintf(want, sizeof(want), "%zu-%zu:k.100;", at, at + 100);
		bad += strcmp(spans(rs, buf, sizeof(buf)), want) != 0;
		buf[at + 99] = ' ';
		bad += strcmp(spans(rs, buf, sizeof(buf)), "") != 0;
	}
	CHECK(bad == 0, "tokens of 16, 32 and 100 at many offsets: %zu wrong",
	      bad);
	rules_unref(rs);
}

/* More than 16 spot key bytes: the spots pass goes a byte at a time. */
static void
test_many_spot_keys(void)
{
	static const char keys[] = "JKQXZ#$%&*+/;<=>?";
	char text[2048], want[2048], in[1024];
	size_t n, wn = 0, at = 0;
	struct ruleset *rs;

	n = (size_t)snprintf(text, sizeof(text),
	                     "[rule s.many]\ntype = S\npattern = a[JKQXZ#$%%&*+/"
	                     ";<=>?]\nwindow = 0 0\nmatch = [[aJ]]\n"
	                     "anchor = literals ");
	for (size_t k = 0; k < sizeof(keys) - 1; k++)
		n += (size_t)snprintf(text + n, sizeof(text) - n, "%sa%c",
		                      k ? "|" : "", keys[k]);
	snprintf(text + n, sizeof(text) - n, "\n");
	rs = load(text);
	CHECK(rs != NULL && rs->spots.nrare == sizeof(keys) - 1,
	      "17 key bytes (%u)", rs ? rs->spots.nrare : 0);
	if (rs == NULL)
		return;
	for (size_t k = 0; k < sizeof(keys) - 1; k++) {
		at += (size_t)snprintf(in + at, sizeof(in) - at, "x%c a%c ",
		                       keys[k], keys[k]);
		wn += (size_t)snprintf(want + wn, sizeof(want) - wn, "%zu-%zu:s.many;",
		                       at - 3, at - 1);
	}
	EXPECT(rs, in, want);
	EXPECT(rs, "aJ", "0-2:s.many;");
	EXPECT(rs, "Ja J? ba", "");
	rules_unref(rs);
}

/* scrub_find_rule: one rule's own anchors and candidates, nothing of the
 * others', no overlap pass. */
static void
test_find_rule(void)
{
	struct ruleset *rs = load(
	    "[rule f.a]\ntype = FA\npattern = [a-z_]+ \\d\n"
	    "anchor = words alpha|*_id\nwindow = 0 8\nmatch = [[alpha 1]]\n"
	    "[rule f.b]\ntype = FB\npattern = [a-z_]+ \\d\n"
	    "anchor = words beta|*_no\nwindow = 0 8\nmatch = [[beta 2]]\n"
	    "[rule f.l]\ntype = FL\npattern = [#%][a-z]+\n"
	    "anchor = literals #|%x\nwindow = 0 8\nmatch = [[#tag]]\n"
	    "[rule f.d]\ntype = FD\npattern = \\d+\n"
	    "anchor = digits 2\nwindow = 0 0\nmatch = [[12]]\n"
	    "[rule f.all]\ntype = FALL\npattern = a\\w+ \\d\n"
	    "match = [[alpha 1]]\n");
	const char *s = "alpha 1 beta 2 user_id 3 part_no 4";

	CHECK(rs != NULL, "find_rule rules load");
	if (rs == NULL)
		return;
	CHECK(strcmp(rule_spans(rs, "f.a", s), "0-7:f.a;19-24:f.a;") == 0,
	      "f.a: %s", rule_spans(rs, "f.a", s));
	CHECK(strcmp(rule_spans(rs, "f.b", s), "8-14:f.b;29-34:f.b;") == 0,
	      "f.b: %s", rule_spans(rs, "f.b", s));
	CHECK(strcmp(rule_spans(rs, "f.l", "a #tag and %xy"),
	             "2-6:f.l;11-14:f.l;") == 0,
	      "f.l: %s", rule_spans(rs, "f.l", "a #tag and %xy"));
	CHECK(strcmp(rule_spans(rs, "f.d", "12 and 345"), "0-2:f.d;7-10:f.d;") == 0,
	      "f.d: %s", rule_spans(rs, "f.d", "12 and 345"));
	/* Overlapping hits of several rules: each rule sees its own. */
	CHECK(strcmp(rule_spans(rs, "f.all", s), "0-7:f.all;26-34:f.all;") == 0,
	      "f.all: %s", rule_spans(rs, "f.all", s));
	/* The whole engine resolves them: f.a and f.all overlap (same score
	 * and length, same start: the id decides). */
	EXPECT(rs, "alpha 1", "0-7:f.a;");
	rules_unref(rs);
}

/* ------------------------- failing closed ----------------------------- */

static void
test_redos(void)
{
	static const char *const modes[] = {NULL, "0"};
	char text[128];

	memset(text, 'a', 60);
	strcpy(text + 60, "!");
	for (size_t m = 0; m < SCRIM_ARRAY_LEN(modes); m++) {
		struct ruleset *rs;
		struct scrub_hits h;
		char err[256] = "";
		int rc;

		if (modes[m])
			setenv("SCRIM_PCRE2_JIT", modes[m], 1);
		else
			unsetenv("SCRIM_PCRE2_JIT");
		rs = load("[rule r.bad]\ntype = BAD\npattern = ^(a+)+$\n"
		          "match = [[aaaa]]\n");
		CHECK(rs != NULL, "the ReDoS rule loads (jit %s)",
		      modes[m] ? modes[m] : "on");
		if (rs == NULL)
			continue;
		CHECK(rs->jit == (modes[m] == NULL), "jit as asked");
		scrub_hits_init(&h);
		rc = scrub_find(rs, text, strlen(text), &h, err, sizeof(err));
		CHECK(rc == -1 && strstr(err, "rule r.bad: ") == err &&
		          strstr(err, "limit") != NULL,
		      "a match limit is an error, not \"no PII\" (jit %s): %d %s",
		      modes[m] ? modes[m] : "on", rc, err);
		/* scrub_find_rule too. */
		err[0] = '\0';
		rc = scrub_find_rule(rs, &rs->rules[0], text, strlen(text), &h, err,
		                     sizeof(err));
		CHECK(rc == -1 && strstr(err, "limit") != NULL,
		      "scrub_find_rule: %d %s", rc, err);
		/* The same rule on an honest text works. */
		CHECK(strcmp(spans0(rs, "aaaa"), "0-4:r.bad;") == 0, "honest text");
		scrub_hits_free(&h);
		rules_unref(rs);
	}
	unsetenv("SCRIM_PCRE2_JIT");
}

/* The hit array is capped: past SCRUB_MAX_HITS, an error, never a
 * truncated list. */
static void
test_hit_cap(void)
{
	struct ruleset *rs =
	    load("[rule h.a]\ntype = A\npattern = a\nmatch = [[a]]\n");
	size_t n = 524289; /* one past 2^19: the array would double past 10^6 */
	char *s = malloc(n);
	struct scrub_hits h;
	char err[256] = "";

	CHECK(rs != NULL && s != NULL, "hit cap setup");
	if (rs == NULL || s == NULL) {
		free(s);
		rules_unref(rs);
		return;
	}
	memset(s, 'a', n);
	scrub_hits_init(&h);
	CHECK(scrub_find(rs, s, n, &h, err, sizeof(err)) == -1 &&
	          strcmp(err, "too many hits") == 0,
	      "too many hits: %s", err);
	CHECK(scrub_find(rs, s, n - 1, &h, err, sizeof(err)) == 0 &&
	          h.n == n - 1,
	      "one fewer fits (%zu)", h.n);
	scrub_hits_free(&h);
	free(s);
	rules_unref(rs);
}

static void
test_empty_ruleset(void)
{
	struct ruleset *rs = load("# no rules at all\n");
	struct scrub_hits h;
	char err[64];

	CHECK(rs != NULL && rs->nrules == 0, "an empty pack loads");
	if (rs == NULL)
		return;
	scrub_hits_init(&h);
	CHECK(scrub_find(rs, "a@b.io 4111", 11, &h, err, sizeof(err)) == 0 &&
	          h.n == 0, "no rules, no hits");
	scrub_hits_free(&h);
	rules_unref(rs);
}

/* ------------------------- UTF-8 -------------------------------------- */

/* RFC 3629's table, written plainly: the reference the engine's
 * vector and byte paths are compared with. */
static bool
utf8_reference(const unsigned char *p, size_t n)
{
	size_t i = 0;

	while (i < n) {
		unsigned c = p[i], len, cp, min;
		if (c < 0x80) {
			i++;
			continue;
		}
		if (c >= 0xc2 && c <= 0xdf) {
			len = 2, cp = c & 0x1f, min = 0x80;
		} else if (c >= 0xe0 && c <= 0xef) {
			len = 3, cp = c & 0x0f, min = 0x800;
		} else if (c >= 0xf0 && c <= 0xf4) {
			len = 4, cp = c & 0x07, min = 0x10000;
		} else {
			return false;
		}
		if (n - i < len)
			return false;
		for (unsigned k = 1; k < len; k++) {
			if ((p[i + k] & 0xc0) != 0x80)
				return false;
			cp = cp << 6 | (p[i + k] & 0x3f);
		}
		if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
			return false;
		i += len;
	}
	return true;
}

/* Random texts of valid characters of every length, ASCII runs long
 * enough for the vector blocks, and now and then a byte changed, cut or
 * thrown in: the engine says what the reference says. */
static void
test_utf8_random(void)
{
	static const char *const pieces[] = {
	    "a", "plain ASCII words and spaces, ", "\xc3\xa9", "\xdf\xbf",
	    "\xe0\xa0\x80", "\xe2\x82\xac", "\xed\x9f\xbf", "\xef\xbf\xbf",
	    "\xf0\x90\x80\x80", "\xf0\x9f\x98\x80", "\xf4\x8f\xbf\xbf",
	    "\xd0\x9f\xd1\x80", "\xe6\x9d\xb1\xe4\xba\xac",
	};
	unsigned char buf[512];
	uint64_t x = 0x9e3779b97f4a7c15ULL;
	size_t bad = 0, invalid = 0;

	for (int t = 0; t < 60000; t++) {
		size_t n = 0;
		size_t target;
		x ^= x << 13, x ^= x >> 7, x ^= x << 17;
		target = (size_t)(x % 300);
		while (n < target) {
			const char *pc;
			size_t l;
			x ^= x << 13, x ^= x >> 7, x ^= x << 17;
			pc = pieces[x % SCRIM_ARRAY_LEN(pieces)];
			l = strlen(pc);
			if (n + l > sizeof(buf))
				break;
			memcpy(buf + n, pc, l);
			n += l;
		}
		x ^= x << 13, x ^= x >> 7, x ^= x << 17;
		if (n > 0 && x % 4 != 0) { /* three in four: one mutation */
			size_t at = (size_t)(x >> 8) % n;
			switch ((x >> 40) % 4) {
			case 0:
				buf[at] = (unsigned char)(x >> 48);
				break;
			case 1:
				n = at; /* cut */
				break;
			case 2:
				buf[at] = (unsigned char)(0x80 | ((x >> 48) & 0x3f));
				break;
			default:
				buf[at] = (unsigned char)(0xc0 | ((x >> 48) & 0x3f));
				break;
			}
		}
		{
			bool want = utf8_reference(buf, n);
			invalid += !want;
			if (scrub_utf8_valid((const char *)buf, n) != want) {
				if (bad++ < 5)
					fprintf(stderr, "utf8 random case %d (n %zu) wrong\n",
					        t, n);
			}
		}
	}
	CHECK(bad == 0, "random UTF-8 texts: %zu of 60000 wrong", bad);
	CHECK(invalid > 10000 && invalid < 50000,
	      "both kinds tested: %zu invalid", invalid);
}

/* Offsets are 32 bits inside the engine: a text of 4 GiB is refused
 * before a byte of it is read (so a short buffer stands in for it). */
static void
test_too_large(void)
{
	struct ruleset *rs = load("[rule t.d]\ntype = D\npattern = \\d+\n"
	                          "anchor = digits 1\nmatch = [[1]]\n");
	struct scrub_hits h;
	char err[128] = "";

	CHECK(rs != NULL, "rule loads");
	if (rs == NULL)
		return;
	scrub_hits_init(&h);
	CHECK(scrub_find(rs, "1", (size_t)UINT32_MAX, &h, err, sizeof(err)) == -1 &&
	          strstr(err, "too large") != NULL,
	      "4 GiB refused: %s", err);
	CHECK(scrub_find_rule(rs, &rs->rules[0], "1", (size_t)UINT32_MAX, &h, err,
	                      sizeof(err)) == -1,
	      "4 GiB refused, one rule");
	CHECK(scrub_find(rs, "1", 1, &h, err, sizeof(err)) == 0 && h.n == 1,
	      "and one byte found");
	scrub_hits_free(&h);
	rules_unref(rs);
}

static void
test_utf8(void)
{
	static const struct {
		const char *s;
		size_t n;
		bool ok;
	} cases[] = {
		{"\xc3\xa9", 2, true},
		{"\xdf\xbf", 2, true},
		{"\xe0\xa0\x80", 3, true},
		{"\xef\xbf\xbf", 3, true},
		{"\xed\x9f\xbf", 3, true},
		{"\xf0\x90\x80\x80", 4, true},
		{"\xf3\xbf\xbf\xbf", 4, true},
		{"\xf4\x8f\xbf\xbf", 4, true},
		{"\0", 1, true},             /* NUL is a character */
		{"\x80", 1, false},          /* lone continuations */
		{"\xbf", 1, false},
		{"\xc0\x80", 2, false},      /* overlong NUL */
		{"\xc1\xbf", 2, false},      /* overlong */
		{"\xc3\x28", 2, false},      /* no continuation */
		{"\xc3\xc3", 2, false},
		{"\xe0\x9f\xbf", 3, false},  /* overlong */
		{"\xed\xa0\x80", 3, false},  /* surrogates */
		{"\xed\xbf\xbf", 3, false},
		{"\xe2\x28\xa1", 3, false},  /* bad second */
		{"\xe2\x82\x28", 3, false},  /* bad third */
		{"\xf0\x8f\xbf\xbf", 4, false}, /* overlong */
		{"\xf4\x90\x80\x80", 4, false}, /* past U+10FFFF */
		{"\xf0\x9f\x28\x80", 4, false}, /* bad third */
		{"\xf0\x9f\x98\x28", 4, false}, /* bad fourth */
		{"\xf5\x80\x80\x80", 4, false}, /* leads never used */
		{"\xf8\x80\x80\x80", 4, false},
		{"\xfe", 1, false},
		{"\xff", 1, false},
	};
	static const struct {
		const char *s;
		size_t n;
	} cut[] = {
		{"\xc3", 1}, {"\xe2\x82", 2}, {"\xe2", 1},
		{"\xf0\x9f\x98", 3}, {"\xf0\x9f", 2}, {"\xf0", 1},
	};
	char buf[160];
	size_t bad = 0;

	/* Each case at every offset of the 32-byte, 8-byte and byte paths,
	 * with ASCII (and NULs) around it. */
	for (size_t i = 0; i < SCRIM_ARRAY_LEN(cases); i++)
		for (size_t at = 0; at < 80; at++)
			for (int fill = 0; fill < 2; fill++) {
				size_t n = at + cases[i].n + (at % 41);
				memset(buf, fill ? '\0' : 'a', sizeof(buf));
				memcpy(buf + at, cases[i].s, cases[i].n);
				if (scrub_utf8_valid(buf, n) != cases[i].ok) {
					bad++;
					fprintf(stderr, "utf8 case %zu at %zu of %zu\n", i,
					        at, n);
				}
			}
	CHECK(bad == 0, "utf8 cases at every offset: %zu wrong", bad);
	/* A character cut by the end of the text, at every length. */
	for (size_t i = 0; i < SCRIM_ARRAY_LEN(cut); i++)
		for (size_t at = 0; at < 80; at++) {
			memset(buf, 'a', sizeof(buf));
			memcpy(buf + at, cut[i].s, cut[i].n);
			bad += scrub_utf8_valid(buf, at + cut[i].n);
			/* Not cut: the text ends after the whole character. */
			bad += !scrub_utf8_valid(buf, at);
		}
	CHECK(bad == 0, "cut characters at every length: %zu wrong", bad);
	/* Mixed scripts through the vector path. */
	{
		static const char mixed[] =
		    "Gr\xc3\xbc\xc3\x9f" "e aus M\xc3\xbcnchen, \xe6\x9d\xb1\xe4\xba"
		    "\xac \xf0\x9f\x98\x80 and plain ASCII long enough for a block "
		    "\xd0\x9f\xd1\x80\xd0\xb8\xd0\xb2\xd0\xb5\xd1\x82";
		CHECK(scrub_utf8_valid(mixed, sizeof(mixed) - 1), "mixed scripts");
		CHECK(!scrub_utf8_valid(mixed, sizeof(mixed) - 2),
		      "mixed scripts cut short");
	}
	CHECK(scrub_utf8_valid("", 0), "empty");
}

/* Rules on text with NUL bytes and other scripts: windows on character
 * boundaries, spans in bytes. */
static void
test_nul_and_scripts(void)
{
	struct ruleset *rs = load(
	    "[rule n.mail]\ntype = MAIL\npattern = [\\w.]+@[\\w.]+\\.[a-z]+\n"
	    "anchor = char @\nwindow = 3 12\nmatch = [[a@b.io]]\n");
	static const char s[] = "\0\0ab@cd.io\0\xc3\xa9\xc3\xa9x@y.io\0";

	CHECK(rs != NULL, "mail rule loads");
	if (rs == NULL)
		return;
	/* The window before the second '@' starts inside "é": moved back to
	 * its first byte. \w is ASCII only here (no UCP). */
	CHECK(strcmp(spans(rs, s, sizeof(s) - 1), "2-10:n.mail;15-21:n.mail;") == 0,
	      "NUL bytes: %s", spans(rs, s, sizeof(s) - 1));
	rules_unref(rs);
}

/* ------------------------- rewriting ---------------------------------- */

static struct ruleset *app;

static bool
apply(struct scrub_ctx *ctx, const char *s, size_t cap, char *res,
      size_t rescap)
{
	struct scrub_hits h;
	struct buf out;
	char err[128];
	bool ok;

	scrub_hits_init(&h);
	buf_init(&out, cap);
	ok = scrub_find(app, s, strlen(s), &h, err, sizeof(err)) == 0 &&
	     scrub_apply(ctx, s, strlen(s), &h, &out);
	snprintf(res, rescap, "%.*s", (int)out.len, out.p ? out.p : "");
	scrub_hits_free(&h);
	buf_free(&out);
	return ok;
}

static void
ctx_init(struct scrub_ctx *ctx)
{
	memset(ctx, 0, sizeof(*ctx));
	memset(ctx->secret, 3, sizeof(ctx->secret));
}

static void
test_apply(void)
{
	struct scrub_ctx ctx;
	char res[512];

	/* Mask: the last letters or digits kept, capitals, punctuation past
	 * 'z' kept, non-ASCII bytes dropped. */
	ctx_init(&ctx);
	CHECK(apply(&ctx, "m AB~cd~12 m", 1 << 16, res, sizeof(res)) &&
	          strcmp(res, "m **~*d~12 m") == 0,
	      "mask: %s", res);
	CHECK(apply(&ctx, "m Jos\xc3\xa9 1234 m", 1 << 16, res, sizeof(res)) &&
	          strcmp(res, "m *** *234 m") == 0,
	      "mask drops non-ASCII: %s", res);
	CHECK(ctx.stats.by_action[ACT_MASK] == 2 && ctx.stats.replaced == 2 &&
	          ctx.stats.ntypes == 1 && ctx.stats.nrules == 1 &&
	          ctx.stats.types[0].count == 2,
	      "mask counted");

	/* Two rules of one type, two blocks and two locals: counted per type
	 * and per rule; the first block and local rules noted. */
	ctx_init(&ctx);
	CHECK(apply(&ctx, "b1 b2 l1 l2 t1 t2", 1 << 16, res, sizeof(res)) &&
	          strcmp(res, "[BLK] [BLK] [LOC] [LOC] [TWO] [TWO]") == 0,
	      "block and local without a vault redact: %s", res);
	CHECK(ctx.stats.block != NULL && strcmp(ctx.stats.block->id, "a.b1") == 0 &&
	          ctx.stats.local != NULL &&
	          strcmp(ctx.stats.local->id, "a.l1") == 0,
	      "the first block and local rules");
	CHECK(ctx.stats.by_action[ACT_BLOCK] == 2 &&
	          ctx.stats.by_action[ACT_LOCAL] == 2 && ctx.stats.ntypes == 3 &&
	          ctx.stats.nrules == 6 && ctx.stats.replaced == 6,
	      "counts: %zu types, %zu rules", ctx.stats.ntypes, ctx.stats.nrules);
	for (size_t i = 0; i < ctx.stats.ntypes; i++)
		CHECK(ctx.stats.types[i].count == 2, "type %s twice",
		      ctx.stats.types[i].name);

	/* Overrides: the first that matches wins, by type or id glob. */
	{
		static const struct scrub_override ov[] = {
			{"NOPE", ACT_ALLOW}, {"a.z*", ACT_ALLOW},
			{"a.t?", ACT_MASK},  {"BLK", ACT_HASH},
			{"BLK", ACT_ALLOW},
		};
		ctx_init(&ctx);
		ctx.overrides = ov;
		ctx.noverrides = SCRIM_ARRAY_LEN(ov);
		CHECK(apply(&ctx, "b1 t1", 1 << 16, res, sizeof(res)) &&
		          strncmp(res, "BLK-", 4) == 0 && strlen(res) == 16 + 3 &&
		          strcmp(res + 16, " *1") == 0,
		      "overrides: %s", res);
		CHECK(ctx.stats.block == NULL && ctx.stats.by_action[ACT_HASH] == 1 &&
		          ctx.stats.by_action[ACT_MASK] == 1,
		      "an overridden block does not block");
	}

	/* Tokenize with a vault and no key id; a full vault fails. */
	{
		struct vault *v = vault_new();
		ctx_init(&ctx);
		ctx.vault = v;
		CHECK(apply(&ctx, "t1 and t1", 1 << 16, res, sizeof(res)) &&
		          strncmp(res, "[TWO] and [TWO]", 15) != 0 &&
		          strncmp(res, "<TWO_", 5) == 0,
		      "tokenize: %s", res);
		{
			/* the same value, the same token */
			size_t l = strcspn(res, ">") + 1;
			CHECK(strncmp(res, res + l + 5, l) == 0, "stable: %s", res);
		}
		for (unsigned i = 0; i < VAULT_MAX_ENTRIES; i++) {
			char val[16];
			int n = snprintf(val, sizeof(val), "v%u", i);
			if (vault_put(v, ctx.secret, "", "FILL", val, (size_t)n) == NULL)
				break;
		}
		CHECK(!apply(&ctx, "t2", 1 << 16, res, sizeof(res)),
		      "a full vault fails the apply");
		vault_free(v);
	}

	/* The output cap: every action fails cleanly at every cap short of
	 * its output, and succeeds with exactly its output at that cap. */
	{
		static const struct {
			const char *in;
			struct scrub_override ov;
			bool vault;
		} cases[] = {
			{"x b1 y", {"BLK", ACT_REDACT}, false},
			{"x b1 y", {"BLK", ACT_HASH}, false},
			{"x b1 y", {"BLK", ACT_TOKENIZE}, false},
			{"x b1 y", {"BLK", ACT_TOKENIZE}, true},
			{"x AB~cd~12 y", {"M", ACT_MASK}, false},
			{"x b1 y", {"BLK", ACT_ALLOW}, false},
		};
		for (size_t i = 0; i < SCRIM_ARRAY_LEN(cases); i++) {
			char full[128], part[128];
			size_t need;
			bool ok = true;
			ctx_init(&ctx);
			ctx.overrides = &cases[i].ov;
			ctx.noverrides = 1;
			ctx.key_id = "k";
			ctx.vault = cases[i].vault ? vault_new() : NULL;
			CHECK(apply(&ctx, cases[i].in, 1 << 16, full, sizeof(full)),
			      "cap case %zu", i);
			need = strlen(full);
			for (size_t cap = 0; cap < need; cap++) {
				ok = ok && !apply(&ctx, cases[i].in, cap, part, sizeof(part));
				ok = ok && strlen(part) <= cap &&
				     strncmp(part, full, strlen(part)) == 0;
			}
			ok = ok && apply(&ctx, cases[i].in, need, part, sizeof(part)) &&
			     strcmp(part, full) == 0;
			CHECK(ok, "cap case %zu (%s): fails below %zu bytes, exact at it",
			      i, full, need);
			vault_free(ctx.vault);
		}
	}
}

/* More types and rules than the per-request counts hold: the first 64
 * are counted, every span is still replaced. */
static void
test_count_cap(void)
{
	char text[16384], in[1024];
	size_t n = 0, at = 0;
	struct ruleset *rs;
	struct scrub_ctx ctx;
	struct scrub_hits h;
	struct buf out;
	char err[128];

	for (int i = 0; i < SCRUB_MAX_COUNTS + 2; i++) {
		n += (size_t)snprintf(text + n, sizeof(text) - n,
		                      "[rule cc.r%d]\ntype = T%d\n"
		                      "pattern = \\bv%dx\\b\naction = redact\n"
		                      "match = [[v%dx]]\n", i, i, i, i);
		at += (size_t)snprintf(in + at, sizeof(in) - at, "v%dx ", i);
	}
	rs = load(text);
	CHECK(rs != NULL, "66 rules load");
	if (rs == NULL)
		return;
	ctx_init(&ctx);
	scrub_hits_init(&h);
	buf_init(&out, 1 << 16);
	CHECK(scrub_find(rs, in, at, &h, err, sizeof(err)) == 0 &&
	          h.n == SCRUB_MAX_COUNTS + 2 &&
	          scrub_apply(&ctx, in, at, &h, &out),
	      "66 hits applied");
	CHECK(ctx.stats.replaced == SCRUB_MAX_COUNTS + 2 &&
	          ctx.stats.ntypes == SCRUB_MAX_COUNTS &&
	          ctx.stats.nrules == SCRUB_MAX_COUNTS &&
	          out.p != NULL && strncmp(out.p, "[T0] [T1] ", 10) == 0 &&
	          strstr(out.p, "v65x") == NULL,
	      "counts capped at %d: %zu types", SCRUB_MAX_COUNTS, ctx.stats.ntypes);
	scrub_hits_free(&h);
	buf_free(&out);
	rules_unref(rs);
}

int
main(void)
{
	snprintf(dir, sizeof(dir), "/tmp/scrim-engine-XXXXXX");
	if (mkdtemp(dir) == NULL)
		abort();
	test_union();
	test_priority();
	test_context();
	test_validator_and_groups();
	test_empty_matches();
	test_windows();
	test_word_edges();
	test_digit_runs();
	test_tokens();
	test_many_spot_keys();
	test_find_rule();
	test_redos();
	test_hit_cap();
	test_empty_ruleset();
	test_utf8();
	test_utf8_random();
	test_nul_and_scripts();
	test_too_large();

	app = load(
	    "[rule a.m]\ntype = M\npattern = AB~cd~12|Jos\xc3\xa9 1234\n"
	    "action = mask\nmatch = [[AB~cd~12]]\n"
	    "[rule a.b1]\ntype = BLK\npattern = \\bb1\\b\naction = block\n"
	    "match = [[b1]]\n"
	    "[rule a.b2]\ntype = BLK\npattern = \\bb2\\b\naction = block\n"
	    "match = [[b2]]\n"
	    "[rule a.l1]\ntype = LOC\npattern = \\bl1\\b\naction = local\n"
	    "match = [[l1]]\n"
	    "[rule a.l2]\ntype = LOC\npattern = \\bl2\\b\naction = local\n"
	    "match = [[l2]]\n"
	    "[rule a.t1]\ntype = TWO\npattern = \\bt1\\b\n"
	    "match = [[t1]]\n"
	    "[rule a.t2]\ntype = TWO\npattern = \\bt2\\b\n"
	    "match = [[t2]]\n");
	CHECK(app != NULL, "apply rules load");
	if (app != NULL) {
		test_apply();
		rules_unref(app);
	}
	test_count_cap();
	{
		char path[128];
		snprintf(path, sizeof(path), "%s/a.rules", dir);
		unlink(path);
	}
	rmdir(dir);
	return harness_done();
}
