/*
 * buf.h - a growable byte buffer with a hard cap (curl's dynbuf idea):
 * every buffer that holds client- or provider-sized data says up front
 * how large it may grow, and an append past that fails instead of
 * allocating. buf_wipe clears secrets (PII values) before freeing.
 */
#ifndef SCRIM_BUF_H
#define SCRIM_BUF_H

#include "scrim.h"

struct buf {
	char *p;
	size_t len;
	size_t cap;
	size_t max; /* appends past this fail */
	size_t dirty; /* bytes ever written: what buf_wipe clears */
};

void buf_init(struct buf *b, size_t max);
bool buf_add(struct buf *b, const void *p, size_t n) SCRIM_MUSTCHECK;
bool buf_addc(struct buf *b, char c) SCRIM_MUSTCHECK;
bool buf_addf(struct buf *b, const char *fmt, ...) SCRIM_PRINTF(2, 3);
/* Make room for n more bytes now (one allocation instead of doublings);
 * false when that would pass the cap or memory runs out. */
bool buf_reserve(struct buf *b, size_t n) SCRIM_MUSTCHECK;
/* Room for n more bytes if it can be had (one allocation instead of
 * several doublings); nothing happens otherwise. */
void buf_hint(struct buf *b, size_t n);
void buf_reset(struct buf *b);
void buf_free(struct buf *b);
/* Overwrite the contents, then free. */
void buf_wipe(struct buf *b);

#endif
