/*
 * vault.h - the placeholders of one request and the values behind them.
 * Lives in memory for the life of the request, is wiped when it ends,
 * and is never written to disk or a log. Placeholders are derived from
 * the value with a keyed HMAC, so the same value gets the same
 * placeholder in every request of the same client key without any
 * mapping being stored.
 */
#ifndef SCRIM_VAULT_H
#define SCRIM_VAULT_H

#include "scrim.h"

#define VAULT_MAX_ENTRIES 65536
#define VAULT_CORE_MAX 48

struct vault_entry {
	char core[VAULT_CORE_MAX]; /* "EMAIL_7f3a9c": the placeholder sans <> */
	size_t core_len;
	char *value;
	size_t value_len;
};

struct evp_mac_ctx_st;

struct vault {
	struct vault_entry *v;
	size_t n, cap;
	size_t max_core; /* longest core, for the restorer's hold-back */
	/* Open-addressing indexes (entry index + 1, 0 = empty), by folded
	 * core and by type + value: a large text can hold thousands of
	 * values, and lookups must not grow with them. */
	uint32_t *by_core, *by_value;
	size_t slots;
};

struct vault *vault_new(void);
void vault_free(struct vault *v); /* wipes the values */

/*
 * The placeholder core for (type, value) under secret and key id, added
 * if new. NULL when the vault is full.
 */
const struct vault_entry *vault_put(struct vault *v,
                                    const unsigned char secret[32],
                                    const char *key_id, const char *type,
                                    const char *value, size_t value_len);
/*
 * HMAC-SHA256 under secret over the parts, each followed by a NUL so
 * ("ab","c") and ("a","bc") differ. Shared by placeholders and hashes.
 * Any thread.
 */
bool vault_hmac(const unsigned char secret[32], const char *const *parts,
                const size_t *lens, size_t nparts, unsigned char out[32]);

/* Entry whose core equals s[0..n) ignoring case, or NULL. */
const struct vault_entry *vault_find(const struct vault *v, const char *s,
                                     size_t n);

#endif
