/*
 * config.h - the configuration: one immutable, refcounted snapshot per
 * successful load. Requests hold a reference to the snapshot they started
 * with, so a reload (SIGHUP) never changes a request in flight and a file
 * that fails to load never replaces the one in force.
 */
#ifndef SCRIM_CONFIG_H
#define SCRIM_CONFIG_H

#include "log.h"
#include "scrim.h"
#include "vcrypt.h"

enum cfg_auth_header { AUTH_HDR_BEARER, AUTH_HDR_X_API_KEY, AUTH_HDR_NONE };

struct cfg_provider {
	char *name;
	int line;               /* where its section starts, for messages */
	char *base_url;         /* without a trailing slash */
	char *api_key_env;
	char *api_key_file;
	char *api_key;          /* resolved secret or NULL; wiped on free */
	long auth_header;       /* enum cfg_auth_header */
	char **headers;         /* "Name: value" */
	size_t nheaders;
	long connect_timeout_ms;
	long timeout_ms;
	char *ca_file;
	char *host;             /* from base_url, for /readyz */
};

struct cfg_route {
	char *name;
	int line;
	char *prefix;
	char *strip;            /* removed from the path before forwarding */
	char **models;          /* globs; none = any model */
	size_t nmodels;
	char *provider_name;
	struct cfg_provider *provider;
	char *context;          /* "on" / "off": retrieval from local indexes */
	bool context_on;
	long context_grants;    /* 0 optional, 1 required: a request whose
	                         * key has no index grant gets no context */
	char **context_index;   /* index names in state_dir/index */
	size_t ncontext_index;
	long context_top_k;
	long context_max_tokens;
	char **actions;         /* "MATCH=action": overrides of rule actions */
	size_t nactions;
	struct cfg_action *action_v; /* parsed */
};

/* [index] (name NULL: every index) and [index NAME] (that index only):
 * which embedder makes and queries an index's vectors, and the key that
 * encrypts it, if any. */
struct cfg_index {
	char *name;
	int line;
	long embedder;          /* enum embed_kind: builtin, openai */
	long dim;               /* built in: dimensions of a new index */
	char *embed_url;        /* openai: base URL, e.g. .../v1 */
	char *embed_model;
	char *embed_api_key_env;
	char *embed_api_key_file;
	char *embed_api_key;    /* resolved or NULL; wiped on free */
	long embed_timeout_ms;  /* one request of `scrim index add` */
	long embed_query_timeout_ms; /* one query of the gateway */
	long embed_batch;       /* texts per request */
	long embed_remote;      /* 0 no, 1 yes: a host not on loopback */
	char *encrypt_key_file; /* a path, or credential:NAME; "" none */
	struct vcrypt_key encrypt_key; /* resolved at load; wiped on free */
};

struct cfg_action {
	char *match;  /* a rule id glob or an entity type */
	int action;   /* enum scrub_action */
};

struct cfg_price {
	char *glob;
	double in_per_mtok;
	double out_per_mtok;
};

struct cfg_client_key {
	char *id;
	unsigned char sha256[32];
};

struct scrim_config {
	int refcnt;
	char *path;

	/* [gateway]; see conf/scrim.conf for what each means. */
	char *listen;
	char *admin_listen;
	char *auth;             /* "keys" or "off" */
	bool auth_off;
	long max_request_line;
	long max_header_size;
	long max_headers;
	long max_body_size;
	long header_timeout_ms;
	long body_timeout_ms;
	long body_min_rate;
	long idle_timeout_ms;
	long send_timeout_ms;
	long max_connections;
	long drain_timeout_ms;
	char *egress_proxy;
	char *log_level_str;
	enum log_level log_level;
	char *rules_dir;        /* resolved against the config file's folder */
	char *scrub;            /* "on" or "off" */
	bool scrub_off;
	char *scrub_secret_file;
	char *local_provider;   /* where action `local` sends requests */
	unsigned char scrub_secret[32]; /* keys placeholders; wiped on free */
	bool scrub_secret_random;       /* no file: random per process */
	long max_response_size;         /* answers held whole to restore */

	char *state_dir;        /* the CA, later the index; resolved */

	/* [proxy]: CONNECT, interception, absolute-form requests. */
	char *proxy_mode;       /* "on" or "off" */
	bool proxy_on;
	char **intercept;       /* host globs intercepted with the local CA */
	size_t nintercept;
	char **tunnel;          /* host globs tunnelled blindly */
	size_t ntunnel;
	long proxy_default;     /* 0 deny, 1 tunnel: the other hosts */
	char **ports;           /* CONNECT ports allowed */
	size_t nports;
	char **resolve;         /* "host:port:address" overrides */
	size_t nresolve;
	long proxy_auth;        /* 0 keys, 1 off */
	long allow_private;     /* 0 no, 1 yes: private/loopback targets */
	long client_keys;       /* 0 replace, 1 pass: users' own provider keys */
	long leaf_cache;

	/* [redis]: virtual keys and usage limits. */
	char *redis_url;        /* "" = no Redis: [keys] only */
	char *redis_password_env;
	char *redis_password_file;
	char *redis_password;   /* resolved; wiped on free */
	long redis_timeout_ms;
	long fail_open;         /* 0 closed, 1 open */
	long default_max_tokens;
	char *admin_token_env;
	char *admin_token_file;
	char *admin_token;      /* resolved; wiped on free */

	/* [prices]: model glob -> USD per million input / output tokens. */
	struct cfg_price *prices;
	size_t nprices;

	/* [audit] */
	char *audit_mode;       /* "on" / "off" */
	bool audit_on;
	char *audit_file;       /* resolved; default state_dir/audit.jsonl */
	char *audit_key_file;   /* default state_dir/audit.key */
	long audit_fsync;       /* 0 always, 1 interval, 2 never */
	long audit_fsync_interval_ms;
	long audit_block;       /* on_failure: 0 block, 1 continue */
	long audit_client_address; /* 0 full, 1 truncated, 2 none */
	long audit_store_bodies;
	long audit_syslog;
	char *audit_redis_stream;
	long audit_redis_maxlen;
	long audit_queue;

	struct cfg_client_key *keys;
	size_t nkeys;
	struct cfg_provider *providers;
	size_t nproviders;
	struct cfg_route *routes;
	size_t nroutes;
	struct cfg_index index;         /* [index] */
	struct cfg_index *indexes;      /* [index NAME] */
	size_t nindexes;
};

/*
 * Load and validate a file. Returns a snapshot with refcnt 1, or NULL after
 * reporting every problem found as "FILE:LINE: message" through log_error
 * (or on stderr when to_stderr). Warnings (a provider key variable unset)
 * do not fail the load.
 */
struct scrim_config *config_load(const char *path, bool to_stderr);
struct scrim_config *config_ref(struct scrim_config *c);
void config_unref(struct scrim_config *c);

/* Parse "host:port" / "[v6]:port" into a sockaddr; false when malformed. */
struct sockaddr_storage;
bool config_parse_addr(const char *s, struct sockaddr_storage *ss,
                       int *socklen);
bool config_addr_is_loopback(const char *s);

/* The [index NAME] section for name, else [index]. */
const struct cfg_index *config_index(const struct scrim_config *c,
                                     const char *name);
/* An embedder configuration for ix (strings borrowed from ix): for the
 * gateway's queries (query: its own timeout, and the endpoint's error
 * messages kept out of the log) or for the index command. */
struct embed_conf;
void config_embed_conf(const struct cfg_index *ix, bool query,
                       struct embed_conf *out);

/* Unit parsers, exported for tests. */
bool config_parse_duration(const char *s, long *ms);
bool config_parse_size(const char *s, long *out);

#endif
