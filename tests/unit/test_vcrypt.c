/*
 * test_vcrypt.c - the index's cryptography (vcrypt.c): key files (mode,
 * size, systemd credentials), sealing and opening (round trip; a changed
 * byte anywhere, another row, another column, another key or another
 * index's salt: refused), and the MACs, recomputed here independently
 * from HKDF and HMAC so that a pseudo-term is known to be keyed as
 * documented and not, say, by an empty key.
 */
#include "harness.h"
#include "vcrypt.h"

#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <openssl/kdf.h>
#include <openssl/params.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static char dir[] = "/tmp/scrim-test-vcrypt-XXXXXX";

static void
write_key(const char *path, const void *p, size_t n, mode_t mode)
{
	FILE *f = fopen(path, "wb");

	if (f == NULL) {
		perror(path);
		exit(2);
	}
	fwrite(p, 1, n, f);
	fclose(f);
	chmod(path, mode);
}

static void
test_key_files(void)
{
	unsigned char raw[32];
	char p[300], q[300], err[512];
	struct vcrypt_key k1, k2;

	for (size_t i = 0; i < sizeof(raw); i++)
		raw[i] = (unsigned char)(i * 37 + 1);
	snprintf(p, sizeof(p), "%s/key", dir);
	write_key(p, raw, sizeof(raw), 0600);
	CHECK(vcrypt_key_load(p, &k1, err, sizeof(err)) && k1.set,
	      "0600 key loads: %s", err);

	/* Readable by others: refused, and the message says how to fix. */
	snprintf(q, sizeof(q), "%s/open.key", dir);
	write_key(q, raw, sizeof(raw), 0644);
	CHECK(!vcrypt_key_load(q, &k2, err, sizeof(err)) &&
	      strstr(err, "chmod 600") != NULL && !k2.set,
	      "0644 key refused: %s", err);
	write_key(q, raw, sizeof(raw), 0640);
	CHECK(!vcrypt_key_load(q, &k2, err, sizeof(err)), "0640 key refused");
	write_key(q, raw, sizeof(raw), 0400);
	CHECK(vcrypt_key_load(q, &k2, err, sizeof(err)) &&
	      vcrypt_key_equal(&k1, &k2),
	      "0400 key loads, same bytes same key: %s", err);

	/* Too short. */
	snprintf(q, sizeof(q), "%s/short.key", dir);
	write_key(q, raw, 16, 0600);
	CHECK(!vcrypt_key_load(q, &k2, err, sizeof(err)) &&
	      strstr(err, "16 bytes") != NULL,
	      "short key refused: %s", err);
	CHECK(!vcrypt_key_load("/nonexistent/key", &k2, err, sizeof(err)) &&
	      strstr(err, "/nonexistent/key") != NULL,
	      "missing key named: %s", err);
	CHECK(!vcrypt_key_load(dir, &k2, err, sizeof(err)),
	      "a folder is not a key");

	/* A systemd credential. */
	unsetenv("CREDENTIALS_DIRECTORY");
	CHECK(!vcrypt_key_load("credential:key", &k2, err, sizeof(err)) &&
	      strstr(err, "CREDENTIALS_DIRECTORY") != NULL,
	      "credential without the variable: %s", err);
	setenv("CREDENTIALS_DIRECTORY", dir, 1);
	CHECK(vcrypt_key_load("credential:key", &k2, err, sizeof(err)) &&
	      vcrypt_key_equal(&k1, &k2),
	      "credential:key reads $CREDENTIALS_DIRECTORY/key: %s", err);
	CHECK(!vcrypt_key_load("credential:../key", &k2, err, sizeof(err)) &&
	      !vcrypt_key_load("credential:", &k2, err, sizeof(err)),
	      "credential names are one file name");
	/* systemd gives the service's user read access to a credential by
	 * an ACL, which stat shows as group read (0440): accepted for a
	 * credential, not for a key file; more than that for neither. */
	chmod(p, 0440);
	CHECK(vcrypt_key_load("credential:key", &k2, err, sizeof(err)),
	      "credential with an ACL mask (0440) loads: %s", err);
	CHECK(!vcrypt_key_load(p, &k2, err, sizeof(err)),
	      "a key file 0440 is refused");
	chmod(p, 0444);
	CHECK(!vcrypt_key_load("credential:key", &k2, err, sizeof(err)) &&
	      strstr(err, "0444") != NULL,
	      "credential others can read is refused: %s", err);
	chmod(p, 0460);
	CHECK(!vcrypt_key_load("credential:key", &k2, err, sizeof(err)),
	      "credential a group can write is refused");
	chmod(p, 0600);
	unsetenv("CREDENTIALS_DIRECTORY");

	/* A different key file. */
	raw[0] ^= 1;
	write_key(q, raw, sizeof(raw), 0600);
	CHECK(vcrypt_key_load(q, &k2, err, sizeof(err)) &&
	      !vcrypt_key_equal(&k1, &k2),
	      "one bit of the file changes the key");
	vcrypt_key_wipe(&k1);
	vcrypt_key_wipe(&k2);
}

static struct vcrypt_key
key_of(unsigned char b)
{
	struct vcrypt_key k;

	k.set = true;
	memset(k.k, b, sizeof(k.k));
	return k;
}

static void
test_seal_open(void)
{
	unsigned char salt[VCRYPT_SALT_LEN], salt2[VCRYPT_SALT_LEN];
	struct vcrypt_key k = key_of(7), wrong = key_of(8);
	static const char text[] = "Payroll runs on the 25th; questions to "
	                           "payroll.lead@corp.example.";
	size_t n = sizeof(text) - 1;
	unsigned char ct[256], ct2[256], pt[256], chk1[VCRYPT_CHECK_LEN],
	        chk2[VCRYPT_CHECK_LEN];
	char err[256];
	struct vcrypt *vc, *vw, *vs;
	bool tamper_ok = true;

	memset(salt, 0x5a, sizeof(salt));
	memcpy(salt2, salt, sizeof(salt));
	salt2[0] ^= 1;
	vc = vcrypt_new(&k, salt, err, sizeof(err));
	vw = vcrypt_new(&wrong, salt, err, sizeof(err));
	vs = vcrypt_new(&k, salt2, err, sizeof(err));
	CHECK(vc != NULL && vw != NULL && vs != NULL, "vcrypt_new: %s", err);
	if (vc == NULL || vw == NULL || vs == NULL)
		return;

	CHECK(vcrypt_seal(vc, VCRYPT_CHUNK_BODY, 42, text, n, ct), "seal");
	CHECK(memmem(ct, n + VCRYPT_OVERHEAD, "payroll", 7) == NULL,
	      "no plaintext in the sealed value");
	CHECK(vcrypt_open(vc, VCRYPT_CHUNK_BODY, 42, ct, n + VCRYPT_OVERHEAD,
	                  pt) &&
	      memcmp(pt, text, n) == 0,
	      "round trip");
	CHECK(vcrypt_seal(vc, VCRYPT_CHUNK_BODY, 42, text, n, ct2) &&
	      memcmp(ct, ct2, n + VCRYPT_OVERHEAD) != 0,
	      "a fresh nonce per value: same text, other bytes");

	/* Every byte matters: nonce, ciphertext, tag. */
	for (size_t i = 0; i < n + VCRYPT_OVERHEAD; i++) {
		ct[i] ^= 0x01;
		if (vcrypt_open(vc, VCRYPT_CHUNK_BODY, 42, ct,
		                n + VCRYPT_OVERHEAD, pt))
			tamper_ok = false;
		ct[i] ^= 0x01;
	}
	CHECK(tamper_ok, "one changed bit anywhere is refused");
	CHECK(!vcrypt_open(vc, VCRYPT_CHUNK_BODY, 43, ct, n + VCRYPT_OVERHEAD,
	                   pt),
	      "another row is refused");
	CHECK(!vcrypt_open(vc, VCRYPT_CHUNK_TITLE, 42, ct, n + VCRYPT_OVERHEAD,
	                   pt),
	      "another column is refused");
	CHECK(!vcrypt_open(vw, VCRYPT_CHUNK_BODY, 42, ct, n + VCRYPT_OVERHEAD,
	                   pt),
	      "the wrong key is refused");
	CHECK(!vcrypt_open(vs, VCRYPT_CHUNK_BODY, 42, ct, n + VCRYPT_OVERHEAD,
	                   pt),
	      "the same key with another index's salt is refused");
	CHECK(!vcrypt_open(vc, VCRYPT_CHUNK_BODY, 42, ct, VCRYPT_OVERHEAD - 1,
	                   pt),
	      "too short to be a value");
	CHECK(!vcrypt_open(vc, VCRYPT_CHUNK_BODY, 42, ct, n + VCRYPT_OVERHEAD - 1,
	                   pt),
	      "truncated is refused");

	/* Empty values (a chunk with no heading) seal too. */
	CHECK(vcrypt_seal(vc, VCRYPT_CHUNK_TITLE, 1, "", 0, ct) &&
	      vcrypt_open(vc, VCRYPT_CHUNK_TITLE, 1, ct, VCRYPT_OVERHEAD, pt) &&
	      !vcrypt_open(vc, VCRYPT_CHUNK_TITLE, 2, ct, VCRYPT_OVERHEAD, pt),
	      "empty value: sealed, bound to its row");

	/* Key check values: the same for the same key and salt only. */
	vcrypt_check_value(vc, chk1);
	vcrypt_check_value(vw, chk2);
	CHECK(memcmp(chk1, chk2, sizeof(chk1)) != 0, "check differs by key");
	vcrypt_check_value(vs, chk2);
	CHECK(memcmp(chk1, chk2, sizeof(chk1)) != 0, "check differs by salt");
	{
		struct vcrypt *again = vcrypt_new(&k, salt, err, sizeof(err));

		CHECK(again != NULL, "vcrypt_new again");
		if (again != NULL) {
			vcrypt_check_value(again, chk2);
			CHECK(memcmp(chk1, chk2, sizeof(chk1)) == 0,
			      "check is stable");
			CHECK(vcrypt_open(again, VCRYPT_CHUNK_BODY, 42, ct2,
			                  n + VCRYPT_OVERHEAD, pt) &&
			      memcmp(pt, text, n) == 0,
			      "another handle with the same key opens it");
		}
		vcrypt_free(again);
	}
	vcrypt_free(vc);
	vcrypt_free(vw);
	vcrypt_free(vs);
	vcrypt_key_wipe(&k);
}

/* The term key as vcrypt.c documents it, derived here independently. */
static void
hkdf(const struct vcrypt_key *k, const unsigned char *salt, const char *info,
     unsigned char out[32])
{
	EVP_KDF *kdf = EVP_KDF_fetch(NULL, "HKDF", NULL);
	EVP_KDF_CTX *kc = EVP_KDF_CTX_new(kdf);
	OSSL_PARAM p[] = {
		OSSL_PARAM_construct_utf8_string(OSSL_KDF_PARAM_DIGEST,
		                                 (char *)"SHA256", 0),
		OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_KEY,
		                                  (void *)k->k, 32),
		OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_SALT,
		                                  (void *)salt, VCRYPT_SALT_LEN),
		OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_INFO,
		                                  (void *)info, strlen(info)),
		OSSL_PARAM_construct_end(),
	};

	if (EVP_KDF_derive(kc, out, 32, p) != 1)
		memset(out, 0, 32);
	EVP_KDF_CTX_free(kc);
	EVP_KDF_free(kdf);
}

static void
test_macs(void)
{
	static const char b32[] = "abcdefghijklmnopqrstuvwxyz234567";
	unsigned char salt[VCRYPT_SALT_LEN], tk[32], pk[32], full[32],
	        m1[VCRYPT_MAC_LEN], m2[VCRYPT_MAC_LEN];
	struct vcrypt_key k = key_of(9), other = key_of(10);
	char t1[VCRYPT_TERM_LEN], t2[VCRYPT_TERM_LEN], want[VCRYPT_TERM_LEN];
	char err[256];
	struct vcrypt *vc, *vo;
	size_t fl = 0;
	uint64_t bits = 0;
	bool alpha = true;

	memset(salt, 0x11, sizeof(salt));
	vc = vcrypt_new(&k, salt, err, sizeof(err));
	vo = vcrypt_new(&other, salt, err, sizeof(err));
	if (vc == NULL || vo == NULL) {
		CHECK(false, "vcrypt_new: %s", err);
		return;
	}
	/* Interleave calls: each re-initialises the HMAC with its key. */
	CHECK(vcrypt_term(vc, "payrol", 6, t1) &&
	      vcrypt_mac(vc, "/srv/docs/a.md", 14, m1) &&
	      vcrypt_term(vc, "zebra", 5, t2) &&
	      vcrypt_term(vc, "payrol", 6, t2),
	      "terms");
	CHECK(memcmp(t1, t2, VCRYPT_TERM_LEN) == 0, "a term is deterministic");
	for (int i = 0; i < VCRYPT_TERM_LEN; i++)
		alpha = alpha && strchr(b32, t1[i]) != NULL && t1[i] != '\0';
	CHECK(alpha, "terms are base32: %.10s", t1);

	/* Known answer, recomputed with OpenSSL directly. */
	hkdf(&k, salt, "scrim index v1 term mac", tk);
	EVP_Q_mac(NULL, "HMAC", NULL, "SHA256", NULL, tk, 32, (const unsigned char *)"payrol", 6, full,
	          sizeof(full), &fl);
	for (int i = 0; i < 7; i++)
		bits = bits << 8 | full[i];
	bits >>= 6;
	for (int i = VCRYPT_TERM_LEN - 1; i >= 0; i--) {
		want[i] = b32[bits & 31];
		bits >>= 5;
	}
	CHECK(fl == 32 && memcmp(t1, want, VCRYPT_TERM_LEN) == 0,
	      "pseudo-term is HMAC-SHA256 under the HKDF term key: %.10s vs "
	      "%.10s",
	      t1, want);
	hkdf(&k, salt, "scrim index v1 path mac", pk);
	EVP_Q_mac(NULL, "HMAC", NULL, "SHA256", NULL, pk, 32, (const unsigned char *)"/srv/docs/a.md",
	          14, full, sizeof(full), &fl);
	CHECK(memcmp(m1, full, VCRYPT_MAC_LEN) == 0,
	      "path MAC is HMAC-SHA256 under the HKDF path key");

	CHECK(vcrypt_term(vo, "payrol", 6, t2) &&
	      memcmp(t1, t2, VCRYPT_TERM_LEN) != 0,
	      "another key, another term");
	CHECK(vcrypt_mac(vo, "/srv/docs/a.md", 14, m2) &&
	      memcmp(m1, m2, VCRYPT_MAC_LEN) != 0,
	      "another key, another path MAC");
	vcrypt_free(vc);
	vcrypt_free(vo);
}

int
main(void)
{
	char cmd[400];

	if (mkdtemp(dir) == NULL) {
		perror("mkdtemp");
		return 2;
	}
	test_key_files();
	test_seal_open();
	test_macs();
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
	if (system(cmd) != 0)
		fprintf(stderr, "could not remove %s\n", dir);
	return harness_done();
}
