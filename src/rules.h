/*
 * rules.h - rule packs: loading the rules/ directory, compiling each pattern
 * once with PCRE2 (JIT when the kernel allows it), and the refcounted
 * ruleset that requests hold while they run, so a reload (SIGHUP) that
 * fails to compile keeps the old rules and one that succeeds never pulls
 * rules from under a request.
 */
#ifndef SCRIM_RULES_H
#define SCRIM_RULES_H

#include "scrim.h"
#include "validators.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

enum scrub_action {
	ACT_REDACT,   /* [EMAIL] */
	ACT_MASK,     /* keep the last 4 letters or digits */
	ACT_HASH,     /* stable keyed pseudonym, not reversible */
	ACT_TOKENIZE, /* <EMAIL_7f3a9c>, restored in the answer */
	ACT_BLOCK,    /* refuse the request (403) */
	ACT_LOCAL,    /* send the whole request to the local provider */
	ACT_ALLOW,    /* an exception: protect the span, change nothing */
	ACT__COUNT
};

enum anchor_kind {
	ANCHOR_ANY,      /* the whole string */
	ANCHOR_CHAR,     /* around each occurrence of one byte */
	ANCHOR_DIGITS,   /* around runs holding at least N digits */
	ANCHOR_WORDS,    /* around case-insensitive words */
	ANCHOR_LITERALS, /* around case-sensitive literals */
	ANCHOR_TOKEN,    /* around runs of letters and digits of N or more */
};

struct rule_example {
	char *text;      /* markers removed */
	bool positive;
	size_t nspans;
	size_t starts[4], ends[4]; /* the values the rule must find */
	int line;
};

struct rule {
	char *id;
	char *type;
	char *file;
	int line;
	char *pattern;
	pcre2_code *code;
	uint32_t value_group; /* capture "v", or 0 for the whole match */
	validator_fn validator;
	char *validator_name;

	enum anchor_kind anchor;
	unsigned char anchor_char;
	bool anchor_next_set;        /* the byte after a char anchor must be */
	uint64_t anchor_next[4];     /* in this set */
	bool anchor_prev_set;        /* the byte before a digit run must be */
	uint64_t anchor_prev[4];     /* in this set */
	unsigned anchor_digits;
	char **anchor_words;
	size_t nanchor_words;
	bool short_literals;         /* a literal of one byte (not indexed) */
	unsigned win_before, win_after;
	/* near = words ...: only windows that also hold one of these */
	char **near_words;
	size_t nnear_words;
	/* follows = a|b: digit runs count only right after one of these
	 * (past blanks), folded: a street word before a house number */
	char **follows;
	size_t nfollows;
	uint32_t min_length;    /* no match in a text shorter (PCRE2's) */
	uint64_t *follows_tail; /* 65536 bits: their last two bytes */
	uint16_t *follows_key;  /* each entry's last two bytes */
	uint8_t *follows_len;   /* each entry's length (2 to 32) */

	char **context;       /* words that raise confidence */
	size_t ncontext;
	char **negative;      /* words that lower it */
	size_t nnegative;
	bool context_required;
	/* Every match overlaps its anchor, so in a window a match starts
	 * before the last anchor's end: the regex is not tried past it
	 * (PCRE2's offset limit). Most rules; not those whose anchor is a
	 * context word near the value ("aws" for a secret key). */
	bool inside;
	unsigned context_window;
	double score;
	enum scrub_action action;

	struct rule_example *examples;
	size_t nexamples;
};

/*
 * Anchor words and literals, indexed so that one pass over a text finds
 * the anchors of every rule: refs[start[k] .. start[k + 1]) are the
 * entries whose key is k. Two indexes, two passes:
 *
 *   words  words that start a word (the usual case: "dear", "passport"),
 *          keyed by their first two bytes folded, and looked up only
 *          where a word starts, so "hi" is not seen inside "this";
 *   spots  everything that may sit anywhere: literals (exact case) and
 *          words marked "*x" (inside a word: "*name:" in "FirstName:"),
 *          keyed by their rarest byte (both cases when folded), so that
 *          the pass only stops at the few bytes of the text in that set
 *          ('_', '-', ':', 'J'...) and not at the letters of prose.
 */
#define WORD_FOLD 1u  /* case-insensitive (ASCII) */
#define WORD_RIGHT 2u /* not followed by an ASCII letter or digit */
#define WORD_NEAR 4u  /* a rule's near word, not an anchor */

struct word_ref {
	uint32_t rule;
	uint16_t word;
	uint16_t len;
	uint16_t off;   /* spots: where the key byte sits in the entry */
	uint16_t flags; /* WORD_* */
	/* The entry's first four bytes, folded when WORD_FOLD, little-
	 * endian, and which of them it has: one compare turns most
	 * candidates away. */
	uint32_t head, mask;
	const char *text; /* the entry, without its '*' marks */
};

/* The words index's first filter: a hash of a word start's first four
 * bytes, letters folded, digits kept, anything else 0 ("hi, " and "hi "
 * both hash as "hi\0" and one more byte). */
static inline unsigned
word_hash4_word(uint32_t x) /* the four bytes, first in the low 8 bits */
{
	/* 64-bit Fibonacci hashing: with a 32-bit product the fourth byte
	 * only reached the top 8 bits, and "design" passed for "deliver". */
	return (unsigned)(((uint64_t)x * 0x9e3779b97f4a7c15ULL) >> 48);
}

static inline unsigned
word_hash4(unsigned char a, unsigned char b, unsigned char c, unsigned char d)
{
	return word_hash4_word((uint32_t)a | (uint32_t)b << 8 |
	                       (uint32_t)c << 16 | (uint32_t)d << 24);
}

/* spots: an entry whose key byte is its first is keyed by the pair the
 * key byte starts, moved out of the way of the pairs that end at a key
 * byte (a bijection of 16 bits: a collision only costs a look). */
#define SPOT_AFTER(pair) ((pair) ^ 0x8000u)

struct word_index {
	/* words: word_hash4 of each entry's start. spots: the byte pairs
	 * ending at an entry's key byte (entries with one before it), and
	 * starting at it (the others), 16 bits (first << 8 | second). */
	uint64_t bits[1024];
	uint64_t bits_after[1024];
	uint64_t keybytes[4]; /* spots: the key bytes */
	/* words: keyed by the first two bytes, folded; spots: by the pair
	 * (entry_keys). 65537 entries. */
	uint32_t *start;
	struct word_ref *refs;
	size_t nrefs;
	/* spots: the key bytes, for the vector scan (nrare > 16: the scan
	 * falls back to one byte at a time) */
	unsigned char rare[16];
	unsigned nrare;
	/* spots, for a vector scan by nibbles (AVX2): a byte b is a key
	 * byte when nib_lo[b & 15] & nib_hi[b >> 4] is not 0. Exact while
	 * the key bytes have at most 8 distinct high nibbles (a bit each);
	 * past that, a few other bytes stop the scan too, and their pairs
	 * turn them away. */
	unsigned char nib_lo[16], nib_hi[16];
};

struct ruleset {
	int refcnt;
	struct word_index words;     /* at word starts */
	struct word_index spots;     /* anywhere */
	unsigned min_digits;         /* the shortest digit run any rule wants */
	uint32_t min_length;         /* the shortest text any rule can match */
	unsigned big_digits;         /* the shortest of 3 digits or more */
	char *dir;
	struct rule *rules;
	size_t nrules;
	bool jit;                    /* false when JIT was refused (MDWE) */
	pcre2_match_context *mctx;   /* match, depth and heap limits */
	pcre2_jit_stack *jit_stack;
	pcre2_match_data *md;        /* one per ruleset: the loop is single */
	void *scrub_scratch;         /* scrub_find's arrays, kept (scrub.c) */
};

/*
 * Load every *.rules file in dir (sorted, so rule order is stable).
 * Problems are reported as "FILE:LINE: message" on stderr (to_stderr) or
 * the log; NULL when any rule is invalid.
 */
struct ruleset *rules_load(const char *dir, bool to_stderr);
struct ruleset *rules_ref(struct ruleset *rs);
void rules_unref(struct ruleset *rs);

const char *rules_action_name(enum scrub_action a);
bool rules_action_parse(const char *s, enum scrub_action *out);

/*
 * Run every rule's own examples (through the whole engine, one rule at a
 * time). Returns the number of failures, each reported like load errors.
 */
int rules_check_examples(struct ruleset *rs, bool to_stderr);

#endif
