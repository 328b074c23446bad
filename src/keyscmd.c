/*
 * keyscmd.c - the key commands. They run outside the event loop, so they
 * use hiredis' blocking API with a timeout. The key is printed once and
 * never stored: Redis holds its SHA-256 (the record's hash tag), limits
 * and metadata. The record layout is limits.c's. As Redis Cluster
 * requires, every command touches keys of one hash slot, so a key's
 * record and the index (scrim:id:ID, scrim:keys) are written by separate
 * commands, in the order keyadmin.c uses, safe should this process die
 * between them.
 */
#include "keyscmd.h"

#include "alloc.h"
#include "auth.h"
#include "config.h"
#include "context.h"
#include "keyadmin.h"
#include "redis.h"
#include "rules.h"

#include <hiredis/hiredis.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>

static void
usage(FILE *f)
{
	fprintf(f,
	        "usage: scrim keys COMMAND [-c FILE] [OPTIONS]\n\n"
	        "Virtual keys, kept in the Redis of [redis] url:\n"
	        "  create --name N [--rpm N] [--tpm N] [--tokens-per-day N]\n"
	        "         [--budget-usd-month X] [--max-parallel N] "
	        "[--models GLOB,...]\n"
	        "         [--expires YYYY-MM-DD] [--meta k=v]... "
	        "[--actions 'EMAIL=redact ...']\n"
	        "         [--indexes NAME,...|none]\n"
	        "                    make a key; it is printed once, Redis "
	        "keeps its SHA-256.\n"
	        "                    --indexes: the only local indexes whose "
	        "passages its\n"
	        "                    requests may receive (of those its route "
	        "names)\n"
	        "  list              every key with its limits\n"
	        "  show ID           one key\n"
	        "  revoke ID         refuse the key from now on\n"
	        "  rotate ID         a new key with the same id and limits; the "
	        "old one is revoked\n"
	        "  usage ID          use in the current minute, day and month\n"
	        "Config keys (no Redis):\n"
	        "  generate NAME     make a key and print its [keys] line\n");
}

static int
cmd_generate(int argc, char **argv)
{
	char *key, *line;

	if (argc != 1) {
		fprintf(stderr, "usage: scrim keys generate NAME\n");
		return 2;
	}
	if (argv[0][0] == '-' || argv[0][0] == '.' ||
	    strspn(argv[0], "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
	                    "0123456789-_.") != strlen(argv[0])) {
		fprintf(stderr, "scrim keys: NAME may hold letters, digits, "
		                "'-', '_' and '.', and starts with a letter or "
		                "digit\n");
		return 2;
	}
	key = auth_generate_key();
	line = key ? auth_key_hash_line(key) : NULL;
	if (line == NULL) {
		fprintf(stderr, "scrim keys: no randomness available\n");
		xfree_secret(key);
		return 1;
	}
	printf("key: %s\n", key);
	printf("# Give the key to the client; it is not stored anywhere.\n"
	       "# Add this line to the [keys] section of scrim.conf, then "
	       "reload (SIGHUP):\n");
	printf("%s = %s\n", argv[0], line);
	xfree_secret(key);
	free(line);
	return 0;
}

static redisContext *
connect_redis(const struct scrim_config *cfg)
{
	char host[256];
	int port, db;
	bool unix_socket;
	struct timeval tv = {2, 0};
	redisContext *rc;
	redisReply *r;

	if (*cfg->redis_url == '\0') {
		fprintf(stderr, "scrim keys: no [redis] url in %s: virtual keys "
		                "need Redis (use `scrim keys generate` for config "
		                "keys)\n", cfg->path);
		return NULL;
	}
	if (!redis_parse_url(cfg->redis_url, host, sizeof(host), &port, &db,
	                     &unix_socket)) {
		fprintf(stderr, "scrim keys: bad [redis] url\n");
		return NULL;
	}
	rc = unix_socket ? redisConnectUnixWithTimeout(host, tv)
	                 : redisConnectWithTimeout(host, port, tv);
	if (rc == NULL || rc->err) {
		fprintf(stderr, "scrim keys: cannot connect to Redis at %s: %s\n",
		        cfg->redis_url, rc ? rc->errstr : "out of memory");
		if (rc)
			redisFree(rc);
		return NULL;
	}
	redisSetTimeout(rc, tv);
	if (cfg->redis_password != NULL) {
		r = redisCommand(rc, "AUTH %s", cfg->redis_password);
		if (r == NULL || r->type == REDIS_REPLY_ERROR) {
			fprintf(stderr, "scrim keys: Redis AUTH failed\n");
			freeReplyObject(r);
			redisFree(rc);
			return NULL;
		}
		freeReplyObject(r);
	}
	if (db != 0) {
		r = redisCommand(rc, "SELECT %d", db);
		freeReplyObject(r);
	}
	return rc;
}

static bool
ok_reply(redisReply *r, const char *what)
{
	if (r == NULL || r->type == REDIS_REPLY_ERROR) {
		fprintf(stderr, "scrim keys: %s failed: %s\n", what,
		        r ? r->str : "no reply");
		freeReplyObject(r);
		return false;
	}
	freeReplyObject(r);
	return true;
}


struct limits_opts {
	const char *name;
	long rpm, tpm, tpd, maxpar;
	double budget;
	const char *models;
	const char *actions;
	const char *indexes;
	long expires;
	char meta[1024];
};

static bool
parse_long(const char *s, long *out)
{
	char *end;
	long v = strtol(s, &end, 10);
	if (*s == '\0' || *end || v < 0)
		return false;
	*out = v;
	return true;
}

static bool
parse_date(const char *s, long *out)
{
	struct tm tm;
	char *end;

	memset(&tm, 0, sizeof(tm));
	end = strptime(s, "%Y-%m-%d", &tm);
	if (end != NULL && *end == '\0') {
		*out = (long)timegm(&tm);
		return true;
	}
	return parse_long(s, out);
}

/* A new key record under hash h for id; nothing points at it yet. */
static bool
write_record(redisContext *rc, const char *h, const char *id,
             const struct limits_opts *o)
{
	char rec[128], rpm[24], tpm[24], tpd[24], budget[32], maxpar[24],
	    expires[24], created[24];

	snprintf(rec, sizeof(rec), "scrim:{%s}:key", h);
	snprintf(rpm, sizeof(rpm), "%ld", o->rpm);
	snprintf(tpm, sizeof(tpm), "%ld", o->tpm);
	snprintf(tpd, sizeof(tpd), "%ld", o->tpd);
	snprintf(budget, sizeof(budget), "%ld", (long)(o->budget * 1e6 + 0.5));
	snprintf(maxpar, sizeof(maxpar), "%ld", o->maxpar);
	snprintf(expires, sizeof(expires), "%ld", o->expires);
	snprintf(created, sizeof(created), "%ld", (long)time(NULL));
	{
		const char *argv[] = {"HSET", rec, "id", id, "name", o->name,
		                      "created", created, "revoked", "0", "rpm",
		                      rpm, "tpm", tpm, "tpd", tpd, "budget", budget,
		                      "maxpar", maxpar, "models",
		                      o->models ? o->models : "", "expires", expires,
		                      "meta", o->meta, "actions",
		                      o->actions ? o->actions : "", "indexes",
		                      o->indexes ? o->indexes : ""};
		return ok_reply(redisCommandArgv(rc, SCRIM_ARRAY_LEN(argv), argv,
		                                 NULL),
		                "HSET");
	}
}

/* Index a new record: the id names it, and list finds the id. Dying
 * between the two leaves an id list does not show, of a key never
 * printed. */
static bool
index_record(redisContext *rc, const char *h, const char *id)
{
	return ok_reply(redisCommand(rc, "SET scrim:id:%s %s", id, h), "SET") &&
	       ok_reply(redisCommand(rc, "SADD scrim:keys %s", id), "SADD");
}

/* The per-key script (keyadmin.c) on record h: "show" or "revoke". True
 * when the record was there. */
static bool
key_op(redisContext *rc, const char *h, const char *op)
{
	char rec[128];
	const char *argv[] = {"EVAL", keyadmin_key_lua, "1", rec, op};
	redisReply *r;
	bool ok;

	snprintf(rec, sizeof(rec), "scrim:{%s}:key", h);
	r = redisCommandArgv(rc, SCRIM_ARRAY_LEN(argv), argv, NULL);
	ok = r != NULL && r->type == REDIS_REPLY_STRING &&
	     strncmp(r->str, "{\"error\"", 8) != 0;
	if (r == NULL || r->type == REDIS_REPLY_ERROR)
		fprintf(stderr, "scrim keys: %s failed: %s\n", op,
		        r ? r->str : "no reply");
	freeReplyObject(r);
	return ok;
}

static int
cmd_create(redisContext *rc, int argc, char **argv)
{
	struct limits_opts o;
	unsigned char rnd[5];
	char id[32], h[65];
	char *key;
	size_t ml = 0;

	memset(&o, 0, sizeof(o));
	snprintf(o.meta, sizeof(o.meta), "{");
	ml = 1;
	for (int i = 0; i < argc; i++) {
		const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
		bool ok = v != NULL;
		if (strcmp(a, "--name") == 0 && v)
			o.name = v;
		else if (strcmp(a, "--rpm") == 0 && v)
			ok = parse_long(v, &o.rpm);
		else if (strcmp(a, "--tpm") == 0 && v)
			ok = parse_long(v, &o.tpm);
		else if (strcmp(a, "--tokens-per-day") == 0 && v)
			ok = parse_long(v, &o.tpd);
		else if (strcmp(a, "--max-parallel") == 0 && v)
			ok = parse_long(v, &o.maxpar);
		else if (strcmp(a, "--budget-usd-month") == 0 && v)
			ok = (o.budget = strtod(v, NULL)) > 0;
		else if (strcmp(a, "--models") == 0 && v)
			o.models = v;
		else if (strcmp(a, "--actions") == 0 && v)
			o.actions = v;
		else if (strcmp(a, "--indexes") == 0 && v && *v)
			o.indexes = v;
		else if (strcmp(a, "--expires") == 0 && v)
			ok = parse_date(v, &o.expires);
		else if (strcmp(a, "--meta") == 0 && v && strchr(v, '=')) {
			const char *eq = strchr(v, '=');
			int w = snprintf(o.meta + ml, sizeof(o.meta) - ml,
			                 "%s\"%.*s\":\"%s\"", ml > 1 ? "," : "",
			                 (int)(eq - v), v, eq + 1);
			ok = w > 0 && (size_t)w < sizeof(o.meta) - ml &&
			     !strpbrk(v, "\"\\");
			if (ok)
				ml += (size_t)w;
		} else
			ok = false;
		if (!ok) {
			fprintf(stderr, "scrim keys create: bad option '%s'%s%s\n", a,
			        v ? " " : "", v ? v : "");
			return 2;
		}
		i++;
	}
	if (o.name == NULL) {
		fprintf(stderr, "scrim keys create: --name is required\n");
		return 2;
	}
	if (o.actions != NULL) {
		char tmp[512], *save = NULL, *tok;
		snprintf(tmp, sizeof(tmp), "%s", o.actions);
		for (tok = strtok_r(tmp, " ,", &save); tok != NULL;
		     tok = strtok_r(NULL, " ,", &save)) {
			char *eq = strchr(tok, '=');
			enum scrub_action act;
			if (eq == NULL || eq == tok || !rules_action_parse(eq + 1, &act)) {
				fprintf(stderr, "scrim keys create: --actions: '%s' is not "
				                "RULE_OR_TYPE=action\n", tok);
				return 2;
			}
		}
	}
	if (o.indexes != NULL) {
		char why[120];

		if (!context_grant_valid(o.indexes, why, sizeof(why))) {
			fprintf(stderr, "scrim keys create: --indexes '%s': %s (or "
			                "'none')\n", o.indexes, why);
			return 2;
		}
	}
	snprintf(o.meta + ml, sizeof(o.meta) - ml, "}");
	if (RAND_bytes(rnd, sizeof(rnd)) != 1)
		return 1;
	snprintf(id, sizeof(id), "key_%02x%02x%02x%02x%02x", rnd[0], rnd[1],
	         rnd[2], rnd[3], rnd[4]);
	key = auth_generate_key();
	if (key == NULL)
		return 1;
	auth_key_hex(key, strlen(key), h);
	/* The record first: until the id is indexed nothing reaches it. */
	if (!write_record(rc, h, id, &o) || !index_record(rc, h, id)) {
		xfree_secret(key);
		return 1;
	}
	printf("key: %s\nid:  %s\n# The key is shown once; Redis keeps only "
	       "its SHA-256.\n", key, id);
	xfree_secret(key);
	return 0;
}

/* The hash of the key the id names now; quiet: say nothing if none. */
static bool
lookup(redisContext *rc, const char *id, char h[65], bool quiet)
{
	redisReply *r = redisCommand(rc, "GET scrim:id:%s", id);
	bool ok = r && r->type == REDIS_REPLY_STRING && r->len == 64 &&
	          strspn(r->str, "0123456789abcdef") == 64;

	if (ok)
		memcpy(h, r->str, 65);
	else if (!quiet)
		fprintf(stderr, "scrim keys: no key with id %s\n", id);
	freeReplyObject(r);
	return ok;
}

static bool
hash_of(redisContext *rc, const char *id, char h[65])
{
	return lookup(rc, id, h, false);
}

static redisReply *
record(redisContext *rc, const char *h)
{
	return redisCommand(rc, "HGETALL scrim:{%s}:key", h);
}

static const char *
field(const redisReply *r, const char *name)
{
	for (size_t i = 0; r && i + 1 < r->elements; i += 2)
		if (strcmp(r->element[i]->str, name) == 0)
			return r->element[i + 1]->str;
	return "";
}

static void
print_record(const redisReply *r, bool header)
{
	if (header)
		printf("%-16s %-16s %7s %9s %11s %10s %6s %-8s %s\n", "ID", "NAME",
		       "RPM", "TPM", "TOKENS/DAY", "USD/MONTH", "PAR", "STATE",
		       "MODELS");
	double budget = strtod(field(r, "budget"), NULL) / 1e6;
	long exp = strtol(field(r, "expires"), NULL, 10);
	const char *state = strcmp(field(r, "revoked"), "1") == 0 ? "revoked"
	                    : exp > 0 && exp <= time(NULL)          ? "expired"
	                                                             : "active";
	printf("%-16s %-16s %7s %9s %11s %10.2f %6s %-8s %s\n", field(r, "id"),
	       field(r, "name"), field(r, "rpm"), field(r, "tpm"),
	       field(r, "tpd"), budget, field(r, "maxpar"), state,
	       *field(r, "models") ? field(r, "models") : "*");
}

static int
cmd_list(redisContext *rc)
{
	redisReply *ids = redisCommand(rc, "SMEMBERS scrim:keys");
	bool header = true;

	if (ids == NULL || ids->type != REDIS_REPLY_ARRAY) {
		fprintf(stderr, "scrim keys: cannot list keys\n");
		freeReplyObject(ids);
		return 1;
	}
	for (size_t i = 0; i < ids->elements; i++) {
		char h[65];
		redisReply *r;
		/* An id whose map or record is gone is skipped: the index is
		 * written after the record and is not atomic with it. */
		if (ids->element[i]->type != REDIS_REPLY_STRING ||
		    !lookup(rc, ids->element[i]->str, h, true))
			continue;
		r = record(rc, h);
		if (r && r->type == REDIS_REPLY_ARRAY && r->elements > 0) {
			print_record(r, header);
			header = false;
		}
		freeReplyObject(r);
	}
	if (header)
		printf("no keys\n");
	freeReplyObject(ids);
	return 0;
}

static int
cmd_show(redisContext *rc, const char *id)
{
	char h[65];
	redisReply *r;

	if (!hash_of(rc, id, h))
		return 1;
	r = record(rc, h);
	if (r == NULL || r->type != REDIS_REPLY_ARRAY || r->elements == 0) {
		fprintf(stderr, "scrim keys: no key with id %s\n", id);
		freeReplyObject(r);
		return 1;
	}
	print_record(r, true);
	printf("meta: %s\ncreated: %s\n", field(r, "meta"), field(r, "created"));
	printf("actions: %s\nindexes: %s\n",
	       *field(r, "actions") ? field(r, "actions") : "(the route's)",
	       *field(r, "indexes") ? field(r, "indexes") : "(the route's)");
	freeReplyObject(r);
	return 0;
}

static int
cmd_revoke(redisContext *rc, const char *id)
{
	char h[65], now[65];

	if (!hash_of(rc, id, h))
		return 1;
	if (!key_op(rc, h, "revoke")) {
		fprintf(stderr, "scrim keys: no key with id %s\n", id);
		return 1;
	}
	/* A rotation elsewhere may have moved the id to a new record
	 * meanwhile: what is revoked is the key the id names. */
	for (int i = 0; i < 3 && lookup(rc, id, now, true) &&
	                    strcmp(now, h) != 0; i++) {
		memcpy(h, now, sizeof(h));
		(void)key_op(rc, h, "revoke");
	}
	printf("revoked %s\n", id);
	return 0;
}

static int
cmd_rotate(redisContext *rc, const char *id)
{
	char h[65], nh[65];
	redisReply *r;
	struct limits_opts o;
	char *key;
	int rc2 = 1;

	if (!hash_of(rc, id, h))
		return 1;
	r = record(rc, h);
	if (r == NULL || r->type != REDIS_REPLY_ARRAY || r->elements == 0) {
		fprintf(stderr, "scrim keys: no key with id %s\n", id);
		freeReplyObject(r);
		return 1;
	}
	memset(&o, 0, sizeof(o));
	o.name = field(r, "name");
	o.rpm = strtol(field(r, "rpm"), NULL, 10);
	o.tpm = strtol(field(r, "tpm"), NULL, 10);
	o.tpd = strtol(field(r, "tpd"), NULL, 10);
	o.maxpar = strtol(field(r, "maxpar"), NULL, 10);
	o.budget = strtod(field(r, "budget"), NULL) / 1e6;
	o.models = field(r, "models");
	o.actions = field(r, "actions");
	o.indexes = field(r, "indexes");
	o.expires = strtol(field(r, "expires"), NULL, 10);
	snprintf(o.meta, sizeof(o.meta), "%s", field(r, "meta"));
	key = auth_generate_key();
	if (key != NULL) {
		/* The new record, then the old key revoked, then the id moved
		 * (only if no other rotation moved it first). Dying before the
		 * end leaves at worst the id on a revoked key, and a record
		 * whose key was never printed; the other order could leave the
		 * old key working with no id left to revoke it by. */
		auth_key_hex(key, strlen(key), nh);
		if (write_record(rc, nh, id, &o) && key_op(rc, h, "revoke")) {
			redisReply *cas = redisCommand(rc, "EVAL %s 1 scrim:id:%s %s %s",
			                               keyadmin_repoint_lua, id, h, nh);
			if (cas != NULL && cas->type == REDIS_REPLY_INTEGER &&
			    cas->integer == 1) {
				printf("key: %s\nid:  %s\n# The old key is revoked; the "
				       "new one is shown once.\n", key, id);
				rc2 = 0;
			} else {
				fprintf(stderr, "scrim keys: %s was rotated meanwhile; "
				                "try again\n", id);
				(void)key_op(rc, nh, "revoke");
			}
			freeReplyObject(cas);
		}
	}
	xfree_secret(key);
	freeReplyObject(r);
	return rc2;
}

static long
get_long(redisContext *rc, const char *fmt, const char *h, const char *w)
{
	redisReply *r = redisCommand(rc, fmt, h, w);
	long v = 0;

	if (r && r->type == REDIS_REPLY_STRING)
		v = strtol(r->str, NULL, 10);
	else if (r && r->type == REDIS_REPLY_INTEGER)
		v = (long)r->integer;
	freeReplyObject(r);
	return v;
}

static int
cmd_usage(redisContext *rc, const char *id)
{
	char h[65], minute[32], day[16], month[8], since[32];
	struct timeval tv;
	struct tm tm;
	time_t secs;
	uint64_t now;
	redisReply *r;

	if (!hash_of(rc, id, h))
		return 1;
	gettimeofday(&tv, NULL);
	now = (uint64_t)tv.tv_sec * 1000 + (uint64_t)tv.tv_usec / 1000;
	secs = tv.tv_sec;
	gmtime_r(&secs, &tm);
	(void)strftime(day, sizeof(day), "%Y%m%d", &tm);
	(void)strftime(month, sizeof(month), "%Y%m", &tm);
	snprintf(minute, sizeof(minute), "%llu", (unsigned long long)(now / 60000));
	snprintf(since, sizeof(since), "%llu", (unsigned long long)(now - 60000));
	r = redisCommand(rc, "ZCOUNT scrim:{%s}:rpm %s +inf", h, since);
	printf("key %s\n", id);
	printf("  requests, last 60 s:   %lld\n",
	       r && r->type == REDIS_REPLY_INTEGER ? r->integer : 0LL);
	freeReplyObject(r);
	printf("  tokens, this minute:   %ld\n",
	       get_long(rc, "GET scrim:{%s}:tpm:%s", h, minute));
	printf("  tokens, today (UTC):   %ld\n",
	       get_long(rc, "GET scrim:{%s}:tpd:%s", h, day));
	printf("  USD, this month (UTC): %.6f\n",
	       (double)get_long(rc, "GET scrim:{%s}:usd:%s", h, month) / 1e6);
	printf("  in flight:             %ld\n",
	       get_long(rc, "GET scrim:{%s}:par%s", h, ""));
	return 0;
}

int
keyscmd_run(int argc, char **argv)
{
	const char *path = getenv("SCRIM_CONFIG");
	struct scrim_config *cfg;
	redisContext *rc;
	char *rest[64];
	int nrest = 0, ret;

	if (argc < 1 || strcmp(argv[0], "-h") == 0 ||
	    strcmp(argv[0], "--help") == 0) {
		usage(argc < 1 ? stderr : stdout);
		return argc < 1 ? 2 : 0;
	}
	for (int i = 1; i < argc; i++) {
		if (strcmp(argv[i], "-h") == 0 || strcmp(argv[i], "--help") == 0) {
			usage(stdout);
			return 0;
		}
	}
	if (strcmp(argv[0], "generate") == 0)
		return cmd_generate(argc - 1, argv + 1);
	if (path == NULL || *path == '\0')
		path = "/etc/scrim/scrim.conf";
	for (int i = 1; i < argc && nrest < 64; i++) {
		if ((strcmp(argv[i], "-c") == 0 || strcmp(argv[i], "--config") == 0)
		    && i + 1 < argc)
			path = argv[++i];
		else
			rest[nrest++] = argv[i];
	}
	cfg = config_load(path, true);
	if (cfg == NULL)
		return 1;
	rc = connect_redis(cfg);
	if (rc == NULL) {
		config_unref(cfg);
		return 1;
	}
	if (strcmp(argv[0], "create") == 0)
		ret = cmd_create(rc, nrest, rest);
	else if (strcmp(argv[0], "list") == 0 && nrest == 0)
		ret = cmd_list(rc);
	else if (strcmp(argv[0], "show") == 0 && nrest == 1)
		ret = cmd_show(rc, rest[0]);
	else if (strcmp(argv[0], "revoke") == 0 && nrest == 1)
		ret = cmd_revoke(rc, rest[0]);
	else if (strcmp(argv[0], "rotate") == 0 && nrest == 1)
		ret = cmd_rotate(rc, rest[0]);
	else if (strcmp(argv[0], "usage") == 0 && nrest == 1)
		ret = cmd_usage(rc, rest[0]);
	else {
		usage(stderr);
		ret = 2;
	}
	redisFree(rc);
	config_unref(cfg);
	return ret;
}
