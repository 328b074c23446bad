/*
 * ca.h - the local root CA that signs interception certificates: created
 * once by `scrim ca init` (private key mode 0600), loaded by the gateway,
 * and shown with instructions for trusting it by `scrim ca show`.
 */
#ifndef SCRIM_CA_H
#define SCRIM_CA_H

#include "scrim.h"

#include <openssl/evp.h>
#include <openssl/x509.h>

struct scrim_ca {
	X509 *cert;
	EVP_PKEY *key;
};

/* Create ca.key and ca.pem in dir (made 0700 if missing). Refuses to
 * overwrite an existing CA unless force. Messages go to stderr. */
int ca_init(const char *dir, bool force);
/* Load dir's CA; NULL with a message on stderr/log when absent or bad. */
struct scrim_ca *ca_load(const char *dir, char *err, size_t errlen);
void ca_free(struct scrim_ca *ca);
/* `scrim ca show`: path, fingerprint, validity, how to trust it. */
/* proxy: the address clients use for the gateway, as host:port. */
int ca_show(const char *dir, const char *proxy);

#endif
