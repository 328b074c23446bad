/* buf.c - capped growable buffers; see buf.h. */
#include "buf.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void
buf_init(struct buf *b, size_t max)
{
	b->p = NULL;
	b->len = 0;
	b->cap = 0;
	b->max = max;
	b->dirty = 0;
}

static bool
grow(struct buf *b, size_t need)
{
	size_t cap;
	char *p;

	if (need > b->max)
		return false;
	if (need + 1 <= b->cap)
		return true;
	/* The first block is as large as asked (a hint or one add of a known
	 * size, no power of two above it: under glibc's 1032-byte line a
	 * block comes from the per-thread cache, over it from the arenas);
	 * growth from there doubles. */
	if (b->cap == 0) {
		cap = need + 1 > 256 ? need + 1 : 256;
	} else {
		cap = b->cap;
		while (cap < need + 1)
			cap *= 2;
	}
	if (cap > b->max + 1)
		cap = b->max + 1;
	/* Client-sized: an allocation failure fails the request, no abort.
	 * Not realloc: a block it moves away from would be freed with the
	 * bytes in it, and buf_wipe could not reach them any more. */
	p = malloc(cap);
	if (p == NULL)
		return false;
	if (b->p != NULL) {
		size_t used = (b->dirty > b->len ? b->dirty : b->len) + 1;
		if (used > b->cap)
			used = b->cap;
		memcpy(p, b->p, used);
		explicit_bzero(b->p, used);
		free(b->p);
	}
	b->p = p;
	b->cap = cap;
	return true;
}

bool
buf_reserve(struct buf *b, size_t n)
{
	return n <= b->max - b->len && grow(b, b->len + n);
}

void
buf_hint(struct buf *b, size_t n)
{
	/* Past max it is only a hint not taken: buf_add still grows as far
	 * as max allows. */
	if (n <= b->max - b->len)
		(void)grow(b, b->len + n);
}

bool
buf_add(struct buf *b, const void *p, size_t n)
{
	if (n > b->max - b->len || !grow(b, b->len + n))
		return false;
	if (n)
		memcpy(b->p + b->len, p, n);
	b->len += n;
	b->p[b->len] = '\0';
	if (b->len > b->dirty)
		b->dirty = b->len;
	return true;
}

bool
buf_addc(struct buf *b, char c)
{
	return buf_add(b, &c, 1);
}

bool
buf_addf(struct buf *b, const char *fmt, ...)
{
	char tmp[512];
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(tmp, sizeof(tmp), fmt, ap);
	va_end(ap);
	if (n < 0 || (size_t)n >= sizeof(tmp))
		return false;
	return buf_add(b, tmp, (size_t)n);
}

void
buf_reset(struct buf *b)
{
	b->len = 0;
	if (b->p)
		b->p[0] = '\0';
}

void
buf_free(struct buf *b)
{
	free(b->p);
	b->p = NULL;
	b->len = b->cap = b->dirty = 0;
}

void
buf_wipe(struct buf *b)
{
	/* explicit_bzero: a memset the compiler may not drop, at memset
	 * speed (OPENSSL_cleanse goes byte by byte). Only what was ever
	 * written (and its NUL): clearing untouched capacity would fault in
	 * pages just to zero them. Code that writes past len by hand keeps
	 * len at the end of what it wrote until the wipe. */
	if (b->p) {
		size_t n = (b->dirty > b->len ? b->dirty : b->len) + 1;
		explicit_bzero(b->p, n < b->cap ? n : b->cap);
	}
	buf_free(b);
}
