/*
 * test_rules.c - the rule loader (RELIABILITY.md section 8, L1): bad,
 * duplicate and catastrophic patterns, and every key's refusal, each
 * from a rules file written to a fresh directory. The loader must refuse
 * the whole set (NULL) and name the line; a set that loads must pass its
 * own examples, and a pattern that backtracks without bound must end in
 * an engine error (a PCRE2 limit), not a hang.
 */
#include "harness.h"
#include "rules.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static char dir[64];

static void
write_file(const char *name, const char *text)
{
	char path[128];
	FILE *f;

	snprintf(path, sizeof(path), "%s/%s", dir, name);
	f = fopen(path, "w");
	if (f == NULL || fputs(text, f) < 0 || fclose(f) != 0)
		abort();
}

static void
remove_file(const char *name)
{
	char path[128];

	snprintf(path, sizeof(path), "%s/%s", dir, name);
	(void)unlink(path);
}

/* Load one file as the whole set; the set is returned (caller frees). */
static struct ruleset *
load_one(const char *text)
{
	write_file("a.rules", text);
	return rules_load(dir, true);
}

#define GOOD_HEAD "[rule t.email]\ntype = EMAIL\npattern = [a-z]+@[a-z]+\\.com\n"
#define GOOD_EX "match = to [[ab@cd.com]] now\nnomatch = nothing here\n"

static void
test_refused(void)
{
	static const char *const bad[] = {
		/* section and id */
		"type = EMAIL\n",
		"[rule]\n",
		"[rules t.x]\n",
		"[rule T.Upper]\n" "type = X\npattern = x\nmatch = [[x]]\n",
		/* near and inside given twice (the first near list leaked) */
		"[rule t.a]\ntype = X\npattern = x\nnear = words ab\n"
		"near = words cd\nmatch = [[x]]\n",
		"[rule t.a]\ntype = X\npattern = x\ninside = yes\ninside = no\n"
		"match = [[x]]\n",
		/* 31 letters: no room for its placeholders in the vault */
		"[rule t.a]\ntype = AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA\npattern = x\n"
		"match = [[x]]\n",
		"[rule t.a\n",
		/* required keys and examples */
		"[rule t.a]\ntype = EMAIL\nmatch = [[x]]\n",
		"[rule t.a]\npattern = x\nmatch = [[x]]\n",
		"[rule t.a]\ntype = X\npattern = x\nnomatch = y\n",
		"[rule t.a]\ntype = X\npattern = x\n",
		/* patterns */
		"[rule t.a]\ntype = X\npattern = ([a-z\nmatch = [[x]]\n",
		"[rule t.a]\ntype = X\npattern = a{2,1}\nmatch = [[x]]\n",
		"[rule t.a]\ntype = X\npattern = \\C\nmatch = [[x]]\n",
		/* keys */
		GOOD_HEAD GOOD_EX "colour = red\n",
		GOOD_HEAD GOOD_EX "type = PHONE\n",
		GOOD_HEAD GOOD_EX "score = 0.5\nscore = 0.6\n",
		"[rule t.a]\ntype = lower\npattern = x\nmatch = [[x]]\n",
		GOOD_HEAD GOOD_EX "validator = nosuch\n",
		GOOD_HEAD GOOD_EX "window = 10\n",
		GOOD_HEAD GOOD_EX "window = a b\n",
		GOOD_HEAD GOOD_EX "context_required = maybe\n",
		GOOD_HEAD GOOD_EX "context_window = 0\n",
		GOOD_HEAD GOOD_EX "context_window = 5000\n",
		GOOD_HEAD GOOD_EX "score = 0\n",
		GOOD_HEAD GOOD_EX "score = 1.5\n",
		GOOD_HEAD GOOD_EX "score = x\n",
		GOOD_HEAD GOOD_EX "action = shred\n",
		/* anchors */
		GOOD_HEAD GOOD_EX "anchor = digits 0\n",
		GOOD_HEAD GOOD_EX "anchor = digits 65\n",
		GOOD_HEAD GOOD_EX "anchor = digits 7x\n",
		GOOD_HEAD GOOD_EX "anchor = token 7\n",
		GOOD_HEAD GOOD_EX "anchor = token 2000\n",
		GOOD_HEAD GOOD_EX "anchor = words \n",
		GOOD_HEAD GOOD_EX "anchor = words ab|c\n",
		GOOD_HEAD GOOD_EX "anchor = literals |\n",
		GOOD_HEAD GOOD_EX "anchor = somewhere\n",
		GOOD_HEAD GOOD_EX "anchor = char\n",
		/* examples */
		GOOD_HEAD "match = no marks here\n",
		GOOD_HEAD "match = [[ab@cd.com\n",
		GOOD_HEAD "match = [[ab@cd.com]]\nnomatch = [[x]]\n",
		GOOD_HEAD "match = [[\xff]]\n",
		GOOD_HEAD "match = [[a]] [[b]] [[c]] [[d]] [[e]]\n",
		GOOD_HEAD GOOD_EX "anchor = char x [abc\n",
		GOOD_HEAD GOOD_EX "anchor = token 8x\n",
		GOOD_HEAD GOOD_EX "window = 10 70000\n",
		GOOD_HEAD GOOD_EX "window = 70000 10\n",
		GOOD_HEAD GOOD_EX "context_window = 5x\n",
		"[rule t.a]\ntype = ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456\npattern = x\n"
		"match = [[x]]\n",
		"[rule t.a]\ntype = A-B\npattern = x\nmatch = [[x]]\n",
	};

	for (size_t i = 0; i < SCRIM_ARRAY_LEN(bad); i++) {
		struct ruleset *rs = load_one(bad[i]);
		CHECK(rs == NULL, "bad rules file %zu loads:\n%s", i, bad[i]);
		rules_unref(rs);
	}
}

static void
test_good_and_duplicates(void)
{
	struct ruleset *rs;

	rs = load_one(GOOD_HEAD GOOD_EX
	              "validator = luhn\nanchor = char @\nwindow = 40 40\n"
	              "context = mail|e-mail\nnegative = example\n"
	              "context_required = no\ncontext_window = 64\n"
	              "score = 0.9\naction = tokenize\n"
	              "\n[rule t.words]\ntype = WORD\npattern = secret\\d+\n"
	              "anchor = words secret*|hidden\naction = redact\n"
	              "match = a [[secret42]] b\n"
	              "\n[rule t.lits]\ntype = LIT\npattern = AKIA[0-9]{4}\n"
	              "anchor = literals AKIA\naction = block\n"
	              "match = [[AKIA1234]]\n"
	              "\n[rule t.hex]\ntype = HEX\npattern = :[0-9a-f]{4}\n"
	              "anchor = char : [0-9a-f]\naction = hash\n"
	              "match = x[[:beef]]\n"
	              "\n[rule t.tok]\ntype = TOK\npattern = [A-Za-z0-9]{12}\n"
	              "anchor = token 12\naction = mask\n"
	              "match = key [[abcdef123456]] end\n"
	              "\n[rule t.dig]\ntype = DIG\npattern = \\d{6}\n"
	              "anchor = digits 6\naction = local\n"
	              "match = pin [[123456]]\n"
	              "\n[rule t.any]\ntype = ANY\npattern = zz(?<v>q+)zz\n"
	              "anchor = any\naction = allow\n"
	              "match = zz[[qq]]zz\n");
	CHECK(rs != NULL && rs->nrules == 7, "every key and anchor kind loads");
	if (rs != NULL) {
		CHECK(rules_check_examples(rs, true) == 1,
		      "the luhn validator refuses the e-mail example, only it");
		CHECK(rules_ref(rs) == rs && rs->refcnt == 2, "ref");
		rules_unref(rs);
	}
	rules_unref(rs);

	rs = load_one(GOOD_HEAD GOOD_EX "\n" GOOD_HEAD GOOD_EX);
	CHECK(rs == NULL, "duplicate id in one file");
	rules_unref(rs);
	write_file("b.rules", GOOD_HEAD GOOD_EX);
	rs = load_one(GOOD_HEAD GOOD_EX);
	CHECK(rs == NULL, "duplicate id across files");
	rules_unref(rs);
	remove_file("b.rules");
	write_file("ignored.txt", "not rules");
	rs = load_one(GOOD_HEAD GOOD_EX);
	CHECK(rs != NULL && rs->nrules == 1 && rules_check_examples(rs, true) == 0,
	      "one good file, other files ignored");
	rules_unref(rs);
	remove_file("ignored.txt");

	/* Escapes in examples, a padded id, one-byte literals, a range in
	 * a char anchor's set, hidden files and a .rules that is not a
	 * file. */
	rs = load_one("[rule   t.esc]\ntype = ESC\npattern = x\\ty\n"
	              "anchor = literals x|ab\n"
	              "match = a\\n[[x\\ty]]\\\\ b\n"
	              "\n[rule t.set]\ntype = SET\npattern = :[0-9a-f]{2}\n"
	              "anchor = char : [0-9a-fA-F]\nmatch = x[[:0f]]\n");
	CHECK(rs != NULL && rs->nrules == 2 &&
	          strcmp(rs->rules[0].id, "t.esc") == 0 &&
	          strcmp(rs->rules[0].examples[0].text, "a\nx\ty\\ b") == 0 &&
	          rules_check_examples(rs, true) == 0,
	      "escapes, padded id, literals, char set");
	rules_unref(rs);
	write_file(".hidden.rules", "garbage\n");
	{
		char sub[128];
		snprintf(sub, sizeof(sub), "%s/sub.rules", dir);
		mkdir(sub, 0700);
		rs = load_one(GOOD_HEAD GOOD_EX);
		CHECK(rs == NULL, "a .rules that cannot be read fails the set");
		rules_unref(rs);
		rmdir(sub);
	}
	rs = load_one(GOOD_HEAD GOOD_EX);
	CHECK(rs != NULL, "a hidden .rules file is ignored");
	rules_unref(rs);
	remove_file(".hidden.rules");
	/* Without the JIT (as under MemoryDenyWriteExecute), and reported
	 * to the log instead of stderr. */
	setenv("SCRIM_PCRE2_JIT", "0", 1);
	rs = load_one(GOOD_HEAD GOOD_EX);
	CHECK(rs != NULL && !rs->jit && rules_check_examples(rs, false) == 0,
	      "SCRIM_PCRE2_JIT=0 uses the interpreter");
	rules_unref(rs);
	setenv("SCRIM_PCRE2_JIT", "1", 1);
	write_file("a.rules", GOOD_HEAD GOOD_EX "bogus = 1\n");
	rs = rules_load(dir, false);
	CHECK(rs == NULL, "refused, reported to the log");
	unsetenv("SCRIM_PCRE2_JIT");

	/* Examples that the rule itself contradicts. */
	rs = load_one(GOOD_HEAD "match = [[ab@cd.com]]x\nnomatch = ab@cd.com\n");
	CHECK(rs != NULL && rules_check_examples(rs, true) == 1,
	      "a nomatch example that matches is reported");
	rules_unref(rs);
	rs = load_one(GOOD_HEAD "match = [[ab]]@cd.com\n");
	CHECK(rs != NULL && rules_check_examples(rs, true) == 1,
	      "a match example found with another span is reported");
	rules_unref(rs);
}

static void
test_catastrophic(void)
{
	struct ruleset *rs;
	char text[512];

	/* Nested quantifiers over 40 'a's then no match: 2^40 paths
	 * without a limit. The loader takes the pattern (PCRE2 has no
	 * static ReDoS check), the match limit stops it at the example. */
	memset(text, 0, sizeof(text));
	snprintf(text, sizeof(text),
	         "[rule t.redos]\ntype = X\npattern = ^(a+)+$\n"
	         "match = [[aaaa]]\nnomatch = %.*s!\n", 40,
	         "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa");
	rs = load_one(text);
	CHECK(rs != NULL, "a catastrophic pattern compiles");
	if (rs != NULL)
		CHECK(rules_check_examples(rs, true) == 1,
		      "its backtracking example ends in an engine error");
	rules_unref(rs);
}

int
main(void)
{
	struct ruleset *rs;
	enum scrub_action a;

	snprintf(dir, sizeof(dir), "/tmp/scrim-rules-XXXXXX");
	if (mkdtemp(dir) == NULL)
		abort();
	rs = rules_load(dir, true);
	CHECK(rs == NULL, "an empty directory is refused");
	rs = rules_load("/nonexistent/scrim-rules", true);
	CHECK(rs == NULL, "a missing directory is refused");

	test_refused();
	test_good_and_duplicates();
	test_catastrophic();

	for (int i = 0; i < ACT__COUNT; i++)
		CHECK(rules_action_parse(rules_action_name((enum scrub_action)i),
		                         &a) && a == (enum scrub_action)i,
		      "action %d round trip", i);
	CHECK(!rules_action_parse("shred", &a), "unknown action");
	CHECK(strcmp(rules_action_name(ACT__COUNT), "?") == 0, "no such action");

	remove_file("a.rules");
	rmdir(dir);
	return harness_done();
}
