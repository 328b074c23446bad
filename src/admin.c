/*
 * admin.c - the admin port's pages. /healthz answers from memory;
 * /readyz resolves every routed provider's host through evdns (never a
 * blocking getaddrinfo on the loop) and says which failed.
 */
#include "admin.h"

#include "alloc.h"
#include "buf.h"
#include "config.h"
#include "conn.h"
#include "http.h"
#include "log.h"
#include "server.h"

#include <event2/dns.h>
#include <event2/util.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define ADMIN_MAX_HOSTS 64

struct probe {
	struct scrim_conn *conn; /* NULL once the client left */
	int pending;
	size_t nhosts;
	const char *hosts[ADMIN_MAX_HOSTS]; /* point into cfg */
	bool ok[ADMIN_MAX_HOSTS];
	struct scrim_config *cfg;
};

struct lookup {
	struct probe *probe;
	size_t idx;
};

static void
probe_answer(struct probe *p)
{
	char body[4096];
	size_t n = 0;
	bool all = true;

	for (size_t i = 0; i < p->nhosts; i++)
		all = all && p->ok[i];
	n += (size_t)snprintf(body + n, sizeof(body) - n,
	                      "{\"status\":\"%s\",\"hosts\":{",
	                      all ? "ready" : "not_ready");
	for (size_t i = 0; i < p->nhosts && n < sizeof(body) - 300; i++)
		n += (size_t)snprintf(body + n, sizeof(body) - n, "%s\"%s\":\"%s\"",
		                      i ? "," : "", p->hosts[i],
		                      p->ok[i] ? "resolved" : "unresolvable");
	n += (size_t)snprintf(body + n, sizeof(body) - n, "}}\n");
	p->conn->admin = NULL;
	conn_send_simple(p->conn, all ? 200 : 503, "application/json", body, n,
	                 "cache-control: no-store\r\n");
}

static void
probe_release(struct probe *p)
{
	if (--p->pending > 0)
		return;
	if (p->conn != NULL)
		probe_answer(p);
	config_unref(p->cfg);
	free(p);
}

static void
lookup_cb(int result, struct evutil_addrinfo *res, void *arg)
{
	struct lookup *l = arg;

	if (result == 0)
		l->probe->ok[l->idx] = true;
	if (res != NULL)
		evutil_freeaddrinfo(res);
	probe_release(l->probe);
	free(l);
}

static void
readyz(struct scrim_conn *c)
{
	struct scrim_server *srv = c->srv;
	struct probe *p = xcalloc(1, sizeof(*p));
	struct evutil_addrinfo hints;

	p->conn = c;
	p->cfg = config_ref(srv->cfg);
	for (size_t i = 0; i < p->cfg->nroutes; i++) {
		const char *h = p->cfg->routes[i].provider->host;
		bool dup = false;
		for (size_t k = 0; k < p->nhosts; k++)
			dup = dup || strcmp(p->hosts[k], h) == 0;
		if (!dup && p->nhosts < ADMIN_MAX_HOSTS)
			p->hosts[p->nhosts++] = h;
	}
	c->admin = p;
	memset(&hints, 0, sizeof(hints));
	hints.ai_family = AF_UNSPEC;
	hints.ai_socktype = SOCK_STREAM;
	/* One count for this function, so answers that come back at once
	 * (numeric hosts) cannot finish the probe before all are sent. */
	p->pending = 1 + (int)p->nhosts;
	for (size_t i = 0; i < p->nhosts; i++) {
		struct lookup *l = xcalloc(1, sizeof(*l));
		l->probe = p;
		l->idx = i;
		evdns_getaddrinfo(srv->dns, p->hosts[i], NULL, &hints, lookup_cb, l);
	}
	probe_release(p);
}

/*
 * A PAC file that sends the intercepted AI hosts (and the tunnel list)
 * through the gateway and everything else direct, so a company can roll
 * scrim out with one browser/OS setting without routing all traffic
 * through it. The proxy address is the gateway listener's; put a
 * reachable name there when listening on all interfaces.
 */
static void
proxy_pac(struct scrim_conn *c)
{
	const struct scrim_config *cfg = c->srv->cfg;
	struct buf b;

	buf_init(&b, 1 << 20);
	bool ok = buf_addf(&b, "// scrim proxy auto-config: AI hosts through the "
	                       "gateway, the rest direct.\n"
	                       "function FindProxyForURL(url, host) {\n"
	                       "  host = host.toLowerCase();\n"
	                       "  var hosts = [");
	for (size_t i = 0; ok && i < cfg->nintercept + cfg->ntunnel; i++) {
		const char *g = i < cfg->nintercept ? cfg->intercept[i]
		                                    : cfg->tunnel[i - cfg->nintercept];
		/* Globs are host names with '*'; nothing to escape but quotes. */
		ok = !strchr(g, '"') && !strchr(g, '\\') &&
		     buf_addf(&b, "%s\"%s\"", i ? ", " : "", g);
	}
	ok = ok && buf_addf(&b, "];\n"
	                        "  for (var i = 0; i < hosts.length; i++)\n"
	                        "    if (shExpMatch(host, hosts[i]))\n"
	                        "      return \"PROXY %s\";\n"
	                        "  return \"DIRECT\";\n}\n",
	                    cfg->listen);
	if (!ok || !cfg->proxy_on) {
		buf_free(&b);
		conn_send_error(c, ERR_ROUTE_NOT_FOUND,
		                cfg->proxy_on ? "PAC file too large"
		                              : "proxy mode is off ([proxy] mode)");
		return;
	}
	conn_send_simple(c, 200, "application/x-ns-proxy-autoconfig", b.p, b.len,
	                 "cache-control: max-age=300\r\n");
	buf_free(&b);
}

void
admin_handle(struct scrim_conn *c)
{
	const struct http_head *h = &c->head;
	static const char ok[] = "{\"status\":\"ok\"}\n";
	static const char nf[] = "{\"error\":{\"message\":\"Not found\","
	                         "\"type\":\"invalid_request_error\","
	                         "\"code\":\"not_found\"}}\n";

	if (h->method != HTTP_GET && h->method != HTTP_HEAD) {
		conn_send_error(c, ERR_METHOD_NOT_ALLOWED, NULL);
		return;
	}
	if (http_name_eq(h->target, h->target_len, "/healthz")) {
		conn_send_simple(c, 200, "application/json", ok, sizeof(ok) - 1,
		                 "cache-control: no-store\r\n");
		return;
	}
	if (http_name_eq(h->target, h->target_len, "/readyz")) {
		readyz(c);
		return;
	}
	if (http_name_eq(h->target, h->target_len, "/proxy.pac")) {
		proxy_pac(c);
		return;
	}
	conn_send_simple(c, 404, "application/json", nf, sizeof(nf) - 1, NULL);
}

void
admin_conn_closed(struct scrim_conn *c)
{
	struct probe *p = c->admin;

	/* Lookups still in flight finish on their own and free the probe. */
	if (p != NULL)
		p->conn = NULL;
	c->admin = NULL;
}
