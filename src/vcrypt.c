/*
 * vcrypt.c - the index key and the cryptography of an encrypted index
 * (see vcrypt.h). Everything goes through OpenSSL 3's EVP interfaces:
 * HKDF-SHA256 derives one index's keys, AES-256-GCM seals values,
 * HMAC-SHA256 makes path MACs and pseudo-terms. Nothing here is a
 * construction of scrim's own.
 *
 * Key derivation: the configured key (the SHA-256 of the key file, as
 * scrub_secret_file is read) is HKDF's input keying material, the
 * index's random salt (meta 'salt') its salt, and a label per purpose
 * its info. Four keys come out: one for AES-GCM, one for path MACs, one
 * for pseudo-terms, one for the key check value. Separate keys mean a
 * pseudo-term can never be confused with a path MAC or a check value.
 *
 * Nonces are random, 96 bits, one per sealed value: values are sealed
 * again whenever a file is reindexed, and a counter would have to live
 * in the index and survive crashes and concurrent writers. With random
 * nonces one key stays within GCM's bounds for 2^32 values (NIST SP
 * 800-38D), and each index has its own key.
 */
#include "vcrypt.h"

#include "alloc.h"

#include <errno.h>
#include <fcntl.h>
#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/kdf.h>
#include <openssl/params.h>
#include <openssl/rand.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* Bumped if the construction changes: part of every AAD and label. */
#define VCRYPT_VERSION 1

struct vcrypt {
	unsigned char check[VCRYPT_CHECK_LEN];
	EVP_CIPHER *gcm;
	EVP_CIPHER_CTX *enc;    /* keyed once; a new nonce per value */
	EVP_CIPHER_CTX *dec;
	EVP_MAC *hmac;
	EVP_MAC_CTX *path_mac;  /* keyed once; re-initialised per value */
	EVP_MAC_CTX *term_mac;
};

/* ---- the key ---------------------------------------------------------------- */

static bool
credential_name_ok(const char *s)
{
	size_t n = strlen(s);

	/* One file name inside the credentials folder, nothing else. */
	return n > 0 && n < 256 && strchr(s, '/') == NULL &&
	       strcmp(s, ".") != 0 && strcmp(s, "..") != 0;
}

bool
vcrypt_key_load(const char *spec, struct vcrypt_key *out, char *err,
                size_t errlen)
{
	size_t plen = strlen(VCRYPT_CREDENTIAL_PREFIX);
	unsigned char buf[VCRYPT_KEY_FILE_MAX + 1];
	char path[PATH_MAX];
	struct stat st;
	size_t n = 0;
	bool ok = false, cred = strncmp(spec, VCRYPT_CREDENTIAL_PREFIX, plen) == 0;
	mode_t refused;
	int fd;

	memset(out, 0, sizeof(*out));
	if (cred) {
		const char *name = spec + plen, *dir = getenv("CREDENTIALS_DIRECTORY");

		if (!credential_name_ok(name)) {
			snprintf(err, errlen, "%s: a credential's name is one file "
			         "name (no '/')", spec);
			return false;
		}
		if (dir == NULL || *dir == '\0') {
			snprintf(err, errlen, "%s: $CREDENTIALS_DIRECTORY is not set "
			         "(systemd sets it for a unit with "
			         "LoadCredential=%s:/path/to/key)", spec, name);
			return false;
		}
		if ((size_t)snprintf(path, sizeof(path), "%s/%s", dir, name) >=
		    sizeof(path)) {
			snprintf(err, errlen, "%s: path too long", spec);
			return false;
		}
	} else if ((size_t)snprintf(path, sizeof(path), "%s", spec) >=
	           sizeof(path)) {
		snprintf(err, errlen, "key file path too long");
		return false;
	}
	fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
	if (fd < 0) {
		snprintf(err, errlen, "key file %s: %s", path, strerror(errno));
		return false;
	}
	/* The mode of what was opened, not of a name that may have been
	 * swapped since. */
	if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
		snprintf(err, errlen, "key file %s is not a regular file", path);
		goto out;
	}
	/* A key others can read protects nothing: refuse it, as the audit
	 * and CA keys are refused. A systemd credential is the exception for
	 * group read: systemd writes it 0400 and gives the service's user
	 * read access by an ACL entry (user:UID:r--, exec-credential.c),
	 * whose mask stat shows in the group bits (0440), on a read-only
	 * file system of the unit's own. Any access for others, or any write
	 * but the owner's, is refused there too. */
	refused = cred ? (mode_t)027 : (mode_t)077;
	if ((st.st_mode & refused) != 0) {
		snprintf(err, errlen, "key file %s is accessible to group or "
		         "others (mode %04o): chmod 600 it", path,
		         (unsigned)(st.st_mode & 07777));
		goto out;
	}
	while (n < sizeof(buf)) {
		ssize_t r = read(fd, buf + n, sizeof(buf) - n);

		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0) {
			snprintf(err, errlen, "key file %s: %s", path,
			         strerror(errno));
			goto out;
		}
		if (r == 0)
			break;
		n += (size_t)r;
	}
	if (n < VCRYPT_KEY_FILE_MIN || n > VCRYPT_KEY_FILE_MAX) {
		snprintf(err, errlen, "key file %s holds %s%zu bytes; a key is "
		         "%d to %d random bytes (head -c 32 /dev/urandom)", path,
		         n > VCRYPT_KEY_FILE_MAX ? "over " : "",
		         n > VCRYPT_KEY_FILE_MAX ? (size_t)VCRYPT_KEY_FILE_MAX : n,
		         VCRYPT_KEY_FILE_MIN, VCRYPT_KEY_FILE_MAX);
		goto out;
	}
	if (EVP_Digest(buf, n, out->k, NULL, EVP_sha256(), NULL) != 1) {
		snprintf(err, errlen, "key file %s: SHA-256 failed", path);
		goto out;
	}
	out->set = true;
	ok = true;
out:
	OPENSSL_cleanse(buf, sizeof(buf));
	close(fd);
	if (!ok)
		vcrypt_key_wipe(out);
	return ok;
}

void
vcrypt_key_wipe(struct vcrypt_key *key)
{
	OPENSSL_cleanse(key, sizeof(*key));
}

bool
vcrypt_key_equal(const struct vcrypt_key *a, const struct vcrypt_key *b)
{
	bool as = a != NULL && a->set, bs = b != NULL && b->set;

	if (as != bs)
		return false;
	return !as || CRYPTO_memcmp(a->k, b->k, VCRYPT_KEY_LEN) == 0;
}

bool
vcrypt_random(unsigned char *out, size_t n)
{
	return n <= INT_MAX && RAND_bytes(out, (int)n) == 1;
}

/* ---- one index's keys --------------------------------------------------------- */

static bool
derive(EVP_KDF *kdf, const struct vcrypt_key *key,
       const unsigned char salt[VCRYPT_SALT_LEN], const char *label,
       unsigned char out[32])
{
	char info[64];
	EVP_KDF_CTX *kc = EVP_KDF_CTX_new(kdf);
	OSSL_PARAM p[5];
	int n = snprintf(info, sizeof(info), "scrim index v%d %s",
	                 VCRYPT_VERSION, label);
	bool ok;

	p[0] = OSSL_PARAM_construct_utf8_string(OSSL_KDF_PARAM_DIGEST,
	                                        (char *)"SHA256", 0);
	p[1] = OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_KEY,
	                                         (void *)key->k, VCRYPT_KEY_LEN);
	p[2] = OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_SALT,
	                                         (void *)salt, VCRYPT_SALT_LEN);
	p[3] = OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_INFO, info,
	                                         (size_t)n);
	p[4] = OSSL_PARAM_construct_end();
	ok = kc != NULL && EVP_KDF_derive(kc, out, 32, p) == 1;
	EVP_KDF_CTX_free(kc);
	return ok;
}

static EVP_MAC_CTX *
hmac_new(EVP_MAC *hmac, const unsigned char key[32])
{
	EVP_MAC_CTX *c = EVP_MAC_CTX_new(hmac);
	OSSL_PARAM p[2];

	p[0] = OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST,
	                                        (char *)"SHA256", 0);
	p[1] = OSSL_PARAM_construct_end();
	if (c != NULL && EVP_MAC_init(c, key, 32, p) != 1) {
		EVP_MAC_CTX_free(c);
		c = NULL;
	}
	return c;
}

struct vcrypt *
vcrypt_new(const struct vcrypt_key *key,
           const unsigned char salt[VCRYPT_SALT_LEN], char *err,
           size_t errlen)
{
	unsigned char aead[32], path[32], term[32], check[32];
	static const unsigned char label[] = "key check";
	struct vcrypt *vc = xcalloc(1, sizeof(*vc));
	EVP_KDF *kdf = EVP_KDF_fetch(NULL, "HKDF", NULL);
	EVP_MAC_CTX *cc = NULL;
	size_t outl = 0;
	bool ok;

	ok = kdf != NULL && key != NULL && key->set &&
	     derive(kdf, key, salt, "aes-256-gcm", aead) &&
	     derive(kdf, key, salt, "path mac", path) &&
	     derive(kdf, key, salt, "term mac", term) &&
	     derive(kdf, key, salt, "key check", check);
	EVP_KDF_free(kdf);
	if (ok) {
		vc->gcm = EVP_CIPHER_fetch(NULL, "AES-256-GCM", NULL);
		vc->enc = EVP_CIPHER_CTX_new();
		vc->dec = EVP_CIPHER_CTX_new();
		vc->hmac = EVP_MAC_fetch(NULL, "HMAC", NULL);
		ok = vc->gcm != NULL && vc->enc != NULL && vc->dec != NULL &&
		     vc->hmac != NULL &&
		     EVP_EncryptInit_ex2(vc->enc, vc->gcm, aead, NULL, NULL) == 1 &&
		     EVP_DecryptInit_ex2(vc->dec, vc->gcm, aead, NULL, NULL) == 1;
	}
	if (ok) {
		vc->path_mac = hmac_new(vc->hmac, path);
		vc->term_mac = hmac_new(vc->hmac, term);
		cc = hmac_new(vc->hmac, check);
		/* The check value is a MAC of a constant under its own key:
		 * it says nothing about the other three keys. */
		ok = vc->path_mac != NULL && vc->term_mac != NULL && cc != NULL &&
		     EVP_MAC_update(cc, label, sizeof(label) - 1) == 1 &&
		     EVP_MAC_final(cc, vc->check, &outl, sizeof(vc->check)) == 1 &&
		     outl == VCRYPT_CHECK_LEN;
		EVP_MAC_CTX_free(cc);
	}
	OPENSSL_cleanse(aead, sizeof(aead));
	OPENSSL_cleanse(path, sizeof(path));
	OPENSSL_cleanse(term, sizeof(term));
	OPENSSL_cleanse(check, sizeof(check));
	if (!ok) {
		snprintf(err, errlen, "index encryption: OpenSSL cannot provide "
		         "HKDF, AES-256-GCM and HMAC-SHA256");
		vcrypt_free(vc);
		return NULL;
	}
	return vc;
}

void
vcrypt_free(struct vcrypt *vc)
{
	if (vc == NULL)
		return;
	/* The contexts hold key schedules: freeing them clears them. */
	EVP_CIPHER_CTX_free(vc->enc);
	EVP_CIPHER_CTX_free(vc->dec);
	EVP_CIPHER_free(vc->gcm);
	EVP_MAC_CTX_free(vc->path_mac);
	EVP_MAC_CTX_free(vc->term_mac);
	EVP_MAC_free(vc->hmac);
	OPENSSL_cleanse(vc, sizeof(*vc));
	free(vc);
}

void
vcrypt_check_value(const struct vcrypt *vc, unsigned char out[VCRYPT_CHECK_LEN])
{
	memcpy(out, vc->check, VCRYPT_CHECK_LEN);
}

/* ---- values ------------------------------------------------------------------- */

/* The associated data: the construction's version, the column and the
 * row. A value sealed for one (column, row) does not open as another. */
static void
make_aad(enum vcrypt_col col, int64_t row, unsigned char aad[10])
{
	uint64_t r = (uint64_t)row;

	aad[0] = VCRYPT_VERSION;
	aad[1] = (unsigned char)col;
	for (int i = 0; i < 8; i++)
		aad[2 + i] = (unsigned char)(r >> (56 - 8 * i));
}

bool
vcrypt_seal(struct vcrypt *vc, enum vcrypt_col col, int64_t row,
            const void *pt, size_t n, unsigned char *out)
{
	unsigned char aad[10];
	int len = 0, fin = 0;

	if (n > INT_MAX - VCRYPT_OVERHEAD)
		return false;
	make_aad(col, row, aad);
	if (!vcrypt_random(out, VCRYPT_NONCE_LEN) ||
	    EVP_EncryptInit_ex2(vc->enc, NULL, NULL, out, NULL) != 1 ||
	    EVP_EncryptUpdate(vc->enc, NULL, &len, aad, sizeof(aad)) != 1)
		return false;
	len = 0;
	if (n > 0 && EVP_EncryptUpdate(vc->enc, out + VCRYPT_NONCE_LEN, &len,
	                               pt, (int)n) != 1)
		return false;
	if (EVP_EncryptFinal_ex(vc->enc, out + VCRYPT_NONCE_LEN + len, &fin) !=
	            1 ||
	    (size_t)len + (size_t)fin != n ||
	    EVP_CIPHER_CTX_ctrl(vc->enc, EVP_CTRL_AEAD_GET_TAG, VCRYPT_TAG_LEN,
	                        out + VCRYPT_NONCE_LEN + n) != 1)
		return false;
	return true;
}

bool
vcrypt_open(struct vcrypt *vc, enum vcrypt_col col, int64_t row,
            const unsigned char *ct, size_t n, unsigned char *out)
{
	unsigned char aad[10], tag[VCRYPT_TAG_LEN];
	size_t m;
	int len = 0, fin = 0;

	if (n < VCRYPT_OVERHEAD || n > INT_MAX)
		return false;
	m = n - VCRYPT_OVERHEAD;
	make_aad(col, row, aad);
	/* The ctrl takes a non-const pointer. */
	memcpy(tag, ct + VCRYPT_NONCE_LEN + m, VCRYPT_TAG_LEN);
	if (EVP_DecryptInit_ex2(vc->dec, NULL, NULL, ct, NULL) != 1 ||
	    EVP_DecryptUpdate(vc->dec, NULL, &len, aad, sizeof(aad)) != 1)
		return false;
	len = 0;
	if (m > 0 && EVP_DecryptUpdate(vc->dec, out, &len, ct + VCRYPT_NONCE_LEN,
	                               (int)m) != 1)
		goto fail;
	if (EVP_CIPHER_CTX_ctrl(vc->dec, EVP_CTRL_AEAD_SET_TAG, VCRYPT_TAG_LEN,
	                        tag) != 1 ||
	    EVP_DecryptFinal_ex(vc->dec, out + len, &fin) != 1 ||
	    (size_t)len + (size_t)fin != m)
		goto fail;
	return true;
fail:
	/* Whatever was decrypted did not authenticate: leave none of it. */
	if (m > 0)
		OPENSSL_cleanse(out, m);
	return false;
}

/* ---- MACs --------------------------------------------------------------------- */

static bool
mac(EVP_MAC_CTX *c, const void *p, size_t n, unsigned char out[32])
{
	size_t outl = 0;

	/* No key: HMAC starts again with the key set at creation, without
	 * redoing its key schedule (test_vcrypt checks the result against a
	 * one-shot HMAC). */
	return EVP_MAC_init(c, NULL, 0, NULL) == 1 &&
	       EVP_MAC_update(c, p, n) == 1 &&
	       EVP_MAC_final(c, out, &outl, 32) == 1 && outl == 32;
}

bool
vcrypt_mac(struct vcrypt *vc, const void *p, size_t n,
           unsigned char out[VCRYPT_MAC_LEN])
{
	unsigned char full[32];

	if (!mac(vc->path_mac, p, n, full))
		return false;
	memcpy(out, full, VCRYPT_MAC_LEN);
	return true;
}

bool
vcrypt_term(struct vcrypt *vc, const char *w, size_t n,
            char out[VCRYPT_TERM_LEN])
{
	static const char b32[] = "abcdefghijklmnopqrstuvwxyz234567";
	unsigned char full[32];
	uint64_t bits = 0;

	if (!mac(vc->term_mac, w, n, full))
		return false;
	/* The first 50 bits, five at a time: lower-case letters and digits
	 * that any FTS5 tokenizer keeps as one token. */
	for (int i = 0; i < 7; i++)
		bits = bits << 8 | full[i];
	bits >>= 6; /* 56 -> 50 bits */
	for (int i = VCRYPT_TERM_LEN - 1; i >= 0; i--) {
		out[i] = b32[bits & 31];
		bits >>= 5;
	}
	return true;
}
