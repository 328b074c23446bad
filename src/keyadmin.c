/*
 * keyadmin.c - see keyadmin.h. Redis Cluster runs a command or a script
 * only when every key it touches is in one slot, so each operation is a
 * short chain of steps, each within one slot: a key's own data ({H}, see
 * limits.c for the layout), the id -> hash map (scrim:id:ID) or the set
 * of ids (scrim:keys). The steps run in an order that leaves nothing
 * unsafe when scrim dies between two of them (the comments at each step
 * say why), and list skips index entries whose map or record is gone.
 */
#include "keyadmin.h"

#include "alloc.h"
#include "buf.h"
#include "log.h"
#include "redis.h"

#include <hiredis/hiredis.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/*
 * The per-key script, on one key's slot. KEYS: rec, and for usage rpm
 * tpm tpd usd par; ARGV: op ("show", "revoke", "usage"), then for usage
 * the id and the start of the last minute (ms). Records are read whole
 * and returned as JSON made by cjson, which Redis ships to scripts; a
 * record that is not there is "no such key", and revoking it does not
 * make one.
 */
const char keyadmin_key_lua[] =
    "local op = ARGV[1]\n"
    "if op == 'usage' then\n"
    "  return cjson.encode({id = ARGV[2],\n"
    "    requests_last_minute = redis.call('ZCOUNT', KEYS[2], ARGV[3], "
    "'+inf'),\n"
    "    tokens_this_minute = tonumber(redis.call('GET', KEYS[3]) or '0'),\n"
    "    tokens_today = tonumber(redis.call('GET', KEYS[4]) or '0'),\n"
    "    usd_this_month = (tonumber(redis.call('GET', KEYS[5]) or '0')) / "
    "1000000,\n"
    "    in_flight = tonumber(redis.call('GET', KEYS[6]) or '0')})\n"
    "end\n"
    "if op ~= 'show' and op ~= 'revoke' then\n"
    "  return cjson.encode({error = 'unknown operation'})\n"
    "end\n"
    "if redis.call('EXISTS', KEYS[1]) == 0 then\n"
    "  return cjson.encode({error = 'no such key'})\n"
    "end\n"
    "if op == 'revoke' then redis.call('HSET', KEYS[1], 'revoked', '1') end\n"
    "local f = redis.call('HGETALL', KEYS[1])\n"
    "local t = {}\n"
    "for i = 1, #f, 2 do t[f[i]] = f[i + 1] end\n"
    "return cjson.encode(t)\n";

/* KEYS: scrim:id:ID; ARGV: old hash, new hash. Points the id at the new
 * record only if it still points at the old one, so of two rotations
 * racing, one wins and the other is told, instead of leaving a live key
 * that no id reaches (and so no one can revoke). */
const char keyadmin_repoint_lua[] =
    "if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end\n"
    "redis.call('SET', KEYS[1], ARGV[2])\n"
    "return 1\n";

/* Ids whose lookups a list has in flight at once: enough to hide the
 * round trips, few enough that the request path, which shares the
 * connection, is not queued behind a long list. */
#define ADMIN_LIST_WINDOW 16
#define ADMIN_MAX_ARGS 16
/* A bound on a list's answer: 64 MiB is some 100,000 keys. */
#define ADMIN_LIST_MAX (64 << 20)

enum admin_kind { AK_LIST, AK_CREATE, AK_SHOW, AK_REVOKE, AK_ROTATE, AK_USAGE };

enum admin_stage {
	AS_LOOKUP,      /* GET scrim:id:ID */
	AS_SHOW,        /* the key script's show: the answer */
	AS_REVOKE,      /* revoke: the key script's revoke */
	AS_RECHECK,     /* revoke: GET scrim:id:ID again */
	AS_RECORD,      /* rotate: HGETALL of the old record */
	AS_WRITE,       /* create, rotate: HSET of the new record */
	AS_REVOKE_OLD,  /* rotate: revoke the old record */
	AS_REPOINT,     /* rotate: the id to the new record */
	AS_UNDO,        /* rotate lost a race: revoke the new record */
	AS_INDEX_ID,    /* create: SET scrim:id:ID */
	AS_INDEX_SET,   /* create: SADD scrim:keys */
	AS_USAGE,       /* usage: the key script's usage: the answer */
	AS_MEMBERS,     /* list: SMEMBERS scrim:keys */
	AS_ITEM_LOOKUP, /* list: GET scrim:id:ID of one id */
	AS_ITEM_SHOW,   /* list: the key script's show of one id */
};

struct admin_job {
	struct scrim_redis *r;
	enum admin_kind kind;
	keyadmin_cb cb;
	void *arg;
	unsigned pending;      /* calls in flight */
	bool failed;           /* Redis did not answer, or said an error */
	char *answer;          /* JSON for cb, once known */
	char id[64];
	char h[65], nh[65];    /* the record's hash; rotate: the new one */
	char *args[ADMIN_MAX_ARGS];
	size_t nargs;
	int rechecks;          /* revoke: ids repointed under it */
	/* list */
	char **ids;
	char **recs;           /* a record's JSON per id, NULL if gone */
	size_t nids, next;
};

struct admin_call {
	struct admin_job *j;
	enum admin_stage stage;
	size_t idx;            /* list: which id */
};

static const char no_such_key[] = "{\"error\":\"no such key\"}";

static void admin_reply(void *arg, redisReply *rep);

/* Send one step; false when Redis is not there to take it. lens may be
 * NULL for C strings. */
static bool
admin_send(struct admin_job *j, enum admin_stage stage, size_t idx, int argc,
           const char **argv, const size_t *lens)
{
	size_t len[64];
	struct admin_call *ac;

	if (argc > (int)SCRIM_ARRAY_LEN(len) && lens == NULL)
		abort(); /* a programming error: our commands are short */
	if (lens == NULL) {
		for (int i = 0; i < argc; i++)
			len[i] = strlen(argv[i]);
		lens = len;
	}
	ac = xcalloc(1, sizeof(*ac));
	ac->j = j;
	ac->stage = stage;
	ac->idx = idx;
	if (redis_call(j->r, admin_reply, ac, argc, argv, lens) == NULL) {
		free(ac);
		j->failed = true;
		return false;
	}
	j->pending++;
	return true;
}

/* The key script on record h: show or revoke. */
static bool
admin_key_op(struct admin_job *j, enum admin_stage stage, size_t idx,
             const char *h, const char *op)
{
	char rec[128];
	const char *argv[] = {"EVAL", keyadmin_key_lua, "1", rec, op};

	snprintf(rec, sizeof(rec), "scrim:{%s}:key", h);
	return admin_send(j, stage, idx, SCRIM_ARRAY_LEN(argv), argv, NULL);
}

static bool
admin_lookup(struct admin_job *j, enum admin_stage stage, size_t idx,
             const char *id)
{
	char idkey[128];
	const char *argv[] = {"GET", idkey};

	snprintf(idkey, sizeof(idkey), "scrim:id:%s", id);
	return admin_send(j, stage, idx, 2, argv, NULL);
}

/* A hash as the index holds it: 64 hex digits, or the id has no key. */
static bool
reply_hash(const redisReply *rep, char out[65])
{
	if (rep->type != REDIS_REPLY_STRING || rep->len != 64 ||
	    strspn(rep->str, "0123456789abcdef") != 64)
		return false;
	memcpy(out, rep->str, 64);
	out[64] = '\0';
	return true;
}

static void
admin_answer(struct admin_job *j, const char *json, size_t len)
{
	free(j->answer);
	j->answer = xmalloc(len + 1);
	memcpy(j->answer, json, len);
	j->answer[len] = '\0';
}

/* list: keep ADMIN_LIST_WINDOW ids in flight; once all are answered, the
 * answer is the records found, in the set's order. */
static void
admin_list_pump(struct admin_job *j)
{
	struct buf b;
	bool ok;

	while (!j->failed && j->next < j->nids &&
	       j->pending < ADMIN_LIST_WINDOW) {
		admin_lookup(j, AS_ITEM_LOOKUP, j->next, j->ids[j->next]);
		j->next++;
	}
	if (j->failed || j->pending > 0 || j->next < j->nids)
		return;
	/* The records are cjson's JSON objects: joined as they are. */
	buf_init(&b, ADMIN_LIST_MAX);
	ok = buf_add(&b, "{\"keys\":[", 9);
	for (size_t i = 0, n = 0; ok && i < j->nids; i++) {
		if (j->recs[i] == NULL)
			continue;
		ok = (n++ == 0 || buf_addc(&b, ',')) &&
		     buf_add(&b, j->recs[i], strlen(j->recs[i]));
	}
	if (ok && buf_add(&b, "]}", 2))
		admin_answer(j, b.p, b.len);
	else
		log_warn("keyadmin: the list is over %d MiB",
		         ADMIN_LIST_MAX >> 20);
	buf_free(&b);
}

static void
admin_step(struct admin_job *j, const struct admin_call *ac,
           const redisReply *rep)
{
	switch (ac->stage) {
	case AS_LOOKUP:
		if (!reply_hash(rep, j->h)) {
			admin_answer(j, no_such_key, sizeof(no_such_key) - 1);
			return;
		}
		if (j->kind == AK_SHOW) {
			admin_key_op(j, AS_SHOW, 0, j->h, "show");
		} else if (j->kind == AK_REVOKE) {
			admin_key_op(j, AS_REVOKE, 0, j->h, "revoke");
		} else if (j->kind == AK_ROTATE) {
			char rec[128];
			const char *argv[] = {"HGETALL", rec};
			snprintf(rec, sizeof(rec), "scrim:{%s}:key", j->h);
			admin_send(j, AS_RECORD, 0, 2, argv, NULL);
		} else if (j->kind == AK_USAGE) {
			/* args: id minute day month since */
			char k[6][160];
			const char *argv[] = {"EVAL", keyadmin_key_lua, "6", k[0], k[1],
			                      k[2], k[3], k[4], k[5], "usage", j->id,
			                      j->args[4]};
			snprintf(k[0], sizeof(k[0]), "scrim:{%s}:key", j->h);
			snprintf(k[1], sizeof(k[1]), "scrim:{%s}:rpm", j->h);
			snprintf(k[2], sizeof(k[2]), "scrim:{%s}:tpm:%s", j->h,
			         j->args[1]);
			snprintf(k[3], sizeof(k[3]), "scrim:{%s}:tpd:%s", j->h,
			         j->args[2]);
			snprintf(k[4], sizeof(k[4]), "scrim:{%s}:usd:%s", j->h,
			         j->args[3]);
			snprintf(k[5], sizeof(k[5]), "scrim:{%s}:par", j->h);
			admin_send(j, AS_USAGE, 0, SCRIM_ARRAY_LEN(argv), argv, NULL);
		}
		return;
	case AS_SHOW:
	case AS_USAGE:
		if (rep->type == REDIS_REPLY_STRING)
			admin_answer(j, rep->str, rep->len);
		return;
	case AS_REVOKE:
		if (rep->type != REDIS_REPLY_STRING)
			return;
		admin_answer(j, rep->str, rep->len);
		/* A rotation may have pointed the id at a new record meanwhile:
		 * look again, so that what is revoked is the id's key. */
		admin_lookup(j, AS_RECHECK, 0, j->id);
		return;
	case AS_RECHECK: {
		char h[65];
		if (!reply_hash(rep, h) || strcmp(h, j->h) == 0 ||
		    ++j->rechecks > 3)
			return;
		memcpy(j->h, h, sizeof(h));
		admin_key_op(j, AS_REVOKE, 0, j->h, "revoke");
		return;
	}
	case AS_RECORD: {
		/* rotate, 1: a copy of the record under the new hash, not
		 * revoked. Nobody has its key yet, and the id still points at
		 * the old one: dying here leaves an unreachable record. */
		char rec[128];
		const char **argv;
		size_t *lens, n = 0;

		if (rep->type != REDIS_REPLY_ARRAY || rep->elements == 0 ||
		    rep->elements % 2 != 0) {
			admin_answer(j, no_such_key, sizeof(no_such_key) - 1);
			return;
		}
		argv = xcalloc(rep->elements + 4, sizeof(*argv));
		lens = xcalloc(rep->elements + 4, sizeof(*lens));
		snprintf(rec, sizeof(rec), "scrim:{%s}:key", j->nh);
		argv[n] = "HSET";
		lens[n++] = 4;
		argv[n] = rec;
		lens[n++] = strlen(rec);
		for (size_t i = 0; i < rep->elements; i++) {
			if (rep->element[i]->type != REDIS_REPLY_STRING)
				break;
			argv[n] = rep->element[i]->str;
			lens[n++] = rep->element[i]->len;
		}
		argv[n] = "revoked"; /* the last value of a field wins */
		lens[n++] = 7;
		argv[n] = "0";
		lens[n++] = 1;
		if (n == rep->elements + 4)
			admin_send(j, AS_WRITE, 0, (int)n, argv, lens);
		free(argv);
		free(lens);
		return;
	}
	case AS_WRITE:
		if (j->kind == AK_ROTATE) {
			/* rotate, 2: the old key stops working before the id
			 * moves. Dying here leaves the id on a revoked key; the
			 * next rotate starts from it. The other order could leave
			 * the old key working with no id left to revoke it by. */
			admin_key_op(j, AS_REVOKE_OLD, 0, j->h, "revoke");
		} else {
			/* create, 2: the record exists, now index it. Its key
			 * is shown only once all is done. */
			char idkey[128];
			const char *argv[] = {"SET", idkey, j->args[0]};
			snprintf(idkey, sizeof(idkey), "scrim:id:%s", j->id);
			admin_send(j, AS_INDEX_ID, 0, 3, argv, NULL);
		}
		return;
	case AS_REVOKE_OLD: {
		/* rotate, 3: the id to the new record, unless another rotation
		 * moved it first. */
		char idkey[128];
		const char *argv[] = {"EVAL", keyadmin_repoint_lua, "1", idkey, j->h,
		                      j->nh};
		snprintf(idkey, sizeof(idkey), "scrim:id:%s", j->id);
		admin_send(j, AS_REPOINT, 0, SCRIM_ARRAY_LEN(argv), argv, NULL);
		return;
	}
	case AS_REPOINT:
		if (rep->type == REDIS_REPLY_INTEGER && rep->integer == 1) {
			admin_key_op(j, AS_SHOW, 0, j->nh, "show");
			return;
		}
		{
			static const char raced[] =
			    "{\"error\":\"the key was rotated meanwhile; try "
			    "again\"}";
			admin_answer(j, raced, sizeof(raced) - 1);
			/* Its key is never shown: disable it anyway. */
			admin_key_op(j, AS_UNDO, 0, j->nh, "revoke");
		}
		return;
	case AS_UNDO:
		return;
	case AS_INDEX_ID: {
		const char *argv[] = {"SADD", "scrim:keys", j->id};
		admin_send(j, AS_INDEX_SET, 0, 3, argv, NULL);
		return;
	}
	case AS_INDEX_SET:
		admin_key_op(j, AS_SHOW, 0, j->args[0], "show");
		return;
	case AS_MEMBERS:
		if (rep->type != REDIS_REPLY_ARRAY) {
			j->failed = true;
			return;
		}
		j->ids = xcalloc(rep->elements + 1, sizeof(*j->ids));
		j->recs = xcalloc(rep->elements + 1, sizeof(*j->recs));
		for (size_t i = 0; i < rep->elements; i++)
			if (rep->element[i]->type == REDIS_REPLY_STRING)
				j->ids[j->nids++] = xstrdup(rep->element[i]->str);
		admin_list_pump(j);
		return;
	case AS_ITEM_LOOKUP: {
		char h[65];
		/* An id whose map is gone is skipped, as its record would be. */
		if (reply_hash(rep, h))
			admin_key_op(j, AS_ITEM_SHOW, ac->idx, h, "show");
		admin_list_pump(j);
		return;
	}
	case AS_ITEM_SHOW:
		if (rep->type == REDIS_REPLY_STRING && rep->len > 0 &&
		    strncmp(rep->str, "{\"error\"", 8) != 0)
			j->recs[ac->idx] = xstrdup(rep->str);
		admin_list_pump(j);
		return;
	}
}

static void
admin_job_free(struct admin_job *j)
{
	for (size_t i = 0; i < j->nargs; i++)
		free(j->args[i]);
	for (size_t i = 0; i < j->nids; i++) {
		free(j->ids[i]);
		free(j->recs[i]);
	}
	free(j->ids);
	free(j->recs);
	free(j->answer);
	free(j);
}

static void
admin_reply(void *arg, redisReply *rep)
{
	struct admin_call *ac = arg;
	struct admin_job *j = ac->j;

	j->pending--;
	if (rep == NULL) {
		j->failed = true;
	} else if (rep->type == REDIS_REPLY_ERROR) {
		log_warn("keyadmin: redis error: %.120s", rep->str);
		j->failed = true;
	} else if (!j->failed) {
		admin_step(j, ac, rep);
	}
	free(ac);
	/* Nothing more to wait for: answer (NULL when a step failed, or
	 * when none of them made an answer). */
	if (j->pending == 0) {
		const char *a = j->failed ? NULL : j->answer;
		j->cb(j->arg, a, a ? strlen(a) : 0);
		admin_job_free(j);
	}
}

/*
 * The ops and their args:
 *   list                  none
 *   create                hash id name created rpm tpm tpd budget maxpar
 *                         models expires meta actions indexes
 *   show, revoke          id
 *   rotate                id, the new key's hash
 *   usage                 id minute day month since (the window names
 *                         and the first millisecond of the last minute)
 * The answer is the record (list: {"keys": [records]}; usage: counts).
 */
bool
keyadmin_start(struct scrim_redis *r, const char *op,
               const char *const *args, size_t nargs, keyadmin_cb cb,
               void *arg)
{
	static const struct {
		const char *name;
		enum admin_kind kind;
		size_t nargs;
	} ops[] = {{"list", AK_LIST, 0},     {"create", AK_CREATE, 14},
	           {"show", AK_SHOW, 1},     {"revoke", AK_REVOKE, 1},
	           {"rotate", AK_ROTATE, 2}, {"usage", AK_USAGE, 5}};
	struct admin_job *j;
	size_t k;
	bool sent;

	if (r == NULL || nargs > ADMIN_MAX_ARGS)
		return false;
	for (k = 0; k < SCRIM_ARRAY_LEN(ops); k++)
		if (strcmp(op, ops[k].name) == 0 && nargs == ops[k].nargs)
			break;
	if (k == SCRIM_ARRAY_LEN(ops))
		return false;
	j = xcalloc(1, sizeof(*j));
	j->r = r;
	j->kind = ops[k].kind;
	j->cb = cb;
	j->arg = arg;
	for (size_t i = 0; i < nargs; i++)
		j->args[i] = xstrdup(args[i]);
	j->nargs = nargs;
	switch (j->kind) {
	case AK_LIST: {
		const char *argv[] = {"SMEMBERS", "scrim:keys"};
		sent = admin_send(j, AS_MEMBERS, 0, 2, argv, NULL);
		break;
	}
	case AK_CREATE: {
		/* args: h id name created rpm tpm tpd budget maxpar models
		 * expires meta actions indexes. create, 1: the record, which
		 * nothing reaches until the id is indexed. */
		char rec[128];
		const char *argv[] = {
		    "HSET",    rec,          "id",      args[1],  "name",
		    args[2],   "created",    args[3],   "revoked", "0",
		    "rpm",     args[4],      "tpm",     args[5],  "tpd",
		    args[6],   "budget",     args[7],   "maxpar", args[8],
		    "models",  args[9],      "expires", args[10], "meta",
		    args[11],  "actions",    args[12],  "indexes", args[13]};
		snprintf(j->id, sizeof(j->id), "%s", args[1]);
		snprintf(rec, sizeof(rec), "scrim:{%s}:key", args[0]);
		sent = admin_send(j, AS_WRITE, 0, SCRIM_ARRAY_LEN(argv), argv, NULL);
		break;
	}
	default:
		snprintf(j->id, sizeof(j->id), "%s", args[0]);
		if (j->kind == AK_ROTATE)
			snprintf(j->nh, sizeof(j->nh), "%s", args[1]);
		sent = admin_lookup(j, AS_LOOKUP, 0, j->id);
		break;
	}
	if (!sent) {
		admin_job_free(j);
		return false;
	}
	return true;
}
