/*
 * vault.c - see vault.h. A request holds few placeholders (tens), so a
 * flat array with linear lookups beats a hash table here.
 */
#include "vault.h"

#include "alloc.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/core_names.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

struct vault *
vault_new(void)
{
	return xcalloc(1, sizeof(struct vault));
}

void
vault_free(struct vault *v)
{
	if (v == NULL)
		return;
	for (size_t i = 0; i < v->n; i++) {
		OPENSSL_cleanse(v->v[i].value, v->v[i].value_len);
		free(v->v[i].value);
	}
	free(v->v);
	free(v);
}

const struct vault_entry *
vault_find(const struct vault *v, const char *s, size_t n)
{
	for (size_t i = 0; i < v->n; i++)
		if (v->v[i].core_len == n && strncasecmp(v->v[i].core, s, n) == 0)
			return &v->v[i];
	return NULL;
}

bool
vault_hmac(const unsigned char secret[32], const char *const *parts,
           const size_t *lens, size_t nparts, unsigned char out[32])
{
	EVP_MAC *m = EVP_MAC_fetch(NULL, "HMAC", NULL);
	EVP_MAC_CTX *mc = m ? EVP_MAC_CTX_new(m) : NULL;
	OSSL_PARAM params[2];
	size_t outl = 0;
	bool ok;

	params[0] = OSSL_PARAM_construct_utf8_string("digest", "SHA256", 0);
	params[1] = OSSL_PARAM_construct_end();
	ok = mc != NULL && EVP_MAC_init(mc, secret, 32, params);
	for (size_t i = 0; ok && i < nparts; i++)
		ok = EVP_MAC_update(mc, (const unsigned char *)parts[i], lens[i]) &&
		     EVP_MAC_update(mc, (const unsigned char *)"", 1);
	ok = ok && EVP_MAC_final(mc, out, &outl, 32) && outl == 32;
	EVP_MAC_CTX_free(mc);
	EVP_MAC_free(m);
	return ok;
}

const struct vault_entry *
vault_put(struct vault *v, const unsigned char secret[32], const char *key_id,
          const char *type, const char *value, size_t value_len)
{
	static const char hx[] = "0123456789abcdef";
	unsigned char mac[32];
	char core[VAULT_CORE_MAX];
	size_t tl = strlen(type);

	for (size_t i = 0; i < v->n; i++)
		if (v->v[i].value_len == value_len &&
		    memcmp(v->v[i].value, value, value_len) == 0 &&
		    strncmp(v->v[i].core, type, tl) == 0 && v->v[i].core[tl] == '_')
			return &v->v[i];
	if (v->n == VAULT_MAX_ENTRIES || tl + 1 + 16 >= VAULT_CORE_MAX)
		return NULL;

	{
		const char *parts[3] = {key_id, type, value};
		size_t lens[3] = {strlen(key_id), tl, value_len};
		if (!vault_hmac(secret, parts, lens, 3, mac))
			return NULL;
	}

	/* 6 hex digits; longer only if two values of this request collide. */
	for (size_t hexlen = 6; hexlen <= 16; hexlen += 2) {
		const struct vault_entry *clash;
		memcpy(core, type, tl);
		core[tl] = '_';
		for (size_t i = 0; i < hexlen; i++)
			core[tl + 1 + i] = hx[(mac[i / 2] >> (i % 2 ? 0 : 4)) & 15];
		core[tl + 1 + hexlen] = '\0';
		clash = vault_find(v, core, tl + 1 + hexlen);
		if (clash != NULL)
			continue;
		if (v->n == v->cap) {
			v->cap = v->cap ? v->cap * 2 : 8;
			v->v = xrealloc(v->v, sizeof(*v->v) * v->cap);
		}
		struct vault_entry *e = &v->v[v->n++];
		memcpy(e->core, core, tl + 2 + hexlen);
		e->core_len = tl + 1 + hexlen;
		e->value = xstrndup(value, value_len);
		e->value_len = value_len;
		if (e->core_len > v->max_core)
			v->max_core = e->core_len;
		OPENSSL_cleanse(mac, sizeof(mac));
		return e;
	}
	OPENSSL_cleanse(mac, sizeof(mac));
	return NULL;
}
