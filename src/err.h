/*
 * err.h - the stable reasons a request can fail, each with its HTTP status
 * and its OpenAI-shaped `type` and `code`. Shared by responses, logs and,
 * later, audit records and metrics, so a reason is spelled one way.
 */
#ifndef SCRIM_ERR_H
#define SCRIM_ERR_H

#include "scrim.h"

enum scrim_err {
	ERR_NONE = 0,
	ERR_BAD_REQUEST,         /* malformed framing: request line, header */
	ERR_INVALID_JSON,        /* body is not JSON we accept */
	ERR_INVALID_API_KEY,     /* missing or unknown client key */
	ERR_ROUTE_NOT_FOUND,     /* no route for this path / model */
	ERR_METHOD_NOT_ALLOWED,  /* e.g. CONNECT while proxy mode is off */
	ERR_NOT_IMPLEMENTED,     /* a method no provider API uses */
	ERR_REQUEST_TIMEOUT,     /* header deadline or slow body */
	ERR_BODY_TOO_LARGE,      /* over max_body_size */
	ERR_URI_TOO_LONG,        /* request line over max_request_line */
	ERR_HEADERS_TOO_LARGE,   /* header block or count over the caps */
	ERR_EXPECTATION_FAILED,  /* Expect other than 100-continue */
	ERR_VERSION,             /* HTTP version other than 1.0 / 1.1 */
	ERR_PROVIDER_KEY_MISSING,/* routed provider has no key configured */
	ERR_UPSTREAM_CONNECT,    /* could not resolve or connect */
	ERR_UPSTREAM_TLS,        /* certificate or handshake failure */
	ERR_UPSTREAM_ERROR,      /* upstream broke the exchange */
	ERR_UPSTREAM_TIMEOUT,    /* connect or total timeout */
	ERR_PROXY_AUTH,          /* proxy mode: no or wrong Proxy-Authorization */
	ERR_FORBIDDEN_TARGET,    /* proxy mode: host, port or address refused */
	ERR_NO_CA,               /* interception asked for, no local CA yet */
	ERR_KEY_REVOKED,         /* a virtual key that was revoked or expired */
	ERR_MODEL_NOT_ALLOWED,   /* the key may not use this model */
	ERR_RATE_LIMITED,        /* a usage limit is reached */
	ERR_LIMITS_UNAVAILABLE,  /* limits cannot be checked; fail closed */
	ERR_AUDIT_UNAVAILABLE,   /* audit cannot be written; on_failure block */
	ERR_BLOCKED,             /* a rule with action block matched */
	ERR_UNSCRUBBABLE,        /* a body the scrubber cannot read */
	ERR_SCRUB_FAILED,        /* the scrubber could not finish: fail closed */
	ERR_SHUTTING_DOWN,       /* draining after SIGTERM */
	ERR_INTERNAL,            /* a bug or resource exhaustion */
	ERR__COUNT
};

struct err_info {
	int status;
	const char *type;    /* OpenAI error.type */
	const char *code;    /* OpenAI error.code, also the log/audit reason */
	const char *message; /* default human message */
};

const struct err_info *err_info(enum scrim_err e);

#endif
