/*
 * tls.c - see tls.h. The certificate is set on the SSL object before the
 * handshake from the CONNECT host; a client whose SNI names another host
 * is refused (no fronting one host behind another's certificate).
 */
#include "tls.h"

#include "certcache.h"
#include "log.h"

#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <string.h>
#include <strings.h>

/* ex_data slot: the CONNECT host the handshake must be for. */
static int host_idx = -1;

static int
sni_cb(SSL *ssl, int *alert, void *arg)
{
	const char *sni = SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name);
	const char *host = SSL_get_ex_data(ssl, host_idx);

	(void)arg;
	if (sni != NULL && host != NULL && strcasecmp(sni, host) != 0) {
		*alert = SSL_AD_UNRECOGNIZED_NAME;
		return SSL_TLSEXT_ERR_ALERT_FATAL;
	}
	return SSL_TLSEXT_ERR_OK;
}

static int
alpn_cb(SSL *ssl, const unsigned char **out, unsigned char *outlen,
        const unsigned char *in, unsigned int inlen, void *arg)
{
	static const unsigned char h11[] = "\x08http/1.1";

	(void)ssl;
	(void)arg;
	/* HTTP/1.1 only: clients that insist on h2 fail the handshake
	 * (docs/proxy.md); everything we test speaks 1.1. */
	if (SSL_select_next_proto((unsigned char **)out, outlen, h11,
	                          sizeof(h11) - 1, in, inlen) !=
	    OPENSSL_NPN_NEGOTIATED)
		return SSL_TLSEXT_ERR_ALERT_FATAL;
	return SSL_TLSEXT_ERR_OK;
}

SSL_CTX *
tls_server_ctx(struct certcache *cc)
{
	SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());

	(void)cc;
	if (ctx == NULL)
		return NULL;
	if (host_idx < 0)
		host_idx = SSL_get_ex_new_index(0, NULL, NULL, NULL, NULL);
	SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
	SSL_CTX_set_options(ctx, SSL_OP_NO_COMPRESSION |
	                             SSL_OP_NO_RENEGOTIATION |
	                             SSL_OP_CIPHER_SERVER_PREFERENCE);
	SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS);
	SSL_CTX_set_tlsext_servername_callback(ctx, sni_cb);
	SSL_CTX_set_alpn_select_cb(ctx, alpn_cb, NULL);
	SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_SERVER);
	SSL_CTX_set_session_id_context(ctx, (const unsigned char *)"scrim", 5);
	return ctx;
}

void
tls_server_ctx_free(SSL_CTX *ctx)
{
	SSL_CTX_free(ctx);
}

struct bufferevent *
tls_accept(struct event_base *base, SSL_CTX *ctx, struct certcache *cc,
           struct bufferevent *bev, const char *host)
{
	X509 *cert = certcache_get(cc, host);
	SSL *ssl;
	struct bufferevent *tb;

	if (cert == NULL) {
		log_error("tls: cannot mint a certificate for a host");
		return NULL;
	}
	ssl = SSL_new(ctx);
	if (ssl == NULL)
		return NULL;
	/* The host string outlives the handshake: it belongs to the conn. */
	SSL_set_ex_data(ssl, host_idx, (void *)host);
	if (SSL_use_certificate(ssl, cert) != 1 ||
	    SSL_use_PrivateKey(ssl, certcache_key(cc)) != 1) {
		SSL_free(ssl);
		return NULL;
	}
	tb = bufferevent_openssl_filter_new(base, bev, ssl,
	                                    BUFFEREVENT_SSL_ACCEPTING,
	                                    BEV_OPT_CLOSE_ON_FREE |
	                                        BEV_OPT_DEFER_CALLBACKS);
	if (tb == NULL) {
		SSL_free(ssl);
		return NULL;
	}
	/* A peer that vanishes without close_notify is an ordinary EOF. */
	bufferevent_openssl_set_allow_dirty_shutdown(tb, 1);
	return tb;
}
