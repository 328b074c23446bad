/*
 * certcache.h - leaf certificates for intercepted hosts: minted on first
 * use, signed by the local CA, kept in a bounded LRU. One ECDSA P-256 key
 * serves every leaf of a process (as mitmproxy does): minting is then a
 * signature, not a key generation.
 */
#ifndef SCRIM_CERTCACHE_H
#define SCRIM_CERTCACHE_H

#include "ca.h"
#include "scrim.h"

struct certcache;

struct certcache *certcache_new(struct scrim_ca *ca, size_t capacity);
void certcache_free(struct certcache *cc); /* does not free the CA */

/* The leaf for host (a DNS name or an IP literal); NULL on failure. The
 * certificate stays owned by the cache. */
X509 *certcache_get(struct certcache *cc, const char *host);
EVP_PKEY *certcache_key(struct certcache *cc);

struct certcache_stats {
	uint64_t hits, misses, evictions;
	size_t size;
};
void certcache_stats(const struct certcache *cc, struct certcache_stats *st);

#endif
