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
/* Idle transfers kept for reuse, each with its easy handle still set up
 * for its last request: curl_easy_init() allocates and clears a few
 * kilobytes, curl_easy_reset() clears them again, and every option costs
 * a call (a string option a copy), so a request like the one before on
 * the same handle only sets its URL, headers and body. */
#define UPSTREAM_POOL_MAX 64
/* A response head buffer larger than this is not kept in the pool. */
#define UPSTREAM_HEAD_KEEP 4096

struct up_sock;

struct scrim_upstream {
	struct event_base *base;
	CURLM *multi;
	struct event *timer;
	struct event *kick; /* the 0 ms timeout, run in the same loop turn */
	size_t active;
	struct up_sock **socks; /* by descriptor */
	size_t nsocks;
	struct upstream_xfer *pool[UPSTREAM_POOL_MAX];
	size_t npool;
	/* "Accept-Encoding: " and what this libcurl decodes; "" if none. */
	char accept_encoding[64];
};

struct up_sock {
	struct event *ev; /* NULL when not registered */
	short kind;       /* what ev watches */
	bool ours;        /* opened by open_cb, closed by close_cb */
	bool parked;      /* curl does not watch it now */
};

/* How the method is put to curl; a change means setting the handle up
 * afresh, since these options leave traces in each other (NOBODY,
 * HTTPGET and POSTFIELDS each set curl's request method). */
enum xfer_kind { XFER_GET, XFER_HEAD, XFER_POST, XFER_CUSTOM };

struct upstream_xfer {
	struct scrim_upstream *up;
	CURL *easy; /* lives and dies with the transfer object */
	/* What the handle is set up for (xfer_setup), kept while pooled. */
	bool set_up;
	enum xfer_kind kind;
	char *ca_file; /* NULL: the system trust store */
	char *proxy;   /* "": direct */
	struct curl_slist *connect_to;
	long connect_timeout_ms;
	long timeout_ms;
	/* The URL last parsed into uh, for curl to copy rather than parse
	 * (CURLOPT_CURLU): the next request mostly goes to the same one.
	 * NULL when uh holds no usable parse. */
	char *url;
	CURLU *uh;
	/* This request's headers as a curl_slist laid out in one block
	 * (nodes, then strings), kept across requests; wiped after each
	 * transfer, since the provider's key is in it. */
	char *hdr;
	size_t hdr_cap;
	size_t hdr_len;
	/* The rest is per request. */
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
	bool was_paused;   /* curl's pause state is not trusted across requests */
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

/* The header CURLOPT_ACCEPT_ENCODING "" makes curl send, listed as curl
 * lists its decoders; left empty when this libcurl has none, and curl
 * then writes its own. */
static void
accept_encoding_init(struct scrim_upstream *up)
{
	static const struct {
		int feature;
		const char *names;
	} dec[] = {
	    {CURL_VERSION_LIBZ, "deflate, gzip"},
	    {CURL_VERSION_BROTLI, "br"},
	    {CURL_VERSION_ZSTD, "zstd"},
	};
	const curl_version_info_data *v = curl_version_info(CURLVERSION_NOW);
	size_t len = 0;

	for (size_t i = 0; i < SCRIM_ARRAY_LEN(dec); i++) {
		if (!(v->features & dec[i].feature))
			continue;
		/* At most 40 bytes in all: never truncated. */
		len += (size_t)snprintf(up->accept_encoding + len,
		                        sizeof(up->accept_encoding) - len, "%s%s",
		                        len > 0 ? ", " : "Accept-Encoding: ",
		                        dec[i].names);
	}
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
	accept_encoding_init(up);
	return up;
}

/* Frees a transfer object and its handle; it is in no multi. */
static void
xfer_destroy(struct upstream_xfer *x)
{
	curl_easy_cleanup(x->easy);
	curl_url_cleanup(x->uh);
	free(x->url);
	free(x->ca_file);
	free(x->proxy);
	curl_slist_free_all(x->connect_to);
	if (x->hdr_len > 0)
		explicit_bzero(x->hdr, x->hdr_len);
	free(x->hdr);
	free(x->head);
	free(x);
}

/* Back to the pool, or freed when it is full; the transfer is out of the
 * multi. Options stay set across transfers by design (curl_easy_setopt(3)),
 * but a handle whose transfer did not end cleanly (cancelled, failed,
 * ever paused) is reset: what such a transfer leaves in the handle is
 * not worth reasoning about for a request that saves a few setopts. */
static void
xfer_release(struct upstream_xfer *x, bool clean)
{
	struct scrim_upstream *up = x->up;

	if (x->hdr_len > 0)
		explicit_bzero(x->hdr, x->hdr_len);
	x->hdr_len = 0;
	if (x->head_cap > UPSTREAM_HEAD_KEEP) {
		free(x->head);
		x->head = NULL;
		x->head_cap = 0;
	}
	if (up->npool == UPSTREAM_POOL_MAX) {
		xfer_destroy(x);
		return;
	}
	if (!clean || x->was_paused) {
		curl_easy_reset(x->easy);
		x->set_up = false;
	}
	up->pool[up->npool++] = x;
}

void
upstream_free(struct scrim_upstream *up)
{
	if (up == NULL)
		return;
	while (up->npool > 0)
		xfer_destroy(up->pool[--up->npool]);
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
		up->active--;
		x->cbs.on_done(x->arg, err, err != ERR_NONE ? x->errbuf : NULL);
		xfer_release(x, rc == CURLE_OK);
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
		x->paused = x->was_paused = true;
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

static bool
str_eq(const char *a, const char *b)
{
	return a == b || (a != NULL && b != NULL && strcmp(a, b) == 0);
}

/* Whether x's handle is set up as r needs, except for what is set on
 * every request anyway. */
static bool
xfer_matches(const struct upstream_xfer *x, const struct upstream_request *r,
             enum xfer_kind kind, const char *proxy)
{
	const struct curl_slist *l = x->connect_to;

	if (!x->set_up || x->kind != kind || !str_eq(x->ca_file, r->ca_file) ||
	    strcmp(x->proxy, proxy) != 0)
		return false;
	for (size_t i = 0; i < r->nconnect_to; i++, l = l->next)
		if (l == NULL || strcmp(l->data, r->connect_to[i]) != 0)
			return false;
	return l == NULL;
}

/* Every option that does not change from one request to the next like
 * it. false on failure to allocate; the handle is then not set up. */
static bool
xfer_setup(struct upstream_xfer *x, const struct upstream_request *r,
           enum xfer_kind kind, const char *proxy)
{
	CURL *e = x->easy;

	if (x->set_up)
		curl_easy_reset(e);
	x->set_up = false;
	free(x->ca_file);
	free(x->proxy);
	curl_slist_free_all(x->connect_to);
	x->ca_file = r->ca_file != NULL ? xstrdup(r->ca_file) : NULL;
	x->proxy = xstrdup(proxy);
	x->connect_to = NULL;
	for (size_t i = 0; i < r->nconnect_to; i++) {
		struct curl_slist *n = curl_slist_append(x->connect_to,
		                                         r->connect_to[i]);
		if (n == NULL)
			return false;
		x->connect_to = n;
	}
	curl_easy_setopt(e, CURLOPT_PRIVATE, x);
	curl_easy_setopt(e, CURLOPT_OPENSOCKETFUNCTION, open_cb);
	curl_easy_setopt(e, CURLOPT_OPENSOCKETDATA, x);
	curl_easy_setopt(e, CURLOPT_CLOSESOCKETFUNCTION, close_cb);
	curl_easy_setopt(e, CURLOPT_CLOSESOCKETDATA, x->up);
	if (x->connect_to != NULL)
		curl_easy_setopt(e, CURLOPT_CONNECT_TO, x->connect_to);
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
	curl_easy_setopt(e, CURLOPT_PROXY, proxy);
	/* And with a proxy, no host goes around it: curl would otherwise
	 * read no_proxy/NO_PROXY from the environment. */
	curl_easy_setopt(e, CURLOPT_NOPROXY, "");
	curl_easy_setopt(e, CURLOPT_TCP_KEEPALIVE, 1L);
	/* Compressed answers are decoded here: placeholders must be found
	 * in the bytes, and the client gets identity encoding. */
	curl_easy_setopt(e, CURLOPT_ACCEPT_ENCODING, "");
	curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, header_cb);
	curl_easy_setopt(e, CURLOPT_HEADERDATA, x);
	curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, write_cb);
	curl_easy_setopt(e, CURLOPT_WRITEDATA, x);
	if (kind == XFER_GET)
		curl_easy_setopt(e, CURLOPT_HTTPGET, 1L);
	else if (kind == XFER_HEAD)
		curl_easy_setopt(e, CURLOPT_NOBODY, 1L);
	/* -1: not set yet, so that the first request sets its own. */
	x->connect_timeout_ms = x->timeout_ms = -1;
	x->kind = kind;
	x->set_up = true;
	return true;
}

/* Lays the headers out in x->hdr as a curl_slist: the nodes, then the
 * strings. curl only reads the list, during the transfer; x owns it.
 * Unless the caller sent one, the list ends with the Accept-Encoding
 * header curl would build for CURLOPT_ACCEPT_ENCODING "": given here,
 * curl sends it as it is and skips formatting its own, and decoding
 * stays on (that depends on the option, not on who wrote the header). */
static void
headers_build(struct upstream_xfer *x, const char *const *h)
{
	const char *ae = x->up->accept_encoding;
	size_t n = 0, bytes = 0, nn;
	struct curl_slist *node;
	char *p;

	for (; h != NULL && h[n] != NULL; n++) {
		bytes += strlen(h[n]) + 1;
		/* curl's own test: the name, then ':' or ';'. */
		if ((h[n][0] | 0x20) == 'a' &&
		    strncasecmp(h[n], "accept-encoding", 15) == 0 &&
		    (h[n][15] == ':' || h[n][15] == ';'))
			ae = NULL;
	}
	nn = n + (ae != NULL && *ae != '\0');
	if (nn == 0)
		return;
	if (nn > n)
		bytes += strlen(ae) + 1;
	bytes += nn * sizeof(struct curl_slist);
	if (bytes > x->hdr_cap) {
		/* Nothing to wipe: hdr is wiped after every transfer. */
		free(x->hdr);
		x->hdr_cap = bytes < 1024 ? 1024 : bytes;
		x->hdr = xmalloc(x->hdr_cap);
	}
	/* The nodes come first, so they are aligned as malloc aligns. */
	node = (struct curl_slist *)(void *)x->hdr;
	p = x->hdr + nn * sizeof(struct curl_slist);
	for (size_t i = 0; i < nn; i++) {
		const char *s = i < n ? h[i] : ae;
		size_t len = strlen(s) + 1;

		memcpy(p, s, len);
		node[i].data = p;
		node[i].next = i + 1 < nn ? &node[i + 1] : NULL;
		p += len;
	}
	x->hdr_len = bytes;
}

struct upstream_xfer *
upstream_start(struct scrim_upstream *up, const struct upstream_request *r,
               const struct upstream_cbs *cbs, void *arg)
{
	const char *proxy = r->proxy != NULL ? r->proxy : "";
	struct upstream_xfer *x;
	enum xfer_kind kind;
	CURL *e;

	if (strcmp(r->method, "POST") == 0)
		kind = XFER_POST;
	else if (strcmp(r->method, "GET") == 0)
		kind = XFER_GET;
	else if (strcmp(r->method, "HEAD") == 0)
		kind = XFER_HEAD;
	else
		kind = XFER_CUSTOM;
	if (up->npool > 0) {
		x = up->pool[--up->npool];
	} else {
		x = xcalloc(1, sizeof(*x));
		x->up = up;
		x->easy = curl_easy_init();
		if (x->easy == NULL) {
			free(x);
			return NULL;
		}
	}
	e = x->easy;
	if (!xfer_matches(x, r, kind, proxy) &&
	    !xfer_setup(x, r, kind, proxy)) {
		xfer_destroy(x);
		return NULL;
	}
	x->cbs = *cbs;
	x->arg = arg;
	x->guard = r->guard_private && *proxy == '\0';
	x->refused = false;
	x->errbuf[0] = '\0';
	x->head_len = 0;
	x->head_done = false;
	x->caller_abort = false;
	x->paused = false;
	x->was_paused = false;
	if (x->connect_timeout_ms != r->connect_timeout_ms) {
		curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS,
		                 r->connect_timeout_ms);
		x->connect_timeout_ms = r->connect_timeout_ms;
	}
	if (x->timeout_ms != r->timeout_ms) {
		curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, r->timeout_ms);
		x->timeout_ms = r->timeout_ms;
	}
	if (x->url == NULL || strcmp(x->url, r->url) != 0) {
		free(x->url);
		x->url = NULL;
		if (x->uh == NULL)
			x->uh = curl_url();
		/* The flags curl itself parses a CURLOPT_URL with. */
		if (x->uh != NULL &&
		    curl_url_set(x->uh, CURLUPART_URL, r->url,
		                 CURLU_GUESS_SCHEME | CURLU_NON_SUPPORT_SCHEME) ==
		        CURLUE_OK)
			x->url = xstrdup(r->url);
	}
	/* Failing that, curl parses the URL and reports the error itself.
	 * The string is set too: curl reports it as the effective URL. */
	curl_easy_setopt(e, CURLOPT_CURLU, x->url != NULL ? x->uh : NULL);
	curl_easy_setopt(e, CURLOPT_URL, r->url);
	headers_build(x, r->headers);
	curl_easy_setopt(e, CURLOPT_HTTPHEADER,
	                 x->hdr_len > 0 ? (struct curl_slist *)(void *)x->hdr
	                                : NULL);
	if (kind == XFER_POST || kind == XFER_CUSTOM) {
		curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE,
		                 (curl_off_t)r->body_len);
		curl_easy_setopt(e, CURLOPT_POSTFIELDS, r->body ? r->body : "");
		if (kind == XFER_CUSTOM)
			curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, r->method);
	}
	if (curl_multi_add_handle(up->multi, e) != CURLM_OK) {
		xfer_release(x, false);
		return NULL;
	}
	up->active++;
	return x;
}

void
upstream_cancel(struct upstream_xfer *x)
{
	if (x == NULL)
		return;
	curl_multi_remove_handle(x->up->multi, x->easy);
	x->up->active--;
	xfer_release(x, false);
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
