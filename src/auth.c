/*
 * auth.c - client key checks. Keys are compared by their SHA-256 in
 * constant time; the key itself is never stored, logged or forwarded.
 */
#include "auth.h"

#include "alloc.h"
#include "digest.h"

#include <openssl/crypto.h>
#include <openssl/rand.h>
#include <string.h>
#include <strings.h>

#define AUTH_MAX_KEY 512

bool
auth_presented(const struct http_head *h, const char **key, size_t *len)
{
	const struct http_header *a = http_head_get(h, "authorization");

	if (a != NULL) {
		if (a->value_len < 7 || strncasecmp(a->value, "Bearer ", 7) != 0)
			return false;
		*key = a->value + 7;
		*len = a->value_len - 7;
		while (*len > 0 && **key == ' ')
			(*key)++, (*len)--;
		return *len > 0;
	}
	a = http_head_get(h, "x-api-key");
	if (a == NULL || a->value_len == 0)
		return false;
	*key = a->value;
	*len = a->value_len;
	return true;
}

const char *
auth_check(const struct scrim_config *cfg, const struct http_head *h)
{
	const char *key;
	size_t len;

	if (!auth_presented(h, &key, &len))
		return NULL;
	return auth_lookup(cfg, key, len);
}

const char *
auth_lookup(const struct scrim_config *cfg, const char *key, size_t len)
{
	unsigned char md[32];
	const char *found = NULL;

	if (len == 0 || len > AUTH_MAX_KEY)
		return NULL;
	if (!digest_sha256(key, len, md))
		return NULL;
	/* Walk every key so timing does not say which one is close. */
	for (size_t i = 0; i < cfg->nkeys; i++)
		if (CRYPTO_memcmp(md, cfg->keys[i].sha256, 32) == 0)
			found = cfg->keys[i].id;
	OPENSSL_cleanse(md, sizeof(md));
	return found;
}

char *
auth_generate_key(void)
{
	static const char b64[] =
	    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
	unsigned char raw[33];
	char *out = xmalloc(9 + 44 + 1);
	size_t n = 9;

	memcpy(out, "sk-scrim-", 9);
	if (RAND_bytes(raw, 32) != 1) {
		free(out);
		return NULL;
	}
	raw[32] = 0;
	/* 32 bytes -> 43 base64url characters, no padding. */
	for (size_t i = 0; i < 33; i += 3) {
		unsigned v = (unsigned)raw[i] << 16 | (unsigned)raw[i + 1] << 8 |
		             raw[i + 2];
		out[n++] = b64[(v >> 18) & 63];
		out[n++] = b64[(v >> 12) & 63];
		out[n++] = b64[(v >> 6) & 63];
		out[n++] = b64[v & 63];
	}
	n = 9 + 43;
	out[n] = '\0';
	OPENSSL_cleanse(raw, sizeof(raw));
	return out;
}

void
auth_key_hex(const char *key, size_t len, char out[65])
{
	unsigned char md[32];
	static const char hx[] = "0123456789abcdef";

	if (!digest_sha256(key, len, md))
		memset(md, 0, sizeof(md));
	for (int i = 0; i < 32; i++) {
		out[2 * i] = hx[md[i] >> 4];
		out[2 * i + 1] = hx[md[i] & 15];
	}
	out[64] = '\0';
	OPENSSL_cleanse(md, sizeof(md));
}

char *
auth_key_hash_line(const char *key)
{
	char *out = xmalloc(7 + 64 + 1);

	/* auth_key_hex writes the 64 digits and the NUL after the prefix. */
	/* NOLINTNEXTLINE(bugprone-not-null-terminated-result) */
	memcpy(out, "sha256:", 7);
	auth_key_hex(key, strlen(key), out + 7);
	return out;
}
