/*
 * usage.h - token usage read from providers' answers, for settling
 * reservations and for the audit record: OpenAI's `usage` (chat,
 * completions, embeddings, Responses) and Anthropic's (`message_start`
 * and `message_delta` in streams). For streams a tap reads each SSE event
 * as it passes, and can drop the usage-only chunk scrim asked for on the
 * client's behalf (stream_options.include_usage), so the client sees the
 * stream it asked for.
 */
#ifndef SCRIM_USAGE_H
#define SCRIM_USAGE_H

#include "buf.h"
#include "scrim.h"

struct usage {
	long in, out; /* -1 until seen */
};

void usage_init(struct usage *u);
/* Read usage numbers from one JSON text (an answer or an event). */
void usage_from_json(const char *p, size_t n, struct usage *u);

struct usage_tap {
	struct usage *u;
	bool strip_usage_chunk; /* drop OpenAI's usage-only chunk */
	struct buf line;        /* the event being assembled */
};

void usage_tap_init(struct usage_tap *t, struct usage *u, bool strip);
/* Pass SSE bytes through to out, reading usage, maybe dropping one event.
 * False when an event is larger than the tap's cap. */
bool usage_tap_feed(struct usage_tap *t, const char *p, size_t n,
                    struct buf *out) SCRIM_MUSTCHECK;
bool usage_tap_finish(struct usage_tap *t, struct buf *out) SCRIM_MUSTCHECK;
void usage_tap_free(struct usage_tap *t);

#endif
