/*
 * limits.h - virtual keys and their usage limits, enforced in Redis so
 * that every scrim instance sharing one Redis enforces one limit. One
 * Lua script per request looks the key up (by its SHA-256), checks every
 * limit and reserves the request's worst case, atomically, in one round
 * trip; a second one settles the reservation with the real usage when
 * the answer is done.
 *
 * Requests per minute use a sliding log (a sorted set of request times):
 * exact, so a limit of 100 lets exactly 100 through in any 60 s, with no
 * burst at window edges; its memory is bounded by the limit. Tokens use
 * fixed windows (minute, UTC day, UTC month for the budget), which is
 * what providers report and what token counters can afford.
 */
#ifndef SCRIM_LIMITS_H
#define SCRIM_LIMITS_H

#include "scrim.h"

struct event_base;
struct scrim_config;
struct limits;
struct limits_pending;

enum limits_verdict {
	LIM_OK,
	LIM_UNKNOWN_KEY,
	LIM_REVOKED,
	LIM_EXPIRED,
	LIM_OVER,        /* a limit is reached: 429 */
	LIM_UNAVAILABLE, /* Redis unreachable and fail_mode closed: 503 */
};

struct limits_result {
	enum limits_verdict verdict;
	char key_id[64];
	char key_name[128];  /* --name, for the audit record; "" unknown */
	char models[512];    /* comma-separated globs; "" = any */
	char actions[512];   /* "MATCH=action ..." scrub overrides; "" none */
	char indexes[640];   /* the key's index grant (context.h); "" none;
	                      * room for the longest valid one */
	const char *which;   /* LIM_OVER: requests, tokens, tokens_per_day,
	                      * budget, parallel */
	long retry_after_ms; /* LIM_OVER / LIM_UNAVAILABLE */
	/* For the x-ratelimit-* headers; limit 0 = none. */
	long rpm, rpm_remaining, rpm_reset_ms;
	long tpm, tpm_remaining, tpm_reset_ms;
	bool local;          /* decided by fail-open local counters */
};

/* What a request reserved, for settling. */
struct limits_ticket {
	bool active;
	char hash[65];
	char member[40];
	char tpm_key[128], tpd_key[128], usd_key[128];
	long reserved_tokens;
	long reserved_micros; /* USD * 1e6 */
};

typedef void (*limits_cb)(void *arg, const struct limits_result *res);

struct limits *limits_new(struct event_base *base,
                          const struct scrim_config *cfg);
void limits_free(struct limits *l);

/*
 * Check key (as presented) and reserve. The callback runs later, from the
 * loop, exactly once unless the pending check is cancelled first.
 */
struct limits_pending *limits_check(struct limits *l,
                                    const struct scrim_config *cfg,
                                    const char *key, size_t keylen,
                                    const char *request_id,
                                    long reserve_tokens, long reserve_micros,
                                    struct limits_ticket *ticket,
                                    limits_cb cb, void *arg);
void limits_cancel(struct limits_pending *p);

/* What a key may do, as the request stages that use it (scrub, context)
 * need it: its id (pseudonyms are stable per key), scrub overrides and
 * index grant. */
struct limits_grant {
	char key_id[64];
	char actions[512];
	char indexes[640];
};

/*
 * The grant the last "ok" answer gave the key of t (filled by
 * limits_check) into g; false when none is known. Only a guess at what
 * the check in flight will say: the caller may work ahead on it, but
 * must compare it with the answer before anything leaves.
 */
bool limits_grant_known(struct limits *l, const struct limits_ticket *t,
                        struct limits_grant *g);

/* Settle: replace the reservation by actual use (tokens < 0: unknown,
 * keep the reservation; refund: give it all back). Fire and forget. */
void limits_settle(struct limits *l, struct limits_ticket *t, long tokens,
                   long micros, bool refund);

/*
 * Key administration for the admin API: keyadmin_start (keyadmin.h) on
 * this instance's Redis connection. False, and no callback: Redis is not
 * connected (or op is unknown).
 */
typedef void (*limits_admin_cb)(void *arg, const char *json, size_t len);
bool limits_admin(struct limits *l, const char *op, const char *const *args,
                  size_t nargs, limits_admin_cb cb, void *arg)
    SCRIM_MUSTCHECK;

bool limits_connected(const struct limits *l);
struct redis_stats;
void limits_redis_stats(const struct limits *l, struct redis_stats *st);

/* Price of tokens for a model from [prices], in micro-USD. */
long limits_price(const struct scrim_config *cfg, const char *model,
                  long tokens_in, long tokens_out);

/* OpenAI's reset format: "1s", "6m0s", "250ms". */
void limits_format_reset(long ms, char *out, size_t cap);
/* v in decimal into out, NUL-terminated; returns its length. */
size_t limits_format_long(long v, char out[24]);

#endif
