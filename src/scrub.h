/*
 * scrub.h - the detection engine and the rewriting of what it finds.
 * scrub_find runs a ruleset over one UTF-8 string: each rule only looks
 * at windows around its anchors (an '@', a run of digits, a keyword), so
 * prose without candidates costs one cheap scan, not one regex pass per
 * rule. Overlaps are resolved deterministically (allow first, then
 * confidence, then length, then position). scrub_apply turns the hits
 * into the scrubbed string.
 */
#ifndef SCRIM_SCRUB_H
#define SCRIM_SCRUB_H

#include "buf.h"
#include "rules.h"
#include "scrim.h"

struct vault;

struct scrub_hit {
	size_t start, end; /* byte offsets of the value */
	const struct rule *rule;
	double score;
};

struct scrub_hits {
	struct scrub_hit *v;
	size_t n, cap;
};

void scrub_hits_init(struct scrub_hits *h);
void scrub_hits_reset(struct scrub_hits *h);
void scrub_hits_free(struct scrub_hits *h);

/*
 * All rules over s[0..n), overlaps resolved, sorted by start. s must be
 * valid UTF-8 (the JSON walker and the CLI check). Returns 0, or -1 with
 * err filled when any rule could not run to the end (a PCRE2 limit, bad
 * UTF-8, no memory): the caller must then fail closed.
 */
int scrub_find(struct ruleset *rs, const char *s, size_t n,
               struct scrub_hits *out, char *err, size_t errlen)
    SCRIM_MUSTCHECK;
/* One rule's accepted candidates, for its examples (no overlap pass). */
int scrub_find_rule(struct ruleset *rs, const struct rule *r, const char *s,
                    size_t n, struct scrub_hits *out, char *err,
                    size_t errlen) SCRIM_MUSTCHECK;

#define SCRUB_MAX_COUNTS 64

struct scrub_count {
	const char *name; /* an entity type or a rule id, owned by the rules */
	unsigned count;
};

/* What applying the hits to one string found, accumulated per request. */
struct scrub_stats {
	struct scrub_count types[SCRUB_MAX_COUNTS];
	size_t ntypes;
	struct scrub_count rules[SCRUB_MAX_COUNTS];
	size_t nrules;
	unsigned replaced;     /* spans changed */
	unsigned allowed;      /* spans kept by allow rules */
	const struct rule *block; /* first rule whose action is block */
	const struct rule *local; /* first rule whose action is local */
	unsigned by_action[ACT__COUNT];
};

/* A per-route (or per-key) action replacing a rule's own, by rule id glob
 * ("secret.*") or entity type ("EMAIL"). */
struct scrub_override {
	const char *match;
	enum scrub_action action;
};

struct scrub_ctx {
	const struct scrub_override *overrides;
	size_t noverrides;
	unsigned char secret[32]; /* keys hash and tokenize pseudonyms */
	const char *key_id;       /* tokens are stable per client key */
	struct vault *vault;      /* receives tokenized values; may be NULL */
	struct scrub_stats stats;
};

/*
 * Write s with every hit replaced per its rule's action into out.
 * Returns false when out's cap is passed or the vault is full.
 */
bool scrub_apply(struct scrub_ctx *ctx, const char *s, size_t n,
                 const struct scrub_hits *hits, struct buf *out)
    SCRIM_MUSTCHECK;

/* Is s[0..n) valid UTF-8? (PCRE2 runs with NO_UTF_CHECK after this.) */
bool scrub_utf8_valid(const char *s, size_t n);

/* scrub_find keeps its arrays with the ruleset between texts (as PCRE2's
 * match data): freed with the ruleset. */
void scrub_scratch_free(void *scratch);

#endif
