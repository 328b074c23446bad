/*
 * conn.h - one client connection: its bufferevent, its timers and its
 * state machine (reading a head, reading a body, busy with a request,
 * closing). It frames HTTP/1.1 in both directions and hands complete
 * heads to a handler: the request pipeline on the gateway port, the admin
 * pages on the admin port. It owns at most one request at a time.
 */
#ifndef SCRIM_CONN_H
#define SCRIM_CONN_H

#include "err.h"
#include "http.h"
#include "scrim.h"

#include <sys/queue.h>

struct evbuffer;
struct bufferevent;
struct sockaddr;

enum conn_kind { CONN_GATEWAY, CONN_ADMIN };

enum conn_state {
	CONN_IDLE,      /* waiting for a request's first byte (idle_timeout) */
	CONN_READ_HEAD, /* header deadline running */
	CONN_READ_BODY, /* body timeout and minimum rate */
	CONN_BUSY,      /* a handler owns the request; answer in progress */
	CONN_CLOSING,   /* flushing the last answer, then close */
	CONN_LINGER,    /* write side shut, discarding input until EOF */
	CONN_CONNECTING,/* CONNECT: resolving and connecting the target */
	CONN_TUNNEL,    /* CONNECT: relaying bytes blindly */
};

/* The body is read (err == ERR_NONE) or could not be (timeout, bad
 * framing, too large): the owner answers with conn_send_error. */
typedef void (*conn_body_cb)(struct scrim_conn *c, enum scrim_err err);

struct scrim_conn {
	TAILQ_ENTRY(scrim_conn) link; /* server's list of connections */
	struct scrim_server *srv;
	struct scrim_config *cfg; /* snapshot for the request being read */
	enum conn_kind kind;
	enum conn_state state;
	struct bufferevent *bev;
	struct event *timer;
	char peer[64];
	uint64_t id;

	struct http_scan scan;
	struct http_head head; /* valid from CONN_BUSY/READ_BODY */
	bool have_head;
	char req_id[17];       /* x-request-id of the current request */

	struct evbuffer *body; /* decoded request body */
	struct http_chunked chunked;
	int64_t body_left;     /* bytes still to read with Content-Length */
	uint64_t body_start_ms;
	conn_body_cb body_done;
	bool body_pending;     /* a body was announced and not read */

	bool resp_started;
	bool resp_chunked;    /* chunked framing (HTTP/1.1 client) */
	bool resp_no_body;    /* HEAD request */
	bool close_after;     /* close once this answer is written */
	bool linger;          /* unread input may follow: shut write first */
	bool write_paused;    /* a producer waits for the output to drain */

	/* Plain sockets in HTTP mode do their own reads and writes (see
	 * rev_cb and flush_cb in conn.c); off for tunnels and TLS, which the
	 * bufferevent drives. */
	bool direct;
	bool flush_pending;
	struct event *flush;
	struct event *rev;  /* direct reads: readiness of the socket */
	bool rev_on;        /* rev is added */
	bool read_ended;    /* EOF or an error was seen on direct reads */
	size_t read_high;   /* direct reads pause at this much input; 0: never */

	struct scrim_req *req;
	void *admin;    /* admin.c's readiness probe in progress */
	void *admin_op; /* admin.c's key operation in progress */

	/* Proxy mode. */
	char tunnel_host[256];   /* CONNECT target host; "" outside a tunnel */
	unsigned tunnel_port;
	bool intercepted;        /* TLS terminated here with our leaf */
	unsigned flush_polls;    /* waits for the TLS socket buffer to drain */
	char proxy_key_id[64];   /* key id from CONNECT's Proxy-Authorization */
	char *proxy_vkey;        /* or a virtual key to check per request */
	struct proxy_tunnel *tunnel;
};

/* Replace the connection's bufferevent (TLS after CONNECT); the new one
 * owns the old. */
void conn_swap_bev(struct scrim_conn *c, struct bufferevent *bev);
/* An audit record for what never becomes a scrim_req: heads that did
 * not parse, CONNECT refusals and blind tunnels. */
struct conn_audit_info {
	const char *way_in, *method, *host, *key_id, *decision, *reason;
	int status;
	uint64_t bytes_in, bytes_out, ms_total;
};
void conn_audit(struct scrim_conn *c, const struct conn_audit_info *ai);
/* The same for a CONNECT: way in, method and key id filled here. */
void conn_audit_connect(struct scrim_conn *c, struct conn_audit_info *ai);

/* Hand writing back to the bufferevent (tunnels, TLS): from now on it
 * drives both directions. */
void conn_direct_off(struct scrim_conn *c);
/* Send a raw, complete response (CONNECT's 200) and wait for the next
 * request on the same connection. */
void conn_send_raw(struct scrim_conn *c, const char *p, size_t n);

struct scrim_conn *conn_new(struct scrim_server *srv, int fd,
                            const struct sockaddr *sa, int salen,
                            enum conn_kind kind);
/* Close now: aborts the request in flight. Safe from any callback. */
void conn_close(struct scrim_conn *c, const char *why);

/*
 * Read the announced body into c->body. Returns 1 when it is complete
 * already (done is not called), 0 when done will be called later from the
 * loop, -1 with *err set when it is refused now (nothing sent yet).
 */
int conn_read_body(struct scrim_conn *c, conn_body_cb done,
                   enum scrim_err *err) SCRIM_MUSTCHECK;

/* Whole answers: the connection stays open unless framing is unknown. */
void conn_send_error(struct scrim_conn *c, enum scrim_err err,
                     const char *message);
/* The same, with extra "Name: value\r\n" header lines (Retry-After). */
void conn_send_error_hdrs(struct scrim_conn *c, enum scrim_err err,
                          const char *message, const char *extra);
void conn_send_simple(struct scrim_conn *c, int status,
                      const char *content_type, const char *body,
                      size_t len, const char *extra_headers);

/*
 * Streaming answers: a head (extra_headers is a block of "Name: value\r\n"
 * lines), any number of data pieces, then end or abort. conn_send_data
 * returns false when the client is gone. conn_output_full tells a producer
 * to pause; the request hears conn_resume_producer when output drained.
 */
void conn_send_head(struct scrim_conn *c, int status, const char *extra,
                    size_t extra_len);
/* The same when the whole body is known: content-length framing, then
 * exactly body_len bytes of conn_send_data and conn_send_end. */
void conn_send_head_sized(struct scrim_conn *c, int status, const char *extra,
                          size_t extra_len, size_t body_len);
bool conn_send_data(struct scrim_conn *c, const char *p, size_t n);
bool conn_output_full(struct scrim_conn *c);
void conn_send_end(struct scrim_conn *c);
/* Write what is queued now rather than later in this turn of the loop,
 * unless other callbacks wait in this turn: alone, the answer goes out
 * before the request's bookkeeping (audit record, metrics, settling
 * limits) is done; with others, the answers of the turn go out together
 * at its end. What the kernel does not take, and any error, is left to
 * the usual deferred write. */
void conn_flush_now(struct scrim_conn *c);
/* Upstream broke mid-answer: flush what we have and close without the
 * terminating chunk, so the client sees a truncated response. */
void conn_send_abort(struct scrim_conn *c);

/* Current monotonic time in ms. */
uint64_t conn_now_ms(void);

#endif
