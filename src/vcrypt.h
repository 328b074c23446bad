/*
 * vcrypt.h - encryption at rest for the document index, done by the
 * application because SQLCipher cannot serve the index on Debian 12
 * (docs/index.md says why). This file owns the index key (loading it
 * from a 0600 file or a systemd credential), the keys derived from it
 * for one index, and the three operations vindex.c builds on:
 *
 *   seal/open   AES-256-GCM of one stored value, with a random 96-bit
 *               nonce, bound by its associated data to the column and
 *               row it belongs to, so that ciphertexts cannot be moved
 *               between rows or columns without failing to open;
 *   mac         a keyed HMAC-SHA256 of a path, for exact lookups
 *               (incremental reindexing) without storing the path;
 *   term        a keyed pseudo-term for a word, fed to FTS5 in place of
 *               the word so that BM25 still ranks on term statistics.
 *
 * It does not know the schema: vindex.c says which value is which.
 * A struct vcrypt is one thread's at a time, like the vindex handle that
 * owns it (its OpenSSL contexts are reused from call to call).
 */
#ifndef SCRIM_VCRYPT_H
#define SCRIM_VCRYPT_H

#include "scrim.h"

#define VCRYPT_KEY_LEN 32
#define VCRYPT_SALT_LEN 16
#define VCRYPT_NONCE_LEN 12
#define VCRYPT_TAG_LEN 16
/* Bytes a sealed value has beyond its plaintext: nonce, then tag. */
#define VCRYPT_OVERHEAD (VCRYPT_NONCE_LEN + VCRYPT_TAG_LEN)
#define VCRYPT_MAC_LEN 16
/* A pseudo-term: 10 base32 characters, 50 bits of the HMAC. Short,
 * because FTS5 stores every term of every chunk; long enough that two
 * words of one index share a term about once in 2^51 / n^2 (n distinct
 * words: under 1e-3 at a million). */
#define VCRYPT_TERM_LEN 10
#define VCRYPT_CHECK_LEN 32
/* Key files hold at least this many bytes, at most the upper bound. */
#define VCRYPT_KEY_FILE_MIN 32
#define VCRYPT_KEY_FILE_MAX 4096
/* encrypt_key_file = credential:NAME reads $CREDENTIALS_DIRECTORY/NAME. */
#define VCRYPT_CREDENTIAL_PREFIX "credential:"

/* An index key as configured: set when encrypt_key_file names one.
 * k is the SHA-256 of the key file's bytes. Wipe it when done
 * (vcrypt_key_wipe). */
struct vcrypt_key {
	bool set;
	unsigned char k[VCRYPT_KEY_LEN];
};

/* Which stored value a ciphertext is: part of its associated data. The
 * numbers are written into every index: never renumber. */
enum vcrypt_col {
	VCRYPT_FILE_PATH = 1,
	VCRYPT_FILE_KIND = 2,
	VCRYPT_FILE_SHA = 3,
	VCRYPT_CHUNK_TITLE = 4,
	VCRYPT_CHUNK_BODY = 5,
	VCRYPT_CHUNK_VEC = 6,
	VCRYPT_SIG_BITS = 7,
};

struct vcrypt;

/*
 * Load the key named by spec: a file path, or credential:NAME for
 * $CREDENTIALS_DIRECTORY/NAME (systemd's LoadCredential=). A key file
 * must be a regular file that neither group nor others can access (0600
 * or 0400); a credential may show group read (systemd's ACL mask, see
 * vcrypt.c), nothing more. Either holds VCRYPT_KEY_FILE_MIN to
 * VCRYPT_KEY_FILE_MAX bytes. false with a message in err (which names
 * the file, never its content).
 */
bool vcrypt_key_load(const char *spec, struct vcrypt_key *out, char *err,
                     size_t errlen) SCRIM_MUSTCHECK;
void vcrypt_key_wipe(struct vcrypt_key *key);
bool vcrypt_key_equal(const struct vcrypt_key *a, const struct vcrypt_key *b);

/* Random bytes for a new index's salt; false when the system's random
 * source failed. */
bool vcrypt_random(unsigned char *out, size_t n) SCRIM_MUSTCHECK;

/*
 * The keys of one index, derived from key and the index's own salt
 * (HKDF-SHA256), so that two indexes sharing a key share neither
 * ciphertext keys nor pseudo-terms. NULL with a message in err when
 * OpenSSL cannot provide AES-256-GCM, HMAC or HKDF.
 */
struct vcrypt *vcrypt_new(const struct vcrypt_key *key,
                          const unsigned char salt[VCRYPT_SALT_LEN],
                          char *err, size_t errlen);
void vcrypt_free(struct vcrypt *vc);

/* The key check value an index records: says whether a key is the
 * index's without decrypting anything. */
void vcrypt_check_value(const struct vcrypt *vc,
                        unsigned char out[VCRYPT_CHECK_LEN]);

/* Seal n bytes of pt as value col of row into out, which has room for
 * n + VCRYPT_OVERHEAD bytes. false when OpenSSL failed. */
bool vcrypt_seal(struct vcrypt *vc, enum vcrypt_col col, int64_t row,
                 const void *pt, size_t n, unsigned char *out)
	SCRIM_MUSTCHECK;
/* Open a sealed value of n bytes (at least VCRYPT_OVERHEAD) into out,
 * which has room for n - VCRYPT_OVERHEAD bytes. false when it does not
 * authenticate: another key, another row or column, or altered bytes. */
bool vcrypt_open(struct vcrypt *vc, enum vcrypt_col col, int64_t row,
                 const unsigned char *ct, size_t n, unsigned char *out)
	SCRIM_MUSTCHECK;

/* A keyed MAC of n bytes (a path) for lookups. */
bool vcrypt_mac(struct vcrypt *vc, const void *p, size_t n,
                unsigned char out[VCRYPT_MAC_LEN]) SCRIM_MUSTCHECK;
/* The pseudo-term of a word as FTS5 would store it (stemmed): exactly
 * VCRYPT_TERM_LEN characters of [a-z2-7], not NUL-terminated. */
bool vcrypt_term(struct vcrypt *vc, const char *w, size_t n,
                 char out[VCRYPT_TERM_LEN]) SCRIM_MUSTCHECK;

#endif
