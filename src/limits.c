/*
 * limits.c - see limits.h. Redis keys, all under the hash tag of the
 * key's SHA-256 so one key's data lives in one Redis Cluster slot:
 *
 *   scrim:{H}:key            hash: id, name, limits, models, revoked,
 *                            actions, indexes (the key's grant), ...
 *   scrim:{H}:rpm            request times, last minute (sliding log);
 *                            kept for every key, so `keys usage` counts
 *                            requests of keys with no rpm limit too
 *   scrim:{H}:tpm:MINUTE     tokens reserved/used in that minute
 *   scrim:{H}:tpd:DAY        tokens in that UTC day
 *   scrim:{H}:usd:MONTH      micro-USD in that UTC month
 *   scrim:{H}:par            requests in flight
 *   scrim:{H}:resv           reservations by request id, until settled
 *   scrim:{H}:gone:REQID     a refund that found no reservation (an hour):
 *                            that request's check, if it runs later,
 *                            reserves nothing
 *
 * and an index for the key commands (keyadmin.c, keyscmd.c), each key in
 * a slot of its own and only ever touched alone (never with a key's data
 * in one script):
 *
 *   scrim:id:ID              the hash of the key the id names now
 *   scrim:keys               set: every id, for list
 *
 * So every command and script stays within one slot, as Redis Cluster
 * requires; the request path (check, settle) is one key's slot only.
 *
 * Window names come from this host's clock: instances sharing a Redis
 * need NTP, as any distributed limiter does.
 */
#include "limits.h"

#include "alloc.h"
#include "auth.h"
#include "config.h"
#include "keyadmin.h"
#include "log.h"
#include "redis.h"

#include <event2/event.h>

#include <fnmatch.h>
#include <hiredis/hiredis.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>

/* KEYS: rec rpm tpm tpd usd par resv gone; ARGV: now_ms member tokens
 * micros minute_reset_ms day_reset_ms month_reset_ms now_ms-60000.
 * Numbers go to redis.call as the strings they came in as: Redis turns
 * a Lua number into an argument with snprintf("%.17g"), which cost a
 * tenth of the script's CPU. The reservation is
 * also recorded under the request's id (resv), so settling is idempotent
 * and a check whose answer was lost can be refunded safely later. A check
 * can also run after its refund (sent on a newer connection while the old
 * one still held the check, late): the refund left a tombstone (gone),
 * and the check then reserves nothing.
 *
 * A request logged later than now is from before a jump back of this
 * host's clock (or from an instance whose clock runs ahead): it counts as
 * made now. Left at its time, it would hold its place in the log for the
 * length of the jump (a jump back of an hour: the key short of that much
 * of its limit for an hour, and a Retry-After of an hour); dropped, it
 * would hand out a fresh window. Moved to now, it leaves the window a
 * minute later: at most a minute late, never early. */
static const char check_lua[] =
    "if redis.call('EXISTS', KEYS[8]) == 1 then return {'cancelled'} end\n"
    "local r = redis.call('HMGET', KEYS[1], 'id', 'revoked', 'expires', "
    "'rpm', 'tpm', 'tpd', 'budget', 'maxpar', 'models', 'actions', "
    "'indexes', 'name')\n"
    "if not r[1] then return {'unknown'} end\n"
    "if r[2] == '1' then return {'revoked', r[1]} end\n"
    "local now = tonumber(ARGV[1])\n"
    "local exp = tonumber(r[3] or '0') or 0\n"
    "if exp > 0 and exp * 1000 <= now then return {'expired', r[1]} end\n"
    "local rpm = tonumber(r[4] or '0') or 0\n"
    "local tpm = tonumber(r[5] or '0') or 0\n"
    "local tpd = tonumber(r[6] or '0') or 0\n"
    "local budget = tonumber(r[7] or '0') or 0\n"
    "local maxpar = tonumber(r[8] or '0') or 0\n"
    "local tok = tonumber(ARGV[3])\n"
    "local usd = tonumber(ARGV[4])\n"
    /* One read for the counters of the limits that are set, none when
     * none is: an unset limit's counter is written below (for `keys
     * usage`) but never needs reading. */
    "local ck, cv = {}, {}\n"
    "if tpm > 0 then ck[#ck + 1] = KEYS[3] end\n"
    "if tpd > 0 then ck[#ck + 1] = KEYS[4] end\n"
    "if budget > 0 then ck[#ck + 1] = KEYS[5] end\n"
    "if maxpar > 0 then ck[#ck + 1] = KEYS[6] end\n"
    "if #ck > 0 then cv = redis.call('MGET', unpack(ck)) end\n"
    "local i = 0\n"
    "local function used(set)\n"
    "  if not set then return 0 end\n"
    "  i = i + 1\n"
    "  return tonumber(cv[i] or '0') or 0\n"
    "end\n"
    "local used_tpm = used(tpm > 0)\n"
    "local used_tpd = used(tpd > 0)\n"
    "local used_usd = used(budget > 0)\n"
    "local used_par = used(maxpar > 0)\n"
    "local used_rpm, rpm_reset = 0, 0\n"
    "redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', ARGV[8])\n"
    "for _, m in ipairs(redis.call('ZRANGEBYSCORE', KEYS[2], '(' .. ARGV[1], "
    "'+inf')) do redis.call('ZADD', KEYS[2], ARGV[1], m) end\n"
    "if rpm > 0 then\n"
    "  used_rpm = redis.call('ZCARD', KEYS[2])\n"
    "  local oldest = redis.call('ZRANGE', KEYS[2], '0', '0', 'WITHSCORES')\n"
    "  if oldest[2] then rpm_reset = tonumber(oldest[2]) + 60000 - now end\n"
    "  if used_rpm >= rpm then\n"
    "    return {'over', r[1], r[9] or '', 'requests', rpm_reset, rpm, 0, "
    "rpm_reset, tpm, math.max(tpm - used_tpm, 0), tonumber(ARGV[5])}\n"
    "  end\n"
    "end\n"
    "if tpm > 0 and used_tpm + tok > tpm then\n"
    "  return {'over', r[1], r[9] or '', 'tokens', tonumber(ARGV[5]), rpm, "
    "rpm - used_rpm, rpm_reset, tpm, math.max(tpm - used_tpm, 0), "
    "tonumber(ARGV[5])}\n"
    "end\n"
    "if tpd > 0 and used_tpd + tok > tpd then\n"
    "  return {'over', r[1], r[9] or '', 'tokens_per_day', "
    "tonumber(ARGV[6]), rpm, rpm - used_rpm, rpm_reset, tpm, "
    "math.max(tpm - used_tpm, 0), tonumber(ARGV[5])}\n"
    "end\n"
    "if budget > 0 and used_usd + usd > budget then\n"
    "  return {'over', r[1], r[9] or '', 'budget', tonumber(ARGV[7]), rpm, "
    "rpm - used_rpm, rpm_reset, tpm, math.max(tpm - used_tpm, 0), "
    "tonumber(ARGV[5])}\n"
    "end\n"
    "if maxpar > 0 and used_par >= maxpar then\n"
    "  return {'over', r[1], r[9] or '', 'parallel', 1000, rpm, "
    "rpm - used_rpm, rpm_reset, tpm, math.max(tpm - used_tpm, 0), "
    "tonumber(ARGV[5])}\n"
    "end\n"
    "redis.call('ZADD', KEYS[2], ARGV[1], ARGV[2])\n"
    "redis.call('PEXPIRE', KEYS[2], '61000')\n"
    "if rpm > 0 and rpm_reset == 0 then rpm_reset = 60000 end\n"
    /* A window counter's expiry is set when the counter is made (INCRBY
     * answers the increment itself): it names the end of its window,
     * which later requests would only set again. */
    "local fresh = redis.call('INCRBY', KEYS[3], ARGV[3]) == tok\n"
    "if fresh then redis.call('PEXPIRE', KEYS[3], tonumber(ARGV[5]) + 60000) "
    "end\n"
    "if redis.call('INCRBY', KEYS[4], ARGV[3]) == tok then "
    "redis.call('PEXPIRE', KEYS[4], tonumber(ARGV[6]) + 86400000) end\n"
    "if redis.call('INCRBY', KEYS[5], ARGV[4]) == usd then "
    "redis.call('PEXPIRE', KEYS[5], tonumber(ARGV[7]) + 86400000) end\n"
    /* The in-flight count and the reservations (which move together:
     * the first in flight makes the hash) get their hour when they are
     * made, and again with each new minute's counter: while the key is
     * used they never expire, and a key left idle takes any leftovers
     * (a crashed instance's) with it an hour later. */
    "local p = redis.call('INCR', KEYS[6])\n"
    "redis.call('HSET', KEYS[7], ARGV[2], ARGV[3] .. ':' .. ARGV[4])\n"
    "if fresh or p == 1 then\n"
    "  redis.call('PEXPIRE', KEYS[6], '3660000')\n"
    "  redis.call('PEXPIRE', KEYS[7], '3660000')\n"
    "end\n"
    "return {'ok', r[1], r[9] or '', '', 0, rpm, rpm - used_rpm - 1, "
    "rpm_reset, tpm, math.max(tpm - used_tpm - tok, 0), tonumber(ARGV[5]), "
    "r[10] or '', r[11] or '', r[12] or ''}\n";

/* KEYS: tpm tpd usd par resv rpm gone; ARGV: member, token delta,
 * micro-USD delta, refund (1: give the reservation back, and the request
 * does not count against requests per minute either; the deltas are then
 * the reservation's, negated, the very numbers the check recorded under
 * the member). Nothing happens unless the reservation is still on
 * record (HDEL says so): settling twice changes nothing. A refund that finds no record leaves a tombstone for an hour,
 * so the check, should it run after all, reserves nothing. A counter
 * that has expired is not made again (it would have no expiry): one
 * EXISTS over the four tells, in the usual case, that all of them are
 * there. */
static const char settle_lua[] =
    "if redis.call('HDEL', KEYS[5], ARGV[1]) == 0 then\n"
    "  if ARGV[4] == '1' then redis.call('SET', KEYS[7], '1', 'PX', '3600000') "
    "end\n"
    "  return 0\n"
    "end\n"
    "local d, u = ARGV[2], ARGV[3]\n"
    "if ARGV[4] == '1' then redis.call('ZREM', KEYS[6], ARGV[1]) end\n"
    "local all = redis.call('EXISTS', KEYS[1], KEYS[2], KEYS[3], KEYS[4]) "
    "== 4\n"
    "local function add(k, v)\n"
    "  if tonumber(v) ~= 0 and (all or redis.call('EXISTS', k) == 1) then\n"
    "    if redis.call('INCRBY', k, v) < 0 then "
    "redis.call('SET', k, '0', 'KEEPTTL') end\n"
    "  end\n"
    "end\n"
    "add(KEYS[1], d)\n"
    "add(KEYS[2], d)\n"
    "add(KEYS[3], u)\n"
    "if (all or redis.call('EXISTS', KEYS[4]) == 1) and "
    "redis.call('DECR', KEYS[4]) < 0 then redis.call('SET', KEYS[4], '0', "
    "'KEEPTTL') end\n"
    "return 1\n";


#define LIMITS_MAX_REFUNDS 4096

struct limits {
	struct event_base *base;
	struct scrim_redis *redis;
	struct {
		struct limits_ticket t;
		uint64_t queued_ms;
		bool served;   /* the request went out: release, do not refund */
	} refunds[LIMITS_MAX_REFUNDS];
	size_t nrefunds;
	struct event *refund_timer;
	/* Settles to send once the loop has written the answers. */
	struct settle_arg *settles, **settles_tail;
	struct event *settles_ev;
	bool settles_pending;
	char check_sha[41], settle_sha[41];
	/* The names of this minute's, day's and month's windows. */
	uint64_t win_minute;
	char win_minute_name[24], win_day[16], win_month[8];
	time_t win_next_month;
	/* Fail-open: per-instance counters for keys seen recently. */
	struct local_key *local;
	size_t nlocal, cap;
};

struct local_key {
	char hash[65];
	char id[64];
	char models[512];
	/* What the key may do, kept as Redis last said, so that fail-open
	 * neither loosens its scrubbing nor widens its indexes. */
	char actions[512];
	char indexes[640];
	bool grants_known;     /* an "ok" answer filled the two above */
	long rpm;
	uint64_t seen_ms;      /* when Redis last vouched for it */
	uint64_t window_ms;
	long count;
};

struct limits_pending {
	struct limits *l;
	struct redis_call *call;
	limits_cb cb;
	void *arg;
	struct limits_ticket *ticket;
	bool retried;          /* EVAL after NOSCRIPT */
	/* The command, kept for the retry: its arguments one after the
	 * other in args, each NUL-terminated. */
	char args[1024];
	size_t args_used;
	const char *argv[24];
	size_t argv_len[24];
	int argc;
	long reset_minute_ms;
};

struct settle_arg;
static void queue_refund(struct limits *l, const struct limits_ticket *t,
                         bool served);
static void settles_cb(evutil_socket_t fd, short what, void *arg);
static void refund_cb(evutil_socket_t fd, short what, void *arg);

static uint64_t
now_ms(void)
{
	struct timeval tv;
	gettimeofday(&tv, NULL);
	return (uint64_t)tv.tv_sec * 1000 + (uint64_t)tv.tv_usec / 1000;
}

/* out = "scrim:{" hash "}:" what [tail]: a key of one key's slot. The
 * names are fixed and short, so running out of room is a programming
 * error. Returns the length. */
static size_t
key_name(char *out, size_t cap, const char *hash, const char *what,
         const char *tail)
{
	const char *parts[5] = {"scrim:{", hash, "}:", what, tail};
	size_t n = 0;

	for (size_t i = 0; i < 5 && parts[i] != NULL; i++) {
		size_t len = strlen(parts[i]);
		if (n + len >= cap)
			abort();
		memcpy(out + n, parts[i], len);
		n += len;
	}
	out[n] = '\0';
	return n;
}

static void
sha1_hex(const char *s, char out[41])
{
	unsigned char md[20];
	static const char hx[] = "0123456789abcdef";

	EVP_Digest(s, strlen(s), md, NULL, EVP_sha1(), NULL);
	for (int i = 0; i < 20; i++) {
		out[2 * i] = hx[md[i] >> 4];
		out[2 * i + 1] = hx[md[i] & 15];
	}
	out[40] = '\0';
}

struct limits *
limits_new(struct event_base *base, const struct scrim_config *cfg)
{
	struct limits *l = xcalloc(1, sizeof(*l));

	l->base = base;
	l->redis = redis_new(base, "limits", cfg->redis_url,
	                     cfg->redis_password, cfg->redis_timeout_ms);
	if (l->redis == NULL) {
		free(l);
		return NULL;
	}
	l->refund_timer = evtimer_new(base, refund_cb, l);
	l->settles_tail = &l->settles;
	l->settles_ev = event_new(base, -1, 0, settles_cb, l);
	if (l->refund_timer == NULL || l->settles_ev == NULL)
		abort(); /* fixed bookkeeping: out of memory */
	sha1_hex(check_lua, l->check_sha);
	sha1_hex(settle_lua, l->settle_sha);
	return l;
}

void
limits_free(struct limits *l)
{
	if (l == NULL)
		return;
	/* Settles still waiting go into the connection's buffer, as they
	 * would have a moment later. */
	if (l->settles != NULL)
		settles_cb(-1, 0, l);
	redis_free(l->redis);
	if (l->refund_timer != NULL)
		event_free(l->refund_timer);
	event_free(l->settles_ev);
	free(l->local);
	free(l);
}

bool
limits_admin(struct limits *l, const char *op, const char *const *args,
             size_t nargs, limits_admin_cb cb, void *arg)
{
	return l != NULL && keyadmin_start(l->redis, op, args, nargs, cb, arg);
}

bool
limits_connected(const struct limits *l)
{
	return redis_connected(l->redis);
}

void
limits_redis_stats(const struct limits *l, struct redis_stats *st)
{
	redis_get_stats(l->redis, st);
}

long
limits_price(const struct scrim_config *cfg, const char *model, long in,
             long out)
{
	if (model == NULL)
		return 0;
	for (size_t i = 0; i < cfg->nprices; i++)
		if (fnmatch(cfg->prices[i].glob, model, 0) == 0)
			/* USD per million tokens == micro-USD per token. */
			return (long)((double)in * cfg->prices[i].in_per_mtok +
			              (double)out * cfg->prices[i].out_per_mtok + 0.5);
	return 0;
}

size_t
limits_format_long(long v, char out[24])
{
	char *e = scrim_put_i64(out, v);

	*e = '\0';
	return (size_t)(e - out);
}

void
limits_format_reset(long ms, char *out, size_t cap)
{
	char tmp[64], *o = tmp;
	size_t len;

	/* By hand, not snprintf: it goes out with every virtual-key answer. */
	if (ms < 1000) {
		o = scrim_put_i64(o, ms < 0 ? 0 : ms);
		*o++ = 'm';
	} else if (ms < 60000) {
		o = scrim_put_i64(o, (ms + 999) / 1000);
	} else {
		o = scrim_put_i64(o, ms / 60000);
		*o++ = 'm';
		o = scrim_put_i64(o, ((ms % 60000) + 999) / 1000);
	}
	*o++ = 's';
	if (cap == 0)
		return;
	len = (size_t)(o - tmp) < cap ? (size_t)(o - tmp) : cap - 1;
	memcpy(out, tmp, len);
	out[len] = '\0';
}

static struct local_key *
local_find(struct limits *l, const char *hash, bool create)
{
	for (size_t i = 0; i < l->nlocal; i++)
		if (strcmp(l->local[i].hash, hash) == 0)
			return &l->local[i];
	if (!create)
		return NULL;
	if (l->nlocal == l->cap) {
		if (l->cap >= 65536)
			return NULL; /* bounded */
		l->cap = l->cap ? l->cap * 2 : 64;
		l->local = xrealloc(l->local, l->cap * sizeof(*l->local));
	}
	memset(&l->local[l->nlocal], 0, sizeof(l->local[0]));
	snprintf(l->local[l->nlocal].hash, 65, "%s", hash);
	return &l->local[l->nlocal++];
}

static void
pending_free(struct limits_pending *p)
{
	free(p);
}

static long
reply_int(const redisReply *r, size_t i)
{
	if (i >= r->elements)
		return 0;
	if (r->element[i]->type == REDIS_REPLY_INTEGER)
		return (long)r->element[i]->integer;
	if (r->element[i]->type == REDIS_REPLY_STRING)
		return strtol(r->element[i]->str, NULL, 10);
	return 0;
}

static void
reply_str(const redisReply *r, size_t i, char *out, size_t cap)
{
	size_t n = 0;

	if (i < r->elements && r->element[i]->type == REDIS_REPLY_STRING) {
		n = r->element[i]->len < cap - 1 ? r->element[i]->len : cap - 1;
		memcpy(out, r->element[i]->str, n);
	}
	out[n] = '\0';
}

/* Redis could not answer: fail closed, or open on local counters. */
static void
decide_locally(struct limits_pending *p, struct limits_result *res,
               const struct scrim_config *cfg)
{
	struct local_key *lk = local_find(p->l, p->ticket->hash, false);
	uint64_t now = now_ms();

	res->local = true;
	if (!cfg->fail_open) {
		res->verdict = LIM_UNAVAILABLE;
		res->retry_after_ms = 1000;
		return;
	}
	/* Only keys Redis vouched for within the hour get in, and only
	 * once it has said what they may do. */
	if (lk == NULL || now - lk->seen_ms > 3600000 || !lk->grants_known) {
		res->verdict = LIM_UNAVAILABLE;
		res->retry_after_ms = 1000;
		return;
	}
	snprintf(res->key_id, sizeof(res->key_id), "%s", lk->id);
	snprintf(res->models, sizeof(res->models), "%s", lk->models);
	snprintf(res->actions, sizeof(res->actions), "%s", lk->actions);
	snprintf(res->indexes, sizeof(res->indexes), "%s", lk->indexes);
	if (now - lk->window_ms >= 60000) {
		lk->window_ms = now;
		lk->count = 0;
	}
	res->rpm = lk->rpm;
	if (lk->rpm > 0 && lk->count >= lk->rpm) {
		res->verdict = LIM_OVER;
		res->which = "requests";
		res->retry_after_ms = (long)(lk->window_ms + 60000 - now);
		return;
	}
	lk->count++;
	res->rpm_remaining = lk->rpm > 0 ? lk->rpm - lk->count : 0;
	res->rpm_reset_ms = (long)(lk->window_ms + 60000 - now);
	res->verdict = LIM_OK;
	p->ticket->active = false; /* nothing reserved in Redis */
}

static const struct scrim_config *current_cfg; /* for the reply path */

static void send_check(struct limits_pending *p, bool eval);

static void
check_reply(void *arg, redisReply *rep)
{
	struct limits_pending *p = arg;
	struct limits_result res;
	char verdict[16];

	p->call = NULL;
	memset(&res, 0, sizeof(res));
	if (rep != NULL && rep->type == REDIS_REPLY_ERROR &&
	    strncmp(rep->str, "NOSCRIPT", 8) == 0 && !p->retried) {
		p->retried = true;
		send_check(p, true);
		if (p->call != NULL)
			return;
		rep = NULL;
	}
	if (rep == NULL || rep->type != REDIS_REPLY_ARRAY || rep->elements < 1) {
		if (rep != NULL && rep->type == REDIS_REPLY_ERROR)
			log_warn("limits: redis error: %.120s", rep->str);
		if (rep == NULL)
			queue_refund(p->l, p->ticket, false); /* it may have run */
		decide_locally(p, &res, current_cfg);
		p->cb(p->arg, &res);
		pending_free(p);
		return;
	}
	reply_str(rep, 0, verdict, sizeof(verdict));
	reply_str(rep, 1, res.key_id, sizeof(res.key_id));
	if (strcmp(verdict, "cancelled") == 0) {
		/* Refunded before it ran: it reserved nothing. Only a check we
		 * gave up on is ever refunded, so this answer should not reach
		 * a caller; if it does, it is not a yes. */
		decide_locally(p, &res, current_cfg);
		p->cb(p->arg, &res);
		pending_free(p);
		return;
	}
	if (strcmp(verdict, "unknown") == 0 || strcmp(verdict, "revoked") == 0 ||
	    strcmp(verdict, "expired") == 0) {
		struct local_key *lk = local_find(p->l, p->ticket->hash, false);
		res.verdict = verdict[0] == 'u'   ? LIM_UNKNOWN_KEY
		              : verdict[0] == 'r' ? LIM_REVOKED
		                                  : LIM_EXPIRED;
		/* Fail-open must not remember a key Redis has refused since. */
		if (lk != NULL)
			*lk = p->l->local[--p->l->nlocal];
	} else {
		char which[24];
		struct local_key *lk;
		reply_str(rep, 2, res.models, sizeof(res.models));
		reply_str(rep, 3, which, sizeof(which));
		res.retry_after_ms = reply_int(rep, 4);
		res.rpm = reply_int(rep, 5);
		res.rpm_remaining = reply_int(rep, 6);
		res.rpm_reset_ms = reply_int(rep, 7);
		res.tpm = reply_int(rep, 8);
		res.tpm_remaining = reply_int(rep, 9);
		res.tpm_reset_ms = reply_int(rep, 10);
		if (strcmp(verdict, "over") == 0) {
			static const char *const names[] = {
			    "requests", "tokens", "tokens_per_day", "budget",
			    "parallel"};
			res.verdict = LIM_OVER;
			res.which = "limit";
			for (size_t i = 0; i < SCRIM_ARRAY_LEN(names); i++)
				if (strcmp(which, names[i]) == 0)
					res.which = names[i];
		} else {
			res.verdict = LIM_OK;
			reply_str(rep, 11, res.actions, sizeof(res.actions));
			reply_str(rep, 12, res.indexes, sizeof(res.indexes));
			reply_str(rep, 13, res.key_name, sizeof(res.key_name));
			p->ticket->active = true;
		}
		/* Remember what Redis said, for fail-open. */
		lk = local_find(p->l, p->ticket->hash, true);
		if (lk != NULL) {
			snprintf(lk->id, sizeof(lk->id), "%s", res.key_id);
			snprintf(lk->models, sizeof(lk->models), "%s", res.models);
			/* An "over" answer carries neither: keep what the last
			 * "ok" said. */
			if (res.verdict == LIM_OK) {
				snprintf(lk->actions, sizeof(lk->actions), "%s",
				         res.actions);
				snprintf(lk->indexes, sizeof(lk->indexes), "%s",
				         res.indexes);
				lk->grants_known = true;
			}
			lk->rpm = res.rpm;
			lk->seen_ms = now_ms();
		}
	}
	p->cb(p->arg, &res);
	pending_free(p);
}

static void
send_check(struct limits_pending *p, bool eval)
{
	p->argv[0] = eval ? "EVAL" : "EVALSHA";
	p->argv_len[0] = strlen(p->argv[0]);
	p->argv[1] = eval ? check_lua : p->l->check_sha;
	p->argv_len[1] = strlen(p->argv[1]);
	p->call = redis_call(p->l->redis, check_reply, p, p->argc, p->argv,
	                     p->argv_len);
}

/* Append one argument made of up to four strings (the rest NULL). The
 * command is fixed, so running out of room is a programming error. */
static void
pend_arg(struct limits_pending *p, const char *a, const char *b,
         const char *c, const char *d)
{
	const char *parts[4] = {a, b, c, d};
	char *start = p->args + p->args_used;
	size_t n = 0;

	if (p->argc == (int)SCRIM_ARRAY_LEN(p->argv))
		abort();
	for (size_t i = 0; i < 4 && parts[i] != NULL; i++) {
		size_t len = strlen(parts[i]);
		if (p->args_used + n + len + 1 > sizeof(p->args))
			abort();
		memcpy(start + n, parts[i], len);
		n += len;
	}
	start[n] = '\0';
	p->argv[p->argc] = start;
	p->argv_len[p->argc] = n;
	p->argc++;
	p->args_used += n + 1;
}

static void
pend_num(struct limits_pending *p, long v)
{
	char tmp[24];

	(void)limits_format_long(v, tmp);
	pend_arg(p, tmp, NULL, NULL, NULL);
}

struct limits_pending *
limits_check(struct limits *l, const struct scrim_config *cfg,
             const char *key, size_t keylen, const char *request_id,
             long tokens, long micros, struct limits_ticket *t, limits_cb cb,
             void *arg)
{
	struct limits_pending *p = xcalloc(1, sizeof(*p));
	uint64_t now = now_ms();
	time_t secs = (time_t)(now / 1000);
	long minute_reset = (long)(60000 - now % 60000);
	long day_reset = (long)(86400000 - now % 86400000);
	long month_reset;

	current_cfg = cfg;
	if (now / 60000 != l->win_minute) {
		/* The windows' names change at most once a minute. */
		struct tm tm, next;
		l->win_minute = now / 60000;
		gmtime_r(&secs, &tm);
		(void)strftime(l->win_day, sizeof(l->win_day), "%Y%m%d", &tm);
		(void)strftime(l->win_month, sizeof(l->win_month), "%Y%m", &tm);
		snprintf(l->win_minute_name, sizeof(l->win_minute_name), "%llu",
		         (unsigned long long)l->win_minute);
		/* The first of next month, UTC. */
		next = tm;
		next.tm_mday = 1;
		next.tm_hour = next.tm_min = next.tm_sec = 0;
		next.tm_mon += 1;
		l->win_next_month = timegm(&next);
	}
	month_reset = (long)((l->win_next_month - secs) * 1000);
	memset(t, 0, sizeof(*t));
	auth_key_hex(key, keylen, t->hash);
	snprintf(t->member, sizeof(t->member), "%s", request_id);
	key_name(t->tpm_key, sizeof(t->tpm_key), t->hash, "tpm:",
	         l->win_minute_name);
	key_name(t->tpd_key, sizeof(t->tpd_key), t->hash, "tpd:", l->win_day);
	key_name(t->usd_key, sizeof(t->usd_key), t->hash, "usd:", l->win_month);
	t->reserved_tokens = tokens;
	t->reserved_micros = micros;

	p->l = l;
	p->cb = cb;
	p->arg = arg;
	p->ticket = t;
	pend_arg(p, "EVALSHA", NULL, NULL, NULL);
	pend_arg(p, l->check_sha, NULL, NULL, NULL);
	pend_arg(p, "8", NULL, NULL, NULL);
	pend_arg(p, "scrim:{", t->hash, "}:key", NULL);
	pend_arg(p, "scrim:{", t->hash, "}:rpm", NULL);
	pend_arg(p, t->tpm_key, NULL, NULL, NULL);
	pend_arg(p, t->tpd_key, NULL, NULL, NULL);
	pend_arg(p, t->usd_key, NULL, NULL, NULL);
	pend_arg(p, "scrim:{", t->hash, "}:par", NULL);
	pend_arg(p, "scrim:{", t->hash, "}:resv", NULL);
	pend_arg(p, "scrim:{", t->hash, "}:gone:", t->member);
	pend_num(p, (long)now);
	pend_arg(p, t->member, NULL, NULL, NULL);
	pend_num(p, tokens);
	pend_num(p, micros);
	pend_num(p, minute_reset);
	pend_num(p, day_reset);
	pend_num(p, month_reset);
	pend_num(p, (long)now - 60000);
	/* Refunds waiting from an outage go first, on the same connection,
	 * so this check already sees them applied. */
	if (l->nrefunds > 0 && redis_connected(l->redis))
		refund_cb(-1, 0, l);
	send_check(p, false);
	if (p->call == NULL) {
		/* Not connected: decide now and answer at once, before
		 * returning NULL; the caller (stage_limits) expects that and
		 * acts on the answer itself (in_stage_limits). */
		struct limits_result res;
		memset(&res, 0, sizeof(res));
		decide_locally(p, &res, cfg);
		cb(arg, &res);
		pending_free(p);
		return NULL;
	}
	return p;
}

bool
limits_grant_known(struct limits *l, const struct limits_ticket *t,
                   struct limits_grant *g)
{
	/* The fail-open table already keeps what the last "ok" said, and
	 * forgets a key Redis has refused since. */
	const struct local_key *lk = local_find(l, t->hash, false);

	if (lk == NULL || !lk->grants_known)
		return false;
	snprintf(g->key_id, sizeof(g->key_id), "%s", lk->id);
	snprintf(g->actions, sizeof(g->actions), "%s", lk->actions);
	snprintf(g->indexes, sizeof(g->indexes), "%s", lk->indexes);
	return true;
}

void
limits_cancel(struct limits_pending *p)
{
	if (p == NULL)
		return;
	/* The check may still run in Redis: refund it when it can. */
	redis_cancel(p->call);
	queue_refund(p->l, p->ticket, false);
	pending_free(p);
}

/* One settle, from limits_settle or a refund, kept until Redis
 * answers it: an answer of NOSCRIPT sends it again as EVAL. */
struct settle_arg {
	struct limits *l;
	struct limits_ticket t;
	long dt, du;
	bool refund;
	bool retried;          /* EVAL after NOSCRIPT */
	struct settle_arg *next; /* in l->settles, waiting to be sent */
};

static bool send_settle_cmd(struct settle_arg *sa, bool eval);

static void
settle_reply(void *arg, redisReply *rep)
{
	struct settle_arg *sa = arg;

	if (rep != NULL && rep->type == REDIS_REPLY_ERROR &&
	    strncmp(rep->str, "NOSCRIPT", 8) == 0 && !sa->retried) {
		/* Redis restarted or flushed its scripts: once as EVAL, which
		 * loads it again for the EVALSHAs after. */
		sa->retried = true;
		if (send_settle_cmd(sa, true))
			return;
		rep = NULL;
	}
	if (rep != NULL && rep->type == REDIS_REPLY_ERROR)
		log_warn("limits: settle failed: %.120s", rep->str);
	/* Lost with the connection: it may or may not have run, and the
	 * script is idempotent, so send it again once Redis is back. */
	if (rep == NULL)
		queue_refund(sa->l, &sa->t, !sa->refund);
	free(sa);
}

/* Hand one settle to Redis; false when Redis is not there to take it
 * (sa stays the caller's). */
static bool
send_settle_cmd(struct settle_arg *sa, bool eval)
{
	const struct limits_ticket *t = &sa->t;
	char d[32], u[32], par[128], resv[128], rpm[128], gone[160];
	const char *argv[14];
	size_t len[14];

	/* A refund gives back what the check reserved: the ticket holds
	 * the numbers it sent. */
	snprintf(d, sizeof(d), "%ld", sa->refund ? -t->reserved_tokens : sa->dt);
	snprintf(u, sizeof(u), "%ld", sa->refund ? -t->reserved_micros : sa->du);
	len[6] = key_name(par, sizeof(par), t->hash, "par", NULL);
	len[7] = key_name(resv, sizeof(resv), t->hash, "resv", NULL);
	len[8] = key_name(rpm, sizeof(rpm), t->hash, "rpm", NULL);
	len[9] = key_name(gone, sizeof(gone), t->hash, "gone:", t->member);
	/* EVALSHA: the script's 800 bytes are neither sent nor hashed again by
	 * Redis on every request. */
	argv[0] = eval ? "EVAL" : "EVALSHA";
	argv[1] = eval ? settle_lua : sa->l->settle_sha;
	argv[2] = "7";
	argv[3] = t->tpm_key;
	argv[4] = t->tpd_key;
	argv[5] = t->usd_key;
	argv[6] = par;
	argv[7] = resv;
	argv[8] = rpm;
	argv[9] = gone;
	argv[10] = t->member;
	argv[11] = d;
	argv[12] = u;
	argv[13] = sa->refund ? "1" : "0";
	for (int i = 0; i < 14; i++)
		if (i < 6 || i > 9)
			len[i] = strlen(argv[i]);
	return redis_call(sa->l->redis, settle_reply, sa, 14, argv, len) != NULL;
}

/* Send one settle; false when Redis is not there to take it. */
static bool
send_settle(struct limits *l, const struct limits_ticket *t, long dt,
            long du, bool refund)
{
	struct settle_arg *sa = xcalloc(1, sizeof(*sa));

	sa->l = l;
	sa->t = *t;
	sa->dt = dt;
	sa->du = du;
	sa->refund = refund;
	if (!send_settle_cmd(sa, false)) {
		free(sa);
		return false;
	}
	return true;
}

/*
 * A check whose answer never came (timeout, client gone) may still have
 * reserved when Redis ran it: refund it once Redis is back. The refund is
 * harmless if the check never ran (the settle script finds no record),
 * and wins if the check runs after it (the tombstone it leaves).
 */
static void
queue_refund(struct limits *l, const struct limits_ticket *t, bool served)
{
	if (l->nrefunds == LIMITS_MAX_REFUNDS)
		return; /* bounded: the reservation expires with its windows */
	l->refunds[l->nrefunds].t = *t;
	l->refunds[l->nrefunds].queued_ms = now_ms();
	l->refunds[l->nrefunds].served = served;
	l->nrefunds++;
	if (!evtimer_pending(l->refund_timer, NULL)) {
		struct timeval tv = {0, 100000};
		evtimer_add(l->refund_timer, &tv);
	}
}

static void
refund_cb(evutil_socket_t fd, short what, void *arg)
{
	struct limits *l = arg;
	size_t kept = 0;
	uint64_t now = now_ms();

	(void)fd;
	(void)what;
	for (size_t i = 0; i < l->nrefunds; i++) {
		/* Ten minutes on, the windows have moved on anyway. */
		if (now - l->refunds[i].queued_ms > 600000)
			continue;
		/* A request that was served keeps its reservation (tokens and
		 * its place in the request log); only its slot in flight is
		 * released. One that never went out gets everything back. */
		if (!send_settle(l, &l->refunds[i].t, 0, 0, !l->refunds[i].served))
			l->refunds[kept++] = l->refunds[i];
	}
	l->nrefunds = kept;
	if (kept > 0) {
		struct timeval tv = {0, 100000};
		evtimer_add(l->refund_timer, &tv);
	}
}

/* Settles waiting for the loop: limits_settle runs as an answer ends,
 * before conn.c writes that answer (in the same loop turn, from an
 * event made active earlier); sent from here, after it, the settle
 * costs the client's answer nothing. */
static void
settles_cb(evutil_socket_t fd, short what, void *arg)
{
	struct limits *l = arg;
	struct settle_arg *sa = l->settles;

	(void)fd;
	(void)what;
	l->settles_pending = false;
	l->settles = NULL;
	l->settles_tail = &l->settles;
	while (sa != NULL) {
		struct settle_arg *next = sa->next;
		sa->next = NULL;
		if (!send_settle_cmd(sa, false)) {
			log_warn("limits: settle deferred (redis unavailable)");
			/* Without the real usage, keep the reservation (it was
			 * the worst case) and release the slot in flight later. */
			queue_refund(l, &sa->t, true);
			free(sa);
		}
		sa = next;
	}
}

void
limits_settle(struct limits *l, struct limits_ticket *t, long tokens,
              long micros, bool refund)
{
	struct settle_arg *sa;

	if (l == NULL || t == NULL || !t->active)
		return;
	t->active = false;
	sa = xcalloc(1, sizeof(*sa));
	sa->l = l;
	sa->t = *t;
	sa->refund = refund;
	if (!refund && tokens >= 0) {
		sa->dt = tokens - t->reserved_tokens;
		sa->du = micros - t->reserved_micros;
	}
	*l->settles_tail = sa;
	l->settles_tail = &sa->next;
	if (!l->settles_pending) {
		l->settles_pending = true;
		event_active(l->settles_ev, EV_TIMEOUT, 1);
	}
}
