/*
 * context.h - the context stage: passages retrieved from the local index
 * (vindex.c) for a request's latest user message, on a worker thread so
 * the event loop never waits on SQLite, and spliced into the request as a
 * system message (OpenAI) or system block (Anthropic), fenced and labelled
 * as reference material. The scrub stage runs after it, so retrieved
 * text is scrubbed like everything else before it leaves.
 *
 * An index built with an embeddings endpoint has its query embedded by
 * that endpoint, on the same worker thread (a blocking request bounded
 * by [index] embed_query_timeout); when the endpoint fails, the index is
 * searched by words alone and the result says so.
 */
#ifndef SCRIM_CONTEXT_H
#define SCRIM_CONTEXT_H

#include "buf.h"
#include "scrim.h"

struct event_base;
struct context;
struct context_job;
struct embed_conf;
struct vcrypt_key;

#define CONTEXT_MAX_IDS 32
/* Indexes one request searches, at most. */
#define CONTEXT_MAX_INDEXES 8

struct context_result {
	struct buf text;                 /* the fenced passages; "" if none */
	char ids[CONTEXT_MAX_IDS][32];   /* chunk ids, for the audit record */
	size_t nids;
	char err[512];                   /* "" unless retrieval failed or
	                                  * fell back to words alone */
};

typedef void (*context_cb)(void *arg, struct context_result *res);

/* Start the worker; indexes are state_dir/index/NAME.db. */
struct context *context_new(struct event_base *base, const char *state_dir);
void context_free(struct context *cx);

/*
 * Retrieve up to k passages for query from the named indexes, at most
 * max_tokens (~4 bytes each) of them; embedders[i] is how index i's
 * queries are embedded and keys[i] the key it is encrypted with (unset:
 * none; keys may be NULL for none at all), both copied. cb runs later on
 * the loop's thread (result owned by the callee until cb returns).
 * NULL: not queued.
 */
struct context_job *context_retrieve(struct context *cx, const char *query,
                                     const char *const *indexes,
                                     const struct embed_conf *embedders,
                                     const struct vcrypt_key *keys,
                                     size_t nindexes, size_t k,
                                     size_t max_tokens, context_cb cb,
                                     void *arg);
/* The request is gone: its callback will not run. */
void context_cancel(struct context_job *j);

/*
 * Tenancy. A virtual key may carry an index grant: "" (none: the route's
 * indexes apply), "none" (no index at all), or index names separated by
 * commas, at most CONTEXT_MAX_INDEXES of letters, digits, '-' and '_'.
 * context_grant_valid says whether s is one (for `keys create` and the
 * admin API); err (may be NULL) says what is wrong.
 */
bool context_grant_valid(const char *s, char *err, size_t errlen);

/*
 * The indexes a request may search: the route's (route[0..n)), narrowed
 * to the key's grant when it has one. With require, a request without a
 * grant (a key made without --indexes, a [keys] key, auth off) gets none.
 * out receives pointers into route; returns how many (0: no context).
 */
size_t context_grant_apply(char *const *route, size_t n, const char *grant,
                           bool require, const char **out);

/*
 * Splice result text into a request body (OpenAI chat messages or
 * Anthropic messages, told apart by the body's shape). out receives the
 * new body; false when the body has no place for it (left unchanged).
 */
bool context_inject(const char *body, size_t len, const char *text,
                    size_t tlen, bool anthropic, struct buf *out);

/* The text of the last user message in a chat or messages body. */
bool context_query(const char *body, size_t len, struct buf *out);

#endif
