/*
 * json.h - a validating, streaming JSON rewriter. It walks a JSON text
 * once, hands every string value (decoded) and its path to a callback,
 * and copies the text through, byte for byte, except the strings the
 * callback replaces. The scrubber (request bodies) and the restorer
 * (answers, SSE events) use it, so a request leaves exactly as the client
 * wrote it but for the scrubbed strings: numbers, key order and spacing
 * are untouched, which a parse-and-dump round trip through a tree cannot
 * promise. jansson still parses bodies for the fields scrim reads
 * (model, stream).
 *
 * Strict: invalid UTF-8, lone surrogates, control characters in strings,
 * trailing garbage and nesting deeper than JSON_MAX_DEPTH are errors.
 * Iterative, so no input can exhaust the stack.
 */
#ifndef SCRIM_JSON_H
#define SCRIM_JSON_H

#include "buf.h"
#include "scrim.h"

#define JSON_MAX_DEPTH 64

struct json_seg {
	const char *key; /* raw key bytes (as escaped in the text), or NULL */
	size_t key_len;
	long index;      /* position in an array, or -1 */
};

struct json_path {
	int depth;
	struct json_seg seg[JSON_MAX_DEPTH];
	size_t value_start; /* the current value's bytes in the input, */
	size_t value_end;   /* for strings and scalars (quotes included) */
};

enum json_cb_result { JSON_KEEP, JSON_REPLACE, JSON_CB_ERROR };

/*
 * s[0..n) is a decoded string value (may hold NUL bytes), valid only
 * during the call and not NUL-terminated: without escapes it points into
 * the input. To replace it, put the new decoded text in repl and return
 * JSON_REPLACE.
 */
typedef enum json_cb_result (*json_string_cb)(void *arg,
                                              const struct json_path *path,
                                              const char *s, size_t n,
                                              struct buf *repl);

enum json_result {
	JSON_OK,
	JSON_INVALID,  /* not JSON we accept; *err_pos says where */
	JSON_TOO_DEEP,
	JSON_TOO_BIG,  /* the output or a string passed its cap */
	JSON_ABORTED,  /* the callback returned JSON_CB_ERROR */
};

/*
 * Walk in[0..n). out (may be NULL: walk only) receives the rewritten text;
 * *replaced counts strings replaced. max_string caps one decoded string.
 */
enum json_result json_rewrite(const char *in, size_t n, json_string_cb cb,
                              void *arg, struct buf *out, size_t max_string,
                              size_t *replaced, size_t *err_pos);
/* The same, but out is left as it was when nothing was replaced (most
 * request bodies): the caller keeps using `in`. */
enum json_result json_rewrite_changed(const char *in, size_t n,
                                      json_string_cb cb, void *arg,
                                      struct buf *out, size_t max_string,
                                      size_t *replaced, size_t *err_pos);

/*
 * Validate and walk without rewriting: strings go to cb (its replacement
 * is ignored), numbers and true/false/null to scalar_cb as raw text.
 */
typedef void (*json_scalar_cb)(void *arg, const struct json_path *path,
                               const char *raw, size_t n);
enum json_result json_walk(const char *in, size_t n, json_string_cb cb,
                           json_scalar_cb scalar_cb, void *arg,
                           size_t max_string, size_t *err_pos);

/* Containers too: open and close give the offset of the bracket; the
 * path is the container's own place (its key in the parent). */
struct json_walk_cbs {
	json_string_cb str;
	json_scalar_cb scalar;
	void (*open)(void *arg, const struct json_path *path, size_t off,
	             char kind);
	void (*close)(void *arg, const struct json_path *path, size_t off,
	              char kind);
	void *arg;
};
enum json_result json_walk_all(const char *in, size_t n,
                               const struct json_walk_cbs *cbs,
                               size_t max_string, size_t *err_pos);

/* Append s as a JSON string body (no quotes), escaping what JSON needs. */
bool json_escape_into(struct buf *b, const char *s, size_t n) SCRIM_MUSTCHECK;

/* Does path segment `level` (0 = outermost) have key `key`? */
bool json_seg_is(const struct json_path *p, int level, const char *key);
/* The key of the innermost object member holding the value, or NULL. */
const struct json_seg *json_path_last(const struct json_path *p);

#endif
