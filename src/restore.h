/*
 * restore.h - puts the original values back where the provider's answer
 * carries placeholders, in whole JSON answers and in SSE streams, where a
 * placeholder can be split across network reads and across events.
 * Models change placeholders slightly: case, markdown around them,
 * missing angle brackets, HTML or JSON escapes of the brackets, an
 * escaped underscore; all of those are recognised. Only placeholders of
 * this request's vault are restored, so an invented one stays as is.
 */
#ifndef SCRIM_RESTORE_H
#define SCRIM_RESTORE_H

#include "buf.h"
#include "scrim.h"

struct vault;
struct restore;

enum restore_mode {
	RESTORE_SSE,   /* text/event-stream: event by event */
	RESTORE_WHOLE, /* anything else: held whole, restored at the end */
};

struct restore *restore_new(const struct vault *v, enum restore_mode mode,
                            size_t max_whole);
void restore_free(struct restore *r);

/*
 * Feed answer bytes; output ready for the client is appended to out.
 * Returns false when the answer cannot be restored (an event or a whole
 * answer past its cap, malformed framing): the caller ends the answer
 * with an error rather than letting placeholders or half events through.
 */
bool restore_feed(struct restore *r, const char *p, size_t n,
                  struct buf *out) SCRIM_MUSTCHECK;
/* The upstream answer ended: flush what was held back. */
bool restore_finish(struct restore *r, struct buf *out) SCRIM_MUSTCHECK;

/* Restore placeholders in one decoded string (exported for tests). Values
 * are JSON-escaped when json_text says the string itself holds JSON
 * (tool-call arguments). Returns the number of placeholders replaced. */
size_t restore_text(const struct vault *v, const char *s, size_t n,
                    bool json_text, struct buf *out, bool *ok);
/* Length of the longest suffix of s[0..n) that could begin a placeholder
 * of v (held back until the next piece arrives). */
size_t restore_holdback(const struct vault *v, const char *s, size_t n);

#endif
