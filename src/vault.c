/*
 * vault.c - see vault.h. A request holds few placeholders (tens), so a
 * flat array with linear lookups beats a hash table here.
 */
#include "vault.h"

#include "alloc.h"
#include "digest.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

struct vault *
vault_new(void)
{
	return xcalloc(1, sizeof(struct vault));
}

static uint64_t
hash_bytes(uint64_t h, const char *p, size_t n, bool fold)
{
	/* FNV-1a: fine for an in-memory index of values we generated. */
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)p[i];
		if (fold && c >= 'A' && c <= 'Z')
			c = (unsigned char)(c + 32);
		h = (h ^ c) * 1099511628211ULL;
	}
	return h;
}

static uint64_t
core_hash(const char *s, size_t n)
{
	return hash_bytes(1469598103934665603ULL, s, n, true);
}

static uint64_t
value_hash(const char *type, size_t tl, const char *v, size_t vn)
{
	uint64_t h = hash_bytes(1469598103934665603ULL, type, tl, false);
	return hash_bytes(h ^ 0xff, v, vn, false);
}

static void
index_put(uint32_t *tab, size_t slots, uint64_t h, uint32_t idx)
{
	size_t i = (size_t)h & (slots - 1);
	while (tab[i] != 0)
		i = (i + 1) & (slots - 1);
	tab[i] = idx + 1;
}

static size_t
type_len(const struct vault_entry *e)
{
	return (size_t)(strrchr(e->core, '_') - e->core);
}

static void
reindex(struct vault *v)
{
	size_t slots = 64;

	while (slots < v->cap * 2)
		slots *= 2;
	free(v->by_core);
	free(v->by_value);
	v->by_core = xcalloc(slots, sizeof(uint32_t));
	v->by_value = xcalloc(slots, sizeof(uint32_t));
	v->slots = slots;
	for (size_t i = 0; i < v->n; i++) {
		const struct vault_entry *e = &v->v[i];
		index_put(v->by_core, slots, core_hash(e->core, e->core_len),
		          (uint32_t)i);
		index_put(v->by_value, slots,
		          value_hash(e->core, type_len(e), e->value, e->value_len),
		          (uint32_t)i);
	}
}

void
vault_free(struct vault *v)
{
	if (v == NULL)
		return;
	free(v->by_core);
	free(v->by_value);
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
	size_t i;

	if (v->n == 0)
		return NULL;
	for (i = (size_t)core_hash(s, n) & (v->slots - 1); v->by_core[i] != 0;
	     i = (i + 1) & (v->slots - 1)) {
		const struct vault_entry *e = &v->v[v->by_core[i] - 1];
		if (e->core_len == n && strncasecmp(e->core, s, n) == 0)
			return e;
	}
	return NULL;
}

static const struct vault_entry *
find_value(const struct vault *v, const char *type, size_t tl,
           const char *value, size_t vn)
{
	if (v->n == 0)
		return NULL;
	for (size_t i = (size_t)value_hash(type, tl, value, vn) & (v->slots - 1);
	     v->by_value[i] != 0; i = (i + 1) & (v->slots - 1)) {
		const struct vault_entry *e = &v->v[v->by_value[i] - 1];
		if (e->value_len == vn && memcmp(e->value, value, vn) == 0 &&
		    type_len(e) == tl && memcmp(e->core, type, tl) == 0)
			return e;
	}
	return NULL;
}

static bool
mac_parts(EVP_MAC_CTX *mc, const char *const *parts, const size_t *lens,
          size_t nparts, unsigned char out[32])
{
	size_t outl = 0;
	bool ok = true;

	for (size_t i = 0; ok && i < nparts; i++)
		ok = EVP_MAC_update(mc, (const unsigned char *)parts[i], lens[i]) &&
		     EVP_MAC_update(mc, (const unsigned char *)"", 1);
	return ok && EVP_MAC_final(mc, out, &outl, 32) && outl == 32;
}

bool
vault_hmac(const unsigned char secret[32], const char *const *parts,
           const size_t *lens, size_t nparts, unsigned char out[32])
{
	EVP_MAC_CTX *mc = digest_hmac_ctx(secret);

	return mc != NULL && mac_parts(mc, parts, lens, nparts, out);
}

const struct vault_entry *
vault_put(struct vault *v, const unsigned char secret[32], const char *key_id,
          const char *type, const char *value, size_t value_len)
{
	static const char hx[] = "0123456789abcdef";
	unsigned char mac[32];
	char core[VAULT_CORE_MAX];
	size_t tl = strlen(type);

	const struct vault_entry *found = find_value(v, type, tl, value, value_len);

	if (found != NULL)
		return found;
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
		bool grow = v->n == v->cap;
		if (grow) {
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
		if (grow) {
			reindex(v);
		} else {
			index_put(v->by_core, v->slots, core_hash(e->core, e->core_len),
			          (uint32_t)(v->n - 1));
			index_put(v->by_value, v->slots,
			          value_hash(type, tl, value, value_len),
			          (uint32_t)(v->n - 1));
		}
		OPENSSL_cleanse(mac, sizeof(mac));
		return e;
	}
	OPENSSL_cleanse(mac, sizeof(mac));
	return NULL;
}
