/*
 * admin.c - the admin port's pages. /healthz answers from memory;
 * /readyz resolves every routed provider's host through evdns (never a
 * blocking getaddrinfo on the loop) and says which failed; /proxy.pac;
 * and the key admin API (/admin/keys...), behind the admin token, each
 * operation a short asynchronous chain of Redis calls (limits_admin).
 */
#include "admin.h"

#include "alloc.h"
#include "buf.h"
#include "config.h"
#include "conn.h"
#include "context.h"
#include "audit.h"
#include "auditredis.h"
#include "auth.h"
#include "http.h"
#include "limits.h"
#include "metrics.h"
#include "certcache.h"
#include "upstream.h"
#include "redis.h"
#include "log.h"
#include "server.h"

#include <event2/buffer.h>
#include <event2/dns.h>
#include <jansson.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <sys/time.h>
#include <time.h>
#include <event2/util.h>
#include <ctype.h>
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
/*
 * The gateway's address for the PAC file: the listen address, or, when
 * that is a wildcard no client can use, the name the client reached the
 * admin port by (its Host header, checked to be a plain host name or
 * address, since it lands in JavaScript) with the gateway's port.
 */
static const char *
pac_proxy(const struct scrim_conn *c, char *out, size_t cap)
{
	const char *l = c->srv->cfg->listen, *port = strrchr(l, ':');
	const char *h = c->head.host;
	size_t n = c->head.host_len, i;

	if (port == NULL || !(strncmp(l, "0.0.0.0:", 8) == 0 ||
	                      strncmp(l, "[::]:", 5) == 0 ||
	                      strncmp(l, "*:", 2) == 0) ||
	    h == NULL || n == 0)
		return l;
	/* Drop the admin port from the Host: after "]" for [v6]. */
	for (i = n; i > 0 && h[i - 1] != ':' && h[i - 1] != ']'; i--)
		;
	if (i > 0 && h[i - 1] == ':')
		n = i - 1;
	for (i = 0; i < n; i++)
		if (!(isalnum((unsigned char)h[i]) || strchr(".-[]:", h[i])))
			return l;
	snprintf(out, cap, "%.*s%s", (int)(n < 255 ? n : 255), h, port);
	return out;
}

static void
proxy_pac(struct scrim_conn *c)
{
	const struct scrim_config *cfg = c->srv->cfg;
	char proxy[300];
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
	                    pac_proxy(c, proxy, sizeof(proxy)));
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

/* ------------------------- key admin API --------------------------- */

struct admin_op {
	struct scrim_conn *c;     /* NULL once the client left */
	char *newkey;             /* create/rotate: shown once; wiped */
	char op[16];
	char id[64];
};

static void
op_free(struct admin_op *o)
{
	xfree_secret(o->newkey);
	free(o);
}

static void
op_answer(void *arg, const char *json, size_t len)
{
	struct admin_op *o = arg;
	struct scrim_conn *c = o->c;
	json_t *j, *res;
	char *out;

	if (c == NULL) {
		op_free(o);
		return;
	}
	c->admin_op = NULL;
	j = json ? json_loadb(json, len, 0, NULL) : NULL;
	if (j == NULL) {
		conn_send_error(c, ERR_LIMITS_UNAVAILABLE, "Redis did not answer");
		op_free(o);
		return;
	}
	if (json_object_get(j, "error") != NULL) {
		conn_send_error(c, ERR_ROUTE_NOT_FOUND,
		                json_string_value(json_object_get(j, "error")));
		json_decref(j);
		op_free(o);
		return;
	}
	/* Records never say the key; a new key is shown this once. */
	res = o->newkey ? json_pack("{s:s, s:O}", "key", o->newkey, "record", j)
	                : json_incref(j);
	out = res ? json_dumps(res, JSON_COMPACT) : NULL;
	if (out == NULL) {
		conn_send_error(c, ERR_INTERNAL, NULL);
	} else {
		conn_send_simple(c, o->newkey ? 201 : 200, "application/json", out,
		                 strlen(out), "cache-control: no-store\r\n");
		OPENSSL_cleanse(out, strlen(out));
		free(out);
	}
	json_decref(res);
	json_decref(j);
	op_free(o);
}


static void
op_start(struct scrim_conn *c, struct admin_op *o, const char *const *args,
         size_t nargs)
{
	o->c = c;
	c->admin_op = o;
	if (!limits_admin(c->srv->limits, o->op, args, nargs, op_answer, o)) {
		c->admin_op = NULL;
		op_free(o);
		conn_send_error(c, ERR_LIMITS_UNAVAILABLE, "Redis is not connected");
	}
}

static long
jlong(json_t *o, const char *k)
{
	json_t *v = json_object_get(o, k);
	return json_is_integer(v) ? (long)json_integer_value(v) : 0;
}

static void
create_key(struct scrim_conn *c, enum scrim_err err)
{
	struct admin_op *o;
	json_t *j, *models, *meta, *idx;
	char h[65], id[32], created[24], rpm[24], tpm[24], tpd[24], budget[32],
	    maxpar[24], expires[24], mbuf[512] = "", ibuf[600] = "",
	    why[160] = "not a list of index names";
	bool cut = false;
	char *metas;
	unsigned char rnd[5];
	const char *name;
	struct evbuffer *b = c->body;
	size_t len = evbuffer_get_length(b);

	if (err != ERR_NONE) {
		conn_send_error(c, err, NULL);
		return;
	}
	j = json_loadb((const char *)evbuffer_pullup(b, -1), len, 0, NULL);
	name = json_string_value(json_object_get(j, "name"));
	if (!json_is_object(j) || name == NULL || *name == '\0' ||
	    strlen(name) > 128) {
		json_decref(j);
		conn_send_error(c, ERR_INVALID_JSON,
		                "Body: {\"name\": ..., \"rpm\", \"tpm\", "
		                "\"tokens_per_day\", \"budget_usd_month\", "
		                "\"max_parallel\", \"models\": [...], "
		                "\"expires\": unix time, \"meta\": {...}, "
		                "\"actions\", \"indexes\": [...]}");
		return;
	}
	/* The key's index grant: ["a", "b"], "a,b" or "none". */
	idx = json_object_get(j, "indexes");
	for (size_t i = 0; json_is_array(idx) && i < json_array_size(idx); i++) {
		const char *n = json_string_value(json_array_get(idx, i));
		size_t il = strlen(ibuf);

		/* A name with a comma is refused below, not split; a list cut
		 * short could name another index, so it is refused too. */
		int w = snprintf(ibuf + il, sizeof(ibuf) - il, "%s%s",
		                 il ? "," : "", n && *n && !strchr(n, ',') ? n : "?");
		cut = cut || w < 0 || (size_t)w >= sizeof(ibuf) - il;
	}
	if (json_is_string(idx) &&
	    strlen(json_string_value(idx)) < sizeof(ibuf))
		snprintf(ibuf, sizeof(ibuf), "%s", json_string_value(idx));
	else if (json_is_string(idx))
		cut = true;
	if (cut || (idx != NULL && !json_is_array(idx) && !json_is_string(idx)) ||
	    (json_is_array(idx) && json_array_size(idx) == 0) ||
	    !context_grant_valid(ibuf, why, sizeof(why))) {
		char msg[256];

		json_decref(j);
		snprintf(msg, sizeof(msg), "indexes: %s (a list of names, or "
		         "\"none\")", why);
		conn_send_error(c, ERR_INVALID_JSON, msg);
		return;
	}
	models = json_object_get(j, "models");
	for (size_t i = 0; json_is_array(models) && i < json_array_size(models);
	     i++) {
		const char *m = json_string_value(json_array_get(models, i));
		size_t ml = strlen(mbuf);
		if (m != NULL && !strchr(m, ','))
			snprintf(mbuf + ml, sizeof(mbuf) - ml, "%s%s", ml ? "," : "",
			         m);
	}
	if (json_is_string(models))
		snprintf(mbuf, sizeof(mbuf), "%s", json_string_value(models));
	meta = json_object_get(j, "meta");
	metas = json_is_object(meta) ? json_dumps(meta, JSON_COMPACT)
	                             : xstrdup("{}");
	o = xcalloc(1, sizeof(*o));
	snprintf(o->op, sizeof(o->op), "create");
	o->newkey = auth_generate_key();
	if (o->newkey == NULL || RAND_bytes(rnd, sizeof(rnd)) != 1) {
		free(metas);
		json_decref(j);
		op_free(o);
		conn_send_error(c, ERR_INTERNAL, NULL);
		return;
	}
	auth_key_hex(o->newkey, strlen(o->newkey), h);
	snprintf(id, sizeof(id), "key_%02x%02x%02x%02x%02x", rnd[0], rnd[1],
	         rnd[2], rnd[3], rnd[4]);
	snprintf(created, sizeof(created), "%ld", (long)time(NULL));
	snprintf(rpm, sizeof(rpm), "%ld", jlong(j, "rpm"));
	snprintf(tpm, sizeof(tpm), "%ld", jlong(j, "tpm"));
	snprintf(tpd, sizeof(tpd), "%ld", jlong(j, "tokens_per_day"));
	snprintf(budget, sizeof(budget), "%ld",
	         (long)(json_number_value(json_object_get(j, "budget_usd_month")) *
	                    1e6 + 0.5));
	snprintf(maxpar, sizeof(maxpar), "%ld", jlong(j, "max_parallel"));
	snprintf(expires, sizeof(expires), "%ld", jlong(j, "expires"));
	{
		const char *acts = json_string_value(json_object_get(j, "actions"));
		const char *args[] = {h,      id,     name,   created, rpm,
		                      tpm,    tpd,    budget, maxpar,  mbuf,
		                      expires, metas, acts ? acts : "", ibuf};
		op_start(c, o, args, SCRIM_ARRAY_LEN(args));
	}
	free(metas);
	json_decref(j);
}

static bool
admin_authorised(struct scrim_conn *c)
{
	const struct scrim_config *cfg = c->srv->cfg;
	const char *tok;
	size_t len;

	if (cfg->admin_token == NULL) {
		conn_send_error(c, ERR_FORBIDDEN_TARGET,
		                "The key admin API is off: set [redis] "
		                "admin_token_env or admin_token_file");
		return false;
	}
	if (!auth_presented(&c->head, &tok, &len) ||
	    len != strlen(cfg->admin_token) ||
	    CRYPTO_memcmp(tok, cfg->admin_token, len) != 0) {
		conn_send_error(c, ERR_INVALID_API_KEY, "Admin token required");
		return false;
	}
	if (c->srv->limits == NULL) {
		conn_send_error(c, ERR_LIMITS_UNAVAILABLE,
		                "Virtual keys need [redis] url");
		return false;
	}
	return true;
}

/* /admin/keys[/ID[/revoke|/rotate|/usage]] */
static void
keys_api(struct scrim_conn *c)
{
	const struct http_head *h = &c->head;
	const char *t = h->target + 11; /* after "/admin/keys" */
	size_t n = h->target_len - 11;
	struct admin_op *o;
	const char *slash;
	enum scrim_err err = ERR_NONE;
	bool post = h->method == HTTP_POST, get = h->method == HTTP_GET;

	if (!admin_authorised(c))
		return;
	if (n == 0) {
		if (get) {
			o = xcalloc(1, sizeof(*o));
			snprintf(o->op, sizeof(o->op), "list");
			op_start(c, o, NULL, 0);
		} else if (post) {
			int rc = conn_read_body(c, create_key, &err);
			if (rc == 1)
				create_key(c, ERR_NONE);
			else if (rc < 0)
				conn_send_error(c, err, NULL);
		} else {
			conn_send_error(c, ERR_METHOD_NOT_ALLOWED, NULL);
		}
		return;
	}
	if (t[0] != '/' || n < 2 || n > 60) {
		conn_send_error(c, ERR_ROUTE_NOT_FOUND, NULL);
		return;
	}
	o = xcalloc(1, sizeof(*o));
	slash = memchr(t + 1, '/', n - 1);
	snprintf(o->id, sizeof(o->id), "%.*s",
	         (int)(slash ? slash - t - 1 : (long)n - 1), t + 1);
	if (strspn(o->id, "abcdefghijklmnopqrstuvwxyz0123456789_") !=
	    strlen(o->id)) {
		op_free(o);
		conn_send_error(c, ERR_ROUTE_NOT_FOUND, NULL);
		return;
	}
	size_t rest = slash ? n - (size_t)(slash - t) : 0;
#define IS(lit) (rest == sizeof(lit) - 1 && memcmp(slash, lit, rest) == 0)
	if (slash == NULL && get) {
		const char *args[] = {o->id};
		snprintf(o->op, sizeof(o->op), "show");
		op_start(c, o, args, 1);
	} else if (slash && post && IS("/revoke")) {
		const char *args[] = {o->id};
		snprintf(o->op, sizeof(o->op), "revoke");
		op_start(c, o, args, 1);
	} else if (slash && post && IS("/rotate")) {
		char nh[65];
		o->newkey = auth_generate_key();
		if (o->newkey == NULL) {
			op_free(o);
			conn_send_error(c, ERR_INTERNAL, NULL);
			return;
		}
		auth_key_hex(o->newkey, strlen(o->newkey), nh);
		const char *args[] = {o->id, nh};
		snprintf(o->op, sizeof(o->op), "rotate");
		op_start(c, o, args, 2);
	} else if (slash && get && IS("/usage")) {
		struct timeval tv;
		struct tm tm;
		time_t secs;
		char minute[32], day[16], month[8], since[32];
		uint64_t now;
		gettimeofday(&tv, NULL);
		now = (uint64_t)tv.tv_sec * 1000 + (uint64_t)tv.tv_usec / 1000;
		secs = tv.tv_sec;
		gmtime_r(&secs, &tm);
		(void)strftime(day, sizeof(day), "%Y%m%d", &tm);
		(void)strftime(month, sizeof(month), "%Y%m", &tm);
		snprintf(minute, sizeof(minute), "%llu",
		         (unsigned long long)(now / 60000));
		snprintf(since, sizeof(since), "%llu",
		         (unsigned long long)(now - 60000));
		const char *args[] = {o->id, minute, day, month, since};
		snprintf(o->op, sizeof(o->op), "usage");
		op_start(c, o, args, 5);
	} else {
		op_free(o);
		conn_send_error(c, ERR_ROUTE_NOT_FOUND, NULL);
	}
#undef IS
}

static void
metrics_page(struct scrim_conn *c)
{
	struct scrim_server *srv = c->srv;
	struct auditredis_stats ars;
	struct buf b;
	bool ok;

	buf_init(&b, 8 * 1024 * 1024);
	ok = metrics_render(srv->metrics, &b) &&
	     buf_addf(&b, "# HELP scrim_connections_open Client connections "
	                  "open\n# TYPE scrim_connections_open gauge\n"
	                  "scrim_connections_open %zu\n", srv->nconns) &&
	     buf_addf(&b, "# HELP scrim_upstream_active Upstream transfers in "
	                  "flight (streams included)\n# TYPE scrim_upstream_active "
	                  "gauge\nscrim_upstream_active %zu\n",
	              upstream_active(srv->up)) &&
	     buf_addf(&b, "# HELP scrim_connections_accepted_total Connections "
	                  "accepted\n# TYPE scrim_connections_accepted_total "
	                  "counter\nscrim_connections_accepted_total %llu\n",
	              (unsigned long long)srv->stats.accepted) &&
	     buf_addf(&b, "# HELP scrim_config_reloads_total Reloads applied "
	                  "and refused\n# TYPE scrim_config_reloads_total counter\n"
	                  "scrim_config_reloads_total{result=\"applied\"} %llu\n"
	                  "scrim_config_reloads_total{result=\"refused\"} %llu\n",
	              (unsigned long long)srv->reloads,
	              (unsigned long long)srv->reload_failures);
	if (ok && srv->certs != NULL) {
		struct certcache_stats cs;
		certcache_stats(srv->certs, &cs);
		ok = buf_addf(&b, "# HELP scrim_cert_cache_size Leaf certificates "
		                  "cached\n# TYPE scrim_cert_cache_size gauge\n"
		                  "scrim_cert_cache_size %zu\n"
		                  "# HELP scrim_cert_cache_total Leaf lookups\n"
		                  "# TYPE scrim_cert_cache_total counter\n"
		                  "scrim_cert_cache_total{result=\"hit\"} %llu\n"
		                  "scrim_cert_cache_total{result=\"miss\"} %llu\n",
		              cs.size, (unsigned long long)cs.hits,
		              (unsigned long long)cs.misses);
	}
	if (ok && srv->audit != NULL) {
		struct audit_stats as;
		audit_get_stats(srv->audit, &as);
		/* buf_addf formats at most 512 bytes a call. */
		ok = buf_addf(&b, "# HELP scrim_audit_records_total Audit records "
		                  "written to the file, and lost (never written)\n"
		                  "# TYPE scrim_audit_records_total counter\n"
		                  "scrim_audit_records_total{result=\"written\"} %llu\n"
		                  "scrim_audit_records_total{result=\"dropped\"} %llu\n",
		              (unsigned long long)as.written,
		              (unsigned long long)as.dropped) &&
		     buf_addf(&b, "# HELP scrim_audit_write_failures_total Audit "
		                  "writes or fsyncs that failed (each is retried)\n"
		                  "# TYPE scrim_audit_write_failures_total counter\n"
		                  "scrim_audit_write_failures_total %llu\n"
		                  "# HELP scrim_audit_refused_total Requests refused "
		                  "with 503 because the audit log could not take "
		                  "their record (on_failure = block)\n"
		                  "# TYPE scrim_audit_refused_total counter\n"
		                  "scrim_audit_refused_total %llu\n",
		              (unsigned long long)as.failed,
		              (unsigned long long)as.refused) &&
		     buf_addf(&b, "# HELP scrim_audit_queued Audit records waiting "
		                  "for the disk\n# TYPE scrim_audit_queued gauge\n"
		                  "scrim_audit_queued %llu\n"
		                  "# HELP scrim_audit_healthy 1 while audit records "
		                  "are being written\n# TYPE scrim_audit_healthy gauge\n"
		                  "scrim_audit_healthy %d\n",
		              (unsigned long long)as.queued,
		              audit_healthy(srv->audit) ? 1 : 0) &&
		     buf_addf(&b, "# HELP scrim_audit_slow_writes_total Appends "
		                  "of the event loop's that took 5 ms or more, each "
		                  "leaving the appending to the writer thread for "
		                  "10 s\n# TYPE scrim_audit_slow_writes_total "
		                  "counter\nscrim_audit_slow_writes_total %llu\n",
		              (unsigned long long)as.slow);
	}
	if (ok && audit_get_redis_stats(srv->audit, &ars))
		ok = buf_addf(&b, "# HELP scrim_audit_redis_total Audit lines "
		                  "sent to the Redis stream, refused or unanswered "
		                  "there, and dropped before sending\n"
		                  "# TYPE scrim_audit_redis_total counter\n"
		                  "scrim_audit_redis_total{result=\"sent\"} %llu\n"
		                  "scrim_audit_redis_total{result=\"failed\"} %llu\n"
		                  "scrim_audit_redis_total{result=\"dropped\"} %llu\n",
		              (unsigned long long)ars.sent,
		              (unsigned long long)ars.failed,
		              (unsigned long long)ars.dropped) &&
		     buf_addf(&b, "# HELP scrim_audit_redis_pending Audit lines "
		                  "waiting to be sent to the Redis stream\n"
		                  "# TYPE scrim_audit_redis_pending gauge\n"
		                  "scrim_audit_redis_pending %llu\n",
		              (unsigned long long)ars.pending);
	if (ok && srv->limits != NULL) {
		struct redis_stats rs;
		limits_redis_stats(srv->limits, &rs);
		ok = buf_addf(&b, "# HELP scrim_redis_total Redis calls and "
		                  "failures\n# TYPE scrim_redis_total counter\n"
		                  "scrim_redis_total{event=\"call\"} %llu\n"
		                  "scrim_redis_total{event=\"timeout\"} %llu\n"
		                  "scrim_redis_total{event=\"error\"} %llu\n"
		                  "scrim_redis_total{event=\"reconnect\"} %llu\n",
		              (unsigned long long)rs.calls,
		              (unsigned long long)rs.timeouts,
		              (unsigned long long)rs.errors,
		              (unsigned long long)rs.reconnects);
	}
	if (!ok) {
		buf_free(&b);
		conn_send_error(c, ERR_INTERNAL, NULL);
		return;
	}
	conn_send_simple(c, 200, "text/plain; version=0.0.4", b.p, b.len,
	                 "cache-control: no-store\r\n");
	buf_free(&b);
}

struct key_rows {
	struct buf *b;
	const struct metrics *m;
	bool first;
};

static void
label_value(const char *labels, const char *name, char *out, size_t cap)
{
	const char *p = strstr(labels, name);
	size_t n = 0;

	out[0] = '\0';
	if (p == NULL || p[strlen(name)] != '=' || p[strlen(name) + 1] != '"')
		return;
	p += strlen(name) + 2;
	while (p[n] && p[n] != '"' && n + 1 < cap)
		n++;
	memcpy(out, p, n);
	out[n] = '\0';
}

struct tok_find {
	const char *key;
	const char *dir;
	double v;
};

static void
tok_cb(void *arg, const char *labels, double v)
{
	struct tok_find *t = arg;
	char k[128], d[8];

	label_value(labels, "key", k, sizeof(k));
	label_value(labels, "dir", d, sizeof(d));
	if (strcmp(k, t->key) == 0 && strcmp(d, t->dir) == 0)
		t->v = v;
}

static void
key_row(void *arg, const char *labels, double v)
{
	struct key_rows *kr = arg;
	char key[128];
	struct tok_find in = {key, "in", 0}, out = {key, "out", 0};

	label_value(labels, "key", key, sizeof(key));
	metrics_each(kr->m, "scrim_key_tokens_total", tok_cb, &in);
	metrics_each(kr->m, "scrim_key_tokens_total", tok_cb, &out);
	(void)buf_addf(kr->b, "%s{\"key\":\"%s\",\"requests\":%.0f,"
	                      "\"tokens_in\":%.0f,\"tokens_out\":%.0f}",
	               kr->first ? "" : ",", key, v, in.v, out.v);
	kr->first = false;
}

/* Live counters for the status page: the page polls this. */
static void
status_json(struct scrim_conn *c)
{
	struct scrim_server *srv = c->srv;
	const struct metrics *m = srv->metrics;
	struct buf b;
	struct key_rows kr;

	buf_init(&b, 1 << 20);
	(void)buf_addf(&b, "{\"version\":\"%s\",\"uptime_s\":%llu,"
	                   "\"requests\":%.0f,\"errors\":%.0f,"
	                   "\"redactions\":%.0f,\"blocked\":%.0f,"
	                   "\"rate_limited\":%.0f,\"connections\":%zu,"
	                   "\"streams\":%zu,\"reloads\":%llu,"
	                   "\"interception\":%s,\"redis\":%s,\"keys\":[",
	               SCRIM_VERSION,
	               (unsigned long long)((conn_now_ms() - srv->started_ms) /
	                                    1000),
	               metrics_sum(m, "scrim_requests_total"),
	               metrics_sum(m, "scrim_errors_total"),
	               metrics_sum(m, "scrim_redactions_total"),
	               metrics_sum(m, "scrim_blocked_total"),
	               metrics_sum(m, "scrim_rate_limited_total"), srv->nconns,
	               upstream_active(srv->up), (unsigned long long)srv->reloads,
	               srv->certs ? "true" : "false",
	               srv->limits == NULL ? "null"
	               : limits_connected(srv->limits) ? "true" : "false");
	kr.b = &b;
	kr.m = m;
	kr.first = true;
	metrics_each(m, "scrim_key_requests_total", key_row, &kr);
	(void)buf_addf(&b, "]}\n");
	conn_send_simple(c, 200, "application/json", b.p, b.len,
	                 "cache-control: no-store\r\n");
	buf_free(&b);
}

/* A page an operator can look at: no external assets, works offline. */
static const char status_html[] =
    "<!doctype html><html lang=en><meta charset=utf-8>"
    "<meta name=viewport content='width=device-width,initial-scale=1'>"
    "<title>scrim status</title><style>"
    "body{font:15px/1.4 system-ui,sans-serif;margin:2em;color:#1d2733;"
    "background:#f6f7f9}h1{font-size:1.4em;margin:0 0 .2em}"
    ".sub{color:#667}.grid{display:grid;grid-template-columns:"
    "repeat(auto-fill,minmax(150px,1fr));gap:12px;margin:1.2em 0}"
    ".card{background:#fff;border-radius:8px;padding:12px 14px;"
    "box-shadow:0 1px 2px #0002}.card b{display:block;font-size:1.6em}"
    ".card span{color:#667;font-size:.85em}table{border-collapse:collapse;"
    "background:#fff;box-shadow:0 1px 2px #0002;border-radius:8px;"
    "min-width:420px}th,td{padding:6px 14px;text-align:right}"
    "th:first-child,td:first-child{text-align:left}th{color:#667;"
    "font-weight:600;border-bottom:1px solid #eee}.ok{color:#1a7f37}"
    ".bad{color:#c62828}</style>"
    "<h1>scrim</h1><div class=sub id=sub>loading&hellip;</div>"
    "<div class=grid id=cards></div><h2>Keys</h2>"
    "<table><thead><tr><th>key id<th>requests<th>tokens in<th>tokens out"
    "</thead><tbody id=keys></tbody></table>"
    "<script>"
    "function card(n,v){return '<div class=card><b>'+v+'</b><span>'+n+"
    "'</span></div>'}"
    "function esc(s){return String(s).replace(/[&<>\"]/g,function(c){"
    "return '&#'+c.charCodeAt(0)+';'})}"
    "async function tick(){try{var r=await fetch('status.json',"
    "{cache:'no-store'});var s=await r.json();"
    "document.getElementById('sub').innerHTML='version '+esc(s.version)+"
    "' &middot; up '+s.uptime_s+' s &middot; interception '+"
    "(s.interception?'<span class=ok>on</span>':'<span class=bad>off</span>')"
    "+' &middot; redis '+(s.redis===null?'not used':(s.redis?"
    "'<span class=ok>connected</span>':'<span class=bad>down</span>'));"
    "document.getElementById('cards').innerHTML=card('requests',s.requests)+"
    "card('errors',s.errors)+card('values redacted',s.redactions)+"
    "card('blocked',s.blocked)+card('rate limited',s.rate_limited)+"
    "card('connections',s.connections)+card('streams',s.streams)+"
    "card('reloads',s.reloads);"
    "document.getElementById('keys').innerHTML=s.keys.map(function(k){"
    "return '<tr><td>'+esc(k.key)+'<td>'+k.requests+'<td>'+k.tokens_in+"
    "'<td>'+k.tokens_out}).join('')||'<tr><td colspan=4>no requests yet';"
    "}catch(e){document.getElementById('sub').textContent="
    "'cannot reach scrim: '+e}}tick();setInterval(tick,2000);"
    "</script></html>\n";

void
admin_handle(struct scrim_conn *c)
{
	const struct http_head *h = &c->head;
	static const char ok[] = "{\"status\":\"ok\"}\n";
	static const char nf[] = "{\"error\":{\"message\":\"Not found\","
	                         "\"type\":\"invalid_request_error\","
	                         "\"code\":\"not_found\"}}\n";

	if (h->target_len >= 11 && memcmp(h->target, "/admin/keys", 11) == 0) {
		keys_api(c);
		return;
	}
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
	if (http_name_eq(h->target, h->target_len, "/status") ||
	    http_name_eq(h->target, h->target_len, "/")) {
		conn_send_simple(c, 200, "text/html; charset=utf-8", status_html,
		                 sizeof(status_html) - 1,
		                 "cache-control: no-store\r\n"
		                 "content-security-policy: default-src 'none'; "
		                 "script-src 'unsafe-inline'; style-src "
		                 "'unsafe-inline'; connect-src 'self'\r\n");
		return;
	}
	if (http_name_eq(h->target, h->target_len, "/status.json")) {
		status_json(c);
		return;
	}
	if (http_name_eq(h->target, h->target_len, "/metrics")) {
		metrics_page(c);
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

	struct admin_op *o = c->admin_op;

	/* Lookups still in flight finish on their own and free the probe. */
	if (p != NULL)
		p->conn = NULL;
	c->admin = NULL;
	/* An operation in flight frees its op when it answers. */
	if (o != NULL)
		o->c = NULL;
	c->admin_op = NULL;
}
