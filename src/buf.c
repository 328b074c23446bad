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
	cap = b->cap ? b->cap : 256;
	while (cap < need + 1)
		cap *= 2;
	if (cap > b->max + 1)
		cap = b->max + 1;
	/* Client-sized: an allocation failure fails the request, no abort. */
	p = realloc(b->p, cap);
	if (p == NULL)
		return false;
	b->p = p;
	b->cap = cap;
	return true;
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
	b->len = b->cap = 0;
}

void
buf_wipe(struct buf *b)
{
	/* explicit_bzero: a memset the compiler may not drop, at memset
	 * speed (OPENSSL_cleanse goes byte by byte). */
	if (b->p)
		explicit_bzero(b->p, b->cap);
	buf_free(b);
}
