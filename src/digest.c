/*
 * digest.c - SHA-256 with the algorithm fetched from OpenSSL's provider
 * once per process and one digest context per thread, reused. Through
 * EVP_Digest(..., EVP_sha256(), ...) every call did an implicit fetch
 * (a locked lookup in the provider store) and a context allocation:
 * nearly all of a virtual-key check's cost.
 */
#include "digest.h"

#include <openssl/evp.h>
#include <pthread.h>

static pthread_once_t once = PTHREAD_ONCE_INIT;
static EVP_MD *sha256; /* for the process's lifetime */
static pthread_key_t ctx_key;
static bool ctx_key_ok;

static void
ctx_free(void *ctx)
{
	EVP_MD_CTX_free(ctx);
}

static void
init(void)
{
	sha256 = EVP_MD_fetch(NULL, "SHA256", NULL);
	ctx_key_ok = pthread_key_create(&ctx_key, ctx_free) == 0;
}

bool
digest_sha256(const void *p, size_t n, unsigned char out[32])
{
	EVP_MD_CTX *ctx;

	pthread_once(&once, init);
	if (sha256 == NULL || !ctx_key_ok)
		return EVP_Digest(p, n, out, NULL, EVP_sha256(), NULL) == 1;
	ctx = pthread_getspecific(ctx_key);
	if (ctx == NULL) {
		ctx = EVP_MD_CTX_new();
		if (ctx == NULL)
			return false;
		if (pthread_setspecific(ctx_key, ctx) != 0) {
			EVP_MD_CTX_free(ctx);
			return EVP_Digest(p, n, out, NULL, EVP_sha256(), NULL) == 1;
		}
	}
	return EVP_DigestInit_ex2(ctx, sha256, NULL) == 1 &&
	       EVP_DigestUpdate(ctx, p, n) == 1 &&
	       EVP_DigestFinal_ex(ctx, out, NULL) == 1;
}
