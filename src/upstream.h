/*
 * upstream.h - requests to providers: libcurl's multi_socket interface
 * driven by the gateway's own libevent loop. One multi handle per process
 * shares connections (keep-alive, HTTP/2 multiplexing) and the DNS cache
 * across requests. TLS is always verified; there is no switch to turn
 * that off.
 */
#ifndef SCRIM_UPSTREAM_H
#define SCRIM_UPSTREAM_H

#include "err.h"
#include "scrim.h"

struct event_base;
struct upstream_xfer;

struct upstream_header {
	const char *name;
	size_t name_len;
	const char *value;
	size_t value_len;
};

/* What the caller hears about a transfer. None of these may free the
 * transfer; they return a verdict and the transfer ends on its own. */
struct upstream_cbs {
	/* The final response head. false aborts the transfer. */
	bool (*on_head)(void *arg, int status, const struct upstream_header *h,
	                size_t nh);
	/* Body bytes. Return UPSTREAM_DATA_OK, _PAUSE (resume with
	 * upstream_resume once the client drained) or _ABORT. On _PAUSE the
	 * same bytes are delivered again after resuming. */
	int (*on_data)(void *arg, const char *p, size_t n);
	/* The end, successful (ERR_NONE) or not; the transfer is gone after.
	 * ERR_FORBIDDEN_TARGET when the address guard refused to connect. */
	void (*on_done)(void *arg, enum scrim_err err, const char *detail);
};

enum { UPSTREAM_DATA_OK, UPSTREAM_DATA_PAUSE, UPSTREAM_DATA_ABORT };

struct upstream_request {
	const char *method;
	const char *url;
	const char *const *headers; /* "Name: value", NULL-terminated */
	const char *body;           /* borrowed until on_done */
	size_t body_len;
	long connect_timeout_ms;
	long timeout_ms;
	const char *ca_file;        /* NULL: the system trust store */
	const char *proxy;          /* NULL or "": direct */
	/* Client-chosen targets (proxy mode): refuse private addresses,
	 * checked on the address curl is about to connect to. */
	bool guard_private;
	char *const *connect_to;    /* "host:port:addr:port" overrides */
	size_t nconnect_to;
};

struct scrim_upstream *upstream_new(struct event_base *base);
void upstream_free(struct scrim_upstream *up);

/* Start a transfer. NULL on failure to set it up (cbs are not called). */
struct upstream_xfer *upstream_start(struct scrim_upstream *up,
                                     const struct upstream_request *req,
                                     const struct upstream_cbs *cbs,
                                     void *arg);
/* Abort and free; no callback follows. Never call from inside a callback. */
void upstream_cancel(struct upstream_xfer *x);
void upstream_resume(struct upstream_xfer *x);
size_t upstream_active(const struct scrim_upstream *up);

#endif
