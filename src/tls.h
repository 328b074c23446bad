/*
 * tls.h - the server side of TLS interception: one SSL_CTX whose
 * certificate is chosen per connection from the leaf cache, ALPN that
 * offers HTTP/1.1 only, and the switch of a connection's bufferevent to
 * a TLS filter once CONNECT has been answered.
 */
#ifndef SCRIM_TLS_H
#define SCRIM_TLS_H

#include "scrim.h"

#include <openssl/ssl.h>

struct certcache;
struct bufferevent;
struct event_base;

SSL_CTX *tls_server_ctx(struct certcache *cc);
void tls_server_ctx_free(SSL_CTX *ctx);

/*
 * Wrap bev (already answered "200 Connection established") in a TLS
 * filter presenting a certificate for host. Returns the new bufferevent,
 * which owns bev, or NULL (bev untouched).
 */
struct bufferevent *tls_accept(struct event_base *base, SSL_CTX *ctx,
                               struct certcache *cc, struct bufferevent *bev,
                               const char *host);

#endif
