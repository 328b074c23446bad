/*
 * proxy.c - CONNECT and the SSRF guard (see proxy.h).
 *
 * A CONNECT is decided in this order: proxy mode on, the client's key
 * (Proxy-Authorization), the port, then the host: intercepted when it is
 * on the intercept list, tunnelled when on the tunnel list (or when the
 * default says so), refused otherwise. Interception answers 200 and turns
 * the connection into a TLS server with a leaf for that host; the
 * requests inside run through the ordinary pipeline (request.c). A blind
 * tunnel resolves the host without blocking (evdns), refuses private
 * addresses, connects to the address it checked (no second lookup, so no
 * DNS rebinding), and relays bytes with back-pressure both ways.
 */
#include "proxy.h"

#include "alloc.h"
#include "auth.h"
#include "config.h"
#include "conn.h"
#include "http.h"
#include "log.h"
#include "server.h"
#include "tls.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/dns.h>
#include <event2/event.h>
#include <fnmatch.h>
#include <netinet/in.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>

#define TUNNEL_HIGH (1024 * 1024) /* stop reading one side above this */
#define TUNNEL_LOW (256 * 1024)   /* and resume below this */
#define TUNNEL_CONNECT_MS 10000

struct proxy_tunnel {
	struct scrim_conn *c;       /* NULL once the client is gone */
	struct bufferevent *peer;
	struct evdns_getaddrinfo_request *dns;
	bool client_paused;         /* client reads stopped: peer is full */
	bool peer_paused;           /* peer reads stopped: client is full */
	bool client_eof;            /* client shut its side: pass it on */
	bool opened;                /* relaying: audited when it ends */
	uint64_t opened_ms, up, down; /* bytes client -> target, and back */
};

bool
proxy_host_matches(char *const *globs, size_t n, const char *host)
{
	for (size_t i = 0; i < n; i++)
		if (fnmatch(globs[i], host, FNM_CASEFOLD) == 0)
			return true;
	return false;
}

bool
proxy_addr_public(const struct sockaddr *sa)
{
	if (sa->sa_family == AF_INET) {
		uint32_t a = ntohl(((const struct sockaddr_in *)sa)->sin_addr.s_addr);
		uint8_t b0 = (uint8_t)(a >> 24), b1 = (uint8_t)(a >> 16);
		return !(b0 == 0 || b0 == 10 || b0 == 127 ||          /* this, private, loopback */
		         (b0 == 100 && (b1 & 0xc0) == 64) ||          /* CGNAT 100.64/10 */
		         (b0 == 169 && b1 == 254) ||                  /* link-local, metadata */
		         (b0 == 172 && (b1 & 0xf0) == 16) ||          /* 172.16/12 */
		         (b0 == 192 && b1 == 168) ||                  /* 192.168/16 */
		         (b0 == 192 && b1 == 0 && (uint8_t)(a >> 8) == 0) || /* 192.0.0/24 */
		         (b0 == 198 && (b1 & 0xfe) == 18) ||          /* 198.18/15 */
		         b0 >= 224);                                  /* multicast, reserved */
	}
	if (sa->sa_family == AF_INET6) {
		const struct in6_addr *a = &((const struct sockaddr_in6 *)sa)->sin6_addr;
		const uint8_t *b = a->s6_addr;
		if (IN6_IS_ADDR_V4MAPPED(a) || IN6_IS_ADDR_V4COMPAT(a)) {
			struct sockaddr_in v4;
			memset(&v4, 0, sizeof(v4));
			v4.sin_family = AF_INET;
			memcpy(&v4.sin_addr, b + 12, 4);
			return proxy_addr_public((const struct sockaddr *)&v4);
		}
		return !(IN6_IS_ADDR_UNSPECIFIED(a) || IN6_IS_ADDR_LOOPBACK(a) ||
		         (b[0] & 0xfe) == 0xfc ||                 /* fc00::/7 */
		         (b[0] == 0xfe && (b[1] & 0xc0) == 0x80) || /* fe80::/10 */
		         b[0] == 0xff ||                          /* multicast */
		         (b[0] == 0x00 && b[1] == 0x64 && b[2] == 0xff &&
		          b[3] == 0x9b));                        /* NAT64 */
	}
	return false;
}

/* "host:port:address:port" entries; matches host and port. */
static const char *
override_for(const struct scrim_config *cfg, const char *host, unsigned port)
{
	size_t hl = strlen(host);

	for (size_t i = 0; i < cfg->nresolve; i++) {
		const char *e = cfg->resolve[i];
		if (strncasecmp(e, host, hl) == 0 && e[hl] == ':' &&
		    strtoul(e + hl + 1, NULL, 10) == port)
			return strchr(e + hl + 1, ':') + 1;
	}
	return NULL;
}

bool
proxy_host_overridden(const struct scrim_config *cfg, const char *host,
                      unsigned port)
{
	return override_for(cfg, host, port) != NULL;
}

static int
b64val(int c)
{
	if (c >= 'A' && c <= 'Z')
		return c - 'A';
	if (c >= 'a' && c <= 'z')
		return c - 'a' + 26;
	if (c >= '0' && c <= '9')
		return c - '0' + 52;
	if (c == '+')
		return 62;
	if (c == '/')
		return 63;
	return -1;
}

size_t
proxy_auth_secret(const struct http_head *h, char *out, size_t cap)
{
	const struct http_header *a = http_head_get(h, "proxy-authorization");
	char dec[600];
	size_t n = 0, kl;
	const char *colon;
	unsigned acc = 0;
	int bits = 0;

	if (a == NULL)
		return 0;
	if (a->value_len > 7 && strncasecmp(a->value, "Bearer ", 7) == 0) {
		kl = a->value_len - 7;
		if (kl >= cap)
			return 0;
		memcpy(out, a->value + 7, kl);
		return kl;
	}
	if (a->value_len <= 6 || strncasecmp(a->value, "Basic ", 6) != 0 ||
	    a->value_len - 6 > 4 * (sizeof(dec) / 3))
		return 0;
	for (size_t i = 6; i < a->value_len; i++) {
		int v = b64val((unsigned char)a->value[i]);
		if (a->value[i] == '=')
			break;
		if (v < 0)
			return 0;
		acc = acc << 6 | (unsigned)v;
		bits += 6;
		if (bits >= 8) {
			bits -= 8;
			dec[n++] = (char)((acc >> bits) & 0xff);
		}
	}
	/* user:key, the key as the password (any user name). */
	colon = memchr(dec, ':', n);
	kl = colon ? n - (size_t)(colon + 1 - dec) : 0;
	if (kl == 0 || kl >= cap) {
		OPENSSL_cleanse(dec, sizeof(dec));
		return 0;
	}
	memcpy(out, colon + 1, kl);
	OPENSSL_cleanse(dec, sizeof(dec));
	return kl;
}

const char *
proxy_auth_key(const struct scrim_config *cfg, const struct http_head *h,
               bool *present)
{
	char key[600];
	size_t n;
	const char *id;

	*present = http_head_get(h, "proxy-authorization") != NULL;
	n = proxy_auth_secret(h, key, sizeof(key));
	id = n ? auth_lookup(cfg, key, n) : NULL;
	OPENSSL_cleanse(key, sizeof(key));
	return id;
}

static void
lower_copy(char *dst, size_t cap, const char *src, size_t n)
{
	size_t i;
	for (i = 0; i < n && i + 1 < cap; i++)
		dst[i] = (char)tolower((unsigned char)src[i]);
	dst[i] = '\0';
}

static bool
host_ok(const char *h)
{
	if (*h == '\0')
		return false;
	for (; *h; h++)
		if (!isalnum((unsigned char)*h) && *h != '.' && *h != '-' &&
		    *h != ':' && *h != '_')
			return false;
	return true;
}

/* host:port or [v6]:port into host (brackets dropped) and port. */
static bool
parse_authority(const char *a, size_t n, char *host, size_t cap,
                unsigned *port, unsigned default_port)
{
	const char *colon = NULL;
	char *end;
	unsigned long p;

	if (n == 0)
		return false;
	if (a[0] == '[') {
		const char *close = memchr(a, ']', n);
		if (close == NULL || (size_t)(close - a) >= cap)
			return false;
		lower_copy(host, cap, a + 1, (size_t)(close - a - 1));
		colon = close + 1 < a + n ? close + 1 : NULL;
		if (colon != NULL && *colon != ':')
			return false;
	} else {
		colon = memchr(a, ':', n);
		size_t hl = colon ? (size_t)(colon - a) : n;
		if (hl >= cap)
			return false;
		lower_copy(host, cap, a, hl);
	}
	if (!host_ok(host))
		return false;
	if (colon == NULL) {
		*port = default_port;
		return default_port != 0;
	}
	p = strtoul(colon + 1, &end, 10);
	if (end != a + n || end == colon + 1 || p == 0 || p > 65535)
		return false;
	*port = (unsigned)p;
	return true;
}

bool
proxy_parse_absolute(const char *t, size_t len, char *host, size_t cap,
                     unsigned *port, const char **path, size_t *path_len)
{
	const char *a, *slash;

	if (len < 8 || strncasecmp(t, "http://", 7) != 0)
		return false;
	a = t + 7;
	slash = memchr(a, '/', len - 7);
	if (slash == NULL)
		return false;
	if (!parse_authority(a, (size_t)(slash - a), host, cap, port, 80))
		return false;
	*path = slash;
	*path_len = len - (size_t)(slash - t);
	return true;
}

/* ------------------------------ tunnel ----------------------------- */

void
proxy_tunnel_free(struct proxy_tunnel *t)
{
	if (t == NULL)
		return;
	if (t->opened && t->c != NULL) {
		/* A blind tunnel leaves one record: where, whose, how much. */
		struct scrim_conn *c = t->c;
		char host[300];
		snprintf(host, sizeof(host), "%s:%u", c->tunnel_host,
		         c->tunnel_port);
		conn_audit_connect(c, &(struct conn_audit_info){
		                          .host = host,
		                          .status = 200,
		                          .decision = "tunneled",
		                          .bytes_in = t->up,
		                          .bytes_out = t->down,
		                          .ms_total = conn_now_ms() - t->opened_ms,
		                      });
		t->opened = false;
	}
	if (t->peer != NULL)
		bufferevent_free(t->peer);
	t->peer = NULL;
	if (t->dns != NULL) {
		/* The lookup's callback still comes (EAI_CANCEL) and frees. */
		t->c = NULL;
		evdns_getaddrinfo_cancel(t->dns);
		return;
	}
	free(t);
}

static void
peer_read(struct bufferevent *bev, void *arg)
{
	struct proxy_tunnel *t = arg;
	struct scrim_conn *c = t->c;
	struct evbuffer *out;

	if (c == NULL)
		return;
	out = bufferevent_get_output(c->bev);
	t->down += evbuffer_get_length(bufferevent_get_input(bev));
	evbuffer_add_buffer(out, bufferevent_get_input(bev));
	if (evbuffer_get_length(out) >= TUNNEL_HIGH) {
		/* The client reads slower than the target sends. */
		bufferevent_disable(bev, EV_READ);
		t->peer_paused = true;
		bufferevent_setwatermark(c->bev, EV_WRITE, TUNNEL_LOW, 0);
	}
}

static void
peer_write(struct bufferevent *bev, void *arg)
{
	struct proxy_tunnel *t = arg;

	/* The client finished sending and all of it reached the target:
	 * half-close towards the target, keep relaying its answer. */
	if (t->client_eof &&
	    evbuffer_get_length(bufferevent_get_output(bev)) == 0) {
		shutdown(bufferevent_getfd(bev), SHUT_WR);
		t->client_eof = false;
		return;
	}

	if (t->c != NULL && t->client_paused &&
	    evbuffer_get_length(bufferevent_get_output(bev)) <= TUNNEL_LOW) {
		t->client_paused = false;
		bufferevent_setwatermark(bev, EV_WRITE, 0, 0);
		bufferevent_enable(t->c->bev, EV_READ);
	}
}

void
proxy_tunnel_client_read(struct scrim_conn *c)
{
	struct proxy_tunnel *t = c->tunnel;
	struct evbuffer *out;

	if (t == NULL || t->peer == NULL)
		return;
	out = bufferevent_get_output(t->peer);
	t->up += evbuffer_get_length(bufferevent_get_input(c->bev));
	evbuffer_add_buffer(out, bufferevent_get_input(c->bev));
	if (evbuffer_get_length(out) >= TUNNEL_HIGH) {
		bufferevent_disable(c->bev, EV_READ);
		t->client_paused = true;
		bufferevent_setwatermark(t->peer, EV_WRITE, TUNNEL_LOW, 0);
	}
}

bool
proxy_tunnel_client_eof(struct scrim_conn *c)
{
	struct proxy_tunnel *t = c->tunnel;

	if (t == NULL || t->peer == NULL || c->state != CONN_TUNNEL)
		return false;
	proxy_tunnel_client_read(c);
	t->client_eof = true;
	bufferevent_setwatermark(t->peer, EV_WRITE, 0, 0);
	if (evbuffer_get_length(bufferevent_get_output(t->peer)) == 0)
		peer_write(t->peer, t);
	return true;
}

void
proxy_tunnel_client_drained(struct scrim_conn *c)
{
	struct proxy_tunnel *t = c->tunnel;

	if (t != NULL && t->peer_paused && t->peer != NULL) {
		t->peer_paused = false;
		bufferevent_setwatermark(c->bev, EV_WRITE, 0, 0);
		bufferevent_enable(t->peer, EV_READ);
	}
}

static void
peer_event(struct bufferevent *bev, short what, void *arg)
{
	struct proxy_tunnel *t = arg;
	struct scrim_conn *c = t->c;
	static const char ok[] = "HTTP/1.1 200 Connection established\r\n\r\n";

	(void)bev;
	if (c == NULL)
		return;
	if (what & BEV_EVENT_CONNECTED) {
		bufferevent_set_timeouts(t->peer, NULL, NULL);
		t->opened = true;
		t->opened_ms = conn_now_ms();
		c->state = CONN_TUNNEL;
		c->close_after = false;
		bufferevent_setwatermark(c->bev, EV_READ, 0, 0);
		bufferevent_write(c->bev, ok, sizeof(ok) - 1);
		bufferevent_enable(t->peer, EV_READ | EV_WRITE);
		/* Bytes the client sent early go out now. */
		proxy_tunnel_client_read(c);
		return;
	}
	if (c->state == CONN_CONNECTING) {
		c->close_after = true;
		conn_send_error(c, (what & BEV_EVENT_TIMEOUT) ? ERR_UPSTREAM_TIMEOUT
		                                              : ERR_UPSTREAM_CONNECT,
		                "Could not connect to the CONNECT target");
		return;
	}
	/* The target closed: what it sent still goes to the client. */
	peer_read(t->peer, t);
	c->close_after = true;
	conn_send_abort(c);
}

static void
connect_peer(struct proxy_tunnel *t, const struct sockaddr *sa, int len)
{
	struct scrim_conn *c = t->c;
	struct timeval tv = {TUNNEL_CONNECT_MS / 1000, 0};

	t->peer = bufferevent_socket_new(c->srv->base, -1,
	                                 BEV_OPT_CLOSE_ON_FREE |
	                                     BEV_OPT_DEFER_CALLBACKS);
	if (t->peer == NULL) {
		c->close_after = true;
		conn_send_error(c, ERR_INTERNAL, NULL);
		return;
	}
	bufferevent_setcb(t->peer, peer_read, peer_write, peer_event, t);
	bufferevent_set_timeouts(t->peer, NULL, &tv);
	if (bufferevent_socket_connect(t->peer, (struct sockaddr *)sa, len) != 0) {
		c->close_after = true;
		conn_send_error(c, ERR_UPSTREAM_CONNECT,
		                "Could not connect to the CONNECT target");
	}
}

static void
resolved(int result, struct evutil_addrinfo *res, void *arg)
{
	struct proxy_tunnel *t = arg;
	struct scrim_conn *c = t->c;
	struct evutil_addrinfo *ai;

	t->dns = NULL;
	if (c == NULL) {
		/* The client left while we looked it up. */
		if (res != NULL)
			evutil_freeaddrinfo(res);
		free(t);
		return;
	}
	c->close_after = true; /* unless the tunnel opens */
	if (result != 0 || res == NULL) {
		if (res != NULL)
			evutil_freeaddrinfo(res);
		conn_send_error(c, ERR_UPSTREAM_CONNECT,
		                "The CONNECT target does not resolve");
		return;
	}
	for (ai = res; ai != NULL; ai = ai->ai_next)
		if (c->cfg->allow_private || proxy_addr_public(ai->ai_addr))
			break;
	if (ai == NULL) {
		evutil_freeaddrinfo(res);
		conn_send_error(c, ERR_FORBIDDEN_TARGET, NULL);
		return;
	}
	connect_peer(t, ai->ai_addr, (int)ai->ai_addrlen);
	evutil_freeaddrinfo(res);
}

static void
start_tunnel(struct scrim_conn *c)
{
	struct proxy_tunnel *t = xcalloc(1, sizeof(*t));
	const char *ov = override_for(c->cfg, c->tunnel_host, c->tunnel_port);
	struct evutil_addrinfo hints;
	char port[8];

	t->c = c;
	c->tunnel = t;
	c->state = CONN_CONNECTING;
	if (ov != NULL) {
		/* A configured override is trusted: no private-address check. */
		struct sockaddr_storage ss;
		int len;
		if (!config_parse_addr(ov, &ss, &len)) {
			c->close_after = true;
			conn_send_error(c, ERR_INTERNAL, "Bad [proxy] resolve entry");
			return;
		}
		connect_peer(t, (struct sockaddr *)&ss, len);
		return;
	}
	memset(&hints, 0, sizeof(hints));
	hints.ai_family = AF_UNSPEC;
	hints.ai_socktype = SOCK_STREAM;
	snprintf(port, sizeof(port), "%u", c->tunnel_port);
	t->dns = evdns_getaddrinfo(c->srv->dns, c->tunnel_host, port, &hints,
	                           resolved, t);
	/* NULL: it answered at once (the callback ran, and set t->dns). */
}

/* ----------------------------- CONNECT ----------------------------- */

static void
refuse(struct scrim_conn *c, enum scrim_err err, const char *msg)
{
	log_info("connect %s:%u refused: %s", c->tunnel_host, c->tunnel_port,
	         err_info(err)->code);
	c->tunnel_host[0] = '\0';
	conn_send_error(c, err, msg);
}

void
proxy_connect(struct scrim_conn *c)
{
	const struct scrim_config *cfg = c->cfg;
	const struct http_head *h = &c->head;
	struct scrim_server *srv = c->srv;
	const char *key_id = NULL;
	bool present = false, port_ok = false;
	char msg[400];

	if (!cfg->proxy_on) {
		conn_send_error(c, ERR_METHOD_NOT_ALLOWED,
		                "CONNECT is off on this gateway ([proxy] mode)");
		return;
	}
	if (c->intercepted ||
	    !parse_authority(h->target, h->target_len, c->tunnel_host,
	                     sizeof(c->tunnel_host), &c->tunnel_port, 0)) {
		c->tunnel_host[0] = '\0';
		conn_send_error(c, ERR_BAD_REQUEST, "CONNECT needs host:port");
		return;
	}
	if (cfg->proxy_auth == 0) {
		key_id = proxy_auth_key(cfg, h, &present);
		if (key_id == NULL && srv->limits != NULL) {
			/* A virtual key: Redis checks it on every request inside
			 * the tunnel (a tunnel does not outlive its key). */
			char key[600];
			size_t n = proxy_auth_secret(h, key, sizeof(key));
			if (n > 0) {
				xfree_secret(c->proxy_vkey);
				c->proxy_vkey = xstrndup(key, n);
				key_id = "virtual";
			}
			OPENSSL_cleanse(key, sizeof(key));
		}
		/* No proxy credentials at all, to a host we intercept: the
		 * requests inside carry the scrim key as their API key and are
		 * checked one by one. Blind tunnels need credentials here. */
		if (key_id == NULL &&
		    !(present == false &&
		      proxy_host_matches(cfg->intercept, cfg->nintercept,
		                         c->tunnel_host))) {
			refuse(c, ERR_PROXY_AUTH,
			       present ? "Proxy-Authorization holds no valid scrim key"
			               : NULL);
			return;
		}
		if (c->proxy_vkey == NULL && key_id != NULL)
			snprintf(c->proxy_key_id, sizeof(c->proxy_key_id), "%s",
			         key_id);
	}
	for (size_t i = 0; i < cfg->nports; i++)
		port_ok = port_ok || strtoul(cfg->ports[i], NULL, 10) ==
		                         c->tunnel_port;
	if (!port_ok) {
		snprintf(msg, sizeof(msg), "CONNECT to port %u is not allowed",
		         c->tunnel_port);
		refuse(c, ERR_FORBIDDEN_TARGET, msg);
		return;
	}
	if (proxy_host_matches(cfg->intercept, cfg->nintercept, c->tunnel_host)) {
		static const char ok[] =
		    "HTTP/1.1 200 Connection established\r\n\r\n";
		struct bufferevent *tb;

		if (srv->certs == NULL) {
			refuse(c, ERR_NO_CA, NULL);
			return;
		}
		log_info("connect %s:%u key=%s intercept", c->tunnel_host,
		         c->tunnel_port, key_id ? key_id : "-");
		bufferevent_write(c->bev, ok, sizeof(ok) - 1);
		tb = tls_accept(srv->base, srv->tls, srv->certs, c->bev,
		                c->tunnel_host);
		if (tb == NULL) {
			conn_close(c, "TLS setup failed");
			return;
		}
		c->intercepted = true;
		conn_swap_bev(c, tb);
		conn_send_raw(c, NULL, 0);
		return;
	}
	if (proxy_host_matches(cfg->tunnel, cfg->ntunnel, c->tunnel_host) ||
	    cfg->proxy_default == 1) {
		log_info("connect %s:%u key=%s tunnel", c->tunnel_host,
		         c->tunnel_port, key_id ? key_id : "-");
		start_tunnel(c);
		return;
	}
	snprintf(msg, sizeof(msg), "CONNECT to %s is not allowed by policy",
	         c->tunnel_host);
	refuse(c, ERR_FORBIDDEN_TARGET, msg);
}
