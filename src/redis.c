/*
 * redis.c - see redis.h.
 *
 * Every call carries its own timer. hiredis keeps its callback list per
 * connection, and a reply for a call we gave up on may still arrive (or
 * arrive as NULL when the connection goes): each call record therefore
 * outlives its caller until hiredis is done with it, with the caller's
 * callback cleared. Calls are freed in exactly one place, call_done().
 */
#include "redis.h"

#include "alloc.h"
#include "log.h"

#include <event2/event.h>
#include <hiredis/async.h>
#include <hiredis/hiredis.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/*
 * hiredis' event hooks, ours rather than its adapters/libevent.h, which
 * costs system calls on every command: its read event is not persistent
 * (two epoll_ctl(2) per reply to arm it again), and a command waits for
 * EPOLLOUT, armed and disarmed each time (two more, and a loop turn
 * before the command leaves). Here the read event stays armed, and a
 * command is written from the loop in the turn it was queued in (as
 * conn.c writes answers); EPOLLOUT is armed only while connecting or
 * when the kernel would not take the whole command.
 */
struct redis_ev {
	redisAsyncContext *ac;
	struct event *rev;     /* EV_PERSIST: armed while hiredis reads */
	struct event *wev;     /* EPOLLOUT, when a write has to wait */
	struct event *flush;   /* writes queued commands, this turn */
	bool reading, writing, flush_pending, in_flush;
};

static void
ev_read_cb(evutil_socket_t fd, short what, void *arg)
{
	struct redis_ev *e = arg;

	(void)fd;
	(void)what;
	redisAsyncHandleRead(e->ac);
}

static void
ev_write_cb(evutil_socket_t fd, short what, void *arg)
{
	struct redis_ev *e = arg;

	(void)fd;
	(void)what;
	redisAsyncHandleWrite(e->ac);
}

static void
ev_flush_cb(evutil_socket_t fd, short what, void *arg)
{
	struct redis_ev *e = arg;

	(void)fd;
	(void)what;
	e->flush_pending = false;
	/* A write the kernel does not take whole asks for EPOLLOUT again
	 * from inside: in_flush makes that a real wait. This may free e
	 * (an error disconnects): touch nothing after it. */
	e->in_flush = true;
	redisAsyncHandleWrite(e->ac);
}

static void
ev_add_read(void *priv)
{
	struct redis_ev *e = priv;

	if (!e->reading) {
		e->reading = true;
		event_add(e->rev, NULL);
	}
}

static void
ev_del_read(void *priv)
{
	struct redis_ev *e = priv;

	if (e->reading) {
		e->reading = false;
		event_del(e->rev);
	}
}

static void
ev_add_write(void *priv)
{
	struct redis_ev *e = priv;

	if ((e->ac->c.flags & REDIS_CONNECTED) && !e->in_flush) {
		if (!e->flush_pending && !e->writing) {
			e->flush_pending = true;
			event_active(e->flush, EV_WRITE, 1);
		}
		return;
	}
	e->in_flush = false;
	if (!e->writing) {
		e->writing = true;
		event_add(e->wev, NULL);
	}
}

static void
ev_del_write(void *priv)
{
	struct redis_ev *e = priv;

	e->in_flush = false;
	if (e->writing) {
		e->writing = false;
		event_del(e->wev);
	}
}

static void
ev_cleanup(void *priv)
{
	struct redis_ev *e = priv;

	event_free(e->rev);
	event_free(e->wev);
	event_free(e->flush);
	free(e);
}

static void
ev_attach(redisAsyncContext *ac, struct event_base *base)
{
	struct redis_ev *e = xcalloc(1, sizeof(*e));

	e->ac = ac;
	e->rev = event_new(base, ac->c.fd, EV_READ | EV_PERSIST, ev_read_cb, e);
	e->wev = event_new(base, ac->c.fd, EV_WRITE | EV_PERSIST, ev_write_cb, e);
	e->flush = event_new(base, -1, 0, ev_flush_cb, e);
	if (e->rev == NULL || e->wev == NULL || e->flush == NULL)
		abort(); /* fixed bookkeeping: out of memory */
	ac->ev.addRead = ev_add_read;
	ac->ev.delRead = ev_del_read;
	ac->ev.addWrite = ev_add_write;
	ac->ev.delWrite = ev_del_write;
	ac->ev.cleanup = ev_cleanup;
	ac->ev.data = e;
	/* Connecting: readable or writable says how it went. */
	ev_add_read(e);
	e->writing = true;
	event_add(e->wev, NULL);
}

#define REDIS_BACKOFF_MIN_MS 100
#define REDIS_BACKOFF_MAX_MS 5000
#define REDIS_STALL_TIMEOUTS 5

struct redis_call {
	struct scrim_redis *r;
	redis_cb cb;           /* NULL once answered, timed out or cancelled */
	void *arg;
	struct event *timer;
	bool in_hiredis;       /* hiredis still holds it */
};

struct scrim_redis {
	const char *name;      /* whose connection, for the log: static */
	struct event_base *base;
	redisAsyncContext *ac;
	bool connected;
	char host[256];
	int port, db;
	bool unix_socket;
	char *password;
	long timeout_ms;
	struct event *retry;
	long backoff_ms;
	unsigned timeouts_in_a_row; /* reset by any reply */
	struct redis_stats st;
};

bool
redis_parse_url(const char *url, char *host, size_t cap, int *port, int *db,
                bool *unix_socket)
{
	const char *p, *e;

	*port = 6379;
	*db = 0;
	*unix_socket = false;
	if (url[0] == '/') {
		snprintf(host, cap, "%s", url);
		*unix_socket = true;
		return true;
	}
	if (strncmp(url, "redis://", 8) != 0)
		return false;
	p = url + 8;
	e = strchr(p, '@');
	if (e != NULL)
		p = e + 1; /* credentials come from password_env/_file */
	e = p + strcspn(p, ":/");
	if (e == p || (size_t)(e - p) >= cap)
		return false;
	memcpy(host, p, (size_t)(e - p));
	host[e - p] = '\0';
	if (*e == ':')
		*port = (int)strtol(e + 1, (char **)&e, 10);
	if (*e == '/')
		*db = (int)strtol(e + 1, NULL, 10);
	return *port > 0 && *port < 65536 && *db >= 0;
}

static void connect_now(struct scrim_redis *r);

static void
retry_cb(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	connect_now(arg);
}

static void
schedule_retry(struct scrim_redis *r)
{
	struct timeval tv = {r->backoff_ms / 1000, (r->backoff_ms % 1000) * 1000};

	evtimer_add(r->retry, &tv);
	r->backoff_ms *= 2;
	if (r->backoff_ms > REDIS_BACKOFF_MAX_MS)
		r->backoff_ms = REDIS_BACKOFF_MAX_MS;
}

static void
on_connect(const redisAsyncContext *ac, int status)
{
	struct scrim_redis *r = ac->data;

	if (status != REDIS_OK) {
		/* hiredis frees the context after this callback. */
		log_warn("redis (%s): cannot connect to %s: %s", r->name, r->host,
		         ac->errstr);
		r->ac = NULL;
		r->connected = false;
		schedule_retry(r);
		return;
	}
	r->connected = true;
	r->backoff_ms = REDIS_BACKOFF_MIN_MS;
	log_info("redis (%s): connected to %s", r->name, r->host);
}

static void
on_disconnect(const redisAsyncContext *ac, int status)
{
	struct scrim_redis *r = ac->data;

	(void)status;
	if (r == NULL)
		return;
	log_warn("redis (%s): disconnected from %s%s%s", r->name, r->host,
	         ac->errstr[0] ? ": " : "", ac->errstr);
	r->ac = NULL;
	r->connected = false;
	r->st.reconnects++;
	schedule_retry(r);
}

static void
ignore_reply(redisAsyncContext *ac, void *reply, void *priv)
{
	(void)ac;
	(void)priv;
	(void)reply;
}

static void
connect_now(struct scrim_redis *r)
{
	redisAsyncContext *ac = r->unix_socket
	                            ? redisAsyncConnectUnix(r->host)
	                            : redisAsyncConnect(r->host, r->port);

	if (ac == NULL || ac->err) {
		log_warn("redis (%s): cannot connect to %s: %s", r->name, r->host,
		         ac ? ac->errstr : "out of memory");
		if (ac != NULL)
			redisAsyncFree(ac);
		schedule_retry(r);
		return;
	}
	ac->data = r;
	r->ac = ac;
	ev_attach(ac, r->base);
	redisAsyncSetConnectCallback(ac, on_connect);
	redisAsyncSetDisconnectCallback(ac, on_disconnect);
	/* Queued now, sent once connected: AUTH and SELECT come first. */
	if (r->password != NULL)
		redisAsyncCommand(ac, ignore_reply, NULL, "AUTH %s", r->password);
	if (r->db != 0)
		redisAsyncCommand(ac, ignore_reply, NULL, "SELECT %d", r->db);
}

struct scrim_redis *
redis_new(struct event_base *base, const char *name, const char *url,
          const char *password, long timeout_ms)
{
	struct scrim_redis *r = xcalloc(1, sizeof(*r));

	r->name = name;
	if (!redis_parse_url(url, r->host, sizeof(r->host), &r->port, &r->db,
	                     &r->unix_socket)) {
		free(r);
		return NULL;
	}
	r->base = base;
	r->password = password ? xstrdup(password) : NULL;
	r->timeout_ms = timeout_ms;
	r->backoff_ms = REDIS_BACKOFF_MIN_MS;
	r->retry = evtimer_new(base, retry_cb, r);
	connect_now(r);
	return r;
}

void
redis_free(struct scrim_redis *r)
{
	if (r == NULL)
		return;
	if (r->ac != NULL) {
		r->ac->data = NULL; /* no reconnect from the callback */
		redisAsyncFree(r->ac);
	}
	event_free(r->retry);
	xfree_secret(r->password);
	free(r);
}

static void
call_done(struct redis_call *c)
{
	if (c->timer != NULL)
		event_free(c->timer);
	free(c);
}

static void
reply_cb(redisAsyncContext *ac, void *reply, void *priv)
{
	struct redis_call *c = priv;
	redis_cb cb = c->cb;

	(void)ac;
	c->in_hiredis = false;
	c->cb = NULL;
	evtimer_del(c->timer);
	if (reply != NULL)
		c->r->timeouts_in_a_row = 0;
	if (cb != NULL) {
		redisReply *rep = reply;
		if (rep == NULL || rep->type == REDIS_REPLY_ERROR)
			c->r->st.errors++;
		cb(c->arg, reply);
	}
	call_done(c);
}

static void
timeout_cb(evutil_socket_t fd, short what, void *arg)
{
	struct redis_call *c = arg;
	struct scrim_redis *r = c->r;
	redis_cb cb = c->cb;

	(void)fd;
	(void)what;
	c->cb = NULL;
	r->st.timeouts++;
	if (cb != NULL)
		cb(c->arg, NULL);
	/* One late answer is a busy moment: the call is given up, its reply
	 * will be dropped when it comes. Several in a row is a stalled Redis:
	 * drop the connection (every call still waiting hears NULL now) and
	 * rebuild it. */
	if (++r->timeouts_in_a_row < REDIS_STALL_TIMEOUTS)
		return;
	r->timeouts_in_a_row = 0;
	if (r->ac != NULL) {
		redisAsyncContext *ac = r->ac;
		log_warn("redis (%s): no answer within %ld ms; reconnecting",
		         r->name, r->timeout_ms);
		r->ac = NULL;
		r->connected = false;
		ac->data = NULL; /* our reconnect, not on_disconnect's */
		redisAsyncFree(ac); /* calls reply_cb(NULL) for each, c too */
		r->st.reconnects++;
		schedule_retry(r);
	}
}

static char *
put_count(char *o, char type, size_t n)
{
	*o++ = type;
	o = scrim_put_u64(o, n);
	*o++ = '\r';
	*o++ = '\n';
	return o;
}

/* The command in the protocol's own form, made here: hiredis' argv
 * formatting goes through sdscatfmt for every argument, a fifth of
 * what a virtual key cost scrim per request. */
static bool
send_argv(redisAsyncContext *ac, struct redis_call *c, int argc,
          const char **argv, const size_t *argvlen)
{
	char stack[2048], *buf = stack, *o;
	size_t need = 24;
	int rc;

	for (int i = 0; i < argc; i++)
		need += argvlen[i] + 24 + 2;
	if (need > sizeof(stack))
		buf = xmalloc(need);
	o = put_count(buf, '*', (size_t)argc);
	for (int i = 0; i < argc; i++) {
		o = put_count(o, '$', argvlen[i]);
		memcpy(o, argv[i], argvlen[i]);
		o += argvlen[i];
		*o++ = '\r';
		*o++ = '\n';
	}
	rc = redisAsyncFormattedCommand(ac, reply_cb, c, buf, (size_t)(o - buf));
	if (buf != stack)
		free(buf);
	return rc == REDIS_OK;
}

struct redis_call *
redis_call(struct scrim_redis *r, redis_cb cb, void *arg, int argc,
           const char **argv, const size_t *argvlen)
{
	struct redis_call *c;
	struct timeval tv = {r->timeout_ms / 1000, (r->timeout_ms % 1000) * 1000};

	if (r->ac == NULL || !r->connected)
		return NULL;
	c = xcalloc(1, sizeof(*c));
	c->r = r;
	c->cb = cb;
	c->arg = arg;
	c->timer = evtimer_new(r->base, timeout_cb, c);
	if (!send_argv(r->ac, c, argc, argv, argvlen)) {
		call_done(c);
		return NULL;
	}
	c->in_hiredis = true;
	/* libevent measures a new timer from the time it cached when this
	 * loop iteration began. After a long iteration (a busy loop, or the
	 * process kept off the CPU) that time is stale, and a 200 ms timer
	 * could fire a few ms after the call went out, failing it closed
	 * while Redis answers in time (the 1 h soak saw one: 503 after 7 ms).
	 * Start the call's clock now. */
	event_base_update_cache_time(r->base);
	evtimer_add(c->timer, &tv);
	r->st.calls++;
	return c;
}

void
redis_cancel(struct redis_call *c)
{
	/* hiredis still owns it; its reply (or NULL) frees it later. */
	if (c != NULL)
		c->cb = NULL;
}

bool
redis_connected(const struct scrim_redis *r)
{
	return r != NULL && r->connected;
}

void
redis_get_stats(const struct scrim_redis *r, struct redis_stats *st)
{
	*st = r->st;
}
