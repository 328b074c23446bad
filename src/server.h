/*
 * server.h - the running gateway: event loop, listeners, the applied
 * configuration snapshot, signals (SIGHUP reload, SIGTERM drain) and
 * systemd notification. Passed as a context to every module; there is no
 * global server state.
 */
#ifndef SCRIM_SERVER_H
#define SCRIM_SERVER_H

#include "conn.h"
#include "scrim.h"

#include <sys/queue.h>

struct event_base;
struct evdns_base;
struct evconnlistener;

struct scrim_stats {
	uint64_t requests;  /* finished, any status */
	uint64_t errors;    /* answered with a scrim error */
	uint64_t accepted;  /* connections */
};

struct scrim_server {
	struct event_base *base;
	struct evdns_base *dns;
	struct scrim_config *cfg; /* applied snapshot; requests hold refs */
	struct ruleset *rules;    /* applied rule packs; requests hold refs */
	unsigned char random_secret[32]; /* when no scrub_secret_file */
	const char *config_path;
	struct evconnlistener *gateway;
	struct evconnlistener *admin;
	struct event *sig_hup, *sig_term, *sig_int;
	struct event *drain_timer;
	struct event *watchdog;   /* systemd WatchdogSec= keep-alive */
	struct scrim_upstream *up;
	struct limits *limits;       /* NULL without [redis] url */
	struct audit *audit;         /* NULL with [audit] mode = off */
	struct metrics *metrics;
	struct context *context;     /* retrieval worker, when any route uses it */
	uint64_t reloads, reload_failures;
	struct scrim_ca *ca;         /* NULL until `scrim ca init` */
	struct certcache *certs;     /* leaves for intercepted hosts */
	struct ssl_ctx_st *tls;      /* SSL_CTX for interception */
	TAILQ_HEAD(, scrim_conn) conns;
	size_t nconns;
	bool accepting_paused; /* at max_connections */
	bool draining;
	uint64_t next_conn_id;
	uint64_t next_req_id;
	uint32_t req_id_salt; /* so ids differ across restarts */
	uint64_t started_ms;
	struct scrim_stats stats;
};

/* Run `scrim serve`; returns the process exit code. */
int server_run(const char *config_path);

/* Bookkeeping for conn.c. */
void server_conn_closed(struct scrim_server *srv);
void server_next_req_id(struct scrim_server *srv, char out[17]);

#endif
