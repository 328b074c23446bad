/*
 * upstream.c - libcurl multi_socket on the libevent loop (the pattern of
 * curl's docs/examples/multi-event.c, with its gaps closed: every
 * allocation checked, no exit()). curl tells us which sockets to watch
 * (sock_cb) and when to call it back (timer_cb); every entry into curl is
 * followed by check_done(), which is the only place a transfer ends, so no
 * handle is ever removed from inside a curl callback.
 *
 * Sockets we open for curl stay registered with epoll while curl keeps
 * their connection idle in its cache ("parked"): a keep-alive connection
 * to a provider would otherwise cost an EPOLL_CTL_DEL after every answer
 * and an EPOLL_CTL_ADD before the next request. A parked socket that
 * turns readable (the provider closed it) is unregistered then; curl
 * finds it dead when it next looks. Our close callback, which curl calls
 * for every socket of ours it closes, ends the registration before the
 * descriptor number can be reused.
 */
#include "upstream.h"

#include "alloc.h"
#include "log.h"
#include "proxy.h"

#include <curl/curl.h>
#include <sys/socket.h>
#include <event2/event.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define UPSTREAM_MAX_HEAD (64 * 1024)
#define UPSTREAM_MAX_HEADERS 200
/* Idle easy handles kept for reuse: curl_easy_init() allocates and sets
 * up a few kilobytes (its receive buffer among them) that a reset keeps. */
#define UPSTREAM_POOL_MAX 64

struct up_sock;

struct scrim_upstream {
	struct event_base *base;
	CURLM *multi;
	struct event *timer;
	struct event *kick; /* the 0 ms timeout, run in the same loop turn */
	size_t active;
	struct up_sock **socks; /* by descriptor */
	size_t nsocks;
	CURL *pool[UPSTREAM_POOL_MAX];
	size_t npool;
};

struct up_sock {
	struct event *ev; /* NULL when not registered */
	short kind;       /* what ev watches */
	bool ours;        /* opened by open_cb, closed by close_cb */
	bool parked;      /* curl does not watch it now */
};

struct upstream_xfer {
	struct scrim_upstream *up;
	CURL *easy;
	struct curl_slist *headers;
	struct curl_slist *connect_to;
	bool guard;        /* refuse private addresses */
	bool refused;      /* the guard refused one */
	struct upstream_cbs cbs;
	void *arg;
	char errbuf[CURL_ERROR_SIZE];
	/* Response head lines as received, parsed when the blank line comes. */
	char *head;
	size_t head_len;
	size_t head_cap;
	bool head_done;
	bool caller_abort; /* a callback asked to stop; not an upstream fault */
	bool paused;
};

static void check_done(struct scrim_upstream *up);

static struct up_sock *
sock_get(struct scrim_upstream *up, curl_socket_t s)
{
	return s >= 0 && (size_t)s < up->nsocks ? up->socks[s] : NULL;
}

static struct up_sock *
sock_add(struct scrim_upstream *up, curl_socket_t s)
{
	struct up_sock *us;

	if ((size_t)s >= up->nsocks) {
		size_t n = up->nsocks ? up->nsocks : 64;
		while (n <= (size_t)s)
			n *= 2;
		/* An array of pointers. */
		/* NOLINTNEXTLINE(bugprone-sizeof-expression) */
		up->socks = xrealloc(up->socks, n * sizeof(*up->socks));
		memset(up->socks + up->nsocks, 0,
		       /* NOLINTNEXTLINE(bugprone-sizeof-expression) */
		       (n - up->nsocks) * sizeof(*up->socks));
		up->nsocks = n;
	}
	us = xcalloc(1, sizeof(*us));
	up->socks[s] = us;
	return us;
}

static void
sock_unwatch(struct up_sock *us)
{
	if (us->ev != NULL)
		event_free(us->ev);
	us->ev = NULL;
	us->kind = 0;
}

static void
sock_drop(struct scrim_upstream *up, curl_socket_t s)
{
	struct up_sock *us = sock_get(up, s);

	if (us == NULL)
		return;
	sock_unwatch(us);
	free(us);
	up->socks[s] = NULL;
}

static void
event_cb(evutil_socket_t fd, short what, void *arg)
{
	struct scrim_upstream *up = arg;
	struct up_sock *us = sock_get(up, fd);
	int running, action = 0;

	if (us != NULL && us->parked) {
		/* An idle connection spoke (mostly: the provider closed it).
		 * Stop watching rather than spin; curl sees it when it next
		 * considers reusing it. */
		sock_unwatch(us);
		return;
	}
	if (what & EV_READ)
		action |= CURL_CSELECT_IN;
	if (what & EV_WRITE)
		action |= CURL_CSELECT_OUT;
	curl_multi_socket_action(up->multi, fd, action, &running);
	check_done(up);
}

static void
timeout_cb(evutil_socket_t fd, short what, void *arg)
{
	struct scrim_upstream *up = arg;
	int running;

	(void)fd;
	(void)what;
	curl_multi_socket_action(up->multi, CURL_SOCKET_TIMEOUT, 0, &running);
	check_done(up);
}

static int
sock_cb(CURL *e, curl_socket_t s, int what, void *userp, void *socketp)
{
	struct scrim_upstream *up = userp;
	struct up_sock *us = socketp ? socketp : sock_get(up, s);
	short kind;

	(void)e;
	if (what == CURL_POLL_REMOVE) {
		if (us == NULL)
			return 0;
		if (!us->ours) {
			sock_drop(up, s);
			return 0;
		}
		/* Idle in curl's cache: stay registered for reading only. */
		if (us->kind != (EV_PERSIST | EV_READ))
			sock_unwatch(us);
		us->parked = true;
		return 0;
	}
	kind = EV_PERSIST;
	if (what & CURL_POLL_IN)
		kind |= EV_READ;
	if (what & CURL_POLL_OUT)
		kind |= EV_WRITE;
	if (us == NULL)
		us = sock_add(up, s);
	if (socketp == NULL)
		curl_multi_assign(up->multi, s, us);
	us->parked = false;
	if (us->ev != NULL && us->kind == kind)
		return 0; /* already watching exactly this: no epoll_ctl */
	sock_unwatch(us);
	us->kind = kind;
	us->ev = event_new(up->base, s, kind, event_cb, up);
	if (us->ev == NULL || event_add(us->ev, NULL) != 0) {
		log_error("upstream: cannot watch a socket");
		return -1;
	}
	return 0;
}

static int
timer_cb(CURLM *multi, long timeout_ms, void *userp)
{
	struct scrim_upstream *up = userp;
	struct timeval tv;

	(void)multi;
	if (timeout_ms < 0) {
		evtimer_del(up->timer);
		return 0;
	}
	/* Never call curl from here (curl docs): run it from the loop. Now
	 * (a new transfer) means an active event, which runs in this turn
	 * of the loop; a 0 ms timer would cost an epoll_wait(2) first. */
	if (timeout_ms == 0) {
		evtimer_del(up->timer);
		event_active(up->kick, EV_TIMEOUT, 1);
		return 0;
	}
	tv.tv_sec = timeout_ms / 1000;
	tv.tv_usec = (timeout_ms % 1000) * 1000;
	evtimer_add(up->timer, &tv);
	return 0;
}

struct scrim_upstream *
upstream_new(struct event_base *base)
{
	struct scrim_upstream *up = xcalloc(1, sizeof(*up));

	up->base = base;
	up->multi = curl_multi_init();
	up->timer = evtimer_new(base, timeout_cb, up);
	up->kick = event_new(base, -1, 0, timeout_cb, up);
	if (up->multi == NULL || up->timer == NULL || up->kick == NULL) {
		upstream_free(up);
		return NULL;
	}
	curl_multi_setopt(up->multi, CURLMOPT_SOCKETFUNCTION, sock_cb);
	curl_multi_setopt(up->multi, CURLMOPT_SOCKETDATA, up);
	curl_multi_setopt(up->multi, CURLMOPT_TIMERFUNCTION, timer_cb);
	curl_multi_setopt(up->multi, CURLMOPT_TIMERDATA, up);
	curl_multi_setopt(up->multi, CURLMOPT_PIPELINING, CURLPIPE_MULTIPLEX);
	/* Keep enough idle connections to providers for a busy gateway. */
	curl_multi_setopt(up->multi, CURLMOPT_MAXCONNECTS, 512L);
	return up;
}

static void
xfer_free(struct upstream_xfer *x)
{
	if (x->easy != NULL) {
		struct scrim_upstream *up = x->up;
		curl_multi_remove_handle(up->multi, x->easy);
		if (up->npool < UPSTREAM_POOL_MAX) {
			/* Every option goes back to its default; connections
			 * stay in the multi's cache, not in the handle. */
			curl_easy_reset(x->easy);
			up->pool[up->npool++] = x->easy;
		} else {
			curl_easy_cleanup(x->easy);
		}
		up->active--;
	}
	curl_slist_free_all(x->headers);
	curl_slist_free_all(x->connect_to);
	free(x->head);
	free(x);
}

void
upstream_free(struct scrim_upstream *up)
{
	if (up == NULL)
		return;
	while (up->npool > 0)
		curl_easy_cleanup(up->pool[--up->npool]);
	if (up->multi != NULL)
		curl_multi_cleanup(up->multi);
	if (up->timer != NULL)
		event_free(up->timer);
	if (up->kick != NULL)
		event_free(up->kick);
	for (size_t i = 0; i < up->nsocks; i++)
		if (up->socks[i] != NULL)
			sock_drop(up, (curl_socket_t)i);
	free(up->socks);
	free(up);
}

size_t
upstream_active(const struct scrim_upstream *up)
{
	return up->active;
}

static enum scrim_err
map_error(CURLcode rc)
{
	switch (rc) {
	case CURLE_OK:
		return ERR_NONE;
	case CURLE_COULDNT_RESOLVE_HOST:
	case CURLE_COULDNT_RESOLVE_PROXY:
	case CURLE_COULDNT_CONNECT:
		return ERR_UPSTREAM_CONNECT;
	case CURLE_OPERATION_TIMEDOUT:
		return ERR_UPSTREAM_TIMEOUT;
	case CURLE_PEER_FAILED_VERIFICATION:
	case CURLE_SSL_CONNECT_ERROR:
	case CURLE_SSL_CACERT_BADFILE:
	case CURLE_SSL_CERTPROBLEM:
	case CURLE_SSL_ISSUER_ERROR:
	case CURLE_SSL_PINNEDPUBKEYNOTMATCH:
	case CURLE_SSL_INVALIDCERTSTATUS:
		return ERR_UPSTREAM_TLS;
	default:
		return ERR_UPSTREAM_ERROR;
	}
}

static void
check_done(struct scrim_upstream *up)
{
	CURLMsg *msg;
	int left;

	while ((msg = curl_multi_info_read(up->multi, &left)) != NULL) {
		struct upstream_xfer *x = NULL;
		CURLcode rc;
		enum scrim_err err;

		if (msg->msg != CURLMSG_DONE)
			continue;
		/* msg dies with its handle: read everything first. */
		rc = msg->data.result;
		curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, (char **)&x);
		err = map_error(rc);
		if (x->refused) {
			err = ERR_FORBIDDEN_TARGET;
			snprintf(x->errbuf, sizeof(x->errbuf),
			         "target resolves to a private address");
		}
		if (err == ERR_NONE && !x->head_done) {
			err = ERR_UPSTREAM_ERROR;
			snprintf(x->errbuf, sizeof(x->errbuf), "no response head");
		}
		if (x->caller_abort)
			err = ERR_NONE;
		if (err != ERR_NONE && x->errbuf[0] == '\0')
			snprintf(x->errbuf, sizeof(x->errbuf), "%s",
			         curl_easy_strerror(rc));
		curl_multi_remove_handle(up->multi, x->easy);
		curl_easy_cleanup(x->easy);
		x->easy = NULL;
		up->active--;
		x->cbs.on_done(x->arg, err, err != ERR_NONE ? x->errbuf : NULL);
		xfer_free(x);
	}
}

/* The blank line ended a head: parse it and hand it over. */
static bool
head_complete(struct upstream_xfer *x)
{
	struct upstream_header hs[UPSTREAM_MAX_HEADERS];
	size_t nh = 0;
	char *p = x->head, *end = x->head + x->head_len, *eol;
	int status;

	/* Status line: "HTTP/1.1 200 OK" or "HTTP/2 200". */
	eol = memchr(p, '\n', (size_t)(end - p));
	if (eol == NULL || strncmp(p, "HTTP/", 5) != 0)
		return false;
	p = memchr(p, ' ', (size_t)(eol - p));
	if (p == NULL || eol - p < 4)
		return false;
	status = (p[1] - '0') * 100 + (p[2] - '0') * 10 + (p[3] - '0');
	if (status < 100 || status > 999)
		return false;
	if (status < 200) {
		/* 100 Continue, 103 Early Hints: wait for the real head. */
		x->head_len = 0;
		return true;
	}
	for (p = eol + 1; p < end; p = eol + 1) {
		char *colon, *v, *ve;

		eol = memchr(p, '\n', (size_t)(end - p));
		if (eol == NULL)
			break;
		ve = eol;
		if (ve > p && ve[-1] == '\r')
			ve--;
		if (ve == p)
			break;
		colon = memchr(p, ':', (size_t)(ve - p));
		if (colon == NULL || colon == p || nh == UPSTREAM_MAX_HEADERS)
			return false;
		v = colon + 1;
		while (v < ve && (*v == ' ' || *v == '\t'))
			v++;
		hs[nh].name = p;
		hs[nh].name_len = (size_t)(colon - p);
		hs[nh].value = v;
		hs[nh].value_len = (size_t)(ve - v);
		nh++;
	}
	x->head_done = true;
	return x->cbs.on_head(x->arg, status, hs, nh);
}

static size_t
header_cb(char *data, size_t size, size_t n, void *arg)
{
	struct upstream_xfer *x = arg;
	size_t len = size * n;

	if (x->head_done)
		return len; /* trailers: dropped */
	if (x->head_len + len > UPSTREAM_MAX_HEAD) {
		snprintf(x->errbuf, sizeof(x->errbuf), "response head too large");
		return 0;
	}
	if (x->head_len + len > x->head_cap) {
		x->head_cap = (x->head_len + len) * 2;
		x->head = xrealloc(x->head, x->head_cap);
	}
	memcpy(x->head + x->head_len, data, len);
	x->head_len += len;
	if ((len == 2 && data[0] == '\r') || (len == 1 && data[0] == '\n')) {
		if (!head_complete(x)) {
			if (!x->head_done)
				snprintf(x->errbuf, sizeof(x->errbuf),
				         "malformed response head");
			else
				x->caller_abort = true;
			return 0;
		}
	}
	return len;
}

static size_t
write_cb(char *data, size_t size, size_t n, void *arg)
{
	struct upstream_xfer *x = arg;
	size_t len = size * n;

	if (!x->head_done) {
		snprintf(x->errbuf, sizeof(x->errbuf), "body before head");
		return 0;
	}
	switch (x->cbs.on_data(x->arg, data, len)) {
	case UPSTREAM_DATA_OK:
		return len;
	case UPSTREAM_DATA_PAUSE:
		x->paused = true;
		return CURL_WRITEFUNC_PAUSE;
	default:
		x->caller_abort = true;
		return 0;
	}
}

static curl_socket_t
open_cb(void *arg, curlsocktype purpose, struct curl_sockaddr *a)
{
	struct upstream_xfer *x = arg;
	curl_socket_t s;

	(void)purpose;
	/* Checked on the very address connected to: a name that resolves
	 * differently the second time cannot slip past (DNS rebinding). */
	if (x->guard && !proxy_addr_public(&a->addr)) {
		x->refused = true;
		return CURL_SOCKET_BAD;
	}
	s = socket(a->family, a->socktype | SOCK_CLOEXEC, a->protocol);
	if (s != CURL_SOCKET_BAD) {
		/* A stale entry would mean a descriptor closed behind our
		 * back: start afresh rather than trust its registration. */
		sock_drop(x->up, s);
		sock_add(x->up, s)->ours = true;
	}
	return s;
}

static int
close_cb(void *arg, curl_socket_t s)
{
	sock_drop(arg, s);
	return close(s);
}

struct upstream_xfer *
upstream_start(struct scrim_upstream *up, const struct upstream_request *r,
               const struct upstream_cbs *cbs, void *arg)
{
	struct upstream_xfer *x = xcalloc(1, sizeof(*x));
	CURL *e;

	x->up = up;
	x->cbs = *cbs;
	x->arg = arg;
	e = x->easy = up->npool > 0 ? up->pool[--up->npool] : curl_easy_init();
	if (e == NULL)
		goto fail;
	for (const char *const *h = r->headers; h && *h; h++) {
		struct curl_slist *n = curl_slist_append(x->headers, *h);
		if (n == NULL)
			goto fail;
		x->headers = n;
	}
	for (size_t i = 0; i < r->nconnect_to; i++) {
		struct curl_slist *n = curl_slist_append(x->connect_to,
		                                         r->connect_to[i]);
		if (n == NULL)
			goto fail;
		x->connect_to = n;
	}
	x->guard = r->guard_private && (r->proxy == NULL || !*r->proxy);
	curl_easy_setopt(e, CURLOPT_PRIVATE, x);
	curl_easy_setopt(e, CURLOPT_OPENSOCKETFUNCTION, open_cb);
	curl_easy_setopt(e, CURLOPT_OPENSOCKETDATA, x);
	curl_easy_setopt(e, CURLOPT_CLOSESOCKETFUNCTION, close_cb);
	curl_easy_setopt(e, CURLOPT_CLOSESOCKETDATA, up);
	if (x->connect_to != NULL)
		curl_easy_setopt(e, CURLOPT_CONNECT_TO, x->connect_to);
	curl_easy_setopt(e, CURLOPT_URL, r->url);
	curl_easy_setopt(e, CURLOPT_ERRORBUFFER, x->errbuf);
	curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https");
	curl_easy_setopt(e, CURLOPT_FOLLOWLOCATION, 0L);
	curl_easy_setopt(e, CURLOPT_HTTP_VERSION, (long)CURL_HTTP_VERSION_2TLS);
	curl_easy_setopt(e, CURLOPT_SSL_VERIFYPEER, 1L);
	curl_easy_setopt(e, CURLOPT_SSL_VERIFYHOST, 2L);
	if (r->ca_file != NULL)
		curl_easy_setopt(e, CURLOPT_CAINFO, r->ca_file);
	/* An empty proxy disables curl's reading of http_proxy and friends:
	 * where requests go is the config's decision, not the environment's. */
	curl_easy_setopt(e, CURLOPT_PROXY, r->proxy ? r->proxy : "");
	curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, r->connect_timeout_ms);
	curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, r->timeout_ms);
	curl_easy_setopt(e, CURLOPT_TCP_KEEPALIVE, 1L);
	/* Compressed answers are decoded here: placeholders must be found
	 * in the bytes, and the client gets identity encoding. */
	curl_easy_setopt(e, CURLOPT_ACCEPT_ENCODING, "");
	curl_easy_setopt(e, CURLOPT_HTTPHEADER, x->headers);
	curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, header_cb);
	curl_easy_setopt(e, CURLOPT_HEADERDATA, x);
	curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, write_cb);
	curl_easy_setopt(e, CURLOPT_WRITEDATA, x);
	if (strcmp(r->method, "GET") == 0) {
		curl_easy_setopt(e, CURLOPT_HTTPGET, 1L);
	} else if (strcmp(r->method, "HEAD") == 0) {
		curl_easy_setopt(e, CURLOPT_NOBODY, 1L);
	} else {
		curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE,
		                 (curl_off_t)r->body_len);
		curl_easy_setopt(e, CURLOPT_POSTFIELDS, r->body ? r->body : "");
		if (strcmp(r->method, "POST") != 0)
			curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, r->method);
	}
	if (curl_multi_add_handle(up->multi, e) != CURLM_OK)
		goto fail;
	up->active++;
	return x;
fail:
	if (x->easy != NULL)
		curl_easy_cleanup(x->easy);
	x->easy = NULL;
	xfer_free(x);
	return NULL;
}

void
upstream_cancel(struct upstream_xfer *x)
{
	if (x != NULL)
		xfer_free(x);
}

void
upstream_resume(struct upstream_xfer *x)
{
	if (x == NULL || !x->paused)
		return;
	x->paused = false;
	/* May deliver the held-back data at once, through write_cb. */
	curl_easy_pause(x->easy, CURLPAUSE_CONT);
}
