/*
 * test_anchors.c - where rules' regexes get to run: word anchors at word
 * starts (whole words, "word*" prefixes, "*part" anywhere), literals in
 * exact case, digit runs down to one digit, long tokens, and the vector
 * scans' block edges (every offset across 64-byte blocks).
 */
#include "harness.h"
#include "rules.h"
#include "scrub.h"

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

/* The spans rule id finds in s, as "start-end;" pairs (static). */
static const char *
spans(struct ruleset *rs, const char *s, size_t n)
{
	static char res[4096];
	struct scrub_hits h;
	char err[256];
	size_t at = 0;

	res[0] = '\0';
	scrub_hits_init(&h);
	if (scrub_find(rs, s, n, &h, err, sizeof(err)) != 0) {
		snprintf(res, sizeof(res), "error: %s", err);
	} else {
		for (size_t i = 0; i < h.n && at < sizeof(res) - 32; i++)
			at += (size_t)snprintf(res + at, sizeof(res) - at, "%zu-%zu;",
			                       h.v[i].start, h.v[i].end);
	}
	scrub_hits_free(&h);
	return res;
}

static const char *
spans0(struct ruleset *rs, const char *s)
{
	return spans(rs, s, strlen(s));
}

/* A rule whose regex would match almost anywhere: only the anchor
 * decides where it runs, and with no window around the anchor, the
 * match is the anchor itself. */
static struct ruleset *
anchored(const char *anchor)
{
	char text[512];

	snprintf(text, sizeof(text),
	         "[rule t.a]\ntype = T\npattern = (?i)[a-z]*hi[a-z]*\n"
	         "anchor = %s\nwindow = 0 0\nmatch = [[hi]]\n",
	         anchor);
	return load(text);
}

static void
test_words(void)
{
	struct ruleset *rs = anchored("words hi");

	CHECK(rs != NULL, "a whole-word anchor loads");
	if (rs == NULL)
		return;
	CHECK(strcmp(spans0(rs, "Hi Bob"), "0-2;") == 0, "at the start");
	CHECK(strcmp(spans0(rs, "oh, hi."), "4-6;") == 0, "between punctuation");
	CHECK(strcmp(spans0(rs, "say hi"), "4-6;") == 0, "at the end");
	CHECK(strcmp(spans0(rs, "this which"), "") == 0, "not inside a word");
	CHECK(strcmp(spans0(rs, "hip hi5"), "") == 0,
	      "not at the start of a longer word");
	CHECK(strcmp(spans0(rs, "x_hi"), "2-4;") == 0,
	      "'_' is a boundary (db_password)");
	CHECK(strcmp(spans0(rs, "\xc3\xa9hi"), "2-4;") == 0,
	      "a non-ASCII byte is a boundary");
	rules_unref(rs);

	rs = anchored("words hi*");
	CHECK(rs != NULL && strcmp(spans0(rs, "hip this"), "0-2;") == 0,
	      "hi* is a prefix at a word start");
	rules_unref(rs);

	rs = anchored("words *hi*");
	CHECK(rs != NULL && strcmp(spans0(rs, "hip this"), "0-2;5-7;") == 0,
	      "*hi* is anywhere");
	rules_unref(rs);

	rs = anchored("words *hi");
	CHECK(rs != NULL && strcmp(spans0(rs, "this sushi"), "8-10;") == 0,
	      "*hi ends a word");
	rules_unref(rs);

	rs = anchored("words *x");
	CHECK(rs == NULL, "an entry of one byte besides '*' is refused");
	rs = anchored("words h*i");
	CHECK(rs == NULL, "'*' inside an entry is refused");
}

static void
test_literals(void)
{
	struct ruleset *rs =
	    load("[rule t.l]\ntype = T\npattern = (?i)akia[0-9]{4}|[a-z]+:\n"
	         "anchor = literals AKIA|name:\nwindow = 8 8\n"
	         "match = [[AKIA1234]]\n");

	CHECK(rs != NULL, "literals load");
	if (rs == NULL)
		return;
	CHECK(strcmp(spans0(rs, "id AKIA1234"), "3-11;") == 0, "a literal");
	CHECK(strcmp(spans0(rs, "id akia1234"), "") == 0,
	      "literals are case-sensitive");
	CHECK(strcmp(spans0(rs, "Firstname: x"), "0-10;") == 0,
	      "a literal inside a word");
	CHECK(strcmp(spans0(rs, "{\"a\": 1}"), "") == 0, "a key byte alone");
	rules_unref(rs);

	/* Key bytes with more than 8 high nibbles (ASCII punctuation and
	 * UTF-8 lead bytes): the nibble scan stops at more bytes than the
	 * key bytes, and still finds each literal where it stands, at
	 * every offset. */
	rs = load("[rule t.m]\ntype = T\npattern = \\S+\n"
	          "anchor = literals a!|b#|c@|d[|e{|f;|ñø|жы|€x|😀y\nwindow = 0 0\n"
	          "match = [[a!]]\n");
	CHECK(rs != NULL, "literals with many key bytes load");
	if (rs == NULL)
		return;
	{
		static const char *const lit[] = {"a!", "b#", "c@", "d[", "e{", "f;",
		                                  "ñø", "жы", "€x", "😀y"};
		/* Other characters with the same key bytes, valid UTF-8. */
		static const char alone[] = "! # @ [ { ; é д € 😀";
		char buf[128], want[32];
		size_t bad = 0;
		for (size_t k = 0; k < SCRIM_ARRAY_LEN(lit); k++)
			for (size_t at = 0; at < 70; at++) {
				size_t l = strlen(lit[k]);
				memset(buf, ' ', sizeof(buf));
				/* Bytes of the other literals' key bytes, alone. */
				memcpy(buf + 84, alone, sizeof(alone) - 1);
				memcpy(buf + at, lit[k], l);
				snprintf(want, sizeof(want), "%zu-%zu;", at, at + l);
				bad += strcmp(spans(rs, buf, 110), want) != 0;
			}
		CHECK(bad == 0, "many key bytes: %zu wrong", bad);
	}
	rules_unref(rs);
}

/* Every offset around the 64-byte blocks of the vector scans: a word
 * start found once, a word glued to the one before not at all. */
static void
test_block_edges(void)
{
	struct ruleset *rs = anchored("words hi");
	struct ruleset *sp =
	    load("[rule t.s]\ntype = T\npattern = ghp_[a-z]+\n"
	         "anchor = literals ghp_\nwindow = 0 8\nmatch = [[ghp_ab]]\n");
	char buf[300], want[64];
	size_t bad = 0, bad_glued = 0, bad_spot = 0;

	CHECK(rs != NULL && sp != NULL, "edge rules load");
	if (rs == NULL || sp == NULL) {
		rules_unref(rs);
		rules_unref(sp);
		return;
	}
	for (size_t at = 0; at + 8 < sizeof(buf); at++) {
		memset(buf, ' ', sizeof(buf));
		memcpy(buf + at, "hi", 2);
		snprintf(want, sizeof(want), "%zu-%zu;", at, at + 2);
		bad += strcmp(spans(rs, buf, sizeof(buf)), want) != 0;
		/* The word before ends right before it: no word start. */
		if (at > 0) {
			buf[at - 1] = 'a';
			bad_glued += strcmp(spans(rs, buf, sizeof(buf)), "") != 0;
		}
		memset(buf, '.', sizeof(buf));
		memcpy(buf + at, "ghp_ab", 6);
		snprintf(want, sizeof(want), "%zu-%zu;", at, at + 6);
		bad_spot += strcmp(spans(sp, buf, sizeof(buf)), want) != 0;
	}
	CHECK(bad == 0, "a word at every offset: %zu wrong", bad);
	CHECK(bad_glued == 0, "a glued word at every offset: %zu wrong", bad_glued);
	CHECK(bad_spot == 0, "a literal at every offset: %zu wrong", bad_spot);
	/* The text ends right after the word. */
	for (size_t n = 2; n < 140; n++) {
		memset(buf, ' ', n);
		memcpy(buf + n - 2, "hi", 2);
		snprintf(want, sizeof(want), "%zu-%zu;", n - 2, n);
		bad += strcmp(spans(rs, buf, n), want) != 0;
	}
	CHECK(bad == 0, "a word at the end of texts of every length");
	rules_unref(rs);
	rules_unref(sp);
}

static void
test_digits_and_tokens(void)
{
	struct ruleset *rs =
	    load("[rule t.d]\ntype = D\npattern = \\b\\d \\w+ Street\n"
	         "anchor = digits 1\nwindow = 0 40\n"
	         "match = at [[5 Main Street]]\n"
	         "\n[rule t.k]\ntype = K\npattern = [A-Za-z0-9]{20,}\n"
	         "anchor = token 20\nwindow = 0 0\n"
	         "match = key [[abcdefghij0123456789xyz]] end\n");
	char buf[400];
	size_t bad = 0;

	CHECK(rs != NULL, "digits 1 and token load");
	if (rs == NULL)
		return;
	CHECK(strcmp(spans0(rs, "at 5 Main Street"), "3-16;") == 0,
	      "a lone digit is a run");
	/* A token of 19 is not one; of 20 and more is, wherever it is. */
	for (size_t len = 18; len < 200; len++)
		for (size_t at = 0; at + len + 1 < sizeof(buf); at += 7) {
			char want[64] = "";
			memset(buf, ' ', sizeof(buf));
			for (size_t k = 0; k < len; k++)
				buf[at + k] = (char)('a' + k % 26);
			/* Short words around it must not join or hide it. */
			if (at >= 4)
				memcpy(buf + at - 4, "ab ", 3);
			if (len >= 20)
				snprintf(want, sizeof(want), "%zu-%zu;", at, at + len);
			bad += strcmp(spans(rs, buf, sizeof(buf)), want) != 0;
		}
	CHECK(bad == 0, "tokens of 18 to 199 bytes at many offsets: %zu wrong",
	      bad);
	/* Texts that are one token, of every length around the blocks. */
	for (size_t len = 1; len < sizeof(buf); len++) {
		char want[64] = "";
		memset(buf, 'k', len);
		if (len >= 20)
			snprintf(want, sizeof(want), "0-%zu;", len);
		bad += strcmp(spans(rs, buf, len), want) != 0;
	}
	CHECK(bad == 0, "a text that is all one token: %zu wrong", bad);
	rules_unref(rs);
}

/* near = words: a window counts only with one of the words in it. */
static void
test_near(void)
{
	struct ruleset *rs =
	    load("[rule t.n]\ntype = N\npattern = \\d+\n"
	         "anchor = digits 1\nwindow = 4 20\ninside = yes\n"
	         "near = words street|*straße\n"
	         "match = [[12]] Main Street\nnomatch = 12 apples\n");

	CHECK(rs != NULL, "near loads");
	if (rs == NULL)
		return;
	CHECK(strcmp(spans0(rs, "12 apples"), "") == 0, "no near word: no window");
	CHECK(strcmp(spans0(rs, "12 Main Street"), "0-2;") == 0,
	      "a near word in the window");
	CHECK(strcmp(spans0(rs, "12 and then, much later, a street"), "") == 0,
	      "a near word past the window");
	CHECK(strcmp(spans0(rs, "Hauptstraße 5, and a long way further on, 7 streets"),
	             "13-14;") == 0,
	      "a near word inside a word (*straße), and not a whole word");
	CHECK(strcmp(spans0(rs, "7 Street, and much later on, a lone number: 8"),
	             "0-1;") == 0,
	      "windows filtered one by one");
	rules_unref(rs);
	rs = load("[rule t.n]\ntype = N\npattern = x\nnear = literals x\n"
	          "match = [[x]]\n");
	CHECK(rs == NULL, "near takes words only");
	rs = load("[rule t.n]\ntype = N\npattern = x\nnear = words x\n"
	          "match = [[x]]\n");
	CHECK(rs == NULL, "near words of one byte are refused");
}

/* follows = a|b: a digit run counts only right after one of the words,
 * past blanks, letters compared without case. */
static void
test_follows(void)
{
	struct ruleset *rs =
	    load("[rule t.f]\ntype = F\npattern = \\d+\n"
	         "anchor = digits 1\nwindow = 0 0\ninside = yes\n"
	         "follows = straße|weg|str.\n"
	         "match = Hauptstraße [[5]]\nnomatch = 5 apples\n");

	CHECK(rs != NULL, "follows loads");
	if (rs == NULL)
		return;
	CHECK(strcmp(spans0(rs, "5 apples, page 12"), "") == 0,
	      "numbers after other words: no window");
	CHECK(strcmp(spans0(rs, "HAUPTSTRAßE 5"), "13-14;") == 0,
	      "after the word, ASCII letters folded");
	CHECK(strcmp(spans0(rs, "Am Weg\t 7 and 8"), "8-9;") == 0,
	      "past spaces and tabs, and only that run");
	CHECK(strcmp(spans0(rs, "Berliner Str. 12a"), "14-16;") == 0,
	      "an entry that ends in a dot");
	CHECK(strcmp(spans0(rs, "Wegweiser 3, Straßenbahn 4"), "") == 0,
	      "the word must end there");
	CHECK(strcmp(spans0(rs, "weg 1"), "4-5;") == 0, "at the very start");
	CHECK(strcmp(spans0(rs, "7"), "") == 0, "nothing before");
	rules_unref(rs);
	rs = load("[rule t.f]\ntype = F\npattern = x\nanchor = char x\n"
	          "follows = weg\nmatch = [[x]]\n");
	CHECK(rs == NULL, "follows needs a digits anchor");
	rs = load("[rule t.f]\ntype = F\npattern = \\d\nanchor = digits 1\n"
	          "follows = w\nmatch = [[1]]\n");
	CHECK(rs == NULL, "follows entries of one byte are refused");
	rs = load("[rule t.f]\ntype = F\npattern = \\d\nanchor = digits 1\n"
	          "follows = ab|a b\nmatch = [[1]]\n");
	CHECK(rs == NULL, "follows entries hold no blank");
	rs = load("[rule t.f]\ntype = F\npattern = \\d\nanchor = digits 1\n"
	          "follows = ab\nfollows = cd\nmatch = [[1]]\n");
	CHECK(rs == NULL, "follows set twice");
}

/* digits N [set]: only runs right after a byte of the set. */
static void
test_digits_after(void)
{
	struct ruleset *rs =
	    load("[rule t.d]\ntype = D\npattern = [A-Z]{2}\\d+\n"
	         "anchor = digits 2 [A-Z]\nwindow = 2 0\ninside = yes\n"
	         "match = IBAN [[DE89]]\nnomatch = 89 DE 89\n");

	CHECK(rs != NULL, "digits N [set] loads");
	if (rs == NULL)
		return;
	CHECK(strcmp(spans0(rs, "page 12, line 34, 56"), "") == 0,
	      "runs after other bytes: no window");
	CHECK(strcmp(spans0(rs, "GB29 and 7 x12"), "0-4;") == 0,
	      "only the run after a capital");
	CHECK(strcmp(spans0(rs, "12"), "") == 0, "nothing before the run");
	CHECK(strcmp(spans0(rs, "AB1 CD22"), "4-8;") == 0,
	      "a run too short after a capital is no anchor");
	rules_unref(rs);
	/* A pattern that would match any number: the set alone decides. */
	rs = load("[rule t.d]\ntype = D\npattern = \\d{2,}\n"
	          "anchor = digits 2 [A-Z]\nwindow = 0 0\ninside = yes\n"
	          "match = X[[12]]\n");
	CHECK(rs != NULL, "digits N [set] loads (2)");
	if (rs == NULL)
		return;
	CHECK(strcmp(spans0(rs, "page 12, X34, y56, Z7"), "10-12;") == 0,
	      "runs after other bytes open no window");
	rules_unref(rs);
	rs = load("[rule t.d]\ntype = D\npattern = \\d\nanchor = digits 2 A-Z\n"
	          "match = [[12]]\n");
	CHECK(rs == NULL, "digits N set without brackets is refused");
	rs = load("[rule t.d]\ntype = D\npattern = \\d\nanchor = digits 2x\n"
	          "match = [[12]]\n");
	CHECK(rs == NULL, "digits N followed by junk is refused");
}

/* Role names are skipped only when the rules find nothing in them: a
 * pack that does look for one still sees it. */
static void
test_inert_words(void)
{
	struct ruleset *rs =
	    load("[rule t.r]\ntype = R\npattern = (?i)\\btool\\b\n"
	         "anchor = words tool\nwindow = 0 0\nmatch = [[tool]]\n");

	CHECK(rs != NULL, "a rule matching a role name loads");
	if (rs == NULL)
		return;
	CHECK(strcmp(spans0(rs, "user"), "") == 0, "another role: nothing");
	CHECK(strcmp(spans0(rs, "tool"), "0-4;") == 0,
	      "the role the rule looks for is still found");
	CHECK(strcmp(spans0(rs, "tool"), "0-4;") == 0, "and again");
	CHECK(strcmp(spans0(rs, "user tool"), "5-9;") == 0, "inside longer text");
	rules_unref(rs);
}

int
main(void)
{
	snprintf(dir, sizeof(dir), "/tmp/scrim-anchors-XXXXXX");
	if (mkdtemp(dir) == NULL)
		abort();
	test_words();
	test_literals();
	test_block_edges();
	test_digits_and_tokens();
	test_near();
	test_follows();
	test_digits_after();
	test_inert_words();
	{
		char path[128];
		snprintf(path, sizeof(path), "%s/a.rules", dir);
		unlink(path);
	}
	rmdir(dir);
	return harness_done();
}
