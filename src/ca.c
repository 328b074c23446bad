/*
 * ca.c - the local CA. An ECDSA P-256 key (small, fast to sign with) and
 * a self-signed certificate valid for 10 years, restricted to signing
 * certificates (basicConstraints CA:TRUE, pathlen 0; keyUsage
 * keyCertSign, cRLSign). The key file is written 0600 through a
 * temporary file and rename, so a crash never leaves half a key.
 */
#include "ca.h"

#include "alloc.h"

#include <errno.h>
#include <fcntl.h>
#include <openssl/bn.h>
#include <openssl/ec.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509v3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define CA_DAYS (10 * 365)

static char *
path_in(const char *dir, const char *name)
{
	return xasprintf("%s/%s", dir, name);
}

static bool
add_ext(X509 *cert, X509 *issuer, int nid, const char *value)
{
	X509V3_CTX ctx;
	X509_EXTENSION *ext;
	bool ok;

	X509V3_set_ctx_nodb(&ctx);
	X509V3_set_ctx(&ctx, issuer, cert, NULL, NULL, 0);
	ext = X509V3_EXT_conf_nid(NULL, &ctx, nid, value);
	if (ext == NULL)
		return false;
	ok = X509_add_ext(cert, ext, -1) == 1;
	X509_EXTENSION_free(ext);
	return ok;
}

/* Write data to path via a temporary file, mode 0600 or 0644. */
static int
write_pem(const char *path, mode_t mode, EVP_PKEY *key, X509 *cert)
{
	char *tmp = xasprintf("%s.tmp.%ld", path, (long)getpid());
	int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, mode);
	FILE *f;
	int ok;

	if (fd < 0) {
		fprintf(stderr, "scrim ca: cannot create %s: %s\n", tmp,
		        strerror(errno));
		free(tmp);
		return -1;
	}
	f = fdopen(fd, "w");
	ok = f != NULL &&
	     (key ? PEM_write_PrivateKey(f, key, NULL, NULL, 0, NULL, NULL)
	          : PEM_write_X509(f, cert)) == 1;
	ok = ok && fflush(f) == 0 && fsync(fd) == 0;
	if (f != NULL)
		(void)fclose(f);
	else
		close(fd);
	if (!ok || rename(tmp, path) != 0) {
		fprintf(stderr, "scrim ca: cannot write %s: %s\n", path,
		        strerror(errno));
		unlink(tmp);
		free(tmp);
		return -1;
	}
	free(tmp);
	return 0;
}

int
ca_init(const char *dir, bool force)
{
	char *keyp = path_in(dir, "ca.key"), *certp = path_in(dir, "ca.pem");
	EVP_PKEY *key = NULL;
	X509 *cert = NULL;
	X509_NAME *name;
	BIGNUM *serial = NULL;
	char host[128] = "localhost", cn[256];
	int rc = 1;

	if (!force && access(keyp, F_OK) == 0) {
		fprintf(stderr, "scrim ca: %s exists; `scrim ca show` prints it "
		                "(use --force to replace it, which breaks every "
		                "client that trusts the old one)\n", keyp);
		goto out;
	}
	if (mkdir(dir, 0700) != 0 && errno != EEXIST) {
		fprintf(stderr, "scrim ca: cannot create %s: %s\n", dir,
		        strerror(errno));
		goto out;
	}
	key = EVP_EC_gen("P-256");
	cert = X509_new();
	serial = BN_new();
	if (key == NULL || cert == NULL || serial == NULL ||
	    !BN_rand(serial, 127, BN_RAND_TOP_ANY, BN_RAND_BOTTOM_ANY))
		goto crypto_fail;
	gethostname(host, sizeof(host) - 1);
	snprintf(cn, sizeof(cn), "scrim local CA (%s)", host);
	X509_set_version(cert, 2);
	BN_to_ASN1_INTEGER(serial, X509_get_serialNumber(cert));
	/* Backdated a day so a client with a slow clock accepts it. */
	X509_gmtime_adj(X509_getm_notBefore(cert), -86400);
	X509_gmtime_adj(X509_getm_notAfter(cert), (long)CA_DAYS * 86400);
	name = X509_get_subject_name(cert);
	X509_NAME_add_entry_by_txt(name, "O", MBSTRING_ASC,
	                           (const unsigned char *)"scrim", -1, -1, 0);
	X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_UTF8,
	                           (const unsigned char *)cn, -1, -1, 0);
	X509_set_issuer_name(cert, name);
	X509_set_pubkey(cert, key);
	if (!add_ext(cert, cert, NID_basic_constraints, "critical,CA:TRUE,pathlen:0") ||
	    !add_ext(cert, cert, NID_key_usage, "critical,keyCertSign,cRLSign") ||
	    !add_ext(cert, cert, NID_subject_key_identifier, "hash") ||
	    X509_sign(cert, key, EVP_sha256()) == 0)
		goto crypto_fail;
	if (write_pem(keyp, 0600, key, NULL) != 0 ||
	    write_pem(certp, 0644, NULL, cert) != 0)
		goto out;
	printf("created %s (private key, mode 0600)\ncreated %s\n", keyp, certp);
	printf("run `scrim ca show` for how to make clients trust it\n");
	rc = 0;
	goto out;
crypto_fail:
	fprintf(stderr, "scrim ca: OpenSSL could not create the CA\n");
out:
	BN_free(serial);
	X509_free(cert);
	EVP_PKEY_free(key);
	free(keyp);
	free(certp);
	return rc;
}

struct scrim_ca *
ca_load(const char *dir, char *err, size_t errlen)
{
	char *keyp = path_in(dir, "ca.key"), *certp = path_in(dir, "ca.pem");
	struct scrim_ca *ca = xcalloc(1, sizeof(*ca));
	struct stat st;
	FILE *f;

	f = fopen(certp, "r");
	if (f == NULL) {
		snprintf(err, errlen, "no CA at %s (run `scrim ca init`)", certp);
		goto fail;
	}
	ca->cert = PEM_read_X509(f, NULL, NULL, NULL);
	(void)fclose(f);
	if (stat(keyp, &st) == 0 && (st.st_mode & 077) != 0) {
		snprintf(err, errlen, "%s is readable by others (mode %o); "
		                      "chmod 600 it", keyp, st.st_mode & 0777);
		goto fail;
	}
	f = fopen(keyp, "r");
	if (f == NULL) {
		snprintf(err, errlen, "cannot read %s: %s", keyp, strerror(errno));
		goto fail;
	}
	ca->key = PEM_read_PrivateKey(f, NULL, NULL, NULL);
	(void)fclose(f);
	if (ca->cert == NULL || ca->key == NULL ||
	    X509_check_private_key(ca->cert, ca->key) != 1) {
		snprintf(err, errlen, "%s and %s are not a matching CA", certp,
		         keyp);
		goto fail;
	}
	free(keyp);
	free(certp);
	return ca;
fail:
	ca_free(ca);
	free(keyp);
	free(certp);
	return NULL;
}

void
ca_free(struct scrim_ca *ca)
{
	if (ca == NULL)
		return;
	X509_free(ca->cert);
	EVP_PKEY_free(ca->key);
	free(ca);
}

int
ca_show(const char *dir, const char *proxy)
{
	char err[512];
	struct scrim_ca *ca = ca_load(dir, err, sizeof(err));
	unsigned char md[EVP_MAX_MD_SIZE];
	unsigned int mdlen = 0;
	char *certp;
	BIO *out;

	if (ca == NULL) {
		fprintf(stderr, "scrim ca: %s\n", err);
		return 1;
	}
	certp = path_in(dir, "ca.pem");
	X509_digest(ca->cert, EVP_sha256(), md, &mdlen);
	out = BIO_new_fp(stdout, BIO_NOCLOSE);
	BIO_printf(out, "certificate: %s\nprivate key: %s/ca.key (mode 0600, "
	                "never leaves this machine)\nsubject:     ", certp, dir);
	X509_NAME_print_ex(out, X509_get_subject_name(ca->cert), 0,
	                   XN_FLAG_ONELINE);
	BIO_printf(out, "\nvalid:       ");
	ASN1_TIME_print(out, X509_get0_notBefore(ca->cert));
	BIO_printf(out, " to ");
	ASN1_TIME_print(out, X509_get0_notAfter(ca->cert));
	BIO_printf(out, "\nSHA-256:     ");
	for (unsigned i = 0; i < mdlen; i++)
		BIO_printf(out, "%02X%s", md[i], i + 1 < mdlen ? ":" : "");
	BIO_printf(out,
	           "\n\nTrust it, so clients accept the certificates scrim "
	           "presents for AI hosts:\n"
	           "  Debian/Ubuntu:  cp %s /usr/local/share/ca-certificates/"
	           "scrim.crt && update-ca-certificates\n"
	           "  Node.js:        export NODE_EXTRA_CA_CERTS=%s\n"
	           "  Python:         cat /etc/ssl/certs/ca-certificates.crt %s "
	           "> bundle.pem\n"
	           "                  export SSL_CERT_FILE=$PWD/bundle.pem "
	           "REQUESTS_CA_BUNDLE=$PWD/bundle.pem\n"
	           "                  (these replace the trust store: the bundle "
	           "keeps the system's CAs)\n"
	           "  curl:           curl --cacert %s -x http://%s ...\n"
	           "  macOS:          security add-trusted-cert -d -r trustRoot "
	           "-k /Library/Keychains/System.keychain %s\n"
	           "  Windows:        certutil -addstore -f Root scrim-ca.pem\n"
	           "Then point clients at the proxy: HTTPS_PROXY=http://%s\n",
	           certp, certp, certp, certp, proxy, certp, proxy);
	BIO_free(out);
	free(certp);
	ca_free(ca);
	return 0;
}
