/*
 * request.c - the pipeline. Each stage is a named function that either
 * passes the request on, parks it until an event resumes it (body bytes,
 * later a Redis reply), or ends it with an answer. Stages added by later
 * features (limits, context, scrub, restore, account, audit) slot into
 * the table below without touching the proxy around them.
 *
 * A request ends in exactly one place, req_finish(), which writes the log
 * line and frees everything the request owns; the connection decides what
 * happens to the socket.
 */
#include "request.h"

#include "alloc.h"
#include "audit.h"
#include "auth.h"
#include "config.h"
#include "conn.h"
#include "context.h"
#include "embed.h"
#include "err.h"
#include "http.h"
#include "json.h"
#include "limits.h"
#include "log.h"
#include "metrics.h"
#include "proxy.h"
#include "restore.h"
#include "route.h"
#include "rules.h"
#include "scrub.h"
#include "server.h"
#include "upstream.h"
#include "usage.h"
#include "vault.h"

#include <event2/buffer.h>
#include <event2/event.h>
#include <openssl/crypto.h>
#include <arpa/inet.h>
#include <fnmatch.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <strings.h>

#define REQ_MAX_MODEL 256
#define REQ_MAX_OVERRIDES 32

enum req_mode {
	MODE_BASE,      /* base-URL route: /v1/..., /anthropic/... */
	MODE_INTERCEPT, /* inside a CONNECT tunnel we terminated */
	MODE_ABSOLUTE,  /* plain-HTTP proxy request: POST http://host/... */
};

/* The most of a non-stream answer held back before it is sent. */
#define REQ_HOLD_MAX (4 * 1024 * 1024)

struct scrim_req {
	struct scrim_conn *conn;
	enum req_mode mode;
	/* Where the request goes in proxy modes: the client chose it. */
	char up_host[256];
	unsigned up_port;
	bool up_https;
	const char *target;       /* origin-form path and query */
	size_t target_len;
	bool client_key_is_scrim; /* Authorization held our key, not theirs */
	struct scrim_server *srv;
	struct scrim_config *cfg; /* snapshot the request runs under */
	struct ruleset *rules;    /* rule packs the request runs under */
	size_t stage;
	uint64_t start_ms;
	uint64_t upstream_ms;     /* when the upstream head arrived */

	const char *key_id;       /* points into cfg */
	const struct cfg_route *route;
	const char *body;         /* the request body, contiguous in conn */
	size_t body_len;
	char *model;
	bool stream;

	/* Scrubbing. */
	struct scrub_ctx scrub;   /* stats, secret, the vault */
	struct scrub_override overrides[REQ_MAX_OVERRIDES];
	char override_text[512];  /* a key's actions, split in place */
	struct scrub_hits hits;
	struct buf scrubbed;      /* the rewritten body, when changed */
	char scrub_err[160];
	const struct cfg_provider *provider; /* route's, or local_provider */
	struct restore *restore;  /* set when the vault is not empty */

	/* Virtual keys (Redis) and usage. */
	bool virtual_key;
	char vkey[600];           /* the key presented; wiped */
	size_t vkey_len;
	char vkey_id[64];
	char vkey_name[128];
	struct limits_pending *lim_pending;
	struct limits_ticket ticket;
	struct limits_result lim;
	bool have_lim;
	bool in_stage_limits;     /* the answer came back synchronously */
	bool lim_answered;
	/* Working ahead of the limits answer (stage_limits): context and
	 * scrub run on grant, the key's as Redis last answered it, while the
	 * check is in flight, and stage_admit holds the request until the
	 * answer has said yes to that very grant. Without lim_ahead, grant
	 * is the answer's own (or empty: a config key). */
	bool lim_ahead;
	struct event *ahead_ev;   /* goes on to context, once the check left */
	struct limits_grant grant;
	/* What context and scrub started from, to run them again on the
	 * answer's grant if it differs from the one they used. */
	const char *ahead_body;
	size_t ahead_body_len;
	const struct cfg_provider *ahead_provider;
	/* A failure of the stages ahead, told only once the answer is in:
	 * the client hears what it would have without the overlap (a 401
	 * or 429 first), and the reservation is settled as for any request
	 * that dies after reserving. */
	enum scrim_err fail_err;
	bool fail_has_msg;
	char fail_msg[400];
	long max_tokens;          /* from the body, or -1 */
	struct buf injected;      /* body with stream_options added */
	bool strip_usage;         /* we asked for include_usage: hide it */
	struct usage usage;
	struct usage_tap tap;
	bool tapping;
	struct buf tout;          /* tap output */
	struct buf whole;         /* a copy of a non-stream answer, for usage */
	bool capture;
	uint64_t scrub_us;
	struct context_job *ctx_job;
	struct buf ctx_body;      /* the body with context spliced in */
	char ctx_ids[CONTEXT_MAX_IDS][32];
	size_t nctx_ids;
	bool ctx_answered, in_stage_context;
	uint64_t limits_start_us, limits_us;
	struct buf rout;          /* restored bytes ready for the client */
	/* A non-stream answer is held until it is complete (up to
	 * REQ_HOLD_MAX), so one that breaks midway becomes a clean 502
	 * rather than a 200 that ends early. */
	bool holding;
	int held_status;
	struct buf held_head, held;

	struct upstream_xfer *xfer;
	bool head_sent;
	bool sse;                 /* the answer is text/event-stream */
	int status;
	enum scrim_err err;
	const char *err_detail;   /* for the log line; static or detail_buf */
	char detail_buf[256];
	uint64_t bytes_out;
};

enum stage_result {
	STAGE_NEXT,
	STAGE_WAIT,
	STAGE_DONE,
	STAGE_JUMP, /* the stage set r->stage itself: run that one next */
};

/* The pipeline's stages, in order: indexes into stages[] below. */
enum stage_id {
	ST_AUTHENTICATE,
	ST_READ_BODY,
	ST_PARSE,
	ST_ROUTE,
	ST_LIMITS,
	ST_CONTEXT,
	ST_SCRUB,
	ST_ADMIT,
	ST_FORWARD,
};

struct stage {
	const char *name;
	enum stage_result (*run)(struct scrim_req *r);
};

static void req_run(struct scrim_req *r);

/* ------------------------------------------------------------------ */

static void
req_free(struct scrim_req *r)
{
	if (r->xfer != NULL)
		upstream_cancel(r->xfer);
	free(r->model);
	/* Everything below may hold personal data: wiped, never logged. */
	limits_cancel(r->lim_pending);
	if (r->ahead_ev != NULL)
		event_free(r->ahead_ev);
	context_cancel(r->ctx_job);
	buf_wipe(&r->ctx_body);
	restore_free(r->restore);
	usage_tap_free(&r->tap);
	buf_wipe(&r->tout);
	buf_wipe(&r->whole);
	buf_wipe(&r->injected);
	explicit_bzero(r->vkey, sizeof(r->vkey));
	buf_wipe(&r->rout);
	buf_free(&r->held_head);
	buf_wipe(&r->held);
	buf_wipe(&r->scrubbed);
	scrub_hits_free(&r->hits);
	vault_free(r->scrub.vault);
	/* explicit_bzero: memset speed (OPENSSL_cleanse goes byte by byte). */
	explicit_bzero(&r->scrub, sizeof(r->scrub));
	rules_unref(r->rules);
	config_unref(r->cfg);
	free(r);
}

static void
path_of(const struct scrim_req *r, const char **p, size_t *n)
{
	const char *q = memchr(r->target, '?', r->target_len);
	*p = r->target;
	*n = q ? (size_t)(q - r->target) : r->target_len;
}

static uint64_t
now_us(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000 + (uint64_t)ts.tv_nsec / 1000;
}

static const char *
decision_of(const struct scrim_req *r)
{
	if (r->status == 499)
		return "client_aborted";
	switch (r->err) {
	case ERR_NONE:
		return "forwarded";
	case ERR_BLOCKED:
		return "blocked";
	case ERR_RATE_LIMITED:
		return "over_limit";
	case ERR_UPSTREAM_CONNECT:
	case ERR_UPSTREAM_TLS:
	case ERR_UPSTREAM_ERROR:
	case ERR_UPSTREAM_TIMEOUT:
		return r->head_sent ? "upstream_reset" : "upstream_error";
	default:
		return err_info(r->err)->status < 500 ? "refused" : "error";
	}
}

/* The strings up to NULL, end to end into out, cut at cap - 1 bytes.
 * For label sets and record fields: their snprintf calls, a dozen a
 * request, cost more than the metrics they fed. */
static void
join(char *out, size_t cap, ...)
{
	va_list ap;
	const char *s;
	size_t n = 0;

	va_start(ap, cap);
	while ((s = va_arg(ap, const char *)) != NULL) {
		size_t l = strlen(s);
		if (l > cap - 1 - n)
			l = cap - 1 - n;
		memcpy(out + n, s, l);
		n += l;
	}
	va_end(ap);
	out[n] = '\0';
}

/* p[0..n) as a string into out, cut at cap - 1 bytes. */
static void
copy_n(char *out, size_t cap, const char *p, size_t n)
{
	if (p == NULL)
		n = 0;
	if (n > cap - 1)
		n = cap - 1;
	if (n > 0)
		memcpy(out, p, n);
	out[n] = '\0';
}

/* One record per request; ids, counts and sizes only. */
static void
write_audit(struct scrim_req *r, uint64_t now)
{
	struct audit *a = r->srv->audit;
	const struct http_head *h = &r->conn->head;
	struct audit_record rec;
	struct audit_count types[SCRUB_MAX_COUNTS], rules[SCRUB_MAX_COUNTS];
	char method[16], path[512], reason[96];
	const char *p;
	size_t plen;
	struct timespec wall;

	/* Refused because the log cannot take records: counted by
	 * audit_admit and in the chain's next checkpoint, not queued (a
	 * retrying client would fill the queue with refusals). */
	if (a == NULL || r->err == ERR_AUDIT_UNAVAILABLE)
		return;
	memset(&rec, 0, sizeof(rec));
	clock_gettime(CLOCK_REALTIME, &wall);
	rec.time_ms = (uint64_t)wall.tv_sec * 1000 + (uint64_t)wall.tv_nsec / 1000000;
	rec.request_id = r->conn->req_id;
	rec.key_id = r->key_id;
	/* A config key's id is its name; a virtual key has its --name. */
	if (r->vkey_name[0] != '\0')
		rec.key_name = r->vkey_name;
	else if (r->key_id != NULL && r->key_id != r->vkey_id &&
	         strcmp(r->key_id, "-") != 0)
		rec.key_name = r->key_id;
	rec.client_addr = r->conn->peer;
	rec.way_in = r->mode == MODE_INTERCEPT ? "intercept"
	             : r->mode == MODE_ABSOLUTE ? "proxy"
	                                        : "base_url";
	rec.host = r->mode != MODE_BASE ? r->up_host : NULL;
	copy_n(method, sizeof(method), h->method_str, h->method_len);
	rec.method = method;
	path_of(r, &p, &plen);
	copy_n(path, sizeof(path), p, plen);
	rec.path = path;
	rec.provider = r->provider ? r->provider->name : NULL;
	rec.model = r->model;
	rec.status = r->status;
	rec.decision = decision_of(r);
	if (r->err == ERR_BLOCKED && r->scrub.stats.block != NULL)
		join(reason, sizeof(reason), r->scrub.stats.block->id, (char *)NULL);
	else if (r->err != ERR_NONE)
		join(reason, sizeof(reason), err_info(r->err)->code, (char *)NULL);
	else
		reason[0] = '\0';
	rec.reason = reason[0] ? reason : NULL;
	rec.bytes_in = r->body_len;
	rec.bytes_out = r->bytes_out;
	rec.tokens_in = r->usage.in;
	rec.tokens_out = r->usage.out;
	rec.cost_usd = (r->usage.in >= 0 || r->usage.out >= 0)
	                   ? (double)limits_price(r->cfg, r->model,
	                                          r->usage.in > 0 ? r->usage.in : 0,
	                                          r->usage.out > 0 ? r->usage.out
	                                                           : 0) / 1e6
	                   : -1;
	for (size_t i = 0; i < r->scrub.stats.ntypes; i++) {
		types[i].name = r->scrub.stats.types[i].name;
		types[i].count = r->scrub.stats.types[i].count;
	}
	for (size_t i = 0; i < r->scrub.stats.nrules; i++) {
		rules[i].name = r->scrub.stats.rules[i].name;
		rules[i].count = r->scrub.stats.rules[i].count;
	}
	rec.redactions = types;
	rec.nredactions = r->scrub.stats.ntypes;
	rec.rules = rules;
	rec.nrules = r->scrub.stats.nrules;
	const char *ctx_ids[CONTEXT_MAX_IDS];
	for (size_t i = 0; i < r->nctx_ids; i++)
		ctx_ids[i] = r->ctx_ids[i];
	rec.context_ids = ctx_ids;
	rec.ncontext = r->nctx_ids;
	rec.ms_total = now - r->start_ms;
	rec.ms_upstream = r->upstream_ms ? r->upstream_ms - r->start_ms : 0;
	rec.us_scrub = r->scrub_us;
	/* Only what already went through the scrubber, and only when the
	 * operator asked: the request as sent, the answer as received. */
	if (r->cfg->audit_store_bodies && r->body != NULL && !r->cfg->scrub_off &&
	    r->scrub.stats.local == NULL) {
		rec.scrubbed_request = r->body;
		rec.scrubbed_request_len = r->body_len;
		if (r->capture && r->whole.len > 0) {
			rec.scrubbed_response = r->whole.p;
			rec.scrubbed_response_len = r->whole.len;
		}
	}
	/* audit.c counts it (scrim_audit_records_total{result="dropped"})
	 * and logs it, rate-limited. */
	(void)audit_write(a, &rec);
}

static void
record_metrics(const struct scrim_req *r, uint64_t now)
{
	struct metrics *m = r->srv->metrics;
	char route[64], prov[64], lbl[256], v[64], code[21];
	const char *rt = r->route ? r->route->name
	                 : r->mode == MODE_INTERCEPT ? "intercept"
	                 : r->mode == MODE_ABSOLUTE  ? "proxy"
	                                             : "none";

	metrics_label(route, sizeof(route), rt);
	metrics_label(prov, sizeof(prov),
	              r->provider ? r->provider->name : (r->mode ? "direct"
	                                                          : "none"));
	*scrim_put_i64(code, r->status) = '\0';
	join(lbl, sizeof(lbl), "route=\"", route, "\",provider=\"", prov,
	     "\",code=\"", code, "\"", (char *)NULL);
	metrics_add(m, "scrim_requests_total", lbl, 1);
	join(lbl, sizeof(lbl), "route=\"", route, "\"", (char *)NULL);
	metrics_observe(m, "scrim_request_duration_seconds", lbl,
	                (double)(now - r->start_ms) / 1000.0);
	if (r->upstream_ms)
		metrics_observe(m, "scrim_upstream_duration_seconds", lbl,
		                (double)(r->upstream_ms - r->start_ms) / 1000.0);
	if (r->scrub_us)
		metrics_observe(m, "scrim_scrub_duration_seconds", "",
		                (double)r->scrub_us / 1e6);
	if (r->limits_us)
		metrics_observe(m, "scrim_limits_duration_seconds", "",
		                (double)r->limits_us / 1e6);
	for (size_t i = 0; i < r->scrub.stats.ntypes; i++) {
		metrics_label(v, sizeof(v), r->scrub.stats.types[i].name);
		join(lbl, sizeof(lbl), "type=\"", v, "\"", (char *)NULL);
		metrics_add(m, "scrim_redactions_total", lbl,
		            r->scrub.stats.types[i].count);
	}
	for (size_t i = 0; i < r->scrub.stats.nrules; i++) {
		metrics_label(v, sizeof(v), r->scrub.stats.rules[i].name);
		join(lbl, sizeof(lbl), "rule=\"", v, "\"", (char *)NULL);
		metrics_add(m, "scrim_rule_hits_total", lbl,
		            r->scrub.stats.rules[i].count);
	}
	if (r->key_id != NULL && strcmp(r->key_id, "-") != 0) {
		metrics_label(v, sizeof(v), r->key_id);
		join(lbl, sizeof(lbl), "key=\"", v, "\"", (char *)NULL);
		metrics_add(m, "scrim_key_requests_total", lbl, 1);
		if (r->usage.in > 0) {
			join(lbl, sizeof(lbl), "key=\"", v, "\",dir=\"in\"",
			     (char *)NULL);
			metrics_add(m, "scrim_key_tokens_total", lbl, (double)r->usage.in);
		}
		if (r->usage.out > 0) {
			join(lbl, sizeof(lbl), "key=\"", v, "\",dir=\"out\"",
			     (char *)NULL);
			metrics_add(m, "scrim_key_tokens_total", lbl,
			            (double)r->usage.out);
		}
	}
	if (r->err == ERR_BLOCKED)
		metrics_add(m, "scrim_blocked_total", "", 1);
	if (r->err == ERR_RATE_LIMITED)
		metrics_add(m, "scrim_rate_limited_total", "", 1);
	if (r->err != ERR_NONE) {
		join(lbl, sizeof(lbl), "code=\"", err_info(r->err)->code, "\"",
		     (char *)NULL);
		metrics_add(m, "scrim_errors_total", lbl, 1);
	}
}

/* The one exit: log line, detach from the connection, free. */
static void
req_finish(struct scrim_req *r)
{
	struct scrim_conn *c = r->conn;
	const struct http_head *h = &c->head;
	const char *path;
	size_t plen;
	uint64_t now = conn_now_ms();

	/* Settle the reservation: real usage when the answer said, all of
	 * it back when nothing was answered, else keep it (conservative). */
	if (r->ticket.active) {
		bool refund = !r->head_sent || r->status >= 400;
		long tokens = -1, micros = 0;
		if (r->usage.in >= 0 || r->usage.out >= 0) {
			long in = r->usage.in > 0 ? r->usage.in : 0;
			long out = r->usage.out > 0 ? r->usage.out : 0;
			tokens = in + out;
			micros = limits_price(r->cfg, r->model, in, out);
			refund = false;
		}
		limits_settle(r->srv->limits, &r->ticket, tokens, micros, refund);
	}
	path_of(r, &path, &plen);
	if (plen > 200)
		plen = 200;
	/* Ids, sizes and times only: never a key, a prompt or a body. */
	log_info("req %s key=%s route=%s model=%s \"%.*s %.*s\" %d %s "
	         "redactions=%u in=%zu out=%llu ms=%llu upstream_ms=%llu",
	         c->req_id, r->key_id ? r->key_id : "-",
	         r->route ? r->route->name
	                  : r->mode == MODE_INTERCEPT ? "intercept"
	                  : r->mode == MODE_ABSOLUTE  ? "proxy"
	                                              : "-",
	         r->model ? r->model : "-",
	         (int)h->method_len, h->method_str, (int)plen, path, r->status,
	         r->err != ERR_NONE ? err_info(r->err)->code : "ok",
	         r->scrub.stats.replaced, r->body_len,
	         (unsigned long long)r->bytes_out,
	         (unsigned long long)(now - r->start_ms),
	         (unsigned long long)(r->upstream_ms ? r->upstream_ms - r->start_ms
	                                             : 0));
	if (r->err_detail != NULL)
		log_info("req %s upstream: %s", c->req_id, r->err_detail);
	r->srv->stats.requests++;
	record_metrics(r, now);
	write_audit(r, now);
	c->req = NULL;
	req_free(r);
}

/* End with an error answer. */
static void
req_fail(struct scrim_req *r, enum scrim_err err, const char *message)
{
	struct scrim_conn *c = r->conn;
	char *msg = message ? xstrdup(message) : NULL;

	r->err = err;
	r->status = err_info(err)->status;
	req_finish(r);
	conn_send_error(c, err, msg);
	free(msg);
}

static void
req_fail_hdrs(struct scrim_req *r, enum scrim_err err, const char *message,
              const char *extra)
{
	struct scrim_conn *c = r->conn;
	char *msg = message ? xstrdup(message) : NULL;
	char *hdr = extra ? xstrdup(extra) : NULL;

	r->err = err;
	r->status = err_info(err)->status;
	req_finish(r);
	conn_send_error_hdrs(c, err, msg, hdr);
	free(msg);
	free(hdr);
}

void
req_abort(struct scrim_req *r)
{
	/* The client left: 499 as nginx logs it. */
	r->status = 499;
	r->err_detail = "client closed the connection";
	req_finish(r);
}

void
req_output_drained(struct scrim_req *r)
{
	if (r->xfer != NULL)
		upstream_resume(r->xfer);
}

/* ---------------------------- stages ------------------------------ */

/* Keep the presented key for the limits stage, which checks it in Redis
 * once the body (and so the reservation) is known. */
static enum stage_result
use_virtual(struct scrim_req *r, const char *key, size_t len)
{
	if (len == 0 || len >= sizeof(r->vkey)) {
		req_fail(r, ERR_INVALID_API_KEY, NULL);
		return STAGE_DONE;
	}
	memcpy(r->vkey, key, len);
	r->vkey_len = len;
	r->virtual_key = true;
	r->key_id = "-";
	return STAGE_NEXT;
}

static enum stage_result
stage_authenticate(struct scrim_req *r)
{
	if (r->mode != MODE_BASE) {
		/* Proxy clients prove themselves with Proxy-Authorization (on
		 * CONNECT, or on this request), or, when they cannot set proxy
		 * credentials, with their scrim key as the API key. */
		bool present = false;
		const char *k;
		size_t kl;
		/* An Authorization holding a config key is ours, whichever way
		 * the client proved itself: never forwarded. */
		if (auth_check(r->cfg, &r->conn->head) != NULL)
			r->client_key_is_scrim = true;
		if (r->conn->proxy_key_id[0] != '\0') {
			r->key_id = r->conn->proxy_key_id;
			return STAGE_NEXT;
		}
		if (r->conn->proxy_vkey != NULL)
			return use_virtual(r, r->conn->proxy_vkey,
			                   strlen(r->conn->proxy_vkey));
		r->key_id = proxy_auth_key(r->cfg, &r->conn->head, &present);
		if (r->key_id != NULL)
			return STAGE_NEXT;
		if (present && r->srv->limits != NULL) {
			char key[600];
			size_t n = proxy_auth_secret(&r->conn->head, key, sizeof(key));
			enum stage_result res = n ? use_virtual(r, key, n) : STAGE_NEXT;
			OPENSSL_cleanse(key, sizeof(key));
			if (n)
				return res;
		}
		if (r->cfg->proxy_auth == 1) {
			r->key_id = "anonymous";
			return STAGE_NEXT;
		}
		r->key_id = auth_check(r->cfg, &r->conn->head);
		if (r->key_id != NULL) {
			r->client_key_is_scrim = true;
			return STAGE_NEXT;
		}
		if (r->srv->limits != NULL &&
		    auth_presented(&r->conn->head, &k, &kl)) {
			r->client_key_is_scrim = true;
			return use_virtual(r, k, kl);
		}
		req_fail(r, r->mode == MODE_ABSOLUTE ? ERR_PROXY_AUTH
		                                     : ERR_INVALID_API_KEY,
		         NULL);
		return STAGE_DONE;
	}
	if (r->cfg->auth_off) {
		r->key_id = "anonymous";
		return STAGE_NEXT;
	}
	r->key_id = auth_check(r->cfg, &r->conn->head);
	if (r->key_id == NULL) {
		const char *k;
		size_t kl;
		/* Not a config key: a virtual key, if Redis holds keys. */
		if (r->srv->limits != NULL &&
		    auth_presented(&r->conn->head, &k, &kl))
			return use_virtual(r, k, kl);
		req_fail(r, ERR_INVALID_API_KEY, NULL);
		return STAGE_DONE;
	}
	return STAGE_NEXT;
}

static bool
model_allowed(const char *globs, const char *model)
{
	char g[512];
	const char *p = globs;

	if (*globs == '\0')
		return true;
	if (model == NULL)
		return true; /* no model named: GET /v1/models and the like */
	while (*p) {
		size_t n = strcspn(p, ",");
		if (n > 0 && n < sizeof(g)) {
			memcpy(g, p, n);
			g[n] = '\0';
			if (fnmatch(g, model, 0) == 0)
				return true;
		}
		p += n;
		if (*p == ',')
			p++;
	}
	return false;
}

/* Room for the x-ratelimit-* headers: six names, numbers and resets. */
#define RATELIMIT_HDR_MAX 512

static char *
put_header(char *o, const char *name, size_t nlen, const char *val,
           size_t vlen)
{
	memcpy(o, name, nlen);
	o += nlen;
	memcpy(o, val, vlen);
	o += vlen;
	*o++ = '\r';
	*o++ = '\n';
	return o;
}

static char *
put_num_header(char *o, const char *name, size_t nlen, long v)
{
	char num[24];
	size_t n = limits_format_long(v, num);

	return put_header(o, name, nlen, num, n);
}

#define HDR(s) s, sizeof(s) - 1

/* The x-ratelimit-* headers OpenAI sends, from the limits answer, into
 * out (RATELIMIT_HDR_MAX bytes); returns their length. Put together by
 * hand rather than printf'd: every virtual-key answer carries them. */
static size_t
ratelimit_headers(const struct scrim_req *r, char *out)
{
	char reset[32], *o = out;

	if (!r->have_lim)
		return 0;
	if (r->lim.rpm > 0) {
		limits_format_reset(r->lim.rpm_reset_ms, reset, sizeof(reset));
		o = put_num_header(o, HDR("x-ratelimit-limit-requests: "),
		                   r->lim.rpm);
		o = put_num_header(o, HDR("x-ratelimit-remaining-requests: "),
		                   r->lim.rpm_remaining < 0 ? 0
		                                            : r->lim.rpm_remaining);
		o = put_header(o, HDR("x-ratelimit-reset-requests: "), reset,
		               strlen(reset));
	}
	if (r->lim.tpm > 0) {
		limits_format_reset(r->lim.tpm_reset_ms, reset, sizeof(reset));
		o = put_num_header(o, HDR("x-ratelimit-limit-tokens: "), r->lim.tpm);
		o = put_num_header(o, HDR("x-ratelimit-remaining-tokens: "),
		                   r->lim.tpm_remaining);
		o = put_header(o, HDR("x-ratelimit-reset-tokens: "), reset,
		               strlen(reset));
	}
	return (size_t)(o - out);
}

/* Ask for usage in streams the client did not ask it for, so the
 * reservation can be settled; the extra chunk is hidden again. */
static void
inject_include_usage(struct scrim_req *r)
{
	const char *path;
	size_t plen, end;

	path_of(r, &path, &plen);
	if (!r->stream || r->body_len == 0 ||
	    !(plen >= 17 && memcmp(path + plen - 17, "/chat/completions", 17) == 0) ||
	    memmem(r->body, r->body_len, "\"stream_options\"", 16) != NULL)
		return;
	end = r->body_len;
	while (end > 0 && r->body[end - 1] != '}')
		end--;
	if (end == 0)
		return;
	buf_init(&r->injected, r->body_len + 64);
	if (!buf_add(&r->injected, r->body, end - 1) ||
	    !buf_addf(&r->injected, ",\"stream_options\":{\"include_usage\":true}") ||
	    !buf_add(&r->injected, r->body + end - 1, r->body_len - end + 1))
		return;
	r->body = r->injected.p;
	r->body_len = r->injected.len;
	r->strip_usage = true;
}

/* Act on the limits answer. NEXT to go on, DONE when answered. */
static enum stage_result
limits_apply(struct scrim_req *r)
{
	const struct limits_result *res = &r->lim;
	struct buf hdr;
	char msg[300];

	switch (res->verdict) {
	case LIM_UNKNOWN_KEY:
		req_fail(r, ERR_INVALID_API_KEY, NULL);
		return STAGE_DONE;
	case LIM_REVOKED:
	case LIM_EXPIRED:
		req_fail(r, ERR_KEY_REVOKED, res->verdict == LIM_REVOKED
		                                 ? "This API key was revoked"
		                                 : "This API key has expired");
		return STAGE_DONE;
	case LIM_UNAVAILABLE:
		log_warn("req %s: limits unavailable (redis); failing closed",
		         r->conn->req_id);
		req_fail_hdrs(r, ERR_LIMITS_UNAVAILABLE, NULL, "retry-after: 1\r\n");
		return STAGE_DONE;
	case LIM_OVER:
		buf_init(&hdr, 4096);
		(void)buf_addf(&hdr, "retry-after: %ld\r\n",
		               (res->retry_after_ms + 999) / 1000 > 0
		                   ? (res->retry_after_ms + 999) / 1000
		                   : 1);
		{
			/* 4 KiB hold them, as the retry-after above. */
			char rl[RATELIMIT_HDR_MAX];
			bool added = buf_add(&hdr, rl, ratelimit_headers(r, rl));
			(void)added;
		}
		snprintf(msg, sizeof(msg), "Rate limit reached for %s on key %s%s",
		         res->which, res->key_id,
		         res->local ? " (local limit: the limits store is down)"
		                    : "");
		snprintf(r->vkey_id, sizeof(r->vkey_id), "%s", res->key_id);
		r->key_id = r->vkey_id;
		req_fail_hdrs(r, ERR_RATE_LIMITED, msg, hdr.p);
		buf_free(&hdr);
		return STAGE_DONE;
	case LIM_OK:
		break;
	}
	snprintf(r->vkey_id, sizeof(r->vkey_id), "%s", res->key_id);
	snprintf(r->vkey_name, sizeof(r->vkey_name), "%s", res->key_name);
	r->key_id = r->vkey_id;
	if (!model_allowed(res->models, r->model)) {
		limits_settle(r->srv->limits, &r->ticket, -1, 0, true);
		snprintf(msg, sizeof(msg), "Key %s may not use model '%s'",
		         r->key_id, r->model);
		req_fail(r, ERR_MODEL_NOT_ALLOWED, msg);
		return STAGE_DONE;
	}
	/* Working ahead, stage_limits injected already, and stage_admit
	 * compares the grant with the answer's. */
	if (!r->lim_ahead) {
		snprintf(r->grant.key_id, sizeof(r->grant.key_id), "%s",
		         res->key_id);
		snprintf(r->grant.actions, sizeof(r->grant.actions), "%s",
		         res->actions);
		snprintf(r->grant.indexes, sizeof(r->grant.indexes), "%s",
		         res->indexes);
		inject_include_usage(r);
	}
	return STAGE_NEXT;
}

static void
limits_answer(void *arg, const struct limits_result *res)
{
	struct scrim_req *r = arg;

	r->lim_pending = NULL;
	r->lim = *res;
	r->have_lim = true;
	r->limits_us = now_us() - r->limits_start_us;
	r->lim_answered = true;
	if (r->in_stage_limits)
		return; /* stage_limits acts on it */
	if (r->lim_ahead) {
		/* The stages went on without it: stage_admit acts on it when
		 * they reach it, or now if the request waits there. A refusal
		 * need not wait for the context worker (its job is cancelled
		 * as the request ends). */
		if (r->stage == ST_ADMIT)
			req_run(r);
		else if (r->ctx_job != NULL && res->verdict != LIM_OK)
			(void)limits_apply(r);
		return;
	}
	if (limits_apply(r) == STAGE_NEXT) {
		r->stage++;
		req_run(r);
	}
}

static void
ahead_cb(evutil_socket_t fd, short what, void *arg)
{
	struct scrim_req *r = arg;

	(void)fd;
	(void)what;
	req_run(r);
}

static enum stage_result
stage_limits(struct scrim_req *r)
{
	long prompt, out, micros;

	/* Config-listed keys carry no limits, and their requests go out as
	 * written (streams report usage only if the client asked). */
	if (!r->virtual_key)
		return STAGE_NEXT;
	/* The worst case is reserved: a prompt's tokens estimated from its
	 * size, plus all the output it may ask for. */
	prompt = (long)(r->body_len / 4) + 1;
	out = r->max_tokens > 0 ? r->max_tokens : r->cfg->default_max_tokens;
	micros = limits_price(r->cfg, r->model, prompt, out);
	r->in_stage_limits = true;
	r->limits_start_us = now_us();
	r->lim_pending = limits_check(r->srv->limits, r->cfg, r->vkey, r->vkey_len,
	                              r->conn->req_id, prompt + out, micros,
	                              &r->ticket, limits_answer, r);
	r->in_stage_limits = false;
	explicit_bzero(r->vkey, sizeof(r->vkey));
	if (r->lim_answered)
		return limits_apply(r);
	/* Context and scrub need the key's grant, not its limits: with the
	 * grant Redis gave this key last, they run while the check is in
	 * flight, which hides their time in the round trip. Nothing leaves
	 * before stage_admit has the answer; a key not seen since start
	 * waits for it here. */
	if (!limits_grant_known(r->srv->limits, &r->ticket, &r->grant))
		return STAGE_WAIT;
	r->lim_ahead = true;
	inject_include_usage(r);
	r->ahead_body = r->body;
	r->ahead_body_len = r->body_len;
	r->ahead_provider = r->provider;
	/* redis.c writes the check from an event it made active just now;
	 * one made active after it runs after it, in the same loop turn
	 * (libevent runs them in order). Going on from there, the check is
	 * on the wire while context and scrub run, rather than after them,
	 * and no stage runs inside hiredis' write. */
	if (r->ahead_ev == NULL)
		r->ahead_ev = event_new(r->srv->base, -1, 0, ahead_cb, r);
	if (r->ahead_ev == NULL)
		return STAGE_NEXT; /* out of memory: the check leaves later */
	event_active(r->ahead_ev, EV_TIMEOUT, 1);
	r->stage = ST_CONTEXT;
	return STAGE_WAIT;
}

/* Forget what context and scrub made of the body, to run them again. */
static void
ahead_undo(struct scrim_req *r)
{
	r->body = r->ahead_body;
	r->body_len = r->ahead_body_len;
	r->provider = r->ahead_provider;
	buf_wipe(&r->ctx_body);
	r->nctx_ids = 0;
	buf_wipe(&r->scrubbed);
	vault_free(r->scrub.vault);
	r->scrub.vault = NULL;
	memset(&r->scrub.stats, 0, sizeof(r->scrub.stats));
	r->fail_err = ERR_NONE;
}

/*
 * The gate before forward. A request that worked ahead of its limits
 * answer waits here for it; then a refusal is answered (nothing of the
 * body has left), a failure held by scrub is answered (the reservation
 * is refunded by req_finish, as for any request that dies after
 * reserving), and a grant that differs from the one the stages used
 * (the key was updated since) runs them again on the answer's.
 */
static enum stage_result
stage_admit(struct scrim_req *r)
{
	if (!r->lim_ahead)
		return STAGE_NEXT;
	if (!r->lim_answered)
		return STAGE_WAIT; /* limits_answer runs this stage again */
	if (limits_apply(r) == STAGE_DONE)
		return STAGE_DONE;
	if (strcmp(r->grant.key_id, r->lim.key_id) != 0 ||
	    strcmp(r->grant.actions, r->lim.actions) != 0 ||
	    strcmp(r->grant.indexes, r->lim.indexes) != 0) {
		log_info("req %s: key %s changed since its last check; scrubbing "
		         "again", r->conn->req_id, r->lim.key_id);
		ahead_undo(r);
		r->lim_ahead = false;
		snprintf(r->grant.key_id, sizeof(r->grant.key_id), "%s",
		         r->lim.key_id);
		snprintf(r->grant.actions, sizeof(r->grant.actions), "%s",
		         r->lim.actions);
		snprintf(r->grant.indexes, sizeof(r->grant.indexes), "%s",
		         r->lim.indexes);
		r->stage = ST_CONTEXT;
		return STAGE_JUMP;
	}
	if (r->fail_err != ERR_NONE) {
		req_fail(r, r->fail_err, r->fail_has_msg ? r->fail_msg : NULL);
		return STAGE_DONE;
	}
	return STAGE_NEXT;
}

/* Fail a stage that runs after limits: now, or, working ahead of the
 * answer, once stage_admit (the next stage) has it. */
static enum stage_result
stage_fail(struct scrim_req *r, enum scrim_err err, const char *message)
{
	if (!r->lim_ahead) {
		req_fail(r, err, message);
		return STAGE_DONE;
	}
	r->fail_err = err;
	r->fail_has_msg = message != NULL;
	if (message != NULL)
		snprintf(r->fail_msg, sizeof(r->fail_msg), "%s", message);
	return STAGE_NEXT;
}

static void
body_read(struct scrim_conn *c, enum scrim_err err)
{
	struct scrim_req *r = c->req;

	if (err != ERR_NONE) {
		req_fail(r, err, NULL);
		return;
	}
	r->stage++;
	req_run(r);
}

static enum stage_result
stage_read_body(struct scrim_req *r)
{
	enum scrim_err err = ERR_NONE;

	switch (conn_read_body(r->conn, body_read, &err)) {
	case 1:
		return STAGE_NEXT;
	case 0:
		return STAGE_WAIT;
	default:
		req_fail(r, err, NULL);
		return STAGE_DONE;
	}
}

static bool
is_multipart(const struct http_head *h)
{
	const struct http_header *ct = http_head_get(h, "content-type");
	return ct != NULL && ct->value_len >= 10 &&
	       strncasecmp(ct->value, "multipart/", 10) == 0;
}

/* Reads the two fields scrim routes on, and refuses a second "model"
 * (a provider reading the other one would be routed past our rules). */
struct parse_state {
	struct scrim_req *r;
	bool dup_model;
	bool bad_model;
};

static enum json_cb_result
parse_string_cb(void *arg, const struct json_path *p, const char *s, size_t n,
                struct buf *repl)
{
	struct parse_state *ps = arg;

	(void)repl;
	if (p->depth != 1 || !json_seg_is(p, 0, "model"))
		return JSON_KEEP;
	if (ps->r->model != NULL) {
		ps->dup_model = true;
		return JSON_KEEP;
	}
	if (n == 0 || n > REQ_MAX_MODEL || memchr(s, '\0', n) != NULL)
		ps->bad_model = true;
	else
		ps->r->model = xstrndup(s, n);
	return JSON_KEEP;
}

static void
parse_scalar_cb(void *arg, const struct json_path *p, const char *raw,
                size_t n)
{
	struct parse_state *ps = arg;

	if (p->depth == 1 && json_seg_is(p, 0, "stream"))
		ps->r->stream = n == 4 && memcmp(raw, "true", 4) == 0;
	else if (p->depth == 1 && (json_seg_is(p, 0, "max_tokens") ||
	                           json_seg_is(p, 0, "max_completion_tokens") ||
	                           json_seg_is(p, 0, "max_output_tokens"))) {
		char tmp[24];
		if (n < sizeof(tmp) && raw[0] >= '0' && raw[0] <= '9') {
			memcpy(tmp, raw, n);
			tmp[n] = '\0';
			ps->r->max_tokens = strtol(tmp, NULL, 10);
		}
	}
	else if (p->depth == 1 && json_seg_is(p, 0, "model"))
		ps->bad_model = true;
}

static enum stage_result
stage_parse(struct scrim_req *r)
{
	struct evbuffer *b = r->conn->body;
	struct parse_state ps = {r, false, false};
	enum json_result jr;
	size_t pos = 0;
	char msg[128];

	r->body_len = evbuffer_get_length(b);
	r->body = r->body_len ? (const char *)evbuffer_pullup(b, -1) : NULL;
	if (r->body_len == 0 || is_multipart(&r->conn->head))
		return STAGE_NEXT;
	/* Every API scrim fronts takes a JSON object: anything else is
	 * refused rather than forwarded unexamined. */
	{
		size_t i = 0;
		while (i < r->body_len && strchr(" \t\r\n", r->body[i]) != NULL)
			i++;
		if (i == r->body_len || r->body[i] != '{') {
			req_fail(r, ERR_INVALID_JSON, "The request body must be a JSON "
			                              "object");
			return STAGE_DONE;
		}
	}
	jr = json_walk(r->body, r->body_len, parse_string_cb, parse_scalar_cb, &ps,
	               r->body_len, &pos);
	if (jr == JSON_TOO_DEEP) {
		req_fail(r, ERR_INVALID_JSON, "The request body nests deeper than "
		                              "64 levels");
		return STAGE_DONE;
	}
	if (jr != JSON_OK) {
		snprintf(msg, sizeof(msg),
		         "The request body is not valid JSON (at byte %zu)", pos);
		req_fail(r, ERR_INVALID_JSON, msg);
		return STAGE_DONE;
	}
	if (ps.bad_model || ps.dup_model) {
		req_fail(r, ERR_INVALID_JSON,
		         ps.dup_model ? "\"model\" is given twice"
		                      : "\"model\" must be a non-empty string");
		return STAGE_DONE;
	}
	return STAGE_NEXT;
}

/* Does p's base_url name this scheme, host and port? */
static bool
provider_serves(const struct cfg_provider *p, bool https, const char *host,
                unsigned port)
{
	bool p_https = strncmp(p->base_url, "https://", 8) == 0;
	const char *a = p->base_url + (p_https ? 8 : 7), *e;
	unsigned p_port = p_https ? 443 : 80;

	if (p_https != https || p->host == NULL ||
	    strcasecmp(p->host, host) != 0)
		return false;
	e = a + strcspn(a, "/?#");
	for (const char *c = a; c < e; c++)
		if (*c == ':' && c[1] != ':' && (c == a || c[-1] != ':') &&
		    memchr(c + 1, ':', (size_t)(e - c - 1)) == NULL)
			p_port = (unsigned)strtoul(c + 1, NULL, 10);
	return p_port == port;
}

static enum stage_result
stage_route(struct scrim_req *r)
{
	const struct http_head *h = &r->conn->head;
	const char *path;
	size_t plen;
	char msg[400];

	if (r->mode != MODE_BASE) {
		/* The client chose the host; its provider entry, if any,
		 * supplies the key, headers, CA and timeouts. */
		r->provider = NULL;
		for (size_t i = 0; i < r->cfg->nproviders; i++)
			if (provider_serves(&r->cfg->providers[i], r->up_https,
			                    r->up_host, r->up_port))
				r->provider = &r->cfg->providers[i];
		(void)h;
		return STAGE_NEXT;
	}
	path_of(r, &path, &plen);
	r->route = route_find(r->cfg, path, plen, r->model);
	if (r->route == NULL) {
		if (r->model != NULL)
			snprintf(msg, sizeof(msg), "No route for model '%s' on this "
			                           "path", r->model);
		req_fail(r, ERR_ROUTE_NOT_FOUND, r->model ? msg : NULL);
		return STAGE_DONE;
	}
	r->provider = r->route->provider;
	return STAGE_NEXT;
}

/*
 * A client-chosen host that names a private address outright (a literal
 * IP, or localhost). The connect-time guard refuses it anyway; saying so
 * before the key policy tells the client the real reason.
 */
static bool
names_private_target(const struct scrim_req *r)
{
	struct sockaddr_in6 a6;
	struct sockaddr_in a4;
	size_t n = strlen(r->up_host);

	if (r->cfg->allow_private ||
	    proxy_host_overridden(r->cfg, r->up_host, r->up_port))
		return false;
	if (strcasecmp(r->up_host, "localhost") == 0 ||
	    (n > 10 && strcasecmp(r->up_host + n - 10, ".localhost") == 0))
		return true;
	memset(&a4, 0, sizeof(a4));
	memset(&a6, 0, sizeof(a6));
	if (inet_pton(AF_INET, r->up_host, &a4.sin_addr) == 1) {
		a4.sin_family = AF_INET;
		return !proxy_addr_public((const struct sockaddr *)&a4);
	}
	if (inet_pton(AF_INET6, r->up_host, &a6.sin6_addr) == 1) {
		a6.sin6_family = AF_INET6;
		return !proxy_addr_public((const struct sockaddr *)&a6);
	}
	return false;
}

static enum stage_result
check_provider_key(struct scrim_req *r)
{
	char msg[400];

	if (r->provider == NULL && names_private_target(r))
		return stage_fail(r, ERR_FORBIDDEN_TARGET, NULL);
	if (r->provider == NULL) {
		/* Proxy mode, a host without a [provider]: the users' own keys
		 * go through only where the policy says so. */
		if (r->cfg->client_keys == 1)
			return STAGE_NEXT;
		snprintf(msg, sizeof(msg), "No [provider] is configured for %s; "
		                           "set [proxy] client_keys = pass to let "
		                           "users' own keys through", r->up_host);
		return stage_fail(r, ERR_PROVIDER_KEY_MISSING, msg);
	}
	if (r->provider->auth_header != AUTH_HDR_NONE &&
	    r->provider->api_key == NULL) {
		snprintf(msg, sizeof(msg), "The gateway has no API key for "
		                           "provider '%s'", r->provider->name);
		return stage_fail(r, ERR_PROVIDER_KEY_MISSING, msg);
	}
	return STAGE_NEXT;
}

static bool
is_anthropic_body(const struct scrim_req *r)
{
	const char *path;
	size_t plen;

	path_of(r, &path, &plen);
	return plen >= 9 && memcmp(path + plen - 9, "/messages", 9) == 0;
}

static void
context_answer(void *arg, struct context_result *res)
{
	struct scrim_req *r = arg;

	r->ctx_job = NULL;
	r->ctx_answered = true;
	if (res->err[0])
		log_warn("req %s: context: %s", r->conn->req_id, res->err);
	if (res->text.len > 0) {
		buf_init(&r->ctx_body, r->body_len + res->text.len * 2 + 256);
		if (context_inject(r->body, r->body_len, res->text.p, res->text.len,
		                   is_anthropic_body(r), &r->ctx_body)) {
			r->body = r->ctx_body.p;
			r->body_len = r->ctx_body.len;
			for (size_t i = 0; i < res->nids; i++)
				memcpy(r->ctx_ids[r->nctx_ids++], res->ids[i], 32);
		}
	}
	if (r->in_stage_context)
		return;
	r->stage++;
	req_run(r);
}

static enum stage_result
stage_context(struct scrim_req *r)
{
	const struct cfg_route *rt = r->route;
	const struct http_header *opt;
	struct embed_conf emb[CONTEXT_MAX_INDEXES];
	struct vcrypt_key keys[CONTEXT_MAX_INDEXES];
	const char *idx[CONTEXT_MAX_INDEXES];
	size_t nidx;
	struct buf q;

	if (rt == NULL || !rt->context_on || r->body_len == 0)
		return STAGE_NEXT;
	opt = http_head_get(&r->conn->head, "x-scrim-context");
	if (opt != NULL && opt->value_len == 3 && strncasecmp(opt->value, "off", 3) == 0)
		return STAGE_NEXT;
	/* Tenancy: the route's indexes, narrowed to the key's grant. */
	nidx = context_grant_apply(rt->context_index, rt->ncontext_index,
	                           r->virtual_key ? r->grant.indexes : NULL,
	                           rt->context_grants == 1, idx);
	if (nidx == 0)
		return STAGE_NEXT;
	buf_init(&q, 64 * 1024);
	if (!context_query(r->body, r->body_len, &q)) {
		buf_wipe(&q);
		return STAGE_NEXT;
	}
	/* Each index is queried with the embedder the configuration in
	 * force gives it (the worker copies what it needs). */
	for (size_t i = 0; i < nidx; i++) {
		const struct cfg_index *ix = config_index(r->cfg, idx[i]);

		config_embed_conf(ix, true, &emb[i]);
		keys[i] = ix->encrypt_key;
	}
	r->in_stage_context = true;
	r->ctx_job = context_retrieve(r->srv->context, q.p, idx, emb, keys,
	                              nidx, (size_t)rt->context_top_k,
	                              (size_t)rt->context_max_tokens,
	                              context_answer, r);
	r->in_stage_context = false;
	for (size_t i = 0; i < nidx; i++)
		vcrypt_key_wipe(&keys[i]);
	buf_wipe(&q);
	if (r->ctx_job == NULL) {
		/* The worker is saturated: answer without context rather than
		 * queue without bound. */
		log_warn("req %s: context queue full; no context", r->conn->req_id);
		return STAGE_NEXT;
	}
	return STAGE_WAIT;
}

/*
 * Strings that are not text to scan. Only the top-level "model" is skipped
 * by name (routing reads it); every other field is scanned whatever it is
 * called, because a user's own objects (tool inputs, documents) can use
 * any name. Skipped by shape: inline files (data: URLs with base64) and
 * long pure-base64 runs, which are bytes rather than text and which a
 * replacement would corrupt.
 */
static bool
skip_field(const struct json_path *p, const char *s, size_t n)
{
	size_t b64 = 0;

	const struct json_seg *last = json_path_last(p);

	if (p->depth == 1 && json_seg_is(p, 0, "model"))
		return true;
	/* Ids of messages, tool calls and results, where the protocol puts
	 * them (a member of an array element): they pair calls with results
	 * and must reach the provider as they are. The same names inside a
	 * user's own objects are scanned. */
	if (last != NULL && p->depth >= 2 && p->seg[p->depth - 2].key == NULL &&
	    p->seg[p->depth - 2].index >= 0 &&
	    ((last->key_len == 2 && memcmp(last->key, "id", 2) == 0) ||
	     (last->key_len == 12 && memcmp(last->key, "tool_call_id", 12) == 0) ||
	     (last->key_len == 7 && memcmp(last->key, "call_id", 7) == 0) ||
	     (last->key_len == 11 && memcmp(last->key, "tool_use_id", 11) == 0)))
		return true;
	if (n > 5 && memcmp(s, "data:", 5) == 0 &&
	    memmem(s, n < 256 ? n : 256, ";base64,", 8) != NULL)
		return true;
	if (n >= 64) {
		for (size_t i = 0; i < n && b64 == i; i++) {
			unsigned char c = (unsigned char)s[i];
			if ((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') ||
			    (c >= '0' && c <= '9') || c == '+' || c == '/' || c == '=' ||
			    c == '\n' || c == '\r')
				b64++;
		}
		if (b64 == n)
			return true;
	}
	return false;
}

static enum json_cb_result
scrub_cb(void *arg, const struct json_path *p, const char *s, size_t n,
         struct buf *repl)
{
	struct scrim_req *r = arg;

	if (n == 0 || skip_field(p, s, n))
		return JSON_KEEP;
	if (scrub_find(r->rules, s, n, &r->hits, r->scrub_err,
	               sizeof(r->scrub_err)) != 0)
		return JSON_CB_ERROR;
	if (r->hits.n == 0)
		return JSON_KEEP;
	if (!scrub_apply(&r->scrub, s, n, &r->hits, repl)) {
		snprintf(r->scrub_err, sizeof(r->scrub_err),
		         "the scrubbed body is too large");
		return JSON_CB_ERROR;
	}
	return JSON_REPLACE;
}

static enum stage_result
stage_scrub(struct scrim_req *r)
{
	size_t replaced = 0, pos = 0;
	enum json_result jr;
	char msg[200];

	if (r->cfg->scrub_off || r->body_len == 0)
		return check_provider_key(r);
	if (is_multipart(&r->conn->head)) {
		/* Form uploads cannot be scrubbed field by field here: refused
		 * rather than sent unexamined. */
		return stage_fail(r, ERR_UNSCRUBBABLE, NULL);
	}
	uint64_t t0 = now_us();
	memcpy(r->scrub.secret, r->cfg->scrub_secret, 32);
	/* A virtual key's id may not be known yet (see stage_limits). */
	r->scrub.key_id = r->virtual_key ? r->grant.key_id : r->key_id;
	{
		/* The key's actions first, then the route's: both replace the
		 * rules' own for some rules or types. */
		size_t n = 0;
		char *save = NULL, *tok;
		if (r->virtual_key && r->grant.actions[0] != '\0') {
			snprintf(r->override_text, sizeof(r->override_text), "%s",
			         r->grant.actions);
			for (tok = strtok_r(r->override_text, " ,", &save);
			     tok != NULL && n < REQ_MAX_OVERRIDES;
			     tok = strtok_r(NULL, " ,", &save)) {
				char *eq = strchr(tok, '=');
				enum scrub_action act;
				if (eq == NULL || eq == tok || !rules_action_parse(eq + 1, &act))
					continue; /* keys create validated it */
				*eq = '\0';
				r->overrides[n].match = tok;
				r->overrides[n++].action = act;
			}
		}
		for (size_t i = 0; r->route != NULL && i < r->route->nactions &&
		                   n < REQ_MAX_OVERRIDES;
		     i++) {
			r->overrides[n].match = r->route->action_v[i].match;
			r->overrides[n++].action =
			    (enum scrub_action)r->route->action_v[i].action;
		}
		r->scrub.overrides = r->overrides;
		r->scrub.noverrides = n;
	}
	r->scrub.vault = vault_new();
	buf_init(&r->scrubbed, (size_t)r->cfg->max_body_size * 2 + 4096);
	jr = json_rewrite_changed(r->body, r->body_len, scrub_cb, r,
	                          &r->scrubbed, r->body_len, &replaced, &pos);
	r->scrub_us = now_us() - t0;
	switch (jr) {
	case JSON_OK:
		break;
	case JSON_ABORTED:
		log_warn("req %s: scrub failed: %s", r->conn->req_id, r->scrub_err);
		return stage_fail(r, ERR_SCRUB_FAILED, NULL);
	case JSON_TOO_BIG:
		return stage_fail(r, ERR_SCRUB_FAILED,
		                  "The scrubbed body is too large");
	case JSON_TOO_DEEP:
	case JSON_INVALID:
		snprintf(msg, sizeof(msg), "The request body is not valid JSON "
		                           "(at byte %zu)", pos);
		return stage_fail(r, ERR_INVALID_JSON, msg);
	}
	if (r->scrub.stats.block != NULL) {
		snprintf(msg, sizeof(msg), "The request was blocked by privacy rule "
		                           "%s (%s)", r->scrub.stats.block->id,
		         r->scrub.stats.block->type);
		return stage_fail(r, ERR_BLOCKED, msg);
	}
	if (r->scrub.stats.local != NULL) {
		const struct cfg_provider *lp = NULL;
		for (size_t i = 0; i < r->cfg->nproviders; i++)
			if (strcmp(r->cfg->providers[i].name,
			           r->cfg->local_provider) == 0)
				lp = &r->cfg->providers[i];
		if (lp == NULL) {
			snprintf(msg, sizeof(msg), "Privacy rule %s keeps this request "
			                           "local, and no local_provider is set",
			         r->scrub.stats.local->id);
			return stage_fail(r, ERR_BLOCKED, msg);
		}
		/* The whole request, as written, goes to the machine's own
		 * model; nothing was replaced, so nothing to restore. */
		r->provider = lp;
		vault_free(r->scrub.vault);
		r->scrub.vault = NULL;
		r->scrub.stats.replaced = 0; /* it goes out as written */
		return check_provider_key(r);
	}
	if (replaced > 0) {
		r->body = r->scrubbed.p;
		r->body_len = r->scrubbed.len;
	}
	return check_provider_key(r);
}

/* Request headers that describe this hop, or carry the client's key. */
static bool
drop_request_header(const struct scrim_req *r, const struct http_header *hd,
                    const struct http_header *conn_hdr)
{
	const struct cfg_provider *p = r->provider;

	/* A scrim key never leaves, whatever the mode and policy. */
	if ((http_name_eq(hd->name, hd->name_len, "authorization") ||
	     http_name_eq(hd->name, hd->name_len, "x-api-key")) &&
	    memmem(hd->value, hd->value_len, "sk-scrim-", 9) != NULL)
		return true;
	/* Users' own provider keys pass (proxy mode, no [provider], policy
	 * pass), unless the header held our key. */
	if (p == NULL && !r->client_key_is_scrim &&
	    (http_name_eq(hd->name, hd->name_len, "authorization") ||
	     http_name_eq(hd->name, hd->name_len, "x-api-key")))
		return false;
#define DROP(s) {s, sizeof(s) - 1}
	static const struct {
		const char *name;
		size_t len;
	} drop[] = {
	    DROP("host"),          DROP("content-length"),
	    DROP("transfer-encoding"), DROP("connection"),
	    DROP("keep-alive"),    DROP("proxy-connection"),
	    DROP("proxy-authorization"), DROP("te"),
	    DROP("trailer"),       DROP("upgrade"),
	    DROP("expect"),        DROP("authorization"),
	    DROP("x-api-key"),     DROP("accept-encoding"),
	    DROP("forwarded"),     DROP("x-forwarded-for"),
	    DROP("x-real-ip"),
	};
#undef DROP

	for (size_t i = 0; i < SCRIM_ARRAY_LEN(drop); i++)
		if (drop[i].len == hd->name_len &&
		    strncasecmp(hd->name, drop[i].name, hd->name_len) == 0)
			return true;
	/* Names listed in Connection are hop-by-hop too. */
	if (conn_hdr != NULL) {
		const char *v = conn_hdr->value, *e = v + conn_hdr->value_len;
		while (v < e) {
			while (v < e && (*v == ' ' || *v == ','))
				v++;
			const char *s = v;
			while (v < e && *v != ',' && *v != ' ')
				v++;
			if (v > s && (size_t)(v - s) == hd->name_len &&
			    strncasecmp(s, hd->name, hd->name_len) == 0)
				return true;
		}
	}
	/* The provider's configured headers win over the client's. */
	for (size_t i = 0; p != NULL && i < p->nheaders; i++) {
		const char *colon = strchr(p->headers[i], ':');
		if (colon != NULL &&
		    (size_t)(colon - p->headers[i]) == hd->name_len &&
		    strncasecmp(p->headers[i], hd->name, hd->name_len) == 0)
			return true;
	}
	return false;
}

static bool up_head(void *arg, int status, const struct upstream_header *h,
                    size_t nh);
static int up_data(void *arg, const char *p, size_t n);
static void up_done(void *arg, enum scrim_err err, const char *detail);

static const struct upstream_cbs up_cbs = {up_head, up_data, up_done};

static enum stage_result
stage_forward(struct scrim_req *r)
{
	const struct http_head *h = &r->conn->head;
	const struct cfg_provider *p = r->provider;
	struct upstream_request ur;
	size_t nmax = h->nheaders + (p ? p->nheaders : 0) + 4;
	char **hv = xcalloc(nmax, sizeof(char *));
	bool *keep = xcalloc(h->nheaders + 1, sizeof(bool));
	const char *auth = NULL;
	char method[16], *block, *w;
	size_t n = 0, size = 64;

	/* Every header line in one block, sized first: a malloc and a
	 * printf per header were a tenth of this stage. The block holds
	 * the provider's key and is wiped before it is freed. */
	const struct http_header *conn_hdr = http_head_get(h, "connection");

	for (size_t i = 0; i < h->nheaders; i++) {
		const struct http_header *hd = &h->headers[i];
		keep[i] = !drop_request_header(r, hd, conn_hdr);
		if (keep[i])
			size += hd->name_len + hd->value_len + 3;
	}
	for (size_t i = 0; p != NULL && i < p->nheaders; i++)
		size += strlen(p->headers[i]) + 1;
	if (p != NULL && p->auth_header == AUTH_HDR_BEARER)
		auth = "Authorization: Bearer ";
	else if (p != NULL && p->auth_header == AUTH_HDR_X_API_KEY)
		auth = "x-api-key: ";
	if (auth != NULL)
		size += strlen(auth) + strlen(p->api_key) + 1;
	w = block = xmalloc(size);
	for (size_t i = 0; i < h->nheaders; i++) {
		const struct http_header *hd = &h->headers[i];
		if (!keep[i])
			continue;
		hv[n++] = w;
		memcpy(w, hd->name, hd->name_len);
		w += hd->name_len;
		*w++ = ':';
		*w++ = ' ';
		memcpy(w, hd->value, hd->value_len);
		w += hd->value_len;
		*w++ = '\0';
	}
	for (size_t i = 0; p != NULL && i < p->nheaders; i++) {
		size_t l = strlen(p->headers[i]) + 1;
		hv[n++] = memcpy(w, p->headers[i], l);
		w += l;
	}
	if (auth != NULL) {
		size_t al = strlen(auth), kl = strlen(p->api_key);
		hv[n++] = w;
		memcpy(w, auth, al);
		memcpy(w + al, p->api_key, kl + 1);
		w += al + kl + 1;
	}
	/* No 100-continue round trip: the body is already here. */
	hv[n++] = memcpy(w, "Expect:", 8);
	w += 8;
	hv[n] = NULL;
	free(keep);

	snprintf(method, sizeof(method), "%.*s", (int)h->method_len,
	         h->method_str);
	memset(&ur, 0, sizeof(ur));
	ur.method = method;
	if (r->mode == MODE_BASE) {
		ur.url = route_upstream_url(r->route, p, r->target, r->target_len);
	} else {
		bool v6 = strchr(r->up_host, ':') != NULL;
		bool dflt = r->up_port == (r->up_https ? 443u : 80u);
		char port[8] = "";
		if (!dflt)
			snprintf(port, sizeof(port), ":%u", r->up_port);
		ur.url = xasprintf("%s://%s%s%s%s%.*s",
		                   r->up_https ? "https" : "http", v6 ? "[" : "",
		                   r->up_host, v6 ? "]" : "", port,
		                   (int)r->target_len, r->target);
		/* A host with a [provider] entry is the operator's choice and
		 * trusted; a host only the client chose is checked. */
		ur.guard_private = p == NULL && !r->cfg->allow_private &&
		                   !proxy_host_overridden(r->cfg, r->up_host,
		                                          r->up_port);
	}
	ur.headers = (const char *const *)hv;
	ur.body = r->body;
	ur.body_len = r->body_len;
	ur.connect_timeout_ms = p ? p->connect_timeout_ms : 10000;
	ur.timeout_ms = p ? p->timeout_ms : 600000;
	ur.ca_file = p ? p->ca_file : NULL;
	ur.proxy = r->cfg->egress_proxy;
	ur.connect_to = r->cfg->resolve;
	ur.nconnect_to = r->cfg->nresolve;

	r->xfer = upstream_start(r->srv->up, &ur, &up_cbs, r);
	explicit_bzero(block, (size_t)(w - block)); /* the provider key */
	free(block);
	free(hv);
	free((char *)ur.url);
	if (r->xfer == NULL) {
		req_fail(r, ERR_INTERNAL, "Could not start the upstream request");
		return STAGE_DONE;
	}
	return STAGE_WAIT;
}

/* The table the pipeline walks. Response-side stages (restore, account,
 * audit) run from the upstream callbacks and req_finish. */
static const struct stage stages[] = {
	[ST_AUTHENTICATE] = {"authenticate", stage_authenticate},
	[ST_READ_BODY] = {"read_body", stage_read_body},
	[ST_PARSE] = {"parse", stage_parse},
	[ST_ROUTE] = {"route", stage_route},
	[ST_LIMITS] = {"limits", stage_limits},
	[ST_CONTEXT] = {"context", stage_context},
	[ST_SCRUB] = {"scrub", stage_scrub},
	[ST_ADMIT] = {"admit", stage_admit},
	[ST_FORWARD] = {"forward", stage_forward},
};

static void
req_run(struct scrim_req *r)
{
	while (r->stage < SCRIM_ARRAY_LEN(stages)) {
		switch (stages[r->stage].run(r)) {
		case STAGE_NEXT:
			r->stage++;
			break;
		case STAGE_JUMP:
			break;
		case STAGE_WAIT:
		case STAGE_DONE:
			/* r may be gone after DONE: touch nothing. */
			return;
		}
	}
}

/* ------------------------- upstream side -------------------------- */

static bool
drop_response_header(const struct upstream_header *h)
{
	static const char *const drop[] = {
	    "connection", "keep-alive", "transfer-encoding", "content-length",
	    "proxy-connection", "te", "trailer", "upgrade", "x-request-id",
	    "content-encoding", /* curl decoded it */
	};
	for (size_t i = 0; i < SCRIM_ARRAY_LEN(drop); i++)
		if (http_name_eq(h->name, h->name_len, drop[i]))
			return true;
	return false;
}

/* "name: value\r\n" */
static bool
add_header(struct buf *b, const char *name, size_t nl, const char *value,
           size_t vl)
{
	return buf_add(b, name, nl) && buf_add(b, ": ", 2) &&
	       buf_add(b, value, vl) && buf_add(b, "\r\n", 2);
}

static bool
up_head(void *arg, int status, const struct upstream_header *h, size_t nh)
{
	struct scrim_req *r = arg;
	struct buf hb;
	bool ok = true;
	size_t body_hint = 4096;

	/* At most 64 KiB of head: more is refused (502) rather than sent. */
	buf_init(&hb, 65536);
	buf_hint(&hb, 1024); /* one allocation for a usual head */
	r->status = status;
	r->upstream_ms = conn_now_ms();
	for (size_t i = 0; i < nh && ok; i++) {
		if (http_name_eq(h[i].name, h[i].name_len, "content-length")) {
			/* The answer's buffers in one allocation each, of its
			 * size (a hint: decoded bodies may be longer, and no
			 * more than 64 KiB is taken on a provider's word). */
			size_t v = 0, k = 0;
			while (k < h[i].value_len && k < 6 && h[i].value[k] >= '0' &&
			       h[i].value[k] <= '9')
				v = v * 10 + (size_t)(h[i].value[k++] - '0');
			if (k > 0 && k == h[i].value_len)
				body_hint = v > 65536 ? 65536 : v;
		}
		if (http_name_eq(h[i].name, h[i].name_len, "x-request-id")) {
			/* Ours is x-request-id; keep the provider's for support
			 * tickets under its own name. */
			ok = add_header(&hb, "x-upstream-request-id", 21, h[i].value,
			                h[i].value_len);
			continue;
		}
		if (drop_response_header(&h[i]))
			continue;
		if (http_name_eq(h[i].name, h[i].name_len, "content-type") &&
		    h[i].value_len >= 17 &&
		    strncasecmp(h[i].value, "text/event-stream", 17) == 0)
			r->sse = true;
		ok = add_header(&hb, h[i].name, h[i].name_len, h[i].value,
		                h[i].value_len);
	}
	if (ok && !r->cfg->scrub_off) {
		char num[16];
		int l = snprintf(num, sizeof(num), "%u", r->scrub.stats.replaced);
		ok = add_header(&hb, "x-scrim-redactions", 18, num, (size_t)l);
	}
	if (ok && r->have_lim) {
		char rl[RATELIMIT_HDR_MAX];
		size_t n = ratelimit_headers(r, rl);
		if (n > 0)
			ok = buf_add(&hb, rl, n);
	}
	if (!ok) {
		buf_free(&hb);
		return false;
	}
	/* Usage is read from the answer: to settle a reservation, and for
	 * the per-key counters and the audit record. */
	if (status < 300) {
		if (r->sse) {
			usage_tap_init(&r->tap, &r->usage, r->strip_usage);
			buf_init(&r->tout, 4 * 1024 * 1024);
			r->tapping = true;
		} else {
			buf_init(&r->whole, (size_t)r->cfg->max_response_size);
			buf_hint(&r->whole, body_hint);
			r->capture = true;
		}
	}
	if (r->scrub.vault != NULL && r->scrub.vault->n > 0) {
		r->restore = restore_new(r->scrub.vault,
		                         r->sse ? RESTORE_SSE : RESTORE_WHOLE,
		                         (size_t)r->cfg->max_response_size);
		buf_init(&r->rout, (size_t)r->cfg->max_response_size * 2);
	}
	if (!r->sse) {
		buf_init(&r->held, REQ_HOLD_MAX);
		buf_hint(&r->held, body_hint);
		r->held_head = hb; /* the request owns it now */
		r->held_status = status;
		r->holding = true;
	} else {
		conn_send_head(r->conn, status, hb.p, hb.len);
		r->head_sent = true;
		buf_free(&hb);
	}
	return true;
}

/* Send what was held: the head, then the body so far; with its length
 * when it is the whole body (most answers: no chunk framing to add). */
static void
release(struct scrim_req *r, bool complete)
{
	if (!r->holding)
		return;
	r->holding = false;
	if (complete && r->conn->head.method != HTTP_HEAD)
		conn_send_head_sized(r->conn, r->held_status, r->held_head.p,
		                     r->held_head.len, r->held.len);
	else
		conn_send_head(r->conn, r->held_status, r->held_head.p,
		               r->held_head.len);
	r->head_sent = true;
	if (r->held.len > 0)
		(void)conn_send_data(r->conn, r->held.p, r->held.len);
	buf_wipe(&r->held);
}

/* Bytes for the client: held while the answer is held, else sent. */
static bool
emit(struct scrim_req *r, const char *p, size_t n)
{
	if (n == 0)
		return true;
	if (r->holding) {
		if (buf_add(&r->held, p, n))
			return true;
		/* Too large to hold: from here on it streams. */
		release(r, false);
	}
	return conn_send_data(r->conn, p, n);
}

static int
up_data(void *arg, const char *p, size_t n)
{
	struct scrim_req *r = arg;

	/* Check before writing: paused bytes come again on resume. */
	if (conn_output_full(r->conn))
		return UPSTREAM_DATA_PAUSE;
	if (r->tapping) {
		buf_reset(&r->tout);
		if (!usage_tap_feed(&r->tap, p, n, &r->tout)) {
			snprintf(r->detail_buf, sizeof(r->detail_buf),
			         "stream event too large");
			return UPSTREAM_DATA_ABORT;
		}
		p = r->tout.p;
		n = r->tout.len;
	} else if (r->capture && !buf_add(&r->whole, p, n)) {
		r->capture = false; /* too large to read usage from: keep the
		                     * reservation */
	}
	if (r->restore != NULL) {
		buf_reset(&r->rout);
		if (!restore_feed(r->restore, p, n, &r->rout)) {
			snprintf(r->detail_buf, sizeof(r->detail_buf),
			         "answer could not be restored");
			return UPSTREAM_DATA_ABORT;
		}
		p = r->rout.p;
		n = r->rout.len;
	}
	if (!emit(r, p, n))
		return UPSTREAM_DATA_ABORT;
	r->bytes_out += n;
	return UPSTREAM_DATA_OK;
}

static void
up_done(void *arg, enum scrim_err err, const char *detail)
{
	struct scrim_req *r = arg;
	struct scrim_conn *c = r->conn;

	r->xfer = NULL; /* freed by upstream.c after we return */
	if (err == ERR_NONE && r->tapping) {
		buf_reset(&r->tout);
		if (usage_tap_finish(&r->tap, &r->tout) && r->tout.len > 0) {
			/* The last event, through restore like the rest. */
			if (r->restore != NULL) {
				buf_reset(&r->rout);
				if (restore_feed(r->restore, r->tout.p, r->tout.len,
				                 &r->rout))
					(void)emit(r, r->rout.p, r->rout.len);
			} else {
				(void)emit(r, r->tout.p, r->tout.len);
			}
		}
	}
	if (r->capture)
		usage_from_json(r->whole.p, r->whole.len, &r->usage);
	if (err == ERR_NONE && r->restore != NULL) {
		buf_reset(&r->rout);
		if (!restore_finish(r->restore, &r->rout)) {
			err = ERR_UPSTREAM_ERROR;
			detail = "answer could not be restored";
		} else if (r->rout.len > 0) {
			(void)emit(r, r->rout.p, r->rout.len);
			r->bytes_out += r->rout.len;
		}
	}
	if (err == ERR_NONE && r->detail_buf[0] != '\0' &&
	    (r->head_sent || r->holding)) {
		/* We stopped the transfer ourselves (restore failed). */
		err = ERR_UPSTREAM_ERROR;
	}
	if (err == ERR_NONE) {
		release(r, true);
		/* The client has its answer before the bookkeeping starts. */
		conn_flush_now(c);
		req_finish(r);
		conn_send_end(c);
		return;
	}
	if (r->holding) {
		/* Nothing of it went out: the client gets a clean error. */
		r->holding = false;
		buf_wipe(&r->held);
		r->bytes_out = 0;
	}
	snprintf(r->detail_buf, sizeof(r->detail_buf), "%s", detail ? detail : "");
	r->err_detail = r->detail_buf;
	if (!r->head_sent) {
		req_fail(r, err, NULL);
		return;
	}
	/* Broken mid-answer: the client must see it broke, never a clean
	 * end. SSE clients get an error event they can parse first. */
	if (r->sse) {
		char ev[256];
		int len = snprintf(ev, sizeof(ev),
		                   "event: error\ndata: {\"error\":{\"message\":"
		                   "\"%s\",\"type\":\"%s\",\"code\":\"%s\"}}\n\n",
		                   err_info(err)->message, err_info(err)->type,
		                   err_info(err)->code);
		if (len > 0 && (size_t)len < sizeof(ev))
			(void)conn_send_data(c, ev, (size_t)len);
	}
	r->err = err;
	req_finish(r);
	conn_send_abort(c);
}

/* --------------------------- entry -------------------------------- */

void
req_start(struct scrim_conn *c)
{
	const struct http_head *h = &c->head;
	struct scrim_req *r = xcalloc(1, sizeof(*r));
	const char *path;
	size_t plen;

	r->conn = c;
	r->srv = c->srv;
	r->cfg = config_ref(c->cfg);
	r->rules = rules_ref(c->srv->rules);
	r->start_ms = conn_now_ms();
	r->max_tokens = -1;
	usage_init(&r->usage);
	buf_init(&r->injected, 0);
	buf_init(&r->ctx_body, 0);
	buf_init(&r->tout, 0);
	buf_init(&r->whole, 0);
	usage_tap_init(&r->tap, &r->usage, false);
	scrub_hits_init(&r->hits);
	buf_init(&r->scrubbed, 0);
	buf_init(&r->rout, 0);
	c->req = r;

	r->target = h->target;
	r->target_len = h->target_len;
	/* An enterprise must not serve unaudited traffic: while records
	 * cannot be written, new requests wait outside (on_failure block). */
	if (!audit_admit(r->srv->audit)) {
		req_fail_hdrs(r, ERR_AUDIT_UNAVAILABLE, NULL, "retry-after: 1\r\n");
		return;
	}
	/* A method outside the known set (lowercase "post", "BREW") is no
	 * provider API's: answer it here rather than forward it (RFC 9110
	 * §9.1: 501 for a method the server does not implement). */
	if (h->method == HTTP_OTHER) {
		req_fail(r, ERR_NOT_IMPLEMENTED, NULL);
		return;
	}
	if (c->intercepted) {
		r->mode = MODE_INTERCEPT;
		r->up_https = true;
		snprintf(r->up_host, sizeof(r->up_host), "%s", c->tunnel_host);
		r->up_port = c->tunnel_port;
	} else if (h->target_len > 0 && h->target[0] != '/') {
		if (!r->cfg->proxy_on ||
		    !proxy_parse_absolute(h->target, h->target_len, r->up_host,
		                          sizeof(r->up_host), &r->up_port,
		                          &r->target, &r->target_len)) {
			req_fail(r, ERR_BAD_REQUEST,
			         r->cfg->proxy_on
			             ? "Proxy requests need http://host[:port]/path"
			             : "Use a path such as /v1/chat/completions; proxy "
			               "requests are off on this gateway");
			return;
		}
		r->mode = MODE_ABSOLUTE;
	}
	if (!route_path_safe(r->target, r->target_len)) {
		req_fail(r, ERR_BAD_REQUEST, "The request path is not allowed");
		return;
	}
	path_of(r, &path, &plen);
	r->stage = 0;
	/* Unknown paths are told apart only after authentication. */
	if (stage_authenticate(r) == STAGE_DONE)
		return;
	if (r->mode == MODE_ABSOLUTE &&
	    !proxy_host_matches(r->cfg->intercept, r->cfg->nintercept,
	                        r->up_host) &&
	    !proxy_host_matches(r->cfg->tunnel, r->cfg->ntunnel, r->up_host)) {
		bool known = false;
		for (size_t i = 0; i < r->cfg->nproviders; i++)
			known = known || provider_serves(&r->cfg->providers[i], false,
			                                 r->up_host, r->up_port);
		if (!known) {
			req_fail(r, ERR_FORBIDDEN_TARGET, NULL);
			return;
		}
	}
	if (r->mode == MODE_BASE && !route_path_known(r->cfg, path, plen)) {
		req_fail(r, ERR_ROUTE_NOT_FOUND, NULL);
		return;
	}
	r->stage = 1;
	req_run(r);
}
