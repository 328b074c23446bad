/*
 * audit.h - the tamper-evident audit log: one JSON Lines record per
 * request, chained with HMAC-SHA256 (each MAC covers the record and the
 * previous MAC), written off the event loop, never holding personal data,
 * prompts or keys. `scrim audit verify` checks a chain; `scrim audit
 * forget` removes one key's records and re-seals with a signed tombstone.
 */
#ifndef SCRIM_AUDIT_H
#define SCRIM_AUDIT_H

#include "scrim.h"

struct scrim_config;
struct event_base;
struct audit;

struct audit_count {
	const char *name; /* an entity type or a rule id */
	unsigned count;
};

/* Everything a record may say. Strings may be NULL (written as null or
 * left out); none may hold personal data: callers pass ids, counts,
 * sizes, and the already-scrubbed bodies only when the operator set
 * store_scrubbed_body. */
struct audit_record {
	uint64_t time_ms;        /* wall clock, ms since the epoch */
	const char *request_id;
	const char *key_id;
	const char *key_name;    /* a virtual key's --name; a config key's id */
	const char *client_addr; /* as received; audit.c applies client_address */
	const char *way_in;      /* "base_url", "proxy", "intercept" */
	const char *host;        /* intercepted or proxied host, else NULL */
	const char *method;
	const char *path;        /* without the query string */
	const char *provider;
	const char *model;
	int status;
	const char *decision;    /* forwarded, blocked, over_limit, refused,
	                          * upstream_error, client_aborted, error */
	const char *reason;      /* error code or rule id, or NULL */
	uint64_t bytes_in, bytes_out;
	int64_t tokens_in, tokens_out; /* -1: unknown */
	double cost_usd;               /* < 0: unknown */
	const struct audit_count *redactions; /* by entity type */
	size_t nredactions;
	const struct audit_count *rules;      /* by rule id */
	size_t nrules;
	const char *const *context_ids;       /* chunks injected */
	size_t ncontext;
	uint64_t ms_total, ms_upstream, us_scrub;
	const char *scrubbed_request;  /* only with store_scrubbed_body */
	size_t scrubbed_request_len;
	const char *scrubbed_response;
	size_t scrubbed_response_len;
};

/*
 * Open the sinks the config names (file, syslog, Redis stream), start the
 * writer, write a checkpoint record linking to the previous file's last
 * MAC. NULL with err filled on failure (unreadable key, unwritable file).
 */
struct audit *audit_open(const struct scrim_config *cfg,
                         struct event_base *base, char *err, size_t errlen);

/*
 * Queue a record. Never blocks. Returns false and counts the record as
 * dropped when it cannot be taken: out of memory, the log closed, or,
 * under on_failure = continue only, the queue full. Under block the
 * record of an admitted request is queued even past the cap, so none is
 * lost while the disk is full.
 */
bool audit_write(struct audit *a, const struct audit_record *r);

/* False while writes are failing (disk full...); true again once a write
 * works. */
bool audit_healthy(const struct audit *a);

/*
 * May a new request be served? Always under on_failure = continue.
 * Under block, false (and the refusal counted) while writes fail or the
 * queue is at its cap: the caller answers 503 and writes no record for
 * it. Loop thread.
 */
bool audit_admit(struct audit *a);

/* on_failure, which a reload may change: block (true) or continue. */
void audit_set_block(struct audit *a, bool block);

/* Reopen the file (SIGHUP, after logrotate moved it) with a checkpoint. */
void audit_reopen(struct audit *a);

/* Flush, write nothing more, stop the writer, free. */
void audit_close(struct audit *a);

struct audit_stats {
	uint64_t written;  /* records in the file */
	uint64_t failed;   /* write or fsync attempts that failed */
	uint64_t dropped;  /* records lost: never queued, never written */
	uint64_t refused;  /* requests refused with 503 (block) */
	uint64_t queued;   /* records waiting for the disk, now */
	uint64_t slow;     /* loop's writes so slow the thread took over */
};
void audit_get_stats(struct audit *a, struct audit_stats *st);

/* The Redis Stream copy's counters (auditredis.h); false when
 * redis_stream is not set. */
struct auditredis_stats;
bool audit_get_redis_stats(struct audit *a, struct auditredis_stats *st);

/* `scrim audit verify FILE... and `scrim audit forget --key ID FILE...`
 * (auditcmd.c); return the process exit status. */
int audit_cmd(int argc, char **argv);

#endif
