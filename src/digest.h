/*
 * digest.h - SHA-256 for the request path: key checks and validators hash
 * a few dozen bytes per call, where OpenSSL 3's one-shot EVP_Digest spends
 * most of its time fetching the algorithm and allocating a context.
 */
#ifndef SCRIM_DIGEST_H
#define SCRIM_DIGEST_H

#include <stdbool.h>
#include <stddef.h>

/* out = SHA-256(p[0..n)); false only if OpenSSL fails. Any thread. */
bool digest_sha256(const void *p, size_t n, unsigned char out[32]);

#endif
