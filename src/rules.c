/*
 * rules.c - the rule pack reader and compiler. A pack is an INI file
 * (ini.c) with one [rule ID] section per rule; docs/rules.md is the
 * reference. Every pattern is compiled once, in UTF mode, with its match
 * limits set in one shared match context so no input can make a rule run
 * away (ReDoS): a rule that hits a limit is an error the caller must
 * treat as "cannot scrub", never as "nothing found".
 */
#include "rules.h"

#include "alloc.h"
#include "ini.h"
#include "log.h"
#include "scrub.h"

#include <dirent.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define RULES_MAX_FILE (4 * 1024 * 1024)
#define RULES_MAX_FILES 256
/* PCRE2 limits, per pcre2_match call. Windows keep subjects small, so
 * these are far above what an honest match needs (RELIABILITY.md §6). */
#define RULES_MATCH_LIMIT 1000000
#define RULES_DEPTH_LIMIT 10000
#define RULES_HEAP_LIMIT_KB (64 * 1024)

static const char *const action_names[ACT__COUNT] = {
	"redact", "mask", "hash", "tokenize", "block", "local", "allow",
};

const char *
rules_action_name(enum scrub_action a)
{
	return (unsigned)a < ACT__COUNT ? action_names[a] : "?";
}

bool
rules_action_parse(const char *s, enum scrub_action *out)
{
	for (int i = 0; i < ACT__COUNT; i++)
		if (strcmp(s, action_names[i]) == 0) {
			*out = (enum scrub_action)i;
			return true;
		}
	return false;
}

struct rloader {
	struct ruleset *rs;
	const char *file;
	bool to_stderr;
	int errors;
	struct rule *cur; /* rule being read, or NULL */
	bool in_section;  /* a section header was read in this file */
	unsigned seen;    /* bit per key, against repeats */
};

SCRIM_PRINTF(3, 4) static void
rcomplain(struct rloader *ld, int line, const char *fmt, ...)
{
	char msg[600];
	va_list ap;

	va_start(ap, fmt);
	(void)vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	ld->errors++;
	if (ld->to_stderr && line > 0)
		fprintf(stderr, "%s:%d: %s\n", ld->file, line, msg);
	else if (ld->to_stderr)
		fprintf(stderr, "%s: %s\n", ld->file, msg);
	else
		log_error("rules %s:%d: %s", ld->file, line, msg);
}

/* Split "a|b|c" into trimmed, lower-cased (when fold) pieces. */
static char **
split_bar(const char *v, size_t *count, bool fold)
{
	char **list = NULL;
	size_t n = 0;

	while (*v) {
		const char *e = strchr(v, '|');
		size_t len = e ? (size_t)(e - v) : strlen(v);
		const char *s = v;
		while (len > 0 && (*s == ' ' || *s == '\t'))
			s++, len--;
		while (len > 0 && (s[len - 1] == ' ' || s[len - 1] == '\t'))
			len--;
		if (len > 0) {
			char *w = xstrndup(s, len);
			if (fold)
				for (char *p = w; *p; p++)
					if (*p >= 'A' && *p <= 'Z')
						*p = (char)(*p + 32);
			list = xrealloc(list, sizeof(*list) * (n + 1));
			list[n++] = w;
		}
		if (e == NULL)
			break;
		v = e + 1;
	}
	*count = n;
	return list;
}

static void
free_list(char **l, size_t n)
{
	for (size_t i = 0; i < n; i++)
		free(l[i]);
	free(l);
}

static bool
parse_example(struct rloader *ld, int line, const char *v, bool positive)
{
	struct rule *r = ld->cur;
	struct rule_example ex;
	size_t n = strlen(v), o = 0;
	char *text = xmalloc(n + 1);

	bool open = false;

	memset(&ex, 0, sizeof(ex));
	ex.positive = positive;
	ex.line = line;
	for (size_t i = 0; i < n;) {
		if (v[i] == '[' && v[i + 1] == '[' && !open) {
			if (!positive || ex.nspans == 4) {
				rcomplain(ld, line, "[[...]] marks values in `match` "
				                    "examples only, at most 4");
				free(text);
				return false;
			}
			ex.starts[ex.nspans] = o;
			open = true;
			i += 2;
			continue;
		}
		if (v[i] == ']' && v[i + 1] == ']' && open) {
			ex.ends[ex.nspans++] = o;
			open = false;
			i += 2;
			continue;
		}
		if (v[i] == '\\' && (v[i + 1] == 'n' || v[i + 1] == 't' ||
		                      v[i + 1] == '\\')) {
			/* Examples are one line: \n, \t and \\ stand for the
			 * characters a multi-line value needs. */
			text[o++] = (char)(v[i + 1] == 'n'   ? '\n'
			                   : v[i + 1] == 't' ? '\t'
			                                     : '\\');
			i += 2;
			continue;
		}
		text[o++] = v[i++];
	}
	text[o] = '\0';
	if (open) {
		rcomplain(ld, line, "[[ without its closing ]]");
		free(text);
		return false;
	}
	/* Examples run through pcre2_match with PCRE2_NO_UTF_CHECK, like
	 * request text that scrub already validated. */
	if (!scrub_utf8_valid(text, o)) {
		rcomplain(ld, line, "example is not valid UTF-8");
		free(text);
		return false;
	}
	if (positive && ex.nspans == 0) {
		rcomplain(ld, line, "a `match` example marks its value as "
		                    "[[value]]");
		free(text);
		return false;
	}
	ex.text = text;
	r->examples = xrealloc(r->examples,
	                       sizeof(*r->examples) * (r->nexamples + 1));
	r->examples[r->nexamples++] = ex;
	return true;
}

static void
on_section(void *arg, int line, char *hdr)
{
	struct rloader *ld = arg;
	struct ruleset *rs = ld->rs;
	char *name;
	struct rule *r;

	ld->cur = NULL;
	ld->in_section = true;
	if (strncmp(hdr, "rule ", 5) != 0) {
		rcomplain(ld, line, "expected [rule ID]");
		return;
	}
	name = hdr + 5;
	while (*name == ' ')
		name++;
	if (*name == '\0' || strspn(name, "abcdefghijklmnopqrstuvwxyz"
	                                  "0123456789_.-") != strlen(name)) {
		rcomplain(ld, line, "rule id '%s': use lower-case letters, digits, "
		                    "'.', '_' and '-'", name);
		return;
	}
	for (size_t i = 0; i < rs->nrules; i++)
		if (strcmp(rs->rules[i].id, name) == 0) {
			rcomplain(ld, line, "rule '%s' is already defined at %s:%d",
			          name, rs->rules[i].file, rs->rules[i].line);
			return;
		}
	rs->rules = xrealloc(rs->rules, sizeof(*rs->rules) * (rs->nrules + 1));
	r = &rs->rules[rs->nrules++];
	memset(r, 0, sizeof(*r));
	r->id = xstrdup(name);
	r->file = xstrdup(ld->file);
	r->line = line;
	r->score = 0.8;
	r->action = ACT_TOKENIZE;
	r->anchor = ANCHOR_ANY;
	r->win_before = 64;
	r->win_after = 256;
	r->context_window = 64;
	ld->cur = r;
	ld->seen = 0;
}

/* Entries of a words list: '*' only at an end, 2 bytes or more besides. */
static bool
words_valid(struct rloader *ld, int line, const char *what, char **list,
            size_t n)
{
	for (size_t k = 0; k < n; k++) {
		const char *w = list[k];
		size_t wl = strlen(w), core = wl;
		bool lead = wl > 0 && w[0] == '*';
		bool trail = wl > 1 && w[wl - 1] == '*';
		core -= lead + trail;
		if (core >= 2 && memchr(w + lead, '*', core) != NULL) {
			rcomplain(ld, line, "%s: '%s': '*' only at the start (inside a "
			                    "word) or the end (a prefix)", what, w);
			return false;
		}
		if (core < 2) {
			rcomplain(ld, line, "%s: '%s' is shorter than 2 bytes (use char "
			                    "or literals)", what, w);
			return false;
		}
	}
	return true;
}

/* The bytes of a set written as in a regex class, without the brackets
 * ("0-9a-f:"), into a 256-bit map. */
static void
byte_set(const char *c, const char *e, uint64_t bits[4])
{
	memset(bits, 0, 4 * sizeof(*bits));
	while (c < e) {
		unsigned char lo = (unsigned char)*c, hi = lo;
		if (c + 2 < e && c[1] == '-') {
			hi = (unsigned char)c[2];
			c += 3;
		} else {
			c++;
		}
		for (unsigned b = lo; b <= hi; b++)
			bits[b >> 6] |= 1ULL << (b & 63);
	}
}

static bool
parse_anchor(struct rloader *ld, int line, const char *v)
{
	struct rule *r = ld->cur;

	if (strcmp(v, "any") == 0) {
		r->anchor = ANCHOR_ANY;
	} else if (strncmp(v, "char ", 5) == 0 && strlen(v) == 6) {
		r->anchor = ANCHOR_CHAR;
		r->anchor_char = (unsigned char)v[5];
	} else if (strncmp(v, "char ", 5) == 0 && v[6] == ' ' && v[7] == '[' &&
	           v[strlen(v) - 1] == ']' && strlen(v) > 9) {
		/* "char : [0-9a-f:]": only where the next byte is in the set,
		 * so a ':' or '-' in prose does not open a window. */
		r->anchor = ANCHOR_CHAR;
		r->anchor_char = (unsigned char)v[5];
		r->anchor_next_set = true;
		byte_set(v + 8, v + strlen(v) - 1, r->anchor_next);
	} else if (strncmp(v, "digits ", 7) == 0) {
		char *end;
		long d = strtol(v + 7, &end, 10);
		size_t el = strlen(end);
		if (el > 0 && !(el > 3 && end[0] == ' ' && end[1] == '[' &&
		                end[el - 1] == ']')) {
			rcomplain(ld, line, "anchor digits N [set]: N from 1 to 64, "
			                    "then optionally a byte set such as [A-Z]");
			return false;
		}
		if (d < 1 || d > 64) {
			rcomplain(ld, line, "anchor digits N: N from 1 to 64");
			return false;
		}
		r->anchor = ANCHOR_DIGITS;
		r->anchor_digits = (unsigned)d;
		/* "digits 2 [A-Z]": only runs right after a byte of the set,
		 * so an IBAN rule looks at its check digits, not at every
		 * number. */
		if (el > 0) {
			r->anchor_prev_set = true;
			byte_set(end + 2, end + el - 1, r->anchor_prev);
		}
	} else if (strncmp(v, "token ", 6) == 0) {
		char *end;
		long d = strtol(v + 6, &end, 10);
		if (*end || d < 8 || d > 1024) {
			rcomplain(ld, line, "anchor token N: N from 8 to 1024");
			return false;
		}
		r->anchor = ANCHOR_TOKEN;
		r->anchor_digits = (unsigned)d;
	} else if (strncmp(v, "words ", 6) == 0 ||
	           strncmp(v, "literals ", 9) == 0) {
		bool words = v[0] == 'w';
		r->anchor = words ? ANCHOR_WORDS : ANCHOR_LITERALS;
		free_list(r->anchor_words, r->nanchor_words);
		r->anchor_words = split_bar(v + (words ? 6 : 9), &r->nanchor_words,
		                            words);
		if (r->nanchor_words == 0) {
			rcomplain(ld, line, "anchor %s needs at least one entry",
			          words ? "words" : "literals");
			return false;
		}
		if (words && !words_valid(ld, line, "anchor words", r->anchor_words,
		                          r->nanchor_words))
			return false;
		r->short_literals = false;
		for (size_t k = 0; !words && k < r->nanchor_words; k++)
			r->short_literals |= strlen(r->anchor_words[k]) < 2;
	} else {
		rcomplain(ld, line, "anchor: 'any', 'char C', 'digits N', "
		                    "'token N', 'words a|b' or 'literals A|B'");
		return false;
	}
	return true;
}

static void
on_key(void *arg, int line, char *key, char *v)
{
	static const char *const keys[] = {
	    "type", "pattern", "validator", "anchor", "window", "context",
	    "context_required", "context_window", "negative", "score", "action",
	    "match", "nomatch", "inside", "near", "follows",
	};
	struct rloader *ld = arg;
	struct rule *r = ld->cur;
	size_t k;

	if (r == NULL && !ld->in_section) {
		/* Before any [rule]: silently dropping it would hide a
		 * misplaced header or a truncated file. */
		rcomplain(ld, line, "'%s' outside a [rule ID] section", key);
		return;
	}
	if (r == NULL)
		return; /* inside a refused section: already reported */
	for (k = 0; k < SCRIM_ARRAY_LEN(keys); k++)
		if (strcmp(keys[k], key) == 0)
			break;
	if (k == SCRIM_ARRAY_LEN(keys)) {
		rcomplain(ld, line, "unknown key '%s' in rule '%s'", key, r->id);
		return;
	}
	/* Every key once, but the examples (match, nomatch). */
	if (k != 11 && k != 12 && (ld->seen & (1u << k))) {
		rcomplain(ld, line, "'%s' is set twice in rule '%s'", key, r->id);
		return;
	}
	ld->seen |= 1u << k;
	switch (k) {
	case 0: /* type */
		/* At most 30: a placeholder is the type, '_' and up to 16 hex
		 * digits in the vault's 48 bytes (vault_put refused longer
		 * types, so such a rule failed every request it matched). */
		if (*v == '\0' || strspn(v, "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_")
		                      != strlen(v) || strlen(v) > 30) {
			rcomplain(ld, line, "type: upper-case letters, digits and "
			                    "'_', at most 30");
			return;
		}
		r->type = xstrdup(v);
		break;
	case 1:
		r->pattern = xstrdup(v);
		break;
	case 2:
		r->validator = validator_find(v);
		if (r->validator == NULL) {
			rcomplain(ld, line, "validator '%s' is unknown (known: %s)", v,
			          validator_names());
			return;
		}
		r->validator_name = xstrdup(v);
		break;
	case 3:
		parse_anchor(ld, line, v);
		break;
	case 4: {
		/* strtoul, not sscanf: "%u" wraps 4294967297 to 1. */
		char *e1, *e2 = NULL;
		unsigned long b = strtoul(v, &e1, 10), a = 0;

		if (e1 != v)
			a = strtoul(e1, &e2, 10);
		if (e1 == v || e2 == e1 || b > 65536 || a > 65536) {
			rcomplain(ld, line, "window: two numbers of bytes, before "
			                    "and after the anchor (at most 65536)");
			return;
		}
		r->win_before = (unsigned)b;
		r->win_after = (unsigned)a;
		break;
	}
	case 5:
		r->context = split_bar(v, &r->ncontext, true);
		break;
	case 6:
		if (strcmp(v, "yes") != 0 && strcmp(v, "no") != 0) {
			rcomplain(ld, line, "context_required: yes or no");
			return;
		}
		r->context_required = v[0] == 'y';
		break;
	case 7: {
		char *end;
		long w = strtol(v, &end, 10);
		if (*end || w < 1 || w > 4096) {
			rcomplain(ld, line, "context_window: bytes, 1 to 4096");
			return;
		}
		r->context_window = (unsigned)w;
		break;
	}
	case 8:
		r->negative = split_bar(v, &r->nnegative, true);
		break;
	case 9: {
		char *end;
		double s = strtod(v, &end);
		if (*end || s <= 0 || s > 1) {
			rcomplain(ld, line, "score: a number in (0, 1]");
			return;
		}
		r->score = s;
		break;
	}
	case 10:
		if (!rules_action_parse(v, &r->action)) {
			rcomplain(ld, line, "action: redact, mask, hash, tokenize, "
			                    "block, local or allow");
			return;
		}
		break;
	case 11:
	case 12:
		parse_example(ld, line, v, k == 11);
		break;
	case 13:
		if (strcmp(v, "yes") != 0 && strcmp(v, "no") != 0) {
			rcomplain(ld, line, "inside: yes or no");
			return;
		}
		r->inside = v[0] == 'y';
		break;
	case 14:
		if (strncmp(v, "words ", 6) != 0) {
			rcomplain(ld, line, "near: words a|b|c");
			return;
		}
		r->near_words = split_bar(v + 6, &r->nnear_words, true);
		if (r->nnear_words == 0) {
			rcomplain(ld, line, "near words needs at least one entry");
			return;
		}
		if (!words_valid(ld, line, "near words", r->near_words,
		                 r->nnear_words))
			return;
		break;
	case 15:
		r->follows = split_bar(v, &r->nfollows, true);
		if (r->nfollows == 0) {
			rcomplain(ld, line, "follows: a|b|c, at least one entry");
			return;
		}
		r->follows_tail = xcalloc(1024, sizeof(uint64_t));
		r->follows_key = xcalloc(r->nfollows, sizeof(uint16_t));
		r->follows_len = xcalloc(r->nfollows, 1);
		for (size_t i = 0; i < r->nfollows; i++) {
			const unsigned char *f = (const unsigned char *)r->follows[i];
			size_t fl = strlen(r->follows[i]);
			unsigned tail;
			if (fl < 2 || fl > 32 || strpbrk(r->follows[i], " \t") != NULL) {
				rcomplain(ld, line, "follows: '%s' is not one word of "
				                    "2 to 32 bytes", r->follows[i]);
				return;
			}
			tail = (unsigned)f[fl - 2] << 8 | f[fl - 1];
			r->follows_tail[tail >> 6] |= 1ULL << (tail & 63);
			r->follows_key[i] = (uint16_t)tail;
			r->follows_len[i] = (uint8_t)fl;
		}
		break;
	}
}

static void
on_error(void *arg, int line, const char *msg)
{
	struct rloader *ld = arg;
	rcomplain(ld, line, "%s", msg);
	ld->cur = NULL;
}

static const struct ini_handler handler = {on_section, on_key, on_error};

static void
compile_rule(struct rloader *ld, struct ruleset *rs, struct rule *r)
{
	int ec;
	PCRE2_SIZE eo;
	PCRE2_UCHAR msg[256];
	int n;

	if (r->type == NULL || r->pattern == NULL) {
		rcomplain(ld, r->line, "rule '%s' needs type and pattern", r->id);
		return;
	}
	if (r->nfollows > 0 && r->anchor != ANCHOR_DIGITS) {
		rcomplain(ld, r->line, "rule '%s': follows needs anchor = digits N",
		          r->id);
		return;
	}
	if (r->nexamples == 0 || !r->examples[0].positive) {
		bool any = false;
		for (size_t i = 0; i < r->nexamples; i++)
			any = any || r->examples[i].positive;
		if (!any) {
			rcomplain(ld, r->line, "rule '%s' needs at least one `match` "
			                       "example", r->id);
			return;
		}
	}
	r->code = pcre2_compile((PCRE2_SPTR)r->pattern, PCRE2_ZERO_TERMINATED,
	                        PCRE2_UTF | PCRE2_NEVER_BACKSLASH_C |
	                            (r->inside ? PCRE2_USE_OFFSET_LIMIT : 0),
	                        &ec, &eo, NULL);
	if (r->code == NULL) {
		pcre2_get_error_message(ec, msg, sizeof(msg));
		rcomplain(ld, r->line, "rule '%s': pattern error at offset %zu: %s",
		          r->id, (size_t)eo, (const char *)msg);
		return;
	}
	n = pcre2_substring_number_from_name(r->code, (PCRE2_SPTR) "v");
	r->value_group = n > 0 ? (uint32_t)n : 0;
	if (rs->jit) {
		ec = pcre2_jit_compile(r->code, PCRE2_JIT_COMPLETE);
		if (ec != 0) {
			/* Refused under MemoryDenyWriteExecute (-48): match with
			 * the interpreter from now on, for every rule. */
			pcre2_get_error_message(ec, msg, sizeof(msg));
			log_warn("rules: PCRE2 JIT unavailable (%s); using the "
			         "interpreter", (const char *)msg);
			rs->jit = false;
		}
	}
}

static unsigned char
fold1(char c)
{
	return (unsigned char)(c >= 'A' && c <= 'Z' ? c + 32 : c);
}

static bool
alnum1(char c)
{
	return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') ||
	       (c >= 'A' && c <= 'Z');
}

/* Letters folded, digits kept, anything else 0: word_hash3's alphabet. */
static unsigned char
cls1(unsigned char c)
{
	if (c >= 'A' && c <= 'Z')
		return (unsigned char)(c + 32);
	return alnum1((char)c) ? c : 0;
}

/* One anchor entry as the indexes see it. */
struct entry {
	const char *text;
	size_t len;
	unsigned flags;
	bool at_start; /* words index (else spots) */
	unsigned key;
	uint16_t off;
};

/*
 * How rare a byte is in ordinary text, roughly: prose is lower-case
 * letters and spaces; capitals start sentences; '.' and ',' end them;
 * other punctuation, digits and the rare capitals are what keys, field
 * names and literals are made of. Picks the byte of an entry that the
 * spots pass stops at ("ghp_": '_', "eyJ": 'J', "*name:": ':'). Ties go
 * to the first, so AWS's AKIA, ASIA, ABIA... share 'A' and the pass
 * compares against fewer bytes.
 */
static int
byte_rarity(unsigned char c)
{
	if (c >= 0x80)
		return 3;
	if (c >= 'a' && c <= 'z')
		return strchr("jkqxz", c) ? 3 : 0;
	if (c >= 'A' && c <= 'Z')
		return strchr("JKQXZ", c) ? 5 : 3;
	if (c >= '0' && c <= '9')
		return 2;
	if (c == ' ' || c == '.' || c == ',' || c == '\'' || c == '\n')
		return c == ' ' ? 0 : 1;
	return 4;
}

/*
 * Entry k of rule r: "word" (a whole word), "word*" (a word's start),
 * "*part" (anywhere, even inside a word), a literal (anywhere, exact).
 * Entries of one byte (literals only) are not indexed: false.
 */
static bool
entry_of(const struct rule *r, size_t k, struct entry *e)
{
	bool near = k >= r->nanchor_words;
	const char *w = near ? r->near_words[k - r->nanchor_words]
	                     : r->anchor_words[k];
	size_t wl = strlen(w);

	memset(e, 0, sizeof(*e));
	if (!near && r->anchor == ANCHOR_LITERALS) {
		if (wl < 2)
			return false;
		e->text = w;
		e->len = wl;
	} else {
		bool lead = w[0] == '*', trail = wl > 1 && w[wl - 1] == '*';
		e->text = w + lead;
		e->len = wl - lead - trail;
		e->flags = WORD_FOLD;
		/* Punctuation at an end is its own boundary ("name:"). */
		if (!trail && alnum1(e->text[e->len - 1]))
			e->flags |= WORD_RIGHT;
		e->at_start = !lead && alnum1(e->text[0]);
		if (near)
			e->flags |= WORD_NEAR;
	}
	if (e->at_start) {
		e->key = (unsigned)fold1(e->text[0]) << 8 | fold1(e->text[1]);
		return true;
	}
	{
		int best = -1;
		for (size_t i = 0; i < e->len; i++) {
			int rr = byte_rarity((unsigned char)e->text[i]);
			if (rr > best) {
				best = rr;
				e->off = (uint16_t)i;
			}
		}
		e->key = (unsigned char)e->text[e->off];
	}
	return true;
}

/* The keys a spots entry is found under: the byte pair at its key byte
 * (the byte before and the key byte, or the key byte and the one after
 * when the key byte is first), in every case the entry allows. Keyed by
 * pairs, not bytes: ':' ends fifty field names, and a lookup by the
 * byte alone would try them all at every colon. */
static size_t
entry_keys(const struct entry *e, unsigned keys[4])
{
	unsigned char c = (unsigned char)e->key;
	bool before = e->off > 0;
	unsigned char o = (unsigned char)e->text[before ? e->off - 1 : e->off + 1];
	unsigned char cv[2] = {c, c}, ov[2] = {o, o};
	size_t nc = 1, no = 1, n = 0;

	if ((e->flags & WORD_FOLD) && (c | 0x20) >= 'a' && (c | 0x20) <= 'z') {
		cv[0] = c | 0x20;
		cv[1] = c & ~0x20u;
		nc = 2;
	}
	if ((e->flags & WORD_FOLD) && (o | 0x20) >= 'a' && (o | 0x20) <= 'z') {
		ov[0] = o | 0x20;
		ov[1] = o & ~0x20u;
		no = 2;
	}
	for (size_t i = 0; i < nc; i++)
		for (size_t j = 0; j < no; j++)
			keys[n++] = before ? (unsigned)ov[j] << 8 | cv[i]
			                   : SPOT_AFTER((unsigned)cv[i] << 8 | ov[j]);
	return n;
}

static void
bit_set(uint64_t *bits, unsigned k)
{
	bits[k >> 6] |= 1ULL << (k & 63);
}

/* Marks the hashes a word-start entry can show in the text: its first
 * four bytes; for a shorter entry, a boundary (0) after it when it is a
 * whole word, else whatever may follow, and then anything. */
static void
hash4_mark(struct word_index *wi, const struct entry *e)
{
	static const char any[] = "0123456789abcdefghijklmnopqrstuvwxyz";
	unsigned char t[4] = {0};
	size_t fixed = e->len < 4 ? e->len : 4;

	for (size_t i = 0; i < fixed; i++)
		t[i] = cls1((unsigned char)e->text[i]);
	/* The byte after a whole word is a boundary; after that, or after
	 * a prefix, any of the 37. */
	if (fixed < 4 && (e->flags & WORD_RIGHT))
		t[fixed++] = 0;
	if (fixed == 4) {
		bit_set(wi->bits, word_hash4(t[0], t[1], t[2], t[3]));
		return;
	}
	for (size_t x = 0; x < sizeof(any); x++) { /* the NUL is 0 */
		t[fixed] = (unsigned char)any[x];
		if (fixed == 3) {
			bit_set(wi->bits, word_hash4(t[0], t[1], t[2], t[3]));
			continue;
		}
		for (size_t y = 0; y < sizeof(any); y++)
			bit_set(wi->bits, word_hash4(t[0], t[1], t[2],
			                             (unsigned char)any[y]));
	}
}

/* Marks a spots entry's pair: before or after its key byte. */
static void
pair_mark(struct word_index *wi, const struct entry *e, unsigned key)
{
	if (e->off > 0)
		bit_set(wi->bits, key);
	else
		bit_set(wi->bits_after, SPOT_AFTER(key));
	bit_set(wi->keybytes, e->off > 0 ? key & 0xffu : SPOT_AFTER(key) >> 8);
}

static void
index_build(struct ruleset *rs, struct word_index *wi, bool at_start)
{
	size_t n = 0;
	uint32_t *fill;

	wi->start = xcalloc(65537, sizeof(*wi->start));
	/* Counting sort by key. */
	for (int pass = 0; pass < 2; pass++) {
		if (pass == 1) {
			for (size_t k = 1; k <= 65536; k++)
				wi->start[k] += wi->start[k - 1];
			wi->refs = xcalloc(n ? n : 1, sizeof(*wi->refs));
			wi->nrefs = n;
		}
		fill = pass == 1 ? xcalloc(65536, sizeof(*fill)) : NULL;
		for (size_t i = 0; i < rs->nrules; i++) {
			const struct rule *r = &rs->rules[i];
			size_t own = r->anchor == ANCHOR_WORDS ||
			                     r->anchor == ANCHOR_LITERALS
			                 ? r->nanchor_words
			                 : 0;
			/* The rule's anchor entries, then its near words. */
			for (size_t k = 0; k < r->nanchor_words + r->nnear_words; k++) {
				if (k < r->nanchor_words && k >= own)
					continue;
				struct entry e;
				unsigned keys[4];
				size_t nk;
				if (!entry_of(r, k, &e) || e.at_start != at_start)
					continue;
				if (at_start) {
					keys[0] = e.key;
					nk = 1;
				} else {
					nk = entry_keys(&e, keys);
				}
				for (size_t q = 0; q < nk; q++) {
					struct word_ref *ref;
					if (pass == 0) {
						wi->start[keys[q] + 1]++;
						n++;
						continue;
					}
					ref = &wi->refs[wi->start[keys[q]] + fill[keys[q]]++];
					ref->rule = (uint32_t)i;
					ref->word = (uint16_t)k;
					ref->len = (uint16_t)e.len;
					ref->off = e.off;
					ref->flags = (uint16_t)e.flags;
					ref->text = e.text;
					for (unsigned b = 0; b < 4 && b < ref->len; b++) {
						unsigned char c = (unsigned char)e.text[b];
						if (e.flags & WORD_FOLD)
							c = fold1((char)c);
						ref->head |= (uint32_t)c << (8 * b);
						ref->mask |= 0xffu << (8 * b);
					}
					if (at_start)
						hash4_mark(wi, &e);
					else
						pair_mark(wi, &e, keys[q]);
				}
			}
		}
		free(fill);
	}
}

static void
build_word_index(struct ruleset *rs)
{
	struct word_index *sp = &rs->spots;

	index_build(rs, &rs->words, true);
	index_build(rs, sp, false);
	{
		unsigned char bucket[16];
		unsigned nb = 0;
		memset(bucket, 0, sizeof(bucket));
		for (unsigned c = 0; c < 256; c++) {
			unsigned hi = c >> 4;
			if (!((sp->keybytes[c >> 6] >> (c & 63)) & 1))
				continue;
			if (sp->nrare < sizeof(sp->rare))
				sp->rare[sp->nrare] = (unsigned char)c;
			sp->nrare++;
			/* A bit per high nibble; the ninth and later share the
			 * last bit (inexact, see rules.h). */
			if (bucket[hi] == 0)
				bucket[hi] = (unsigned char)(1u << (nb < 8 ? nb++ : 7));
			sp->nib_hi[hi] = bucket[hi];
			sp->nib_lo[c & 15] |= bucket[hi];
		}
	}
	rs->min_digits = 64;
	rs->big_digits = 65;
	for (size_t i = 0; i < rs->nrules; i++) {
		unsigned d = rs->rules[i].anchor_digits;
		if (rs->rules[i].anchor != ANCHOR_DIGITS)
			continue;
		if (d < rs->min_digits)
			rs->min_digits = d;
		if (d >= 3 && d < rs->big_digits)
			rs->big_digits = d;
	}
}

static int
name_cmp(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

struct ruleset *
rules_load(const char *dir, bool to_stderr)
{
	struct ruleset *rs = xcalloc(1, sizeof(*rs));
	struct rloader ld;
	DIR *d;
	struct dirent *e;
	const char *jit;
	char *names[RULES_MAX_FILES];
	size_t nnames = 0;
	uint32_t max_groups = 1;

	memset(&ld, 0, sizeof(ld));
	ld.rs = rs;
	ld.to_stderr = to_stderr;
	ld.file = dir;
	rs->refcnt = 1;
	rs->dir = xstrdup(dir);
	/* SCRIM_PCRE2_JIT=0 measures what MemoryDenyWriteExecute=yes would
	 * cost (it makes the kernel refuse the JIT) without that sandbox. */
	jit = getenv("SCRIM_PCRE2_JIT");
	rs->jit = jit == NULL || strcmp(jit, "0") != 0;

	d = opendir(dir);
	if (d == NULL) {
		rcomplain(&ld, 0, "cannot open the rules directory: %s",
		          strerror(errno));
		goto fail;
	}
	while ((e = readdir(d)) != NULL) {
		size_t l = strlen(e->d_name);
		if (l > 6 && strcmp(e->d_name + l - 6, ".rules") == 0 &&
		    e->d_name[0] != '.' && nnames < RULES_MAX_FILES)
			names[nnames++] = xasprintf("%s/%s", dir, e->d_name);
	}
	closedir(d);
	qsort(names, nnames, sizeof(names[0]), name_cmp);
	if (nnames == 0)
		rcomplain(&ld, 0, "no *.rules files");
	for (size_t i = 0; i < nnames; i++) {
		size_t len;
		int err;
		char *text = ini_read_file(names[i], RULES_MAX_FILE, &len, &err);
		size_t first = rs->nrules;

		ld.file = names[i];
		ld.cur = NULL;
		ld.in_section = false;
		if (text == NULL) {
			rcomplain(&ld, 0, "cannot read: %s", strerror(err));
			continue;
		}
		ini_parse(text, &handler, &ld);
		free(text);
		for (size_t k = first; k < rs->nrules; k++)
			compile_rule(&ld, rs, &rs->rules[k]);
	}
	for (size_t i = 0; i < nnames; i++)
		free(names[i]);
	if (ld.errors > 0)
		goto fail;
	rs->min_length = UINT32_MAX;
	for (size_t k = 0; k < rs->nrules; k++) {
		uint32_t c = 0, m = 0;
		pcre2_pattern_info(rs->rules[k].code, PCRE2_INFO_CAPTURECOUNT, &c);
		if (c + 1 > max_groups)
			max_groups = c + 1;
		/* In characters, so also a bound on bytes; 0 when PCRE2 could
		 * not tell. */
		pcre2_pattern_info(rs->rules[k].code, PCRE2_INFO_MINLENGTH, &m);
		rs->rules[k].min_length = m;
		if (m < rs->min_length)
			rs->min_length = m;
	}
	build_word_index(rs);
	rs->mctx = pcre2_match_context_create(NULL);
	rs->md = pcre2_match_data_create(max_groups, NULL);
	if (rs->jit)
		rs->jit_stack = pcre2_jit_stack_create(32 * 1024, 16 * 1024 * 1024,
		                                       NULL);
	if (rs->mctx == NULL || rs->md == NULL || (rs->jit && !rs->jit_stack)) {
		rcomplain(&ld, 0, "out of memory for PCRE2");
		goto fail;
	}
	pcre2_set_match_limit(rs->mctx, RULES_MATCH_LIMIT);
	pcre2_set_depth_limit(rs->mctx, RULES_DEPTH_LIMIT);
	pcre2_set_heap_limit(rs->mctx, RULES_HEAP_LIMIT_KB);
	if (rs->jit)
		pcre2_jit_stack_assign(rs->mctx, NULL, rs->jit_stack);
	return rs;
fail:
	rules_unref(rs);
	return NULL;
}

struct ruleset *
rules_ref(struct ruleset *rs)
{
	rs->refcnt++;
	return rs;
}

void
rules_unref(struct ruleset *rs)
{
	if (rs == NULL || --rs->refcnt > 0)
		return;
	for (size_t i = 0; i < rs->nrules; i++) {
		struct rule *r = &rs->rules[i];
		free(r->id);
		free(r->type);
		free(r->file);
		free(r->pattern);
		free(r->validator_name);
		pcre2_code_free(r->code);
		free_list(r->anchor_words, r->nanchor_words);
		free_list(r->near_words, r->nnear_words);
		free_list(r->follows, r->nfollows);
		free(r->follows_tail);
		free(r->follows_key);
		free(r->follows_len);
		free_list(r->context, r->ncontext);
		free_list(r->negative, r->nnegative);
		for (size_t k = 0; k < r->nexamples; k++)
			free(r->examples[k].text);
		free(r->examples);
	}
	free(rs->rules);
	free(rs->words.start);
	free(rs->words.refs);
	free(rs->spots.start);
	free(rs->spots.refs);
	scrub_scratch_free(rs->scrub_scratch);
	pcre2_match_data_free(rs->md);
	pcre2_match_context_free(rs->mctx);
	pcre2_jit_stack_free(rs->jit_stack);
	free(rs->dir);
	free(rs);
}

int
rules_check_examples(struct ruleset *rs, bool to_stderr)
{
	struct rloader ld;
	struct scrub_hits hits;

	memset(&ld, 0, sizeof(ld));
	ld.to_stderr = to_stderr;
	scrub_hits_init(&hits);
	for (size_t i = 0; i < rs->nrules; i++) {
		struct rule *r = &rs->rules[i];
		ld.file = r->file;
		for (size_t k = 0; k < r->nexamples; k++) {
			const struct rule_example *ex = &r->examples[k];
			char err[128];

			scrub_hits_reset(&hits);
			if (scrub_find_rule(rs, r, ex->text, strlen(ex->text), &hits,
			                    err, sizeof(err)) != 0) {
				rcomplain(&ld, ex->line, "rule '%s': engine error: %s",
				          r->id, err);
				continue;
			}
			if (!ex->positive) {
				if (hits.n > 0)
					rcomplain(&ld, ex->line,
					          "rule '%s': `nomatch` example matched at "
					          "bytes %zu-%zu", r->id, hits.v[0].start,
					          hits.v[0].end);
				continue;
			}
			for (size_t s = 0; s < ex->nspans; s++) {
				bool found = false;
				for (size_t h = 0; h < hits.n; h++)
					found = found || (hits.v[h].start == ex->starts[s] &&
					                  hits.v[h].end == ex->ends[s]);
				if (!found)
					rcomplain(&ld, ex->line,
					          "rule '%s': `match` example: value %zu "
					          "(bytes %zu-%zu) not found whole%s",
					          r->id, s + 1, ex->starts[s], ex->ends[s],
					          hits.n ? " (found a different span)" : "");
			}
		}
	}
	scrub_hits_free(&hits);
	return ld.errors;
}
