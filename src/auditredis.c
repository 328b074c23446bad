/*
 * auditredis.c - the audit log's copy to a Redis Stream; see auditredis.h.
 * This file owns the outbox between the audit writer thread and the loop,
 * and a Redis connection of its own (redis.c). It decides nothing about
 * requests: a Redis that is slow, full or gone costs stream lines
 * (counted and logged, rate-limited), never a request.
 *
 * Lines are pushed by the writer thread once they are in the file, so
 * the stream holds exactly the file's lines, MACs included. They cross to
 * the loop through a bounded outbox under a mutex and a pipe that wakes
 * the loop (as context.c does): hiredis is only ever used on the loop.
 * While Redis is away the outbox keeps what it can hold and sends it once
 * Redis is back; past its bounds, lines are dropped and counted. A call
 * that fails or times out is counted and not sent again: Redis may have
 * applied it, and the same line twice in the stream would read as a
 * replayed record.
 *
 * Why a connection of its own rather than the limits one: a burst of
 * XADDs (a batch is up to 4,096 lines, a line with stored bodies up to
 * 16 MiB) must never sit in front of a limits check on the same socket,
 * and a slow XADD must not count towards that connection's stall
 * detection, which would rebuild it under the limits' feet.
 */
#include "auditredis.h"

#include "alloc.h"
#include "config.h"
#include "log.h"
#include "redis.h"

#include <errno.h>
#include <event2/event.h>
#include <fcntl.h>
#include <hiredis/hiredis.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* The outbox's bounds: about a minute of a busy gateway's records, and
 * never more memory than this whatever the lines hold. */
#define AUDITREDIS_MAX_LINES 100000
#define AUDITREDIS_MAX_BYTES ((size_t)64 << 20)
/* XADDs on the wire at once: enough to keep Redis busy, and a bound on
 * what a stalled Redis costs (each of them fails). */
#define AUDITREDIS_INFLIGHT 32
/* The audit connection's own call timeout, at least this: nothing waits
 * on it, so it need not be as short as a limits check's. */
#define AUDITREDIS_TIMEOUT_MIN_MS 1000
/* After a failure, or while not connected, look again this often. */
#define AUDITREDIS_RETRY_MS 200
/* At most one warning this often while calls fail. */
#define AUDITREDIS_WARN_MS 10000

struct auditredis_line {
	struct auditredis_line *next;
	size_t len;
	char data[]; /* without the newline */
};

struct auditredis {
	/* Loop thread only. */
	struct event_base *base;
	struct scrim_redis *redis;
	char *key;                 /* the stream's name */
	char maxlen[24];           /* redis_stream_maxlen, as text */
	char boot[33];             /* the run's id, as in its checkpoints */
	struct event *wake_ev;     /* the pipe's read end */
	struct event *retry_ev;
	size_t inflight;
	bool closing;              /* auditredis_free runs: send nothing */
	bool failing;              /* the last call failed */
	uint64_t warned_ms;        /* monotonic; the last warning */
	uint64_t failed_warned;    /* failed, when last warned */

	int pipefd[2];             /* writer -> loop wake-ups */

	pthread_mutex_t mu;
	/* Under mu. */
	struct auditredis_line *head, *tail;
	size_t nlines, nbytes;
	bool wake_pending;         /* a byte is in the pipe, or will be */

	_Atomic uint64_t sent, failed, dropped;
};

static uint64_t
mono_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static void pump(struct auditredis *ar);

static void
arm_retry(struct auditredis *ar)
{
	struct timeval tv = {0, AUDITREDIS_RETRY_MS * 1000};

	if (!evtimer_pending(ar->retry_ev, NULL))
		evtimer_add(ar->retry_ev, &tv);
}

/* Counted always; said at most every AUDITREDIS_WARN_MS, with how many
 * failed since the last time it was said. Never the line: ids only. */
static void
note_failure(struct auditredis *ar, const char *why)
{
	uint64_t failed = atomic_fetch_add(&ar->failed, 1) + 1;
	uint64_t now = mono_ms();

	ar->failing = true;
	if (ar->warned_ms != 0 && now - ar->warned_ms < AUDITREDIS_WARN_MS)
		return;
	log_warn("audit: cannot add to the Redis stream %s (%s); %" PRIu64
	         " lines not sent since the last warning; the file has "
	         "them all",
	         ar->key, why, failed - ar->failed_warned);
	ar->warned_ms = now;
	ar->failed_warned = failed;
}

static void
xadd_reply(void *arg, struct redisReply *reply)
{
	struct auditredis *ar = arg;
	char why[128];

	ar->inflight--;
	if (reply != NULL && reply->type != REDIS_REPLY_ERROR) {
		atomic_fetch_add(&ar->sent, 1);
		if (ar->failing) {
			ar->failing = false;
			log_info("audit: adding to the Redis stream %s works again",
			         ar->key);
		}
		if (!ar->closing)
			pump(ar);
		return;
	}
	/* Redis' own error text names the command's fault (WRONGTYPE,
	 * OOM...), never the line's content. */
	if (reply != NULL)
		snprintf(why, sizeof(why), "%.*s",
		         (int)(reply->len < 100 ? reply->len : 100), reply->str);
	else
		snprintf(why, sizeof(why), "no answer");
	note_failure(ar, why);
	/* Not at once: through a stalled connection every line would fail
	 * in turn. The timer looks again once the connection is sorted. */
	if (!ar->closing)
		arm_retry(ar);
}

/* Send what waits, up to AUDITREDIS_INFLIGHT on the wire. Loop thread. */
static void
pump(struct auditredis *ar)
{
	while (ar->inflight < AUDITREDIS_INFLIGHT) {
		struct auditredis_line *l;
		const char *argv[10];
		size_t len[10];

		pthread_mutex_lock(&ar->mu);
		l = ar->head;
		/* Not connected (yet, or again): the lines wait, bounded. */
		if (l != NULL && !redis_connected(ar->redis)) {
			pthread_mutex_unlock(&ar->mu);
			arm_retry(ar);
			return;
		}
		if (l != NULL) {
			ar->head = l->next;
			if (ar->head == NULL)
				ar->tail = NULL;
			ar->nlines--;
			ar->nbytes -= l->len;
		}
		pthread_mutex_unlock(&ar->mu);
		if (l == NULL)
			return;
		argv[0] = "XADD";
		argv[1] = ar->key;
		argv[2] = "MAXLEN";
		argv[3] = "~";
		argv[4] = ar->maxlen;
		argv[5] = "*";
		argv[6] = "record";
		argv[7] = l->data;
		argv[8] = "boot";
		argv[9] = ar->boot;
		for (int i = 0; i < 10; i++)
			/* The line is not NUL-terminated: its length is known. */
			len[i] = i == 7 ? l->len : strlen(argv[i]);
		/* hiredis copies the command into its output buffer. */
		if (redis_call(ar->redis, xadd_reply, ar, 10, argv, len) == NULL) {
			free(l);
			note_failure(ar, "not sent");
			arm_retry(ar);
			return;
		}
		ar->inflight++;
		free(l);
	}
}

static void
wake_cb(evutil_socket_t fd, short what, void *arg)
{
	struct auditredis *ar = arg;
	char drain[64];

	(void)what;
	while (read(fd, drain, sizeof(drain)) > 0)
		;
	pthread_mutex_lock(&ar->mu);
	ar->wake_pending = false;
	pthread_mutex_unlock(&ar->mu);
	pump(ar);
}

static void
retry_cb(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	pump(arg);
}

struct auditredis *
auditredis_new(struct event_base *base, const struct scrim_config *cfg,
               const char *boot, char *err, size_t errlen)
{
	struct auditredis *ar = xcalloc(1, sizeof(*ar));
	long timeout = cfg->redis_timeout_ms > AUDITREDIS_TIMEOUT_MIN_MS
	                   ? cfg->redis_timeout_ms
	                   : AUDITREDIS_TIMEOUT_MIN_MS;

	ar->pipefd[0] = ar->pipefd[1] = -1;
	pthread_mutex_init(&ar->mu, NULL);
	ar->base = base;
	ar->key = xstrdup(cfg->audit_redis_stream);
	snprintf(ar->maxlen, sizeof(ar->maxlen), "%ld", cfg->audit_redis_maxlen);
	snprintf(ar->boot, sizeof(ar->boot), "%s", boot);
	if (base == NULL) {
		snprintf(err, errlen, "redis_stream needs the event loop");
		goto fail;
	}
	if (pipe2(ar->pipefd, O_CLOEXEC | O_NONBLOCK) != 0) {
		snprintf(err, errlen, "redis_stream: pipe: %s", strerror(errno));
		goto fail;
	}
	ar->wake_ev = event_new(base, ar->pipefd[0], EV_READ | EV_PERSIST,
	                        wake_cb, ar);
	ar->retry_ev = evtimer_new(base, retry_cb, ar);
	if (ar->wake_ev == NULL || ar->retry_ev == NULL ||
	    event_add(ar->wake_ev, NULL) != 0) {
		snprintf(err, errlen, "redis_stream: cannot set up its events");
		goto fail;
	}
	ar->redis = redis_new(base, "audit stream", cfg->redis_url,
	                      cfg->redis_password, timeout);
	if (ar->redis == NULL) {
		snprintf(err, errlen, "redis_stream: cannot use [redis] url %s",
		         cfg->redis_url);
		goto fail;
	}
	return ar;
fail:
	auditredis_free(ar);
	return NULL;
}

void
auditredis_push(struct auditredis *ar, const char *lines, size_t len)
{
	const char *p = lines, *end = lines + len;
	uint64_t lost = 0, d;
	bool wake = false;

	if (ar == NULL)
		return;
	pthread_mutex_lock(&ar->mu);
	while (p < end) {
		const char *nl = memchr(p, '\n', (size_t)(end - p));
		size_t n = nl ? (size_t)(nl - p) : (size_t)(end - p);
		struct auditredis_line *l;

		if (ar->nlines >= AUDITREDIS_MAX_LINES ||
		    n > AUDITREDIS_MAX_BYTES - ar->nbytes ||
		    (l = malloc(sizeof(*l) + n)) == NULL) {
			lost++;
		} else {
			l->next = NULL;
			l->len = n;
			memcpy(l->data, p, n);
			if (ar->tail != NULL)
				ar->tail->next = l;
			else
				ar->head = l;
			ar->tail = l;
			ar->nlines++;
			ar->nbytes += n;
		}
		p += n + 1;
	}
	if (ar->head != NULL && !ar->wake_pending) {
		ar->wake_pending = true;
		wake = true;
	}
	pthread_mutex_unlock(&ar->mu);
	/* One byte per drain: the pipe never fills, and a failed write
	 * (EAGAIN) still leaves a byte there to wake the loop. */
	if (wake && write(ar->pipefd[1], "w", 1) < 0 && errno != EAGAIN)
		log_error("audit: cannot wake the loop for the Redis stream: %s",
		          strerror(errno));
	if (lost == 0)
		return;
	d = atomic_fetch_add(&ar->dropped, lost) + lost;
	/* Said when the total reaches a higher power of two (its top bit
	 * moved up): an outage is reported without flooding the log. */
	if (((d - lost) ^ d) > d - lost)
		log_warn("audit: the Redis stream outbox is full; %" PRIu64
		         " lines dropped so far (the file has them)",
		         d);
}

static void
deadline_cb(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	(void)arg; /* it only ends event_base_loop(EVLOOP_ONCE) */
}

void
auditredis_flush(struct auditredis *ar, long ms)
{
	struct timeval tv = {ms / 1000, (ms % 1000) * 1000};
	struct event *deadline;
	uint64_t end = mono_ms() + (uint64_t)ms;

	if (ar == NULL || !redis_connected(ar->redis))
		return;
	deadline = evtimer_new(ar->base, deadline_cb, NULL);
	if (deadline == NULL)
		return;
	evtimer_add(deadline, &tv);
	pump(ar);
	for (;;) {
		bool waiting;

		pthread_mutex_lock(&ar->mu);
		waiting = ar->head != NULL;
		pthread_mutex_unlock(&ar->mu);
		if ((!waiting && ar->inflight == 0) || mono_ms() >= end ||
		    !redis_connected(ar->redis))
			break;
		/* Wakes for a reply, a retry, a wake-up byte or the deadline. */
		event_base_loop(ar->base, EVLOOP_ONCE);
	}
	event_free(deadline);
}

void
auditredis_free(struct auditredis *ar)
{
	struct auditredis_line *l, *next;
	uint64_t left = 0;

	if (ar == NULL)
		return;
	ar->closing = true;
	/* Calls still on the wire hear NULL now and count as failed. */
	redis_free(ar->redis);
	if (ar->wake_ev != NULL)
		event_free(ar->wake_ev);
	if (ar->retry_ev != NULL)
		event_free(ar->retry_ev);
	for (l = ar->head; l != NULL; l = next) {
		next = l->next;
		free(l);
		left++;
	}
	if (left > 0) {
		atomic_fetch_add(&ar->dropped, left);
		log_warn("audit: %" PRIu64 " lines were not sent to the Redis "
		         "stream %s before closing (the file has them)",
		         left, ar->key);
	}
	if (ar->pipefd[0] >= 0)
		close(ar->pipefd[0]);
	if (ar->pipefd[1] >= 0)
		close(ar->pipefd[1]);
	pthread_mutex_destroy(&ar->mu);
	free(ar->key);
	free(ar);
}

void
auditredis_get_stats(struct auditredis *ar, struct auditredis_stats *st)
{
	memset(st, 0, sizeof(*st));
	if (ar == NULL)
		return;
	st->sent = atomic_load(&ar->sent);
	st->failed = atomic_load(&ar->failed);
	st->dropped = atomic_load(&ar->dropped);
	pthread_mutex_lock(&ar->mu);
	st->pending = ar->nlines;
	pthread_mutex_unlock(&ar->mu);
}
