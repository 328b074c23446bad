/*
 * conn.c - client connections: HTTP/1.1 framing on a bufferevent, the
 * connection state machine and its timers. Request semantics live in
 * request.c (gateway port) and admin.c (admin port); this file only
 * knows where a request starts and ends.
 *
 * Callbacks are deferred (BEV_OPT_DEFER_CALLBACKS), so nothing that writes
 * to a connection ever re-enters the code that called it, and a
 * connection is only freed from its own callbacks or from code that
 * returns right after.
 *
 * On a plain socket in HTTP mode ("direct"), the bufferevent only reads:
 * answers collect in its output buffer and flush_cb writes them with one
 * writev(2) from the loop, in the same turn, without arming EPOLLOUT.
 * Only a write that the kernel cannot take whole hands the rest to the
 * bufferevent. Each request so saves two epoll_ctl(2) and a loop turn;
 * system calls are most of what a proxy costs on loopback. Any answer that leaves the connection in doubt
 * (bad framing, an unread body) closes it, after a bounded "lingering"
 * read so the client gets to see the error instead of a reset.
 */
#include "conn.h"

#include "admin.h"
#include "alloc.h"
#include "audit.h"
#include "config.h"
#include "err.h"
#include "log.h"
#include "metrics.h"
#include "proxy.h"
#include "request.h"
#include "server.h"

#include <arpa/inet.h>
#include <errno.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <openssl/err.h>
#include <event2/event.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#define CONN_OUTPUT_HIGH (256 * 1024) /* pause the producer above this */
#define CONN_OUTPUT_LOW (64 * 1024)   /* and resume it below this */
#define CONN_BUSY_INPUT_MAX (64 * 1024)
#define CONN_LINGER_MS 2000
#define CONN_MAX_LEADING_CRLF 4
/* What one direct read may take: a chat request and its head in one
 * readv(2). libevent 2.1's own reads stop at EVBUFFER_MAX_READ (4 KiB)
 * after an ioctl(FIONREAD), so most requests cost two turns of the loop
 * and four system calls that way. Short of 32 KiB by more than a chain's
 * header: libevent rounds header and room up to a power of two, and a
 * full 32 KiB of room would take a 64 KiB block per read. */
#define CONN_READ_SIZE (32768 - 256)

static void process_input(struct scrim_conn *c);
static void read_cb(struct bufferevent *bev, void *arg);
static void write_cb(struct bufferevent *bev, void *arg);
static void event_cb(struct bufferevent *bev, short what, void *arg);

uint64_t
conn_now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static void
arm(struct scrim_conn *c, long ms)
{
	struct timeval tv = {ms / 1000, (ms % 1000) * 1000};
	evtimer_add(c->timer, &tv);
}

static void
disarm(struct scrim_conn *c)
{
	evtimer_del(c->timer);
}

/* Answer bytes were queued: write them from the loop, once per turn. */
static void
kick(struct scrim_conn *c)
{
	if (c->direct && !c->flush_pending) {
		c->flush_pending = true;
		event_active(c->flush, EV_WRITE, 1);
	}
}

/* Reading on or off, whoever reads: the socket event in direct mode,
 * the bufferevent otherwise. */
static void
read_on(struct scrim_conn *c)
{
	if (!c->direct) {
		bufferevent_enable(c->bev, EV_READ);
		return;
	}
	if (!c->rev_on && event_add(c->rev, NULL) == 0)
		c->rev_on = true;
}

static void
read_off(struct scrim_conn *c)
{
	if (c->rev_on) {
		event_del(c->rev);
		c->rev_on = false;
	}
}

/* Pause reading while this much input waits (0: never pause), as a
 * bufferevent's read high-water mark does. */
static void
read_limit(struct scrim_conn *c, size_t high)
{
	bufferevent_setwatermark(c->bev, EV_READ, 0, high);
	if (!c->direct)
		return;
	c->read_high = high;
	if (!c->rev_on && !c->read_ended &&
	    (high == 0 ||
	     evbuffer_get_length(bufferevent_get_input(c->bev)) < high))
		read_on(c);
}

static void
conn_free(struct scrim_conn *c)
{
	struct scrim_server *srv = c->srv;

	if (c->req != NULL)
		req_abort(c->req);
	if (c->kind == CONN_ADMIN)
		admin_conn_closed(c);
	proxy_tunnel_free(c->tunnel);
	c->tunnel = NULL;
	xfree_secret(c->proxy_vkey);
	TAILQ_REMOVE(&srv->conns, c, link);
	event_free(c->rev);
	bufferevent_free(c->bev);
	event_free(c->timer);
	event_free(c->flush);
	evbuffer_free(c->body);
	http_head_free(&c->head);
	config_unref(c->cfg);
	free(c);
	srv->nconns--;
	server_conn_closed(srv);
}

void
conn_close(struct scrim_conn *c, const char *why)
{
	log_debug("conn %llu %s: closed (%s)", (unsigned long long)c->id,
	          c->peer, why);
	conn_free(c);
}

/* Wait for the next request on a kept-alive connection. */
static void
next_request(struct scrim_conn *c)
{
	http_head_free(&c->head);
	c->have_head = false;
	c->resp_started = false;
	c->body_pending = false;
	config_unref(c->cfg);
	c->cfg = NULL;
	evbuffer_drain(c->body, evbuffer_get_length(c->body));
	c->state = CONN_IDLE;
	read_limit(c, 0);
	arm(c, c->srv->cfg->idle_timeout_ms);
	/* Pipelined bytes are already buffered and will not raise another
	 * read event: ask for one, from the loop. */
	if (evbuffer_get_length(bufferevent_get_input(c->bev)) > 0)
		bufferevent_trigger(c->bev, EV_READ,
		                    BEV_TRIG_IGNORE_WATERMARKS |
		                        BEV_TRIG_DEFER_CALLBACKS);
}

static void
begin_close(struct scrim_conn *c)
{
	c->state = CONN_CLOSING;
	disarm(c);
	bufferevent_setwatermark(c->bev, EV_WRITE, 0, 0);
	/* The write callback closes once the output is flushed; if it is
	 * already, trigger it from the loop. */
	arm(c, c->srv->cfg->send_timeout_ms);
	if (evbuffer_get_length(bufferevent_get_output(c->bev)) > 0)
		kick(c);
	else
		bufferevent_trigger(c->bev, EV_WRITE,
		                    BEV_TRIG_IGNORE_WATERMARKS |
		                        BEV_TRIG_DEFER_CALLBACKS);
}

static void
response_done(struct scrim_conn *c)
{
	if (c->close_after || c->srv->draining)
		begin_close(c);
	else
		next_request(c);
}

static size_t
json_escape(char *out, size_t cap, const char *s)
{
	size_t n = 0;

	for (; *s && n + 7 < cap; s++) {
		unsigned char ch = (unsigned char)*s;
		if (ch == '"' || ch == '\\') {
			out[n++] = '\\';
			out[n++] = (char)ch;
		} else if (ch < 0x20) {
			n += (size_t)snprintf(out + n, cap - n, "\\u%04x", ch);
		} else {
			out[n++] = (char)ch;
		}
	}
	out[n] = '\0';
	return n;
}

/* "content-length: N\r\n" into out (48 bytes are enough for any size_t). */
static void
content_length_line(char out[48], size_t len)
{
	char *w;

	memcpy(out, "content-length: ", 17); /* the NUL is overwritten */
	w = scrim_put_u64(out + 16, len);
	memcpy(w, "\r\n", 3); /* with the NUL */
}

static void
write_head(struct scrim_conn *c, int status, const char *extra,
           size_t extra_len, const char *framing)
{
	struct evbuffer *out = bufferevent_get_output(c->bev);
	const char *reason = http_reason(status);
	size_t rl = strlen(reason), il;
	char line[128];
	char *w = line;

	if (c->req_id[0] == '\0')
		server_next_req_id(c->srv, c->req_id);
	il = strlen(c->req_id);
	/* Built by hand, as it runs for every answer (evbuffer_add_printf
	 * formats twice). Statuses are three digits (RFC 9110 §15). */
	if (status < 100 || status > 999)
		status = 500;
	if (rl > 48)
		rl = 48;
	memcpy(w, "HTTP/1.1 ", 9);
	w += 9;
	*w++ = (char)('0' + status / 100);
	*w++ = (char)('0' + status / 10 % 10);
	*w++ = (char)('0' + status % 10);
	*w++ = ' ';
	memcpy(w, reason, rl);
	w += rl;
	memcpy(w, "\r\nx-request-id: ", 16);
	w += 16;
	memcpy(w, c->req_id, il); /* at most 16 */
	w += il;
	*w++ = '\r';
	*w++ = '\n';
	evbuffer_add(out, line, (size_t)(w - line));
	if (extra_len)
		evbuffer_add(out, extra, extra_len);
	evbuffer_add(out, framing, strlen(framing));
	if (c->close_after)
		evbuffer_add(out, "connection: close\r\n", 19);
	evbuffer_add(out, "\r\n", 2);
	c->resp_started = true;
	kick(c);
}

/* Decide before the head goes out whether the connection survives it. */
static void
decide_close(struct scrim_conn *c)
{
	if (!c->have_head || c->state == CONN_READ_HEAD ||
	    c->state == CONN_READ_BODY || c->body_pending) {
		/* Framing unknown or body unread: the rest of the stream
		 * cannot be trusted to start at a request boundary. */
		c->close_after = true;
		c->linger = true;
	}
	if (c->have_head && !c->head.keep_alive)
		c->close_after = true;
	if (c->srv->draining)
		c->close_after = true;
}

void
conn_send_simple(struct scrim_conn *c, int status, const char *ctype,
                 const char *body, size_t len, const char *extra)
{
	char framing[128];
	char *hdrs;

	if (c->resp_started) {
		conn_send_abort(c);
		return;
	}
	decide_close(c);
	disarm(c);
	hdrs = xasprintf("content-type: %s\r\n%s", ctype, extra ? extra : "");
	snprintf(framing, sizeof(framing), "content-length: %zu\r\n", len);
	write_head(c, status, hdrs, strlen(hdrs), framing);
	free(hdrs);
	if (!(c->have_head && c->head.method == HTTP_HEAD))
		evbuffer_add(bufferevent_get_output(c->bev), body, len);
	if (c->state == CONN_READ_HEAD || c->state == CONN_READ_BODY ||
	    c->state == CONN_IDLE)
		c->state = CONN_BUSY;
	response_done(c);
}

void
conn_send_error(struct scrim_conn *c, enum scrim_err err, const char *message)
{
	conn_send_error_hdrs(c, err, message,
	                     err == ERR_PROXY_AUTH
	                         ? "proxy-authenticate: Basic realm=\"scrim\"\r\n"
	                         : NULL);
}

void
conn_send_error_hdrs(struct scrim_conn *c, enum scrim_err err,
                     const char *message, const char *extra)
{
	const struct err_info *ei = err_info(err);
	char msg[600], body[900];
	int n;

	c->srv->stats.errors++;
	if (c->kind == CONN_GATEWAY && c->have_head && !c->intercepted &&
	    c->head.method == HTTP_CONNECT) {
		/* A CONNECT never becomes a scrim_req: its refusal (bad
		 * target, no key, port, policy, target unreachable) is
		 * audited here, with the target it asked for. */
		char host[300];
		snprintf(host, sizeof(host), "%.*s",
		         (int)(c->head.target_len < 255 ? c->head.target_len : 255),
		         c->head.target);
		conn_audit_connect(c, &(struct conn_audit_info){
		                          .host = host,
		                          .status = ei->status,
		                          .decision =
		                              ei->status == 502 || ei->status == 504
		                                  ? "upstream_error"
		                              : ei->status >= 500 ? "error"
		                                                  : "refused",
		                          .reason = ei->code,
		                      });
	}
	json_escape(msg, sizeof(msg), message ? message : ei->message);
	n = snprintf(body, sizeof(body),
	             "{\"error\":{\"message\":\"%s\",\"type\":\"%s\","
	             "\"code\":\"%s\"}}\n",
	             msg, ei->type, ei->code);
	if (n < 0 || (size_t)n >= sizeof(body))
		n = 0;
	log_debug("conn %llu %s: %d %s", (unsigned long long)c->id, c->peer,
	          ei->status, ei->code);
	conn_send_simple(c, ei->status, "application/json", body, (size_t)n,
	                 extra);
}

/*
 * Refuse a request whose head could not be read (bad framing, a request
 * line or header block over its cap, the header deadline). It never
 * becomes a scrim_req, so its audit record and metrics are written here;
 * the head is not trusted, so no method, path or key goes in the record.
 */
static void
conn_reject_head(struct scrim_conn *c, enum scrim_err err)
{
	const struct err_info *ei = err_info(err);
	struct scrim_server *srv = c->srv;
	char lbl[128];

	if (c->kind == CONN_GATEWAY) {
		if (c->req_id[0] == '\0')
			server_next_req_id(srv, c->req_id);
		snprintf(lbl, sizeof(lbl),
		         "route=\"none\",provider=\"none\",code=\"%d\"", ei->status);
		metrics_add(srv->metrics, "scrim_requests_total", lbl, 1);
		snprintf(lbl, sizeof(lbl), "code=\"%s\"", ei->code);
		metrics_add(srv->metrics, "scrim_errors_total", lbl, 1);
		conn_audit(c, &(struct conn_audit_info){
		                  .status = ei->status,
		                  .decision = "refused",
		                  .reason = ei->code,
		              });
	}
	conn_send_error(c, err, NULL);
}

void
conn_audit_connect(struct scrim_conn *c, struct conn_audit_info *ai)
{
	ai->way_in = "proxy";
	ai->method = "CONNECT";
	ai->key_id = c->proxy_key_id[0] ? c->proxy_key_id : NULL;
	conn_audit(c, ai);
}

void
conn_audit(struct scrim_conn *c, const struct conn_audit_info *ai)
{
	struct scrim_server *srv = c->srv;
	struct audit_record rec;
	struct timespec wall;

	if (srv->audit == NULL)
		return;
	if (c->req_id[0] == '\0')
		server_next_req_id(srv, c->req_id);
	memset(&rec, 0, sizeof(rec));
	clock_gettime(CLOCK_REALTIME, &wall);
	rec.time_ms = (uint64_t)wall.tv_sec * 1000 +
	              (uint64_t)wall.tv_nsec / 1000000;
	rec.request_id = c->req_id;
	rec.client_addr = c->peer;
	rec.way_in = ai->way_in ? ai->way_in : c->intercepted ? "intercept" : NULL;
	rec.key_id = ai->key_id;
	rec.host = ai->host;
	rec.method = ai->method;
	rec.status = ai->status;
	rec.decision = ai->decision;
	rec.reason = ai->reason;
	rec.bytes_in = ai->bytes_in;
	rec.bytes_out = ai->bytes_out;
	rec.ms_total = ai->ms_total;
	rec.tokens_in = rec.tokens_out = -1;
	rec.cost_usd = -1;
	/* A drop is counted by audit.c (scrim_audit_records_total). */
	if (!audit_write(srv->audit, &rec))
		log_error("req %s: audit record dropped (queue full)", c->req_id);
}

void
conn_swap_bev(struct scrim_conn *c, struct bufferevent *bev)
{
	struct timeval wt = {c->srv->cfg->send_timeout_ms / 1000,
	                     (c->srv->cfg->send_timeout_ms % 1000) * 1000};

	conn_direct_off(c);
	c->bev = bev;
	bufferevent_setcb(bev, read_cb, write_cb, event_cb, c);
	bufferevent_set_timeouts(bev, NULL, &wt);
	bufferevent_enable(bev, EV_READ | EV_WRITE);
}

void
conn_send_raw(struct scrim_conn *c, const char *p, size_t n)
{
	if (n > 0)
		evbuffer_add(bufferevent_get_output(c->bev), p, n);
	kick(c);
	next_request(c);
}

/* What every streamed or sized answer decides before its head. */
static void
head_begin(struct scrim_conn *c, int status)
{
	decide_close(c);
	c->resp_no_body = c->head.method == HTTP_HEAD || status == 204 ||
	                  status == 304;
	c->resp_chunked = false;
}

void
conn_send_head(struct scrim_conn *c, int status, const char *extra,
               size_t extra_len)
{
	const char *framing = "";

	head_begin(c, status);
	if (!c->resp_no_body) {
		if (c->head.version == 11) {
			c->resp_chunked = true;
			framing = "transfer-encoding: chunked\r\n";
		} else {
			/* HTTP/1.0: the end of the body is the close. */
			c->close_after = true;
		}
	}
	write_head(c, status, extra, extra_len, framing);
}

void
conn_send_head_sized(struct scrim_conn *c, int status, const char *extra,
                     size_t extra_len, size_t body_len)
{
	char framing[48];

	head_begin(c, status);
	framing[0] = '\0';
	/* 204 and 304 carry no length; a HEAD answer tells the GET's. */
	if (status != 204 && status != 304)
		content_length_line(framing, body_len);
	write_head(c, status, extra, extra_len, framing);
}

bool
conn_send_data(struct scrim_conn *c, const char *p, size_t n)
{
	struct evbuffer *out = bufferevent_get_output(c->bev);

	if (c->state != CONN_BUSY || !c->resp_started)
		return false;
	if (n == 0 || c->resp_no_body)
		return true;
	if (c->resp_chunked) {
		char size[20];
		size_t k = sizeof(size);
		size[--k] = '\n';
		size[--k] = '\r';
		for (size_t v = n; v != 0; v >>= 4)
			size[--k] = "0123456789abcdef"[v & 15];
		if (evbuffer_add(out, size + k, sizeof(size) - k) != 0 ||
		    evbuffer_add(out, p, n) != 0 || evbuffer_add(out, "\r\n", 2) != 0)
			return false;
	} else if (evbuffer_add(out, p, n) != 0) {
		return false;
	}
	kick(c);
	return true;
}

bool
conn_output_full(struct scrim_conn *c)
{
	if (evbuffer_get_length(bufferevent_get_output(c->bev)) <
	    CONN_OUTPUT_HIGH)
		return false;
	c->write_paused = true;
	bufferevent_setwatermark(c->bev, EV_WRITE, CONN_OUTPUT_LOW, 0);
	return true;
}

void
conn_send_end(struct scrim_conn *c)
{
	if (c->resp_chunked && !c->resp_no_body) {
		evbuffer_add(bufferevent_get_output(c->bev), "0\r\n\r\n", 5);
		kick(c);
	}
	response_done(c);
}

void
conn_send_abort(struct scrim_conn *c)
{
	c->close_after = true;
	c->linger = false;
	begin_close(c);
}

static void
body_emit(void *arg, const char *p, size_t n)
{
	struct scrim_conn *c = arg;
	evbuffer_add(c->body, p, n);
}

static void
body_finished(struct scrim_conn *c)
{
	disarm(c);
	c->state = CONN_BUSY;
	c->body_pending = false;
	read_limit(c, CONN_BUSY_INPUT_MAX);
}

/* 1: body complete; 0: more to come; -1: refused, *err says why. */
static int
body_feed(struct scrim_conn *c, enum scrim_err *err)
{
	struct evbuffer *in = bufferevent_get_input(c->bev);
	const struct scrim_config *cfg = c->cfg;
	size_t avail = evbuffer_get_length(in);
	uint64_t elapsed;

	if (c->head.chunked) {
		size_t used = 0;
		enum http_chunk_result r = HTTP_CHUNK_MORE;

		if (avail > 0) {
			const char *p = (const char *)evbuffer_pullup(in, -1);
			r = http_chunked_feed(&c->chunked, p, avail, &used,
			                      (size_t)cfg->max_body_size, body_emit, c);
			evbuffer_drain(in, used);
		}
		if (r == HTTP_CHUNK_BAD) {
			*err = ERR_BAD_REQUEST;
			return -1;
		}
		if (r == HTTP_CHUNK_TOO_BIG) {
			*err = ERR_BODY_TOO_LARGE;
			return -1;
		}
		if (r == HTTP_CHUNK_DONE) {
			body_finished(c);
			return 1;
		}
	} else {
		size_t take = avail < (size_t)c->body_left ? avail
		                                           : (size_t)c->body_left;
		if (take > 0)
			evbuffer_remove_buffer(in, c->body, take);
		c->body_left -= (int64_t)take;
		if (c->body_left == 0) {
			body_finished(c);
			return 1;
		}
	}
	/* Still reading: an idle gap or a crawl both end in 408. */
	elapsed = conn_now_ms() - c->body_start_ms;
	if (elapsed > 1000 && cfg->body_min_rate > 0 &&
	    evbuffer_get_length(c->body) * 1000 / elapsed <
	        (uint64_t)cfg->body_min_rate) {
		*err = ERR_REQUEST_TIMEOUT;
		return -1;
	}
	arm(c, cfg->body_timeout_ms);
	return 0;
}

/* Body progress from the loop: tell the owner when it ends either way. */
static void
body_progress(struct scrim_conn *c)
{
	enum scrim_err err = ERR_NONE;
	int rc = body_feed(c, &err);

	if (rc == 0)
		return;
	c->state = CONN_BUSY;
	c->body_done(c, rc > 0 ? ERR_NONE : err);
}

int
conn_read_body(struct scrim_conn *c, conn_body_cb done, enum scrim_err *err)
{
	const struct scrim_config *cfg = c->cfg;

	if (!c->head.chunked && c->head.content_length <= 0)
		return 1;
	if (c->head.content_length > cfg->max_body_size) {
		/* Refused on sight: the body is never read (413 at once). */
		*err = ERR_BODY_TOO_LARGE;
		return -1;
	}
	if (c->head.expect_continue) {
		evbuffer_add(bufferevent_get_output(c->bev),
		             "HTTP/1.1 100 Continue\r\n\r\n", 25);
		kick(c);
	}
	memset(&c->chunked, 0, sizeof(c->chunked));
	c->body_left = c->head.content_length;
	c->body_done = done;
	c->body_start_ms = conn_now_ms();
	c->state = CONN_READ_BODY;
	read_limit(c, 0);
	return body_feed(c, err);
}

static void
head_complete(struct scrim_conn *c, size_t head_len)
{
	struct evbuffer *in = bufferevent_get_input(c->bev);
	const struct scrim_config *cfg = c->cfg;
	struct http_limits lim = {(size_t)cfg->max_request_line,
	                          (size_t)cfg->max_header_size,
	                          (size_t)cfg->max_headers};
	char *buf = xmalloc(head_len);
	enum scrim_err err;

	evbuffer_remove(in, buf, head_len);
	disarm(c);
	server_next_req_id(c->srv, c->req_id);
	err = http_head_parse(buf, head_len, &lim, &c->head);
	if (err != ERR_NONE) {
		conn_reject_head(c, err);
		return;
	}
	c->have_head = true;
	c->body_pending = c->head.chunked || c->head.content_length > 0;
	c->close_after = false;
	c->linger = false;
	c->state = CONN_BUSY;
	read_limit(c, CONN_BUSY_INPUT_MAX);
	if (c->kind == CONN_ADMIN)
		admin_handle(c);
	else if (c->head.method == HTTP_CONNECT) {
		conn_direct_off(c);
		proxy_connect(c);
	}
	else
		req_start(c);
}

static void
process_input(struct scrim_conn *c)
{
	struct evbuffer *in = bufferevent_get_input(c->bev);
	size_t n;

	switch (c->state) {
	case CONN_IDLE: {
		/* RFC 9112 §2.2: ignore empty lines before a request line. */
		unsigned char crlf[2];
		for (int i = 0; i < CONN_MAX_LEADING_CRLF &&
		                evbuffer_copyout(in, crlf, 2) == 2 &&
		                crlf[0] == '\r' && crlf[1] == '\n';
		     i++)
			evbuffer_drain(in, 2);
		if (evbuffer_get_length(in) == 0)
			return;
		c->state = CONN_READ_HEAD;
		memset(&c->scan, 0, sizeof(c->scan));
		c->req_id[0] = '\0';
		config_unref(c->cfg);
		c->cfg = config_ref(c->srv->cfg);
		arm(c, c->cfg->header_timeout_ms);
	}
	/* fall through */
	case CONN_READ_HEAD: {
		const struct scrim_config *cfg = c->cfg;
		struct http_limits lim = {(size_t)cfg->max_request_line,
		                          (size_t)cfg->max_header_size,
		                          (size_t)cfg->max_headers};
		size_t cap = lim.max_request_line + lim.max_header_size + 8;
		size_t head_len = 0;
		enum scrim_err err = ERR_NONE;
		const char *p;

		n = evbuffer_get_length(in);
		if (n > cap)
			n = cap;
		p = (const char *)evbuffer_pullup(in, (ev_ssize_t)n);
		switch (http_head_scan(&c->scan, p, n, &lim, &head_len, &err)) {
		case HTTP_SCAN_MORE:
			return;
		case HTTP_SCAN_ERROR:
			conn_reject_head(c, err);
			return;
		case HTTP_SCAN_DONE:
			head_complete(c, head_len);
			return;
		}
		return;
	}
	case CONN_READ_BODY:
		body_progress(c);
		return;
	case CONN_LINGER:
		evbuffer_drain(in, evbuffer_get_length(in));
		return;
	case CONN_TUNNEL:
		proxy_tunnel_client_read(c);
		return;
	case CONN_BUSY:
	case CONN_CLOSING:
	case CONN_CONNECTING:
		return;
	}
}

static void
read_cb(struct bufferevent *bev, void *arg)
{
	(void)bev;
	process_input(arg);
}

/* Direct mode's reads: one readv(2) of up to CONN_READ_SIZE per readiness
 * event, straight into the bufferevent's input, then the parser. An EOF or
 * an error ends reading and goes to event_cb, as the bufferevent's own
 * reads would report it. */
static void
rev_cb(evutil_socket_t fd, short what, void *arg)
{
	struct scrim_conn *c = arg;
	struct evbuffer *in = bufferevent_get_input(c->bev);
	struct evbuffer_iovec v[2];
	struct iovec iov[2];
	ssize_t got;
	int nv, used = 0, e;

	(void)what;
	if (c->read_high > 0 && evbuffer_get_length(in) >= c->read_high) {
		read_off(c); /* read_limit resumes */
		return;
	}
	/* A socket bufferevent keeps the end of its input frozen outside
	 * its own reads; thaw it for ours. */
	evbuffer_unfreeze(in, 0);
	nv = evbuffer_reserve_space(in, CONN_READ_SIZE, v, 2);
	if (nv <= 0) {
		evbuffer_freeze(in, 0);
		conn_close(c, "out of memory");
		return;
	}
	for (int i = 0; i < nv; i++) {
		iov[i].iov_base = v[i].iov_base;
		iov[i].iov_len = v[i].iov_len;
	}
	got = readv(fd, iov, nv);
	for (size_t left = got > 0 ? (size_t)got : 0; left > 0; used++) {
		if (v[used].iov_len > left)
			v[used].iov_len = left;
		left -= v[used].iov_len;
	}
	evbuffer_commit_space(in, v, used);
	evbuffer_freeze(in, 0);
	if (got > 0) {
		process_input(c);
		return;
	}
	if (got < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
		return;
	e = errno; /* event_cb names it; event_del must not change it */
	read_off(c);
	c->read_ended = true;
	errno = e;
	event_cb(c->bev,
	         BEV_EVENT_READING | (got == 0 ? BEV_EVENT_EOF : BEV_EVENT_ERROR),
	         c);
}

static void
write_cb(struct bufferevent *bev, void *arg)
{
	struct scrim_conn *c = arg;
	size_t left = evbuffer_get_length(bufferevent_get_output(bev));

	if (c->state == CONN_CLOSING) {
		if (left > 0)
			return;
		if (c->intercepted) {
			/* Under TLS, our output drains into the filter's socket
			 * buffer first: wait until that one is flushed too, then
			 * close (a raw shutdown would cut the record stream). */
			struct bufferevent *u = bufferevent_get_underlying(bev);
			if (u != NULL &&
			    evbuffer_get_length(bufferevent_get_output(u)) > 0) {
				c->flush_polls++;
				arm(c, 10);
				return;
			}
			conn_close(c, "answer sent");
			return;
		}
		if (!c->linger) {
			conn_close(c, "answer sent");
			return;
		}
		/* Shut our side so the client sees the end of the answer,
		 * then drain what it still sends, so the kernel does not
		 * answer it with a reset that could destroy our answer. */
		shutdown(bufferevent_getfd(bev), SHUT_WR);
		c->state = CONN_LINGER;
		evbuffer_drain(bufferevent_get_input(bev),
		               evbuffer_get_length(bufferevent_get_input(bev)));
		c->read_ended = false;
		read_limit(c, 0);
		read_on(c);
		arm(c, CONN_LINGER_MS);
		return;
	}
	if (c->state == CONN_TUNNEL) {
		proxy_tunnel_client_drained(c);
		return;
	}
	if (c->direct && left == 0)
		bufferevent_disable(bev, EV_WRITE);
	if (c->write_paused && left <= CONN_OUTPUT_LOW) {
		c->write_paused = false;
		bufferevent_setwatermark(bev, EV_WRITE, 0, 0);
		if (c->req != NULL)
			req_output_drained(c->req);
	}
}

static void
event_cb(struct bufferevent *bev, short what, void *arg)
{
	struct scrim_conn *c = arg;

	if (what & BEV_EVENT_CONNECTED)
		return; /* the TLS handshake with an intercepted client is done */
	if ((what & BEV_EVENT_EOF) && c->state == CONN_CLOSING) {
		/* The client stopped sending; it may still read our answer. */
		return;
	}
	if ((what & BEV_EVENT_EOF) && c->state == CONN_TUNNEL &&
	    proxy_tunnel_client_eof(c))
		return;
	if (what & BEV_EVENT_TIMEOUT) {
		conn_close(c, "send timeout");
	} else if (what & BEV_EVENT_EOF) {
		conn_close(c, "client closed");
	} else {
		char why[160];
		unsigned long e = c->intercepted ? bufferevent_get_openssl_error(bev)
		                                 : 0;
		if (e != 0) {
			/* Typically a client that does not trust our CA. */
			snprintf(why, sizeof(why), "TLS: %s", ERR_reason_error_string(e));
			struct bufferevent *u = bufferevent_get_underlying(bev);
			if (u != NULL && c->state != CONN_CLOSING &&
			    evbuffer_get_length(bufferevent_get_output(u)) > 0) {
				/* The alert that says why (unrecognized_name,
				 * no_application_protocol) is still in the socket
				 * buffer: let it out before closing. */
				log_debug("conn %llu %s: %s", (unsigned long long)c->id,
				          c->peer, why);
				c->state = CONN_CLOSING;
				c->flush_polls = 0;
				arm(c, 10);
				return;
			}
		} else {
			snprintf(why, sizeof(why), "socket error: %s",
			         evutil_socket_error_to_string(EVUTIL_SOCKET_ERROR()));
		}
		conn_close(c, why);
	}
}

static void
flush_cb(evutil_socket_t fd, short what, void *arg)
{
	struct scrim_conn *c = arg;
	struct evbuffer *out = bufferevent_get_output(c->bev);
	int n;

	(void)fd;
	(void)what;
	c->flush_pending = false;
	if (!c->direct || evbuffer_get_length(out) == 0)
		return;
	/* The start of the output is frozen outside the bufferevent's own
	 * writes, likewise. */
	evbuffer_unfreeze(out, 1);
	n = evbuffer_write(out, bufferevent_getfd(c->bev));
	evbuffer_freeze(out, 1);
	if (n < 0) {
		int e = errno;
		if (e != EAGAIN && e != EWOULDBLOCK && e != EINTR) {
			char why[160];
			snprintf(why, sizeof(why), "socket error: %s", strerror(e));
			conn_close(c, why);
			return;
		}
	}
	if (evbuffer_get_length(out) > 0) {
		/* The kernel is full: the bufferevent waits for room, with
		 * the send timeout, and calls write_cb as it drains. */
		bufferevent_enable(c->bev, EV_WRITE);
		return;
	}
	write_cb(c->bev, c);
}

void
conn_flush_now(struct scrim_conn *c)
{
	struct evbuffer *out = bufferevent_get_output(c->bev);

	/* A chunked answer waits for its last chunk (conn_send_end): one
	 * write for the rest of it, not two. */
	if (!c->direct || c->write_paused || c->state != CONN_BUSY ||
	    (c->resp_chunked && !c->resp_no_body) ||
	    evbuffer_get_length(out) == 0)
		return;
	/* One callback waits in this turn of the loop whatever happens: the
	 * answer's own deferred one. More than that, and other answers are
	 * likely finishing in this turn too: this one joins the flush at
	 * its end (flush_cb), so that a client process asleep on another
	 * CPU is woken once for all of them, not once each. Each wake-up
	 * costs the writer an interrupt to that CPU; at 32 connections this
	 * halved the load generator's sleeps and gave 1-6% more requests a
	 * second. An answer alone in its turn goes out now. */
	if (event_base_get_num_events(c->srv->base, EVENT_BASE_COUNT_ACTIVE) >
	    1) {
		kick(c);
		return;
	}
	evbuffer_unfreeze(out, 1);
	(void)evbuffer_write(out, bufferevent_getfd(c->bev));
	evbuffer_freeze(out, 1);
	if (evbuffer_get_length(out) > 0) {
		kick(c); /* flush_cb: the rest, or the error */
		return;
	}
	if (c->flush_pending) {
		event_del(c->flush);
		c->flush_pending = false;
	}
}

void
conn_direct_off(struct scrim_conn *c)
{
	if (!c->direct)
		return;
	read_off(c);
	c->direct = false;
	if (c->flush_pending) {
		event_del(c->flush);
		c->flush_pending = false;
	}
	bufferevent_enable(c->bev, c->read_ended ? EV_WRITE : EV_READ | EV_WRITE);
}

static void
timer_cb(evutil_socket_t fd, short what, void *arg)
{
	struct scrim_conn *c = arg;

	(void)fd;
	(void)what;
	switch (c->state) {
	case CONN_IDLE:
		conn_close(c, "idle");
		return;
	case CONN_READ_HEAD:
		conn_reject_head(c, ERR_REQUEST_TIMEOUT);
		return;
	case CONN_READ_BODY:
		c->state = CONN_BUSY;
		c->body_done(c, ERR_REQUEST_TIMEOUT);
		return;
	case CONN_CLOSING:
		/* Polling a TLS connection's socket buffer (write_cb), for at
		 * most send_timeout. */
		if (c->intercepted &&
		    (long)c->flush_polls * 10 < c->srv->cfg->send_timeout_ms) {
			write_cb(c->bev, c);
			return;
		}
		conn_close(c, "flush timeout");
		return;
	case CONN_LINGER:
		conn_close(c, "linger done");
		return;
	case CONN_BUSY:
	case CONN_CONNECTING:
	case CONN_TUNNEL:
		return;
	}
}

struct scrim_conn *
conn_new(struct scrim_server *srv, int fd, const struct sockaddr *sa,
         int salen, enum conn_kind kind)
{
	struct scrim_conn *c = xcalloc(1, sizeof(*c));
	struct timeval wt;
	char host[INET6_ADDRSTRLEN] = "?";
	int one = 1;

	(void)salen;
	c->srv = srv;
	c->kind = kind;
	c->id = ++srv->next_conn_id;
	if (sa->sa_family == AF_INET) {
		const struct sockaddr_in *a = (const struct sockaddr_in *)sa;
		inet_ntop(AF_INET, &a->sin_addr, host, sizeof(host));
		snprintf(c->peer, sizeof(c->peer), "%s:%u", host,
		         ntohs(a->sin_port));
	} else if (sa->sa_family == AF_INET6) {
		const struct sockaddr_in6 *a = (const struct sockaddr_in6 *)sa;
		inet_ntop(AF_INET6, &a->sin6_addr, host, sizeof(host));
		snprintf(c->peer, sizeof(c->peer), "[%s]:%u", host,
		         ntohs(a->sin6_port));
	}
	/* SSE events are small writes that must not wait for Nagle. */
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	c->bev = bufferevent_socket_new(srv->base, fd,
	                                BEV_OPT_CLOSE_ON_FREE |
	                                    BEV_OPT_DEFER_CALLBACKS);
	c->timer = evtimer_new(srv->base, timer_cb, c);
	c->flush = event_new(srv->base, -1, 0, flush_cb, c);
	c->rev = event_new(srv->base, fd, EV_READ | EV_PERSIST, rev_cb, c);
	c->body = evbuffer_new();
	if (c->bev == NULL || c->timer == NULL || c->flush == NULL ||
	    c->rev == NULL || c->body == NULL) {
		log_error("conn: out of memory for a new connection");
		if (c->bev != NULL)
			bufferevent_free(c->bev);
		else
			close(fd);
		if (c->timer != NULL)
			event_free(c->timer);
		if (c->flush != NULL)
			event_free(c->flush);
		if (c->rev != NULL)
			event_free(c->rev);
		if (c->body != NULL)
			evbuffer_free(c->body);
		free(c);
		return NULL;
	}
	TAILQ_INSERT_TAIL(&srv->conns, c, link);
	srv->nconns++;
	bufferevent_setcb(c->bev, read_cb, write_cb, event_cb, c);
	bufferevent_set_max_single_write(c->bev, 64 * 1024);
	wt.tv_sec = srv->cfg->send_timeout_ms / 1000;
	wt.tv_usec = (srv->cfg->send_timeout_ms % 1000) * 1000;
	bufferevent_set_timeouts(c->bev, NULL, &wt);
	/* A new bufferevent writes on its own (EV_WRITE enabled), so the
	 * first answer would cost two epoll_ctl(2): flush_cb writes, and
	 * enables the bufferevent only for what the kernel did not take. */
	bufferevent_disable(c->bev, EV_WRITE);
	c->direct = true;
	read_on(c);
	c->state = CONN_IDLE;
	arm(c, srv->cfg->idle_timeout_ms);
	return c;
}
