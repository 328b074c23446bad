/*
 * config.c - reads the INI file into a snapshot, driven by one table of
 * keys per section (name, type, bounds, default), validates the whole, and
 * resolves provider keys from the environment or key files.
 *
 * The line syntax is ini.c's, shared with the rule packs.
 */
#include "config.h"

#include "alloc.h"
#include "embed.h"
#include "ini.h"
#include "rules.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <netinet/in.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#define CONFIG_MAX_FILE (1024 * 1024)
#define CONFIG_MAX_ERRORS 20

enum cfg_type {
	T_STR,      /* char * */
	T_SIZE,     /* long, bytes with k/m/g */
	T_DURATION, /* long, milliseconds */
	T_UINT,     /* long */
	T_CHOICE,   /* long, index into choices */
	T_STRLIST,  /* repeatable: char ** + count after it */
	T_WORDS,    /* space-separated: char ** + count after it */
};

#define RESTART 0x1 /* applies only at start; reload keeps the old value */

struct cfg_def {
	const char *name;
	enum cfg_type type;
	size_t off;
	unsigned flags;
	const char *def; /* NULL: no default */
	long min, max;
	const char *const *choices;
};

static const char *const auth_choices[] = {"bearer", "x-api-key", "none", NULL};
static const char *const deny_tunnel[] = {"deny", "tunnel", NULL};
static const char *const keys_off[] = {"keys", "off", NULL};
static const char *const no_yes[] = {"no", "yes", NULL};
static const char *const replace_pass[] = {"replace", "pass", NULL};
static const char *const closed_open[] = {"closed", "open", NULL};
static const char *const fsync_modes[] = {"always", "interval", "never", NULL};
static const char *const block_continue[] = {"block", "continue", NULL};
static const char *const addr_modes[] = {"full", "truncated", "none", NULL};
/* In enum embed_kind's order. */
static const char *const embedders[] = {"builtin", "openai", NULL};
static const char *const optional_required[] = {"optional", "required", NULL};

#define G(f) offsetof(struct scrim_config, f)
/* Alphabetical, so `scrim check` and docs list keys in one order. */
static const struct cfg_def gateway_defs[] = {
	{"admin_listen", T_STR, G(admin_listen), RESTART, "127.0.0.1:8081", 0, 0, NULL},
	{"auth", T_STR, G(auth), 0, "keys", 0, 0, NULL},
	{"body_min_rate", T_SIZE, G(body_min_rate), 0, "4k", 0, 1L << 30, NULL},
	{"body_timeout", T_DURATION, G(body_timeout_ms), 0, "10s", 100, 3600000, NULL},
	{"drain_timeout", T_DURATION, G(drain_timeout_ms), 0, "30s", 0, 3600000, NULL},
	{"egress_proxy", T_STR, G(egress_proxy), 0, "", 0, 0, NULL},
	{"header_timeout", T_DURATION, G(header_timeout_ms), 0, "10s", 100, 600000, NULL},
	{"idle_timeout", T_DURATION, G(idle_timeout_ms), 0, "60s", 100, 86400000, NULL},
	{"listen", T_STR, G(listen), RESTART, "127.0.0.1:8080", 0, 0, NULL},
	{"local_provider", T_STR, G(local_provider), 0, "", 0, 0, NULL},
	{"log_level", T_STR, G(log_level_str), 0, "info", 0, 0, NULL},
	{"max_body_size", T_SIZE, G(max_body_size), 0, "8m", 1024, 1L << 30, NULL},
	{"max_connections", T_UINT, G(max_connections), 0, "10000", 1, 1000000, NULL},
	{"max_header_size", T_SIZE, G(max_header_size), 0, "16k", 1024, 1L << 20, NULL},
	{"max_headers", T_UINT, G(max_headers), 0, "100", 8, 10000, NULL},
	{"max_request_line", T_SIZE, G(max_request_line), 0, "8k", 256, 1L << 20, NULL},
	{"max_response_size", T_SIZE, G(max_response_size), 0, "32m", 4096, 1L << 30, NULL},
	{"rules_dir", T_STR, G(rules_dir), 0, "/etc/scrim/rules", 0, 0, NULL},
	{"scrub", T_STR, G(scrub), 0, "on", 0, 0, NULL},
	{"scrub_secret_file", T_STR, G(scrub_secret_file), 0, "", 0, 0, NULL},
	{"send_timeout", T_DURATION, G(send_timeout_ms), 0, "60s", 100, 3600000, NULL},
	{"state_dir", T_STR, G(state_dir), 0, "/var/lib/scrim", 0, 0, NULL},
};

/* [proxy] lives in the same struct; alphabetical too. */
static const struct cfg_def proxy_defs[] = {
	{"allow_private", T_CHOICE, G(allow_private), 0, "no", 0, 0, no_yes},
	{"auth", T_CHOICE, G(proxy_auth), 0, "keys", 0, 0, keys_off},
	{"client_keys", T_CHOICE, G(client_keys), 0, "replace", 0, 0, replace_pass},
	{"default", T_CHOICE, G(proxy_default), 0, "deny", 0, 0, deny_tunnel},
	{"intercept", T_WORDS, G(intercept), 0,
	 "api.openai.com api.anthropic.com generativelanguage.googleapis.com "
	 "api.mistral.ai api.deepseek.com openrouter.ai api.groq.com "
	 "api.together.xyz *.openai.azure.com", 0, 0, NULL},
	{"leaf_cache", T_UINT, G(leaf_cache), 0, "1000", 1, 100000, NULL},
	{"mode", T_STR, G(proxy_mode), 0, "on", 0, 0, NULL},
	{"ports", T_WORDS, G(ports), 0, "443", 0, 0, NULL},
	{"resolve", T_STRLIST, G(resolve), 0, NULL, 0, 0, NULL},
	{"tunnel", T_WORDS, G(tunnel), 0, "", 0, 0, NULL},
};

static const struct cfg_def redis_defs[] = {
	{"admin_token_env", T_STR, G(admin_token_env), 0, "", 0, 0, NULL},
	{"admin_token_file", T_STR, G(admin_token_file), 0, "", 0, 0, NULL},
	{"default_max_tokens", T_UINT, G(default_max_tokens), 0, "4096", 1, 10000000, NULL},
	{"fail_mode", T_CHOICE, G(fail_open), 0, "closed", 0, 0, closed_open},
	{"password_env", T_STR, G(redis_password_env), 0, "", 0, 0, NULL},
	{"password_file", T_STR, G(redis_password_file), 0, "", 0, 0, NULL},
	{"timeout", T_DURATION, G(redis_timeout_ms), 0, "50ms", 1, 60000, NULL},
	{"url", T_STR, G(redis_url), 0, "", 0, 0, NULL},
};

static const struct cfg_def audit_defs[] = {
	{"client_address", T_CHOICE, G(audit_client_address), 0, "truncated", 0, 0, addr_modes},
	{"file", T_STR, G(audit_file), 0, "", 0, 0, NULL},
	{"fsync", T_CHOICE, G(audit_fsync), 0, "interval", 0, 0, fsync_modes},
	{"fsync_interval", T_DURATION, G(audit_fsync_interval_ms), 0, "1s", 1, 3600000, NULL},
	{"key_file", T_STR, G(audit_key_file), 0, "", 0, 0, NULL},
	{"mode", T_STR, G(audit_mode), 0, "on", 0, 0, NULL},
	{"on_failure", T_CHOICE, G(audit_block), 0, "block", 0, 0, block_continue},
	{"queue", T_UINT, G(audit_queue), 0, "10000", 16, 10000000, NULL},
	{"redis_stream", T_STR, G(audit_redis_stream), 0, "", 0, 0, NULL},
	{"redis_stream_maxlen", T_UINT, G(audit_redis_maxlen), 0, "100000", 1, 1000000000, NULL},
	{"store_scrubbed_body", T_CHOICE, G(audit_store_bodies), 0, "no", 0, 0, no_yes},
	{"syslog", T_CHOICE, G(audit_syslog), 0, "no", 0, 0, no_yes},
};
#undef G

#define P(f) offsetof(struct cfg_provider, f)
static const struct cfg_def provider_defs[] = {
	{"api_key_env", T_STR, P(api_key_env), 0, NULL, 0, 0, NULL},
	{"api_key_file", T_STR, P(api_key_file), 0, NULL, 0, 0, NULL},
	{"auth_header", T_CHOICE, P(auth_header), 0, "bearer", 0, 0, auth_choices},
	{"base_url", T_STR, P(base_url), 0, NULL, 0, 0, NULL},
	{"ca_file", T_STR, P(ca_file), 0, NULL, 0, 0, NULL},
	{"connect_timeout", T_DURATION, P(connect_timeout_ms), 0, "10s", 10, 600000, NULL},
	{"header", T_STRLIST, P(headers), 0, NULL, 0, 0, NULL},
	{"timeout", T_DURATION, P(timeout_ms), 0, "10m", 10, 86400000, NULL},
};
#undef P

#define X(f) offsetof(struct cfg_index, f)
static const struct cfg_def index_defs[] = {
	{"dim", T_UINT, X(dim), 0, "512", EMBED_MIN_DIM, EMBED_MAX_DIM, NULL},
	{"embed_api_key_env", T_STR, X(embed_api_key_env), 0, "", 0, 0, NULL},
	{"embed_api_key_file", T_STR, X(embed_api_key_file), 0, "", 0, 0, NULL},
	{"embed_batch", T_UINT, X(embed_batch), 0, "32", 1, 256, NULL},
	{"embed_model", T_STR, X(embed_model), 0, "", 0, 0, NULL},
	{"embed_query_timeout", T_DURATION, X(embed_query_timeout_ms), 0, "2s", 10, 60000, NULL},
	{"embed_remote", T_CHOICE, X(embed_remote), 0, "no", 0, 0, no_yes},
	{"embed_timeout", T_DURATION, X(embed_timeout_ms), 0, "60s", 10, 3600000, NULL},
	{"embed_url", T_STR, X(embed_url), 0, "", 0, 0, NULL},
	{"embedder", T_CHOICE, X(embedder), 0, "builtin", 0, 0, embedders},
	{"encrypt_key_file", T_STR, X(encrypt_key_file), 0, "", 0, 0, NULL},
};
#undef X

#define R(f) offsetof(struct cfg_route, f)
static const struct cfg_def route_defs[] = {
	{"actions", T_WORDS, R(actions), 0, NULL, 0, 0, NULL},
	{"context", T_STR, R(context), 0, "off", 0, 0, NULL},
	{"context_grants", T_CHOICE, R(context_grants), 0, "optional", 0, 0, optional_required},
	{"context_index", T_WORDS, R(context_index), 0, "default", 0, 0, NULL},
	{"context_max_tokens", T_UINT, R(context_max_tokens), 0, "1500", 50, 100000, NULL},
	{"context_top_k", T_UINT, R(context_top_k), 0, "4", 1, 32, NULL},
	{"models", T_WORDS, R(models), 0, NULL, 0, 0, NULL},
	{"prefix", T_STR, R(prefix), 0, NULL, 0, 0, NULL},
	{"provider", T_STR, R(provider_name), 0, NULL, 0, 0, NULL},
	{"strip", T_STR, R(strip), 0, NULL, 0, 0, NULL},
};
#undef R

struct loader {
	const char *path;
	bool to_stderr;
	int errors;
	struct scrim_config *cfg;
	/* Section being read. */
	enum {
		SEC_NONE,
		SEC_GATEWAY,
		SEC_KEYS,
		SEC_PROXY,
		SEC_REDIS,
		SEC_AUDIT,
		SEC_PRICES,
		SEC_PROVIDER,
		SEC_ROUTE,
		SEC_INDEX
	} sec;
	void *obj;
	const struct cfg_def *defs;
	size_t ndefs;
	unsigned char *seen; /* one flag per def of the current section */
	unsigned char gateway_seen[SCRIM_ARRAY_LEN(gateway_defs)];
	int gateway_line[SCRIM_ARRAY_LEN(gateway_defs)];
	unsigned char proxy_seen[SCRIM_ARRAY_LEN(proxy_defs)];
	unsigned char redis_seen[SCRIM_ARRAY_LEN(redis_defs)];
	unsigned char audit_seen[SCRIM_ARRAY_LEN(audit_defs)];
	bool index_seen;        /* an [index] section was read */
};

/* The list helpers write the count right after the array pointer. */
_Static_assert(offsetof(struct cfg_provider, nheaders) ==
                   offsetof(struct cfg_provider, headers) + sizeof(char **),
               "headers and nheaders must be adjacent");
_Static_assert(offsetof(struct cfg_route, nmodels) ==
                   offsetof(struct cfg_route, models) + sizeof(char **),
               "models and nmodels must be adjacent");
_Static_assert(offsetof(struct cfg_route, nactions) ==
                   offsetof(struct cfg_route, actions) + sizeof(char **),
               "actions lists");
_Static_assert(offsetof(struct cfg_route, ncontext_index) ==
                   offsetof(struct cfg_route, context_index) + sizeof(char **),
               "context_index lists");
_Static_assert(offsetof(struct scrim_config, nintercept) ==
                   offsetof(struct scrim_config, intercept) + sizeof(char **),
               "intercept lists");
_Static_assert(offsetof(struct scrim_config, ntunnel) ==
                   offsetof(struct scrim_config, tunnel) + sizeof(char **),
               "tunnel lists");
_Static_assert(offsetof(struct scrim_config, nports) ==
                   offsetof(struct scrim_config, ports) + sizeof(char **),
               "port lists");
_Static_assert(offsetof(struct scrim_config, nresolve) ==
                   offsetof(struct scrim_config, resolve) + sizeof(char **),
               "resolve lists");

/* Line where a [gateway] key was set, 0 when it kept its default. */
static int
gline(const struct loader *ld, const char *key)
{
	for (size_t i = 0; i < SCRIM_ARRAY_LEN(gateway_defs); i++)
		if (strcmp(gateway_defs[i].name, key) == 0)
			return ld->gateway_line[i];
	return 0;
}

SCRIM_PRINTF(3, 4) static void
complain(struct loader *ld, int line, const char *fmt, ...)
{
	char msg[512];
	va_list ap;

	va_start(ap, fmt);
	(void)vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	ld->errors++;
	if (ld->errors > CONFIG_MAX_ERRORS)
		return;
	if (ld->to_stderr && line > 0)
		fprintf(stderr, "%s:%d: %s\n", ld->path, line, msg);
	else if (ld->to_stderr)
		fprintf(stderr, "%s: %s\n", ld->path, msg);
	else
		log_error("config %s:%d: %s", ld->path, line, msg);
}

SCRIM_PRINTF(3, 4) static void
warn(struct loader *ld, int line, const char *fmt, ...)
{
	char msg[512];
	va_list ap;

	va_start(ap, fmt);
	(void)vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	if (ld->to_stderr && line > 0)
		fprintf(stderr, "%s:%d: warning: %s\n", ld->path, line, msg);
	else if (ld->to_stderr)
		fprintf(stderr, "%s: warning: %s\n", ld->path, msg);
	else
		log_warn("config %s:%d: %s", ld->path, line, msg);
}

bool
config_parse_duration(const char *s, long *ms)
{
	char *end;
	double v, mult;

	errno = 0;
	v = strtod(s, &end);
	if (end == s || errno != 0 || v < 0)
		return false;
	if (strcmp(end, "ms") == 0)
		mult = 1;
	else if (strcmp(end, "s") == 0)
		mult = 1000;
	else if (strcmp(end, "m") == 0)
		mult = 60000;
	else if (strcmp(end, "h") == 0)
		mult = 3600000;
	else
		return false;
	v *= mult;
	if (v > 1e12)
		return false;
	*ms = (long)v;
	return true;
}

bool
config_parse_size(const char *s, long *out)
{
	char *end;
	unsigned long long v;
	unsigned long long mult = 1;

	if (!isdigit((unsigned char)s[0]))
		return false;
	errno = 0;
	v = strtoull(s, &end, 10);
	if (errno != 0)
		return false;
	if (*end == 'k' || *end == 'K')
		mult = 1024, end++;
	else if (*end == 'm' || *end == 'M')
		mult = 1024 * 1024, end++;
	else if (*end == 'g' || *end == 'G')
		mult = 1024ULL * 1024 * 1024, end++;
	if (*end != '\0' || v > (1ULL << 40) / mult)
		return false;
	*out = (long)(v * mult);
	return true;
}

static bool
parse_uint(const char *s, long *out)
{
	char *end;
	unsigned long v;

	if (!isdigit((unsigned char)s[0]))
		return false;
	errno = 0;
	v = strtoul(s, &end, 10);
	if (errno != 0 || *end != '\0' || v > 1000000000UL)
		return false;
	*out = (long)v;
	return true;
}

/* ${VAR} and ${VAR:-fallback}; NULL after complaining. */
static char *
expand(struct loader *ld, int line, const char *v)
{
	size_t cap = strlen(v) + 1, n = 0;
	char *out = xmalloc(cap);

	while (*v) {
		const char *add = v;
		size_t addlen = 1;

		if (v[0] == '$' && v[1] == '{') {
			const char *close = strchr(v + 2, '}');
			const char *dash;
			char *name;
			const char *val;

			if (close == NULL) {
				complain(ld, line, "unterminated ${ in value");
				free(out);
				return NULL;
			}
			name = xstrndup(v + 2, (size_t)(close - v - 2));
			dash = strstr(name, ":-");
			if (dash != NULL)
				name[dash - name] = '\0';
			val = getenv(name);
			if (val == NULL || *val == '\0') {
				if (dash == NULL) {
					complain(ld, line,
					         "environment variable %s is not set "
					         "(use ${%s:-default} for a fallback)",
					         name, name);
					free(name);
					free(out);
					return NULL;
				}
				val = v + 2 + (dash - name) + 2;
				addlen = (size_t)(close - val);
			} else {
				addlen = strlen(val);
			}
			add = val;
			v = close + 1;
			if (n + addlen + 1 > cap) {
				cap = (n + addlen + 1) * 2;
				out = xrealloc(out, cap);
			}
			memcpy(out + n, add, addlen);
			n += addlen;
			free(name);
			continue;
		}
		if (n + 2 > cap) {
			cap *= 2;
			out = xrealloc(out, cap);
		}
		out[n++] = *add;
		v++;
	}
	out[n] = '\0';
	return out;
}

static char **
split_words(const char *v, size_t *count)
{
	char **list = NULL;
	size_t n = 0;

	while (*v) {
		while (*v == ' ' || *v == '\t' || *v == ',')
			v++;
		if (!*v)
			break;
		const char *s = v;
		while (*v && *v != ' ' && *v != '\t' && *v != ',')
			v++;
		list = xrealloc(list, sizeof(*list) * (n + 1));
		list[n++] = xstrndup(s, (size_t)(v - s));
	}
	*count = n;
	return list;
}

static void
set_value(struct loader *ld, int line, void *obj, const struct cfg_def *d,
          const char *v)
{
	char *p = (char *)obj + d->off;
	long num = 0;

	switch (d->type) {
	case T_STR:
		free(*(char **)p);
		*(char **)p = xstrdup(v);
		return;
	case T_SIZE:
		if (!config_parse_size(v, &num)) {
			complain(ld, line, "%s: '%s' is not a size (e.g. 16k, 8m)",
			         d->name, v);
			return;
		}
		break;
	case T_DURATION:
		if (!config_parse_duration(v, &num)) {
			complain(ld, line,
			         "%s: '%s' is not a duration (e.g. 250ms, 10s, 5m)",
			         d->name, v);
			return;
		}
		break;
	case T_UINT:
		if (!parse_uint(v, &num)) {
			complain(ld, line, "%s: '%s' is not a whole number",
			         d->name, v);
			return;
		}
		break;
	case T_CHOICE:
		for (num = 0; d->choices[num]; num++)
			if (strcmp(d->choices[num], v) == 0)
				break;
		if (d->choices[num] == NULL) {
			complain(ld, line, "%s: '%s' is not one of the choices",
			         d->name, v);
			return;
		}
		*(long *)p = num;
		return;
	case T_STRLIST: {
		char ***list = (char ***)p;
		size_t *n = (size_t *)(p + sizeof(char **));
		*list = xrealloc(*list, sizeof(char *) * (*n + 1));
		(*list)[(*n)++] = xstrdup(v);
		return;
	}
	case T_WORDS: {
		char ***list = (char ***)p;
		size_t *n = (size_t *)(p + sizeof(char **));
		for (size_t i = 0; i < *n; i++)
			free((*list)[i]);
		free(*list);
		*list = split_words(v, n);
		return;
	}
	}
	if ((d->min || d->max) && (num < d->min || num > d->max)) {
		complain(ld, line, "%s: %s is out of range", d->name, v);
		return;
	}
	*(long *)p = num;
}

static void
apply_defaults(struct loader *ld, void *obj, const struct cfg_def *defs,
               size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (defs[i].def != NULL)
			set_value(ld, 0, obj, &defs[i], defs[i].def);
}

static bool
parse_hex32(const char *s, unsigned char out[32])
{
	for (int i = 0; i < 32; i++) {
		int hi = (unsigned char)s[2 * i], lo;
		if (!isxdigit(hi) || !isxdigit((unsigned char)s[2 * i + 1]))
			return false;
		lo = (unsigned char)s[2 * i + 1];
		hi = isdigit(hi) ? hi - '0' : (tolower(hi) - 'a' + 10);
		lo = isdigit(lo) ? lo - '0' : (tolower(lo) - 'a' + 10);
		out[i] = (unsigned char)(hi << 4 | lo);
	}
	return s[64] == '\0';
}

/* Index names as `scrim index --index` takes them: they name files. */
static bool
index_name_ok(const char *s)
{
	size_t n = strlen(s);

	if (n == 0 || n > 64)
		return false;
	for (; *s; s++)
		if (!isalnum((unsigned char)*s) && *s != '-' && *s != '_')
			return false;
	return true;
}

static bool
valid_name(const char *s)
{
	if (*s == '\0')
		return false;
	for (; *s; s++)
		if (!isalnum((unsigned char)*s) && *s != '-' && *s != '_' &&
		    *s != '.')
			return false;
	return true;
}

static void
start_section(struct loader *ld, int line, char *hdr)
{
	struct scrim_config *c = ld->cfg;
	char *sp = strchr(hdr, ' ');
	char *kind = hdr, *name = NULL;

	if (sp != NULL) {
		*sp = '\0';
		name = sp + 1;
		while (*name == ' ')
			name++;
	}
	free(ld->seen);
	ld->seen = NULL;
	ld->obj = NULL;
	ld->defs = NULL;
	ld->sec = SEC_NONE;

	if (strcmp(kind, "gateway") == 0 && name == NULL) {
		ld->sec = SEC_GATEWAY;
		ld->obj = c;
		return;
	}
	if (strcmp(kind, "keys") == 0 && name == NULL) {
		ld->sec = SEC_KEYS;
		return;
	}
	if (strcmp(kind, "proxy") == 0 && name == NULL) {
		ld->sec = SEC_PROXY;
		ld->obj = c;
		return;
	}
	if (strcmp(kind, "redis") == 0 && name == NULL) {
		ld->sec = SEC_REDIS;
		ld->obj = c;
		return;
	}
	if (strcmp(kind, "audit") == 0 && name == NULL) {
		ld->sec = SEC_AUDIT;
		ld->obj = c;
		return;
	}
	if (strcmp(kind, "prices") == 0 && name == NULL) {
		ld->sec = SEC_PRICES;
		return;
	}
	if (strcmp(kind, "index") == 0) {
		struct cfg_index *ix = &c->index;

		if (name == NULL && ld->index_seen) {
			complain(ld, line, "[index] is defined twice (first at "
			         "line %d)", c->index.line);
			return;
		}
		if (name != NULL) {
			if (!index_name_ok(name)) {
				complain(ld, line, "[index NAME]: a name of letters, "
				         "digits, '-' or '_' (at most 64)");
				return;
			}
			for (size_t i = 0; i < c->nindexes; i++)
				if (strcmp(c->indexes[i].name, name) == 0) {
					complain(ld, line, "index '%s' is defined twice "
					         "(first at line %d)", name,
					         c->indexes[i].line);
					return;
				}
			c->indexes = xrealloc(c->indexes, sizeof(*c->indexes) *
			                                      (c->nindexes + 1));
			ix = &c->indexes[c->nindexes++];
			memset(ix, 0, sizeof(*ix));
			ix->name = xstrdup(name);
			/* A named index starts from the defaults, not from
			 * [index]: each section says all that differs. */
			apply_defaults(ld, ix, index_defs,
			               SCRIM_ARRAY_LEN(index_defs));
		} else {
			ld->index_seen = true;
		}
		ix->line = line;
		ld->sec = SEC_INDEX;
		ld->obj = ix;
		ld->defs = index_defs;
		ld->ndefs = SCRIM_ARRAY_LEN(index_defs);
		ld->seen = xcalloc(ld->ndefs, 1);
		return;
	}
	if ((strcmp(kind, "provider") == 0 || strcmp(kind, "route") == 0)) {
		if (name == NULL || !valid_name(name)) {
			complain(ld, line,
			         "[%s NAME]: a name of letters, digits, '-', '_' "
			         "or '.' is required",
			         kind);
			return;
		}
		if (kind[0] == 'p') {
			for (size_t i = 0; i < c->nproviders; i++)
				if (strcmp(c->providers[i].name, name) == 0) {
					complain(ld, line,
					         "provider '%s' is defined twice "
					         "(first at line %d)",
					         name, c->providers[i].line);
					return;
				}
			c->providers = xrealloc(c->providers, sizeof(*c->providers) *
			                                          (c->nproviders + 1));
			struct cfg_provider *p = &c->providers[c->nproviders++];
			memset(p, 0, sizeof(*p));
			p->name = xstrdup(name);
			p->line = line;
			ld->sec = SEC_PROVIDER;
			ld->obj = p;
			ld->defs = provider_defs;
			ld->ndefs = SCRIM_ARRAY_LEN(provider_defs);
		} else {
			for (size_t i = 0; i < c->nroutes; i++)
				if (strcmp(c->routes[i].name, name) == 0) {
					complain(ld, line,
					         "route '%s' is defined twice "
					         "(first at line %d)",
					         name, c->routes[i].line);
					return;
				}
			c->routes = xrealloc(c->routes,
			                     sizeof(*c->routes) * (c->nroutes + 1));
			struct cfg_route *r = &c->routes[c->nroutes++];
			memset(r, 0, sizeof(*r));
			r->name = xstrdup(name);
			r->line = line;
			ld->sec = SEC_ROUTE;
			ld->obj = r;
			ld->defs = route_defs;
			ld->ndefs = SCRIM_ARRAY_LEN(route_defs);
		}
		apply_defaults(ld, ld->obj, ld->defs, ld->ndefs);
		ld->seen = xcalloc(ld->ndefs, 1);
		return;
	}
	complain(ld, line,
	         "unknown section [%s%s%s] (expected [gateway], [keys], "
	         "[proxy], [redis], [prices], [audit], [index], [index NAME], "
	         "[provider NAME] or [route NAME])",
	         kind, name ? " " : "", name ? name : "");
}

static void
key_line(struct loader *ld, int line, const char *key, const char *val)
{
	const struct cfg_def *defs = ld->defs;
	size_t ndefs = ld->ndefs;
	unsigned char *seen = ld->seen;
	char *v;

	if (ld->sec == SEC_NONE) {
		/* Keys before any section, or in a section already refused. */
		if (ld->errors == 0)
			complain(ld, line, "'%s' is outside any section", key);
		return;
	}
	if (ld->sec == SEC_PRICES) {
		struct scrim_config *c = ld->cfg;
		/* strtod, not sscanf: two numbers, then only blanks. */
		char *e1, *e2 = NULL;
		double in = strtod(val, &e1), out = 0;
		bool ok = e1 != val;

		if (ok) {
			out = strtod(e1, &e2);
			ok = e2 != e1;
		}
		if (ok) {
			while (isspace((unsigned char)*e2))
				e2++;
			ok = *e2 == '\0';
		}
		if (!ok || in < 0 || out < 0 || in > 1e6 || out > 1e6) {
			complain(ld, line, "price for '%s': two numbers, USD per "
			                   "million input and output tokens", key);
			return;
		}
		c->prices = xrealloc(c->prices, sizeof(*c->prices) * (c->nprices + 1));
		c->prices[c->nprices].glob = xstrdup(key);
		c->prices[c->nprices].in_per_mtok = in;
		c->prices[c->nprices].out_per_mtok = out;
		c->nprices++;
		return;
	}
	if (ld->sec == SEC_KEYS) {
		struct scrim_config *c = ld->cfg;
		struct cfg_client_key k;

		if (!valid_name(key)) {
			complain(ld, line, "key id '%s': use letters, digits, "
			                   "'-', '_' or '.'", key);
			return;
		}
		if (strncmp(val, "sha256:", 7) != 0 ||
		    !parse_hex32(val + 7, k.sha256)) {
			complain(ld, line,
			         "key '%s': value must be sha256: and 64 hex digits "
			         "(the hash, never the key; see `scrim keys "
			         "generate`)",
			         key);
			return;
		}
		for (size_t i = 0; i < c->nkeys; i++) {
			if (strcmp(c->keys[i].id, key) == 0) {
				complain(ld, line, "key id '%s' is listed twice", key);
				return;
			}
			if (memcmp(c->keys[i].sha256, k.sha256, 32) == 0) {
				complain(ld, line, "key '%s' has the same hash as '%s'",
				         key, c->keys[i].id);
				return;
			}
		}
		k.id = xstrdup(key);
		c->keys = xrealloc(c->keys, sizeof(*c->keys) * (c->nkeys + 1));
		c->keys[c->nkeys++] = k;
		return;
	}
	if (ld->sec == SEC_GATEWAY) {
		defs = gateway_defs;
		ndefs = SCRIM_ARRAY_LEN(gateway_defs);
		seen = ld->gateway_seen;
	} else if (ld->sec == SEC_PROXY) {
		defs = proxy_defs;
		ndefs = SCRIM_ARRAY_LEN(proxy_defs);
		seen = ld->proxy_seen;
	} else if (ld->sec == SEC_REDIS) {
		defs = redis_defs;
		ndefs = SCRIM_ARRAY_LEN(redis_defs);
		seen = ld->redis_seen;
	} else if (ld->sec == SEC_AUDIT) {
		defs = audit_defs;
		ndefs = SCRIM_ARRAY_LEN(audit_defs);
		seen = ld->audit_seen;
	}
	if (ld->sec == SEC_PROVIDER && strcmp(key, "api_key") == 0) {
		complain(ld, line, "api_key: never write a provider key in the "
		                   "config; use api_key_env or api_key_file");
		return;
	}
	if (ld->sec == SEC_INDEX && strcmp(key, "embed_api_key") == 0) {
		complain(ld, line, "embed_api_key: never write a key in the "
		                   "config; use embed_api_key_env or "
		                   "embed_api_key_file");
		return;
	}
	for (size_t i = 0; i < ndefs; i++) {
		if (strcmp(defs[i].name, key) != 0)
			continue;
		if (seen[i] && defs[i].type != T_STRLIST) {
			complain(ld, line, "'%s' is set twice in this section", key);
			return;
		}
		seen[i] = 1;
		if (ld->sec == SEC_GATEWAY)
			ld->gateway_line[i] = line;
		v = expand(ld, line, val);
		if (v == NULL)
			return;
		set_value(ld, line, ld->obj, &defs[i], v);
		free(v);
		return;
	}
	complain(ld, line, "unknown key '%s' in this section", key);
}

static void
ini_section(void *arg, int line, char *hdr)
{
	start_section(arg, line, hdr);
}

static void
ini_key(void *arg, int line, char *key, char *value)
{
	key_line(arg, line, key, value);
}

static void
ini_error(void *arg, int line, const char *msg)
{
	struct loader *ld = arg;

	complain(ld, line, "%s", msg);
	ld->sec = SEC_NONE;
}

static const struct ini_handler ini_cbs = {ini_section, ini_key, ini_error};

bool
config_parse_addr(const char *s, struct sockaddr_storage *ss, int *socklen)
{
	char host[256];
	const char *colon;
	size_t hl;
	long port;
	char *end;

	memset(ss, 0, sizeof(*ss));
	if (s[0] == '[') {
		const char *close = strchr(s, ']');
		if (close == NULL || close[1] != ':')
			return false;
		hl = (size_t)(close - s - 1);
		if (hl >= sizeof(host))
			return false;
		memcpy(host, s + 1, hl);
		colon = close + 1;
	} else {
		colon = strrchr(s, ':');
		if (colon == NULL)
			return false;
		hl = (size_t)(colon - s);
		if (hl >= sizeof(host))
			return false;
		memcpy(host, s, hl);
	}
	host[hl] = '\0';
	errno = 0;
	port = strtol(colon + 1, &end, 10);
	if (errno || *end || end == colon + 1 || port < 0 || port > 65535)
		return false;
	if (s[0] == '[') {
		struct sockaddr_in6 *a = (struct sockaddr_in6 *)ss;
		a->sin6_family = AF_INET6;
		a->sin6_port = htons((uint16_t)port);
		if (inet_pton(AF_INET6, host, &a->sin6_addr) != 1)
			return false;
		*socklen = sizeof(*a);
	} else {
		struct sockaddr_in *a = (struct sockaddr_in *)ss;
		a->sin_family = AF_INET;
		a->sin_port = htons((uint16_t)port);
		if (inet_pton(AF_INET, hl ? host : "0.0.0.0", &a->sin_addr) != 1)
			return false;
		*socklen = sizeof(*a);
	}
	return true;
}

bool
config_addr_is_loopback(const char *s)
{
	struct sockaddr_storage ss;
	int len;

	if (!config_parse_addr(s, &ss, &len))
		return false;
	if (ss.ss_family == AF_INET) {
		const struct sockaddr_in *a = (const struct sockaddr_in *)&ss;
		return (ntohl(a->sin_addr.s_addr) >> 24) == 127;
	}
	return IN6_IS_ADDR_LOOPBACK(&((const struct sockaddr_in6 *)&ss)->sin6_addr);
}

static char *
url_host(const char *url)
{
	const char *p = strstr(url, "://"), *e;

	if (p == NULL)
		return NULL;
	p += 3;
	if (*p == '[') {
		e = strchr(p, ']');
		if (e == NULL)
			return NULL;
		return xstrndup(p + 1, (size_t)(e - p - 1));
	}
	e = p + strcspn(p, ":/?#");
	if (e == p)
		return NULL;
	return xstrndup(p, (size_t)(e - p));
}

static void
load_provider_key(struct loader *ld, struct cfg_provider *p)
{
	if (p->api_key_env && p->api_key_file) {
		complain(ld, p->line, "provider '%s': set api_key_env or "
		                      "api_key_file, not both", p->name);
		return;
	}
	if (p->api_key_env) {
		const char *v = getenv(p->api_key_env);
		if (v == NULL || *v == '\0') {
			warn(ld, p->line,
			     "provider '%s': %s is not set; requests routed to it "
			     "will fail with provider_key_missing",
			     p->name, p->api_key_env);
			return;
		}
		p->api_key = xstrdup(v);
	} else if (p->api_key_file) {
		size_t len;
		int err;
		char *buf = ini_read_file(p->api_key_file, 16384, &len, &err);

		if (buf == NULL) {
			complain(ld, p->line, "provider '%s': cannot read %s: %s",
			         p->name, p->api_key_file, strerror(err));
			return;
		}
		buf[strcspn(buf, "\r\n")] = '\0';
		if (*buf == '\0') {
			complain(ld, p->line, "provider '%s': %s is empty", p->name,
			         p->api_key_file);
			free(buf);
			return;
		}
		p->api_key = xstrdup(buf);
		xfree_secret(buf);
	}
	if (p->api_key != NULL) {
		for (const char *c = p->api_key; *c; c++)
			if ((unsigned char)*c < 0x21 || *c == 0x7f) {
				complain(ld, p->line,
				         "provider '%s': the key contains spaces or "
				         "control characters",
				         p->name);
				xfree_secret(p->api_key);
				p->api_key = NULL;
				return;
			}
	}
}

static void
relative_to_file(struct scrim_config *c, char **path)
{
	const char *slash;
	char *abs;

	if ((*path)[0] == '/' || (*path)[0] == '\0')
		return;
	slash = strrchr(c->path, '/');
	abs = slash ? xasprintf("%.*s/%s", (int)(slash - c->path), c->path, *path)
	            : xstrdup(*path);
	free(*path);
	*path = abs;
}

/* A secret from an environment variable or a file (first line). */
static bool
load_secret(struct loader *ld, const char *what, const char *env,
            const char *file, char **out)
{
	if (*env && *file) {
		complain(ld, 0, "%s: set the _env or the _file key, not both", what);
		return false;
	}
	if (*env) {
		const char *v = getenv(env);
		if (v != NULL && *v)
			*out = xstrdup(v);
		else
			warn(ld, 0, "%s: %s is not set", what, env);
	} else if (*file) {
		size_t len;
		int err;
		char *buf = ini_read_file(file, 4096, &len, &err);
		if (buf == NULL) {
			complain(ld, 0, "%s: cannot read %s: %s", what, file,
			         strerror(err));
			return false;
		}
		buf[strcspn(buf, "\r\n")] = '\0';
		*out = xstrdup(buf);
		OPENSSL_cleanse(buf, len);
		free(buf);
	}
	return true;
}

static bool
host_is_loopback(const char *h)
{
	struct in_addr a4;
	struct in6_addr a6;

	if (strcmp(h, "localhost") == 0)
		return true;
	if (inet_pton(AF_INET, h, &a4) == 1)
		return (ntohl(a4.s_addr) >> 24) == 127;
	return inet_pton(AF_INET6, h, &a6) == 1 && IN6_IS_ADDR_LOOPBACK(&a6);
}

/* One [index] or [index NAME] section. */
static void
validate_index(struct loader *ld, struct cfg_index *ix)
{
	char what[96];
	struct embed_spec sp;
	char *host;

	snprintf(what, sizeof(what), "[index%s%s]", ix->name ? " " : "",
	         ix->name ? ix->name : "");
	if (*ix->encrypt_key_file) {
		char err[PATH_MAX + 256];

		/* A path is relative to this file, like the other files it
		 * names; a credential is found where systemd puts it. */
		if (strncmp(ix->encrypt_key_file, VCRYPT_CREDENTIAL_PREFIX,
		            strlen(VCRYPT_CREDENTIAL_PREFIX)) != 0)
			relative_to_file(ld->cfg, &ix->encrypt_key_file);
		if (!vcrypt_key_load(ix->encrypt_key_file, &ix->encrypt_key, err,
		                     sizeof(err)))
			complain(ld, ix->line, "%s encrypt_key_file: %s", what, err);
	}
	if (ix->embedder == EMBED_BUILTIN) {
		if (!embed_hash_spec((unsigned)ix->dim, &sp))
			complain(ld, ix->line, "%s dim: a power of two from %d to "
			         "%d", what, EMBED_MIN_DIM, EMBED_MAX_DIM);
		if (*ix->embed_url || *ix->embed_model)
			warn(ld, ix->line, "%s: embed_url and embed_model are not "
			     "used with embedder = builtin", what);
		return;
	}
	if (strncmp(ix->embed_url, "http://", 7) != 0 &&
	    strncmp(ix->embed_url, "https://", 8) != 0) {
		complain(ld, ix->line, "%s: embedder = openai needs embed_url, "
		         "the API's base URL (http://127.0.0.1:11434/v1 for "
		         "Ollama)", what);
		return;
	}
	host = url_host(ix->embed_url);
	if (host == NULL)
		complain(ld, ix->line, "%s embed_url: no host", what);
	else if (!ix->embed_remote && !host_is_loopback(host))
		/* Documents and prompts go there as they are, before any
		 * scrubbing: only a machine the operator names on purpose. */
		complain(ld, ix->line, "%s embed_url: %s is not this machine; "
		         "documents and prompts are sent to it unscrubbed. Set "
		         "embed_remote = yes if that is intended", what, host);
	free(host);
	if (*ix->embed_model == '\0' ||
	    strlen(ix->embed_model) >= EMBED_MAX_MODEL)
		complain(ld, ix->line, "%s: embed_model is required (at most "
		         "%d bytes)", what, EMBED_MAX_MODEL - 1);
	for (const char *m = ix->embed_model; *m; m++)
		if ((unsigned char)*m <= 0x20 || *m == 0x7f) {
			complain(ld, ix->line, "%s embed_model: no spaces or "
			         "control characters", what);
			break;
		}
	(void)load_secret(ld, what, ix->embed_api_key_env,
	                  ix->embed_api_key_file, &ix->embed_api_key);
}

const struct cfg_index *
config_index(const struct scrim_config *c, const char *name)
{
	for (size_t i = 0; name != NULL && i < c->nindexes; i++)
		if (strcmp(c->indexes[i].name, name) == 0)
			return &c->indexes[i];
	return &c->index;
}

void
config_embed_conf(const struct cfg_index *ix, bool query,
                  struct embed_conf *out)
{
	memset(out, 0, sizeof(*out));
	out->kind = ix->embedder == 1 ? EMBED_OPENAI : EMBED_BUILTIN;
	out->dim = (unsigned)ix->dim;
	out->url = ix->embed_url;
	out->model = ix->embed_model;
	out->api_key = ix->embed_api_key;
	out->timeout_ms = query ? ix->embed_query_timeout_ms
	                        : ix->embed_timeout_ms;
	out->batch = (size_t)ix->embed_batch;
	out->verbose_errors = !query;
}

static void
validate(struct loader *ld)
{
	struct scrim_config *c = ld->cfg;
	struct sockaddr_storage ss;
	int sl;

	if (!config_parse_addr(c->listen, &ss, &sl))
		complain(ld, gline(ld, "listen"), "listen: '%s' is not host:port",
		         c->listen);
	if (!config_parse_addr(c->admin_listen, &ss, &sl))
		complain(ld, gline(ld, "admin_listen"),
		         "admin_listen: '%s' is not host:port",
		         c->admin_listen);
	if (!log_parse_level(c->log_level_str, &c->log_level))
		complain(ld, gline(ld, "log_level"),
		         "log_level: '%s' is not debug, info, warn or error",
		         c->log_level_str);
	if (strcmp(c->auth, "off") == 0) {
		c->auth_off = true;
		if (!config_addr_is_loopback(c->listen))
			complain(ld, gline(ld, "auth"), "auth = off is allowed only when listen is a "
			                "loopback address (listen = %s)", c->listen);
	} else if (strcmp(c->auth, "keys") != 0) {
		complain(ld, gline(ld, "auth"), "auth: '%s' is not 'keys' or 'off'",
		         c->auth);
	}
	if (strcmp(c->scrub, "off") == 0)
		c->scrub_off = true;
	else if (strcmp(c->scrub, "on") != 0)
		complain(ld, gline(ld, "scrub"), "scrub: 'on' or 'off'");
	/* Relative paths are relative to the file, not to wherever scrim
	 * was started. */
	relative_to_file(c, &c->rules_dir);
	relative_to_file(c, &c->state_dir);
	/* Secrets from the environment or files, never the config. */
	if (!load_secret(ld, "[redis] password", c->redis_password_env,
	                 c->redis_password_file, &c->redis_password) ||
	    !load_secret(ld, "[redis] admin token", c->admin_token_env,
	                 c->admin_token_file, &c->admin_token))
		return;
	if (*c->redis_url && strncmp(c->redis_url, "redis://", 8) != 0 &&
	    c->redis_url[0] != '/')
		complain(ld, 0, "[redis] url: redis://host:port[/db] or a socket "
		                "path");
	if (strcmp(c->audit_mode, "on") == 0)
		c->audit_on = true;
	else if (strcmp(c->audit_mode, "off") != 0)
		complain(ld, 0, "[audit] mode: 'on' or 'off'");
	/* Given paths are relative to this file; defaults sit in state_dir,
	 * which already is. */
	if (*c->audit_file == '\0') {
		free(c->audit_file);
		c->audit_file = xasprintf("%s/audit.jsonl", c->state_dir);
	} else {
		relative_to_file(c, &c->audit_file);
	}
	if (*c->audit_key_file == '\0') {
		free(c->audit_key_file);
		c->audit_key_file = xasprintf("%s/audit.key", c->state_dir);
	} else {
		relative_to_file(c, &c->audit_key_file);
	}
	/* The stream goes to the [redis] server, on a connection of its own. */
	if (*c->audit_redis_stream && *c->redis_url == '\0')
		complain(ld, 0, "[audit] redis_stream needs a [redis] url");
	if (strlen(c->audit_redis_stream) > 256)
		complain(ld, 0, "[audit] redis_stream: a key of at most 256 bytes");
	if (strcmp(c->proxy_mode, "on") == 0)
		c->proxy_on = true;
	else if (strcmp(c->proxy_mode, "off") != 0)
		complain(ld, 0, "[proxy] mode: 'on' or 'off'");
	for (size_t i = 0; i < c->nports; i++) {
		long port;
		if (!parse_uint(c->ports[i], &port) || port < 1 || port > 65535)
			complain(ld, 0, "[proxy] ports: '%s' is not a port", c->ports[i]);
	}
	for (size_t i = 0; i < c->nresolve; i++) {
		const char *a = strchr(c->resolve[i], ':');
		const char *b = a ? strchr(a + 1, ':') : NULL;
		if (a == NULL || b == NULL || a == c->resolve[i] || b == a + 1 ||
		    b[1] == '\0')
			complain(ld, 0, "[proxy] resolve: '%s' is not host:port:address",
			         c->resolve[i]);
	}
	if (*c->scrub_secret_file) {
		size_t len;
		int err;
		/* Random bytes: NUL is as good as any other. */
		char *sec = ini_read_binary(c->scrub_secret_file, 4096, &len,
		                            &err);
		if (sec == NULL || len < 32) {
			complain(ld, gline(ld, "scrub_secret_file"),
			         "scrub_secret_file %s: %s", c->scrub_secret_file,
			         sec ? "needs at least 32 bytes" : strerror(err));
		} else {
			EVP_Digest(sec, len, c->scrub_secret, NULL, EVP_sha256(), NULL);
		}
		if (sec != NULL) {
			OPENSSL_cleanse(sec, len);
			free(sec);
		}
	} else {
		c->scrub_secret_random = true;
	}
	if (*c->egress_proxy && strncmp(c->egress_proxy, "http://", 7) != 0 &&
	    strncmp(c->egress_proxy, "https://", 8) != 0)
		complain(ld, gline(ld, "egress_proxy"), "egress_proxy: '%s' must be an http:// or https:// "
		                "URL", c->egress_proxy);

	for (size_t i = 0; i < c->nproviders; i++) {
		struct cfg_provider *p = &c->providers[i];
		size_t bl;

		if (p->base_url == NULL) {
			complain(ld, p->line, "provider '%s': base_url is required",
			         p->name);
			continue;
		}
		if (strncmp(p->base_url, "http://", 7) != 0 &&
		    strncmp(p->base_url, "https://", 8) != 0) {
			complain(ld, p->line, "provider '%s': base_url must start "
			                      "with http:// or https://", p->name);
			continue;
		}
		bl = strlen(p->base_url);
		while (bl > 0 && p->base_url[bl - 1] == '/')
			p->base_url[--bl] = '\0';
		p->host = url_host(p->base_url);
		if (p->host == NULL)
			complain(ld, p->line, "provider '%s': base_url has no host",
			         p->name);
		for (size_t h = 0; h < p->nheaders; h++) {
			const char *hv = p->headers[h], *colon = strchr(hv, ':');
			bool ok = colon != NULL && colon != hv;
			for (const char *k = hv; ok && k < colon; k++)
				if (!isalnum((unsigned char)*k) && *k != '-' && *k != '_')
					ok = false;
			for (const char *k = colon ? colon : hv; ok && *k; k++)
				if ((unsigned char)*k < 0x20 && *k != '\t')
					ok = false;
			if (!ok)
				complain(ld, p->line,
				         "provider '%s': header '%s' is not 'Name: value'",
				         p->name, hv);
		}
		if (p->ca_file != NULL && access(p->ca_file, R_OK) != 0)
			complain(ld, p->line, "provider '%s': ca_file %s: %s",
			         p->name, p->ca_file, strerror(errno));
		if (p->auth_header != AUTH_HDR_NONE && !p->api_key_env &&
		    !p->api_key_file)
			warn(ld, p->line, "provider '%s': auth_header is set but "
			                  "no api_key_env or api_key_file", p->name);
		load_provider_key(ld, p);
	}
	for (size_t i = 0; i < c->nroutes; i++) {
		struct cfg_route *r = &c->routes[i];

		if (r->prefix == NULL || r->prefix[0] != '/') {
			complain(ld, r->line, "route '%s': prefix must be set and "
			                      "start with '/'", r->name);
			continue;
		}
		if (r->strip == NULL) {
			size_t pl = strlen(r->prefix);
			r->strip = xstrndup(r->prefix, pl > 1 && r->prefix[pl - 1] == '/'
			                                   ? pl - 1 : pl);
		} else if (strncmp(r->prefix, r->strip, strlen(r->strip)) != 0) {
			complain(ld, r->line, "route '%s': strip '%s' is not a "
			                      "prefix of '%s'", r->name, r->strip,
			         r->prefix);
		}
		if (r->nactions > 0)
			r->action_v = xcalloc(r->nactions, sizeof(*r->action_v));
		for (size_t k = 0; k < r->nactions; k++) {
			char *eq = strchr(r->actions[k], '=');
			enum scrub_action act;
			if (eq == NULL || eq == r->actions[k] ||
			    !rules_action_parse(eq + 1, &act)) {
				complain(ld, r->line, "route '%s': actions: '%s' is not "
				                      "RULE_OR_TYPE=action (redact, mask, "
				                      "hash, tokenize, block, local, allow)",
				         r->name, r->actions[k]);
				continue;
			}
			r->action_v[k].match = xstrndup(r->actions[k],
			                                 (size_t)(eq - r->actions[k]));
			r->action_v[k].action = (int)act;
		}
		if (strcmp(r->context, "on") == 0)
			r->context_on = true;
		else if (strcmp(r->context, "off") != 0)
			complain(ld, r->line, "route '%s': context is 'on' or 'off'",
			         r->name);
		for (size_t k = 0; k < r->ncontext_index; k++)
			if (!valid_name(r->context_index[k]))
				complain(ld, r->line, "route '%s': index name '%s': letters, "
				                      "digits, '-', '_', '.'",
				         r->name, r->context_index[k]);
		if (r->provider_name == NULL) {
			complain(ld, r->line, "route '%s': provider is required",
			         r->name);
			continue;
		}
		for (size_t p = 0; p < c->nproviders; p++)
			if (strcmp(c->providers[p].name, r->provider_name) == 0)
				r->provider = &c->providers[p];
		if (r->provider == NULL)
			complain(ld, r->line, "route '%s': provider '%s' is not "
			                      "defined", r->name, r->provider_name);
	}
	if (*c->local_provider) {
		bool found = false;
		for (size_t p = 0; p < c->nproviders; p++)
			found = found || strcmp(c->providers[p].name,
			                        c->local_provider) == 0;
		if (!found)
			complain(ld, gline(ld, "local_provider"),
			         "local_provider: provider '%s' is not defined",
			         c->local_provider);
	}
	validate_index(ld, &c->index);
	for (size_t i = 0; i < c->nindexes; i++)
		validate_index(ld, &c->indexes[i]);
	if (c->nroutes == 0)
		warn(ld, 0, "no [route] sections: every request will get 404");
	if (!c->auth_off && c->nkeys == 0 && *c->redis_url == '\0')
		warn(ld, 0, "[keys] is empty and auth = keys: every request will "
		            "get 401 (add a key with `scrim keys generate NAME`)");
}

struct scrim_config *
config_load(const char *path, bool to_stderr)
{
	struct loader ld;
	struct scrim_config *c = xcalloc(1, sizeof(*c));
	size_t len;
	int err;
	char *text;

	memset(&ld, 0, sizeof(ld));
	ld.path = path;
	ld.to_stderr = to_stderr;
	ld.cfg = c;
	c->refcnt = 1;
	c->path = xstrdup(path);
	apply_defaults(&ld, c, gateway_defs, SCRIM_ARRAY_LEN(gateway_defs));
	apply_defaults(&ld, c, proxy_defs, SCRIM_ARRAY_LEN(proxy_defs));
	apply_defaults(&ld, c, redis_defs, SCRIM_ARRAY_LEN(redis_defs));
	apply_defaults(&ld, c, audit_defs, SCRIM_ARRAY_LEN(audit_defs));
	apply_defaults(&ld, &c->index, index_defs, SCRIM_ARRAY_LEN(index_defs));

	text = ini_read_file(path, CONFIG_MAX_FILE, &len, &err);
	if (text == NULL) {
		complain(&ld, 0, "cannot read: %s",
		         err == EINVAL ? "the file contains a NUL byte"
		                       : strerror(err));
		goto fail;
	}
	ini_parse(text, &ini_cbs, &ld);
	free(text);
	free(ld.seen);
	ld.seen = NULL;
	if (ld.errors == 0)
		validate(&ld);
	if (ld.errors > 0) {
		if (ld.errors > CONFIG_MAX_ERRORS)
			complain(&ld, 0, "%d more errors not shown",
			         ld.errors - CONFIG_MAX_ERRORS - 1);
		goto fail;
	}
	return c;
fail:
	free(ld.seen);
	c->refcnt = 1;
	config_unref(c);
	return NULL;
}

struct scrim_config *
config_ref(struct scrim_config *c)
{
	c->refcnt++;
	return c;
}

static void
free_list(char **l, size_t n)
{
	for (size_t i = 0; i < n; i++)
		free(l[i]);
	free(l);
}

static void
index_free(struct cfg_index *ix)
{
	free(ix->name);
	free(ix->embed_url);
	free(ix->embed_model);
	free(ix->embed_api_key_env);
	free(ix->embed_api_key_file);
	xfree_secret(ix->embed_api_key);
	free(ix->encrypt_key_file);
	vcrypt_key_wipe(&ix->encrypt_key);
}

void
config_unref(struct scrim_config *c)
{
	if (c == NULL || --c->refcnt > 0)
		return;
	for (size_t i = 0; i < c->nproviders; i++) {
		struct cfg_provider *p = &c->providers[i];
		free(p->name);
		free(p->base_url);
		free(p->api_key_env);
		free(p->api_key_file);
		xfree_secret(p->api_key);
		free_list(p->headers, p->nheaders);
		free(p->ca_file);
		free(p->host);
	}
	free(c->providers);
	for (size_t i = 0; i < c->nroutes; i++) {
		struct cfg_route *r = &c->routes[i];
		free(r->name);
		free(r->prefix);
		free(r->strip);
		free_list(r->models, r->nmodels);
		free(r->provider_name);
		free(r->context);
		free_list(r->context_index, r->ncontext_index);
		for (size_t k = 0; r->action_v != NULL && k < r->nactions; k++)
			free(r->action_v[k].match);
		free(r->action_v);
		free_list(r->actions, r->nactions);
	}
	free(c->routes);
	index_free(&c->index);
	for (size_t i = 0; i < c->nindexes; i++)
		index_free(&c->indexes[i]);
	free(c->indexes);
	for (size_t i = 0; i < c->nkeys; i++)
		free(c->keys[i].id);
	free(c->keys);
	free(c->path);
	free(c->listen);
	free(c->admin_listen);
	free(c->auth);
	free(c->egress_proxy);
	free(c->log_level_str);
	free(c->rules_dir);
	free(c->state_dir);
	free(c->redis_url);
	free(c->redis_password_env);
	free(c->redis_password_file);
	xfree_secret(c->redis_password);
	free(c->admin_token_env);
	free(c->admin_token_file);
	xfree_secret(c->admin_token);
	for (size_t i = 0; i < c->nprices; i++)
		free(c->prices[i].glob);
	free(c->prices);
	free(c->audit_mode);
	free(c->audit_file);
	free(c->audit_key_file);
	free(c->audit_redis_stream);
	free(c->proxy_mode);
	free_list(c->intercept, c->nintercept);
	free_list(c->tunnel, c->ntunnel);
	free_list(c->ports, c->nports);
	free_list(c->resolve, c->nresolve);
	free(c->scrub);
	free(c->scrub_secret_file);
	free(c->local_provider);
	OPENSSL_cleanse(c->scrub_secret, sizeof(c->scrub_secret));
	free(c);
}
