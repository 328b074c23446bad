/*
 * proxy.h - HTTPS proxy mode on the gateway port: CONNECT answered by
 * interception (TLS with a leaf from the local CA, then the same pipeline
 * as base-URL mode), a blind tunnel, or a refusal, as [proxy] says; the
 * SSRF guard on where a client-chosen target may resolve; and parsing of
 * absolute-form (plain HTTP proxy) requests.
 */
#ifndef SCRIM_PROXY_H
#define SCRIM_PROXY_H

#include "scrim.h"

struct sockaddr;
struct proxy_tunnel;

/* A CONNECT head arrived on c. Answers it and takes over the conn. */
void proxy_connect(struct scrim_conn *c);

/* Blind tunnel relay, driven from conn.c's callbacks. */
void proxy_tunnel_client_read(struct scrim_conn *c);
void proxy_tunnel_client_drained(struct scrim_conn *c);
/* The client shut its sending side: true when the tunnel goes on
 * half-closed (the target's answer still comes back). */
bool proxy_tunnel_client_eof(struct scrim_conn *c);
void proxy_tunnel_free(struct proxy_tunnel *t);

/*
 * May a client-chosen target connect to this address? False for
 * loopback, private, link-local (cloud metadata), CGNAT, unique-local,
 * multicast, unspecified and IPv4-mapped forms of them.
 */
bool proxy_addr_public(const struct sockaddr *sa);

/* Is host:port named in [proxy] resolve (a trusted override)? */
bool proxy_host_overridden(const struct scrim_config *cfg, const char *host,
                           unsigned port);

/*
 * Key id for a proxy request from Proxy-Authorization (Basic with the key
 * as password, or Bearer), or NULL. *present says whether the header was
 * there at all.
 */
const char *proxy_auth_key(const struct scrim_config *cfg,
                           const struct http_head *h, bool *present);

/* The key in Proxy-Authorization, decoded into out (cap bytes); its
 * length, or 0 when there is none. Wipe out after use. */
size_t proxy_auth_secret(const struct http_head *h, char *out, size_t cap);

/* Split "http://host[:port]/path" (absolute-form). Host is copied
 * lower-case into host (cap bytes); *path points into target. */
bool proxy_parse_absolute(const char *target, size_t len, char *host,
                          size_t cap, unsigned *port, const char **path,
                          size_t *path_len);

/* Does the host match one of the globs (case-insensitive)? */
bool proxy_host_matches(char *const *globs, size_t n, const char *host);

#endif
