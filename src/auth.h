/*
 * auth.h - client keys: finding the key a client presented, matching it
 * against the configured SHA-256 hashes, and minting new keys. Virtual
 * keys in Redis take over from the config list in a later stage.
 */
#ifndef SCRIM_AUTH_H
#define SCRIM_AUTH_H

#include "config.h"
#include "http.h"

/*
 * Key id for the key presented in Authorization: Bearer or x-api-key, or
 * NULL when there is none or it is unknown. The id points into cfg.
 */
const char *auth_check(const struct scrim_config *cfg,
                       const struct http_head *h);

/* The key a request presents (Authorization: Bearer or x-api-key). */
bool auth_presented(const struct http_head *h, const char **key,
                    size_t *len);

/* Key id for a key given as bytes, or NULL. */
const char *auth_lookup(const struct scrim_config *cfg, const char *key,
                        size_t len);

/* A new key: "sk-scrim-" + 256 random bits, base64url. Caller frees. */
char *auth_generate_key(void);
/* "sha256:" + hex of SHA-256(key). Caller frees. */
char *auth_key_hash_line(const char *key);
/* Lowercase hex of SHA-256(key): how a key is named in Redis and config. */
void auth_key_hex(const char *key, size_t len, char out[65]);

#endif
