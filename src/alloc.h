/*
 * alloc.h - allocation for fixed bookkeeping. These abort on exhaustion
 * (Redis' zmalloc policy): a gateway that cannot allocate a few hundred
 * bytes of state cannot do anything useful. Client-sized allocations
 * (bodies) must not use them; they are capped and fail the request.
 */
#ifndef SCRIM_ALLOC_H
#define SCRIM_ALLOC_H

#include "scrim.h"

void *xmalloc(size_t n);
void *xcalloc(size_t nmemb, size_t n);
void *xrealloc(void *p, size_t n);
char *xstrdup(const char *s);
char *xstrndup(const char *s, size_t n);
char *xasprintf(const char *fmt, ...) SCRIM_PRINTF(1, 2);
/* Overwrite then free a secret; NULL is fine. */
void xfree_secret(char *s);

#endif
