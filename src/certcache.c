/*
 * certcache.c - see certcache.h. Leaves are backdated two days (clients
 * with skewed clocks) and valid for a year, never past the CA's end; they
 * carry the host as subjectAltName (DNS or IP), serverAuth only.
 * Capacity is small (hundreds of AI hosts at most), so a flat array with
 * a use counter is the LRU.
 */
#include "certcache.h"

#include "alloc.h"

#include <arpa/inet.h>
#include <openssl/bn.h>
#include <openssl/x509v3.h>
#include <stdlib.h>
#include <string.h>

struct leaf {
	char *host;
	X509 *cert;
	uint64_t used;
};

struct certcache {
	struct scrim_ca *ca;
	EVP_PKEY *key;
	struct leaf *v;
	size_t n, cap;
	uint64_t tick;
	struct certcache_stats st;
};

struct certcache *
certcache_new(struct scrim_ca *ca, size_t capacity)
{
	struct certcache *cc = xcalloc(1, sizeof(*cc));

	cc->ca = ca;
	cc->cap = capacity ? capacity : 1;
	cc->v = xcalloc(cc->cap, sizeof(*cc->v));
	cc->key = EVP_EC_gen("P-256");
	if (cc->key == NULL) {
		certcache_free(cc);
		return NULL;
	}
	return cc;
}

void
certcache_free(struct certcache *cc)
{
	if (cc == NULL)
		return;
	for (size_t i = 0; i < cc->n; i++) {
		free(cc->v[i].host);
		X509_free(cc->v[i].cert);
	}
	free(cc->v);
	EVP_PKEY_free(cc->key);
	free(cc);
}

EVP_PKEY *
certcache_key(struct certcache *cc)
{
	return cc->key;
}

static bool
ext(X509 *cert, X509 *issuer, int nid, const char *value)
{
	X509V3_CTX ctx;
	X509_EXTENSION *e;
	bool ok;

	X509V3_set_ctx_nodb(&ctx);
	X509V3_set_ctx(&ctx, issuer, cert, NULL, NULL, 0);
	e = X509V3_EXT_conf_nid(NULL, &ctx, nid, value);
	if (e == NULL)
		return false;
	ok = X509_add_ext(cert, e, -1) == 1;
	X509_EXTENSION_free(e);
	return ok;
}

static X509 *
mint(struct certcache *cc, const char *host)
{
	X509 *cert = X509_new();
	BIGNUM *serial = BN_new();
	X509_NAME *name;
	unsigned char ip[16];
	char san[300];
	bool is_ip = inet_pton(AF_INET, host, ip) == 1 ||
	             inet_pton(AF_INET6, host, ip) == 1;

	if (cert == NULL || serial == NULL ||
	    !BN_rand(serial, 127, BN_RAND_TOP_ANY, BN_RAND_BOTTOM_ANY))
		goto fail;
	X509_set_version(cert, 2);
	BN_to_ASN1_INTEGER(serial, X509_get_serialNumber(cert));
	X509_gmtime_adj(X509_getm_notBefore(cert), -2 * 86400);
	X509_gmtime_adj(X509_getm_notAfter(cert), 365L * 86400);
	if (ASN1_TIME_compare(X509_get0_notAfter(cert),
	                      X509_get0_notAfter(cc->ca->cert)) > 0)
		X509_set1_notAfter(cert, X509_get0_notAfter(cc->ca->cert));
	name = X509_get_subject_name(cert);
	X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_UTF8,
	                           (const unsigned char *)host, -1, -1, 0);
	X509_set_issuer_name(cert, X509_get_subject_name(cc->ca->cert));
	X509_set_pubkey(cert, cc->key);
	snprintf(san, sizeof(san), "%s:%s", is_ip ? "IP" : "DNS", host);
	if (!ext(cert, cc->ca->cert, NID_basic_constraints, "critical,CA:FALSE") ||
	    !ext(cert, cc->ca->cert, NID_key_usage,
	         "critical,digitalSignature") ||
	    !ext(cert, cc->ca->cert, NID_ext_key_usage, "serverAuth") ||
	    !ext(cert, cc->ca->cert, NID_subject_alt_name, san) ||
	    !ext(cert, cc->ca->cert, NID_authority_key_identifier, "keyid") ||
	    X509_sign(cert, cc->ca->key, EVP_sha256()) == 0)
		goto fail;
	BN_free(serial);
	return cert;
fail:
	BN_free(serial);
	X509_free(cert);
	return NULL;
}

X509 *
certcache_get(struct certcache *cc, const char *host)
{
	size_t victim = 0;
	X509 *cert;

	cc->tick++;
	for (size_t i = 0; i < cc->n; i++) {
		if (strcmp(cc->v[i].host, host) == 0) {
			cc->v[i].used = cc->tick;
			cc->st.hits++;
			return cc->v[i].cert;
		}
		if (cc->v[i].used < cc->v[victim].used)
			victim = i;
	}
	cc->st.misses++;
	cert = mint(cc, host);
	if (cert == NULL)
		return NULL;
	if (cc->n < cc->cap) {
		victim = cc->n++;
	} else {
		free(cc->v[victim].host);
		X509_free(cc->v[victim].cert);
		cc->st.evictions++;
	}
	cc->v[victim].host = xstrdup(host);
	cc->v[victim].cert = cert;
	cc->v[victim].used = cc->tick;
	return cert;
}

void
certcache_stats(const struct certcache *cc, struct certcache_stats *st)
{
	*st = cc->st;
	st->size = cc->n;
}
