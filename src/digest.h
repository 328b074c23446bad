/*
 * digest.h - SHA-256 and HMAC-SHA256 for hot paths: key checks,
 * validators, placeholders and the audit chain hash a few dozen bytes per
 * call, where OpenSSL 3's one-shot calls spend most of their time fetching
 * the algorithm and setting a context up.
 */
#ifndef SCRIM_DIGEST_H
#define SCRIM_DIGEST_H

#include <stdbool.h>
#include <stddef.h>

/* out = SHA-256(p[0..n)); false only if OpenSSL fails. Any thread. */
bool digest_sha256(const void *p, size_t n, unsigned char out[32]);

/*
 * This thread's HMAC-SHA256 context, keyed with key and ready for
 * EVP_MAC_update/EVP_MAC_final; NULL if OpenSSL fails. Keyed again only
 * when the key differs from the last call's on this thread. The context
 * and its key are wiped when the thread ends.
 */
struct evp_mac_ctx_st *digest_hmac_ctx(const unsigned char key[32]);

#endif
