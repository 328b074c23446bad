/*
 * digest.c - SHA-256 and HMAC-SHA256 with the algorithms fetched from
 * OpenSSL's provider once per process and one context of each per
 * thread, reused. Through EVP_Digest(..., EVP_sha256(), ...) every call
 * did an implicit fetch (a locked lookup in the provider store) and a
 * context allocation: nearly all of a virtual-key check's cost. Keying an
 * HMAC context (the digest looked up by name, the pads hashed) costs
 * several times the MAC of a short value, so a thread's context stays
 * keyed until another key comes.
 */
#include "digest.h"

#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

static pthread_once_t once = PTHREAD_ONCE_INIT;
/* For the process's lifetime; EVP_MD and EVP_MAC are shareable. */
static EVP_MD *sha256;
static EVP_MAC *hmac;
static pthread_key_t ctx_key, mac_key;
static bool ctx_key_ok, mac_key_ok;

struct keyed_mac {
	EVP_MAC_CTX *mc;
	unsigned char key[32];
	bool keyed;
};

static void
ctx_free(void *ctx)
{
	EVP_MD_CTX_free(ctx);
}

static void
mac_free(void *p)
{
	struct keyed_mac *k = p;

	EVP_MAC_CTX_free(k->mc);
	OPENSSL_cleanse(k, sizeof(*k));
	free(k);
}

static void
init(void)
{
	sha256 = EVP_MD_fetch(NULL, "SHA256", NULL);
	hmac = EVP_MAC_fetch(NULL, "HMAC", NULL);
	ctx_key_ok = pthread_key_create(&ctx_key, ctx_free) == 0;
	mac_key_ok = pthread_key_create(&mac_key, mac_free) == 0;
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

EVP_MAC_CTX *
digest_hmac_ctx(const unsigned char key[32])
{
	char digest[] = "SHA256";
	OSSL_PARAM params[2];
	struct keyed_mac *k;

	pthread_once(&once, init);
	if (hmac == NULL || !mac_key_ok)
		return NULL;
	k = pthread_getspecific(mac_key);
	if (k == NULL) {
		k = calloc(1, sizeof(*k));
		if (k == NULL)
			return NULL;
		k->mc = EVP_MAC_CTX_new(hmac);
		if (k->mc == NULL || pthread_setspecific(mac_key, k) != 0) {
			EVP_MAC_CTX_free(k->mc);
			free(k);
			return NULL;
		}
	}
	/* A NULL key restarts the MAC from the keyed state. */
	if (k->keyed && CRYPTO_memcmp(k->key, key, 32) == 0)
		return EVP_MAC_init(k->mc, NULL, 0, NULL) == 1 ? k->mc : NULL;
	k->keyed = false;
	OPENSSL_cleanse(k->key, sizeof(k->key));
	params[0] = OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST,
	                                             digest, 0);
	params[1] = OSSL_PARAM_construct_end();
	if (EVP_MAC_init(k->mc, key, 32, params) != 1)
		return NULL;
	memcpy(k->key, key, 32);
	k->keyed = true;
	return k->mc;
}
