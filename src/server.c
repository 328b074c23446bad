/*
 * server.c - process lifetime of `scrim serve`: loads the configuration,
 * opens the listeners, runs the loop, and handles signals. SIGHUP loads
 * a new snapshot and swaps it in only if it is valid; SIGTERM stops
 * accepting, lets answers in flight finish within drain_timeout, exits 0.
 */
#include "server.h"

#include "alloc.h"
#include "audit.h"
#include "ca.h"
#include "certcache.h"
#include "config.h"
#include "context.h"
#include "conn.h"
#include "limits.h"
#include "log.h"
#include "metrics.h"
#include "rules.h"
#include "tls.h"
#include "upstream.h"

#include <curl/curl.h>
#include <errno.h>
#include <event2/dns.h>
#include <event2/event.h>
#include <event2/listener.h>
#include <openssl/crypto.h>
#include <openssl/rand.h>
#include <signal.h>
#include <sys/resource.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <systemd/sd-daemon.h>
#include <unistd.h>

void
server_next_req_id(struct scrim_server *srv, char out[17])
{
	static const char hx[] = "0123456789abcdef";
	uint64_t v = (uint64_t)srv->req_id_salt << 32 |
	             (++srv->next_req_id & 0xffffffffULL);

	/* By hand: one per request, and snprintf cost more than the rest. */
	for (int i = 15; i >= 0; i--, v >>= 4)
		out[i] = hx[v & 15];
	out[16] = '\0';
}

static void
accept_cb(struct evconnlistener *l, evutil_socket_t fd, struct sockaddr *sa,
          int salen, void *arg)
{
	struct scrim_server *srv = arg;
	enum conn_kind kind = l == srv->admin ? CONN_ADMIN : CONN_GATEWAY;

	if (srv->draining) {
		close(fd);
		return;
	}
	srv->stats.accepted++;
	if (conn_new(srv, fd, sa, salen, kind) == NULL)
		return;
	if (srv->nconns >= (size_t)srv->cfg->max_connections &&
	    !srv->accepting_paused) {
		/* Leave the rest in the kernel's backlog until some close. */
		log_warn("max_connections (%ld) reached; pausing accept",
		         srv->cfg->max_connections);
		evconnlistener_disable(srv->gateway);
		srv->accepting_paused = true;
	}
}

static void
accept_error_cb(struct evconnlistener *l, void *arg)
{
	int err = EVUTIL_SOCKET_ERROR();

	(void)l;
	(void)arg;
	/* EMFILE and friends: logged, and the listener keeps going. */
	log_error("accept: %s", evutil_socket_error_to_string(err));
}

void
server_conn_closed(struct scrim_server *srv)
{
	if (srv->accepting_paused && !srv->draining &&
	    srv->nconns < (size_t)srv->cfg->max_connections) {
		evconnlistener_enable(srv->gateway);
		srv->accepting_paused = false;
	}
	if (srv->draining && srv->nconns == 0)
		event_base_loopexit(srv->base, NULL);
}

static struct evconnlistener *
listen_on(struct scrim_server *srv, const char *addr)
{
	struct sockaddr_storage ss;
	int len;
	struct evconnlistener *l;

	if (!config_parse_addr(addr, &ss, &len)) {
		log_error("cannot listen on %s: not host:port", addr);
		return NULL;
	}
	l = evconnlistener_new_bind(srv->base, accept_cb, srv,
	                            LEV_OPT_CLOSE_ON_FREE | LEV_OPT_REUSEABLE |
	                                LEV_OPT_CLOSE_ON_EXEC,
	                            1024, (struct sockaddr *)&ss, len);
	if (l == NULL) {
		log_error("cannot listen on %s: %s", addr, strerror(errno));
		return NULL;
	}
	evconnlistener_set_error_cb(l, accept_error_cb);
	return l;
}

static void
on_hup(evutil_socket_t sig, short what, void *arg)
{
	struct scrim_server *srv = arg;
	struct scrim_config *next;

	(void)sig;
	(void)what;
	struct ruleset *rules;

	sd_notify(0, "RELOADING=1");
	next = config_load(srv->config_path, false);
	rules = next ? rules_load(next->rules_dir, false) : NULL;
	if (next == NULL || rules == NULL) {
		srv->reload_failures++;
		log_error("reload: %s has errors; the running configuration and "
		          "rules stay in force",
		          next ? next->rules_dir : srv->config_path);
		config_unref(next);
		sd_notify(0, "READY=1\nSTATUS=reload refused; old configuration "
		             "in force");
		return;
	}
	if (next->scrub_secret_random)
		memcpy(next->scrub_secret, srv->random_secret, 32);
	rules_unref(srv->rules);
	srv->rules = rules;
	if (strcmp(next->listen, srv->cfg->listen) != 0 ||
	    strcmp(next->admin_listen, srv->cfg->admin_listen) != 0)
		log_warn("reload: listen and admin_listen apply at restart; "
		         "still on %s and %s", srv->cfg->listen,
		         srv->cfg->admin_listen);
	config_unref(srv->cfg);
	srv->cfg = next;
	srv->reloads++;
	log_min_level = next->log_level;
	/* logrotate moved the file: start a new one, linked by a checkpoint. */
	if (srv->audit != NULL) {
		audit_set_block(srv->audit, next->audit_block == 0);
		audit_reopen(srv->audit);
	}
	log_info("reload: %s applied (%zu providers, %zu routes, %zu keys, "
	         "%zu rules)", next->path, next->nproviders, next->nroutes,
	         next->nkeys, rules->nrules);
	sd_notify(0, "READY=1\nSTATUS=configuration reloaded");
}

static void
on_watchdog(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	(void)arg;
	/* The loop turned, so the process is alive and serving. */
	sd_notify(0, "WATCHDOG=1");
}

static void
on_drain_timeout(evutil_socket_t fd, short what, void *arg)
{
	struct scrim_server *srv = arg;

	(void)fd;
	(void)what;
	log_warn("drain: %zu connections still open after drain_timeout; "
	         "closing them", srv->nconns);
	event_base_loopexit(srv->base, NULL);
}

static void
on_term(evutil_socket_t sig, short what, void *arg)
{
	struct scrim_server *srv = arg;
	struct scrim_conn *c, *next;
	struct timeval tv;

	(void)what;
	if (srv->draining) {
		log_warn("second signal: exiting now");
		event_base_loopexit(srv->base, NULL);
		return;
	}
	srv->draining = true;
	sd_notify(0, "STOPPING=1");
	log_info("%s: draining %zu connections (at most %ld ms)",
	         sig == SIGINT ? "SIGINT" : "SIGTERM", srv->nconns,
	         srv->cfg->drain_timeout_ms);
	/* Close the listening sockets so new clients are refused at once. */
	evconnlistener_free(srv->gateway);
	srv->gateway = NULL;
	evconnlistener_free(srv->admin);
	srv->admin = NULL;
	/* Idle keep-alive connections have nothing in flight. */
	for (c = TAILQ_FIRST(&srv->conns); c != NULL; c = next) {
		next = TAILQ_NEXT(c, link);
		if (c->state == CONN_IDLE)
			conn_close(c, "draining");
	}
	tv.tv_sec = srv->cfg->drain_timeout_ms / 1000;
	tv.tv_usec = (srv->cfg->drain_timeout_ms % 1000) * 1000;
	evtimer_add(srv->drain_timer, &tv);
	if (srv->nconns == 0)
		event_base_loopexit(srv->base, NULL);
}

int
server_run(const char *config_path)
{
	struct scrim_server srv;
	int rc = 1;

	memset(&srv, 0, sizeof(srv));
	TAILQ_INIT(&srv.conns);
	srv.config_path = config_path;
	srv.cfg = config_load(config_path, true);
	if (srv.cfg == NULL)
		return 1;
	log_min_level = srv.cfg->log_level;
	srv.rules = rules_load(srv.cfg->rules_dir, true);
	if (srv.rules == NULL) {
		config_unref(srv.cfg);
		return 1;
	}
	if (RAND_bytes(srv.random_secret, sizeof(srv.random_secret)) != 1) {
		log_error("no randomness for the scrub secret");
		goto out;
	}
	if (srv.cfg->scrub_secret_random) {
		memcpy(srv.cfg->scrub_secret, srv.random_secret, 32);
		log_warn("scrub_secret_file is not set: placeholders are stable "
		         "only until restart");
	}
	if (!srv.rules->jit)
		log_warn("PCRE2 JIT is unavailable; scrubbing runs interpreted");
	if (RAND_bytes((unsigned char *)&srv.req_id_salt,
	               sizeof(srv.req_id_salt)) != 1)
		srv.req_id_salt = (uint32_t)getpid();
	(void)signal(SIGPIPE, SIG_IGN);
	/* A file size limit (LimitFSIZE=, ulimit -f) must reach the audit
	 * writer as EFBIG, a write error its on_failure policy handles, not
	 * kill the gateway with every request in flight. */
	(void)signal(SIGXFSZ, SIG_IGN);
	/* A core file would hold prompts, personal data and provider keys
	 * in the clear, wherever the system puts cores: none. */
	{
		struct rlimit no_core = {0, 0};
		if (setrlimit(RLIMIT_CORE, &no_core) != 0)
			log_warn("cannot disable core dumps: %s", strerror(errno));
	}
	if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
		log_error("libcurl failed to initialise");
		goto out;
	}
	srv.base = event_base_new();
	if (srv.base == NULL) {
		log_error("libevent failed to initialise");
		goto out;
	}
	srv.dns = evdns_base_new(srv.base, EVDNS_BASE_INITIALIZE_NAMESERVERS);
	if (srv.dns == NULL)
		srv.dns = evdns_base_new(srv.base, 0);
	srv.up = upstream_new(srv.base);
	srv.metrics = metrics_new();
	srv.sig_hup = evsignal_new(srv.base, SIGHUP, on_hup, &srv);
	srv.sig_term = evsignal_new(srv.base, SIGTERM, on_term, &srv);
	srv.sig_int = evsignal_new(srv.base, SIGINT, on_term, &srv);
	srv.drain_timer = evtimer_new(srv.base, on_drain_timeout, &srv);
	if (srv.dns == NULL || srv.up == NULL || srv.sig_hup == NULL ||
	    srv.sig_term == NULL || srv.sig_int == NULL ||
	    srv.drain_timer == NULL) {
		log_error("cannot set up the event loop");
		goto out;
	}
	evsignal_add(srv.sig_hup, NULL);
	evsignal_add(srv.sig_term, NULL);
	evsignal_add(srv.sig_int, NULL);
	if (srv.cfg->audit_on) {
		char err[512];
		srv.audit = audit_open(srv.cfg, srv.base, err, sizeof(err));
		if (srv.audit == NULL) {
			log_error("audit: %s", err);
			goto out;
		}
	}
	/* The retrieval worker starts even when no route uses it yet: a
	 * reload may turn context on. */
	srv.context = context_new(srv.base, srv.cfg->state_dir);
	if (srv.context == NULL) {
		log_error("cannot start the retrieval worker");
		goto out;
	}
	if (*srv.cfg->redis_url) {
		srv.limits = limits_new(srv.base, srv.cfg);
		if (srv.limits == NULL) {
			log_error("cannot use [redis] url %s", srv.cfg->redis_url);
			goto out;
		}
	}
	if (srv.cfg->proxy_on) {
		char err[512];
		srv.ca = ca_load(srv.cfg->state_dir, err, sizeof(err));
		if (srv.ca == NULL) {
			log_warn("HTTPS interception is off: %s", err);
		} else {
			srv.certs = certcache_new(srv.ca, (size_t)srv.cfg->leaf_cache);
			srv.tls = srv.certs ? tls_server_ctx(srv.certs) : NULL;
			if (srv.tls == NULL) {
				log_error("cannot set up TLS interception");
				goto out;
			}
		}
	}
	srv.gateway = listen_on(&srv, srv.cfg->listen);
	if (srv.gateway == NULL)
		goto out;
	srv.admin = listen_on(&srv, srv.cfg->admin_listen);
	if (srv.admin == NULL)
		goto out;

	log_info("scrim %s: gateway on %s, admin on %s (%zu providers, "
	         "%zu routes, %zu keys, auth %s, %zu rules, scrub %s)",
	         SCRIM_VERSION, srv.cfg->listen, srv.cfg->admin_listen,
	         srv.cfg->nproviders, srv.cfg->nroutes, srv.cfg->nkeys,
	         srv.cfg->auth_off ? "off" : "keys", srv.rules->nrules,
	         srv.cfg->scrub_off ? "OFF" : "on");
	if (srv.cfg->proxy_on)
		log_info("proxy: CONNECT on, interception %s (%zu hosts), "
		         "others %s", srv.certs ? "on" : "OFF (no CA)",
		         srv.cfg->nintercept,
		         srv.cfg->proxy_default ? "tunnelled" : "refused");
	sd_notifyf(0, "READY=1\nSTATUS=serving on %s\nMAINPID=%lu",
	           srv.cfg->listen, (unsigned long)getpid());
	srv.started_ms = conn_now_ms();
	{
		uint64_t usec = 0;
		if (sd_watchdog_enabled(0, &usec) > 0 && usec > 0) {
			struct timeval tv = {(long)(usec / 2000000),
			                     (long)((usec / 2) % 1000000)};
			srv.watchdog = event_new(srv.base, -1, EV_PERSIST, on_watchdog,
			                         &srv);
			if (srv.watchdog != NULL)
				event_add(srv.watchdog, &tv);
		}
	}
	event_base_dispatch(srv.base);
	rc = 0;
	log_info("stopped: %llu requests served",
	         (unsigned long long)srv.stats.requests);
out:
	while (!TAILQ_EMPTY(&srv.conns))
		conn_close(TAILQ_FIRST(&srv.conns), "shutdown");
	if (srv.gateway != NULL)
		evconnlistener_free(srv.gateway);
	if (srv.admin != NULL)
		evconnlistener_free(srv.admin);
	upstream_free(srv.up);
	limits_free(srv.limits);
	/* After the connections: their last records are queued by now. */
	audit_close(srv.audit);
	context_free(srv.context);
	metrics_free(srv.metrics);
	tls_server_ctx_free(srv.tls);
	certcache_free(srv.certs);
	ca_free(srv.ca);
	if (srv.dns != NULL)
		evdns_base_free(srv.dns, 1);
	if (srv.sig_hup != NULL)
		event_free(srv.sig_hup);
	if (srv.sig_term != NULL)
		event_free(srv.sig_term);
	if (srv.sig_int != NULL)
		event_free(srv.sig_int);
	if (srv.drain_timer != NULL)
		event_free(srv.drain_timer);
	if (srv.watchdog != NULL)
		event_free(srv.watchdog);
	if (srv.base != NULL)
		event_base_free(srv.base);
	rules_unref(srv.rules);
	OPENSSL_cleanse(srv.random_secret, sizeof(srv.random_secret));
	config_unref(srv.cfg);
	curl_global_cleanup();
	return rc;
}
