/*
 * audit.c - the audit writer. audit_write formats one record on the
 * caller's thread (the event loop) and queues it; a writer thread seals
 * the queued records into the chain (auditchain.c), appends them, fsyncs
 * by policy, moves the epoch key forward, reopens the file on request and
 * copies lines to syslog. This file owns the log's file descriptor, the
 * anchor file, the queue and the live epoch key; `scrim audit verify` and
 * `forget` are auditcmd.c, the syslog and Redis Stream copies
 * auditsyslog.c and auditredis.c.
 *
 * The loop does not wait on the disk: the queue is bounded (audit_queue
 * records, AUDIT_QUEUE_MAX_BYTES) and audit_write only takes its lock.
 * At the end of a turn of the loop, the loop appends what the turn
 * queued itself, when it can do so without waiting (see loop_flush_cb):
 * a write(2) into the page cache, as nginx writes its access log and
 * Redis its append-only file. The fsync, retries, reopening and every
 * write the loop passes up stay with the writer thread.
 * A record leaves the queue only once its line is in the file, so while
 * the disk is full records wait and none that was accepted is lost;
 * audit_healthy() turns false until a write succeeds again.
 *
 * What a full queue does depends on on_failure. continue: the record is
 * dropped and counted. block: audit_admit() refuses new requests once
 * writes fail or the queue is at its cap, and the records of requests
 * already admitted are queued past the cap (never dropped): they are at
 * most one per request in flight, so max_connections bounds the excess.
 * The refusals are counted, not recorded (see audit_admit), and each
 * checkpoint says how many there were since the one before.
 */
#include "audit.h"

#include "alloc.h"
#include "auditchain.h"
#include "auditredis.h"
#include "auditsyslog.h"
#include "buf.h"
#include "config.h"
#include "json.h"
#include "log.h"

#include <arpa/inet.h>
#include <errno.h>
#include <event2/event.h>
#include <fcntl.h>
#include <inttypes.h>
#include <math.h>
#include <openssl/crypto.h>
#include <openssl/rand.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/* One record, bodies included; past it the bodies are left out. */
#define AUDIT_MAX_RECORD ((size_t)16 << 20)
/* The queue's memory cap, whatever audit_queue says. */
#define AUDIT_QUEUE_MAX_BYTES ((size_t)256 << 20)
/* One write(2) carries up to this much (whole lines). */
#define AUDIT_BATCH_BYTES ((size_t)1 << 20)
#define AUDIT_BATCH_ITEMS 4096
/* Retry a failing disk this often (doubling). */
#define AUDIT_RETRY_MIN_MS 10
#define AUDIT_RETRY_MAX_MS 1000
/* audit_close waits this long for a failing disk before giving up. */
#define AUDIT_CLOSE_TIMEOUT_MS 5000
/* After writing a batch the writer naps this long before it looks again,
 * and the loop does not wake it for records queued meanwhile: under load
 * a futex wake-up per request cost the loop an eighth of its time. */
#define AUDIT_NAP_MS 2
/* ... and this long for the Redis stream to take the last lines. */
#define AUDIT_REDIS_CLOSE_MS 2000
/* A write of the loop's that took this long (a disk the kernel throttles,
 * a slow network filesystem) leaves the writing to the writer thread for
 * AUDIT_LOOP_OFF_MS, so a slow disk costs the loop one such wait in that
 * time, not one per turn. */
#define AUDIT_LOOP_SLOW_MS 5
#define AUDIT_LOOP_OFF_MS 10000
/* Records the loop appends in one go; the rest go in the next callback,
 * after the other callbacks of the turn. */
#define AUDIT_LOOP_BATCH_ITEMS 256

enum audit_fsync { AUDIT_FSYNC_ALWAYS, AUDIT_FSYNC_INTERVAL, AUDIT_FSYNC_NEVER };
enum audit_client { AUDIT_CLIENT_FULL, AUDIT_CLIENT_TRUNCATED, AUDIT_CLIENT_NONE };

struct audit_item {
	struct audit_item *next;
	char *data; /* the record's body: '{' and members, no closing brace */
	size_t len;
};

/*
 * The chain as the writer holds it. A batch seals on a copy and commits
 * the copy only once its lines are in the file: a failed write leaves
 * nothing half-sealed, and the retry seals the same records again.
 */
struct audit_chain {
	struct auditchain_state st;
	unsigned char key[AUDITCHAIN_KEY_LEN]; /* the key of st.epoch */
	uint64_t epoch_start_ms;               /* monotonic */
	/* The dropped and refused totals the chain's checkpoints have
	 * reported so far: a checkpoint carries the difference. */
	uint64_t dropped_told, refused_told;
};

struct audit {
	/* Settings, fixed at open. */
	char *path;
	char *anchor_path;
	long fsync_mode;        /* enum audit_fsync */
	uint64_t fsync_interval_ms;
	long client_mode;       /* enum audit_client */
	bool store_bodies;
	bool use_syslog;
	struct auditredis *redis; /* the Redis Stream copy, or NULL */
	size_t max_items;
	bool napping;           /* the writer naps: do not signal */
	char boot[33];          /* random per open: tells runs apart */

	pthread_mutex_t mu;
	pthread_cond_t cv;      /* the writer waits on it (monotonic clock) */
	/* Under mu. The writer pops only what it has written. */
	struct audit_item *head, *tail;
	size_t nitems, nbytes;
	bool reopen_req, stop_req, closed;
	bool writer_idle;       /* waits with no timer: tell it of a write */
	bool help;              /* the loop asks the thread to append */

	/* The loop appends at the end of its turns (flush_ev), unless there
	 * is no loop, fsync is always or the file is no regular file: set at
	 * open. The event and flush_pending are the loop's own. */
	bool loop_appends;
	struct event *flush_ev;
	bool flush_pending;

	/* The writer's state, the fields from here down to healthy, is
	 * under wmu: the writer thread holds it while it works, the loop
	 * tries it at the end of a turn. Taken before mu, never after. */
	pthread_t thread;
	pthread_mutex_t wmu;
	uint64_t loop_off_until; /* a slow write: the loop leaves it be */
	int fd;                 /* -1 after a failed reopen: retried */
	bool regular;           /* a regular file: torn lines can be cut */
	int anchor_fd;          /* -1 when the anchor cannot be kept */
	bool anchor_warned;
	struct audit_chain chain;
	const char *ckpt_event; /* a checkpoint owed before more records */
	char note[160];         /* said once, in the next checkpoint */
	struct buf batch;
	bool dirty;             /* written since the last fsync */
	uint64_t last_sync_ms, retry_at_ms, retry_ms;
	size_t batch_max;       /* records a batch may take: halved after a
	                         * failed write, so what fits in the room left
	                         * goes out; doubled back after a good one */

	atomic_bool healthy;
	atomic_bool block;      /* on_failure = block; follows reloads */
	_Atomic uint64_t written, failed, dropped, refused, slow;
};

static uint64_t
clock_ms(clockid_t id)
{
	struct timespec ts;

	clock_gettime(id, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static uint64_t
mono_ms(void)
{
	return clock_ms(CLOCK_MONOTONIC);
}

/* ---- formatting, on the caller's thread -------------------------------- */

static bool
put_time(struct buf *b, uint64_t ms)
{
	/* Records come many to a second: format the second once. Per
	 * thread, as any thread may write a record. */
	static _Thread_local time_t cached_sec = -1;
	static _Thread_local char cached[24];
	time_t t = (time_t)(ms / 1000);
	unsigned frac = (unsigned)(ms % 1000);
	char tail[6] = {'.', (char)('0' + frac / 100), (char)('0' + frac / 10 % 10),
	                (char)('0' + frac % 10), 'Z', '"'};

	if (t != cached_sec) {
		struct tm tm;
		if (gmtime_r(&t, &tm) == NULL ||
		    strftime(cached, sizeof(cached), "%Y-%m-%dT%H:%M:%S", &tm) == 0)
			return false;
		cached_sec = t;
	}
	return buf_add(b, ",\"time\":\"", 9) &&
	       buf_add(b, cached, strlen(cached)) && buf_add(b, tail, sizeof(tail));
}

/* The length of the valid UTF-8 sequence at p[0..n), or 0. */
static size_t
utf8_len(const unsigned char *p, size_t n)
{
	uint32_t cp, min;
	size_t len;

	if (p[0] < 0x80)
		return 1;
	if (p[0] >= 0xc2 && p[0] <= 0xdf) {
		len = 2, cp = p[0] & 0x1f, min = 0x80;
	} else if (p[0] >= 0xe0 && p[0] <= 0xef) {
		len = 3, cp = p[0] & 0x0f, min = 0x800;
	} else if (p[0] >= 0xf0 && p[0] <= 0xf4) {
		len = 4, cp = p[0] & 0x07, min = 0x10000;
	} else {
		return 0;
	}
	if (n < len)
		return 0;
	for (size_t i = 1; i < len; i++) {
		if ((p[i] & 0xc0) != 0x80)
			return 0;
		cp = cp << 6 | (p[i] & 0x3f);
	}
	if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
		return 0;
	return len;
}

/*
 * A quoted JSON string. Bytes that are not UTF-8 (a raw path, a model
 * name a client made up) become U+FFFD, so every line stays JSON that any
 * reader, and the verifier, accepts.
 */
static bool
put_json_string(struct buf *b, const char *s, size_t n)
{
	size_t i = 0, run = 0;

	if (!buf_addc(b, '"'))
		return false;
	while (i < n) {
		size_t l = utf8_len((const unsigned char *)s + i, n - i);

		if (l > 0) {
			i += l;
			continue;
		}
		if (!json_escape_into(b, s + run, i - run) ||
		    !buf_add(b, "\\ufffd", 6))
			return false;
		run = ++i;
	}
	return json_escape_into(b, s + run, n - run) && buf_addc(b, '"');
}

/*
 * ,"key": and unsigned numbers without printf: a record is a few dozen of
 * them, and vsnprintf was a tenth of a request's instructions through the
 * gateway. key is always one of ours, plain ASCII.
 */
static bool
put_key(struct buf *b, const char *key)
{
	return buf_add(b, ",\"", 2) && buf_add(b, key, strlen(key)) &&
	       buf_add(b, "\":", 2);
}

static bool
put_u64(struct buf *b, uint64_t v)
{
	char t[20];

	return buf_add(b, t, (size_t)(scrim_put_u64(t, v) - t));
}

static bool
put_ku64(struct buf *b, const char *key, uint64_t v)
{
	return put_key(b, key) && put_u64(b, v);
}

/* ,"key":"s" or ,"key":null. */
static bool
put_strn(struct buf *b, const char *key, const char *s, size_t n)
{
	if (!put_key(b, key))
		return false;
	if (s == NULL)
		return buf_add(b, "null", 4);
	return put_json_string(b, s, n);
}

static bool
put_str(struct buf *b, const char *key, const char *s)
{
	return put_strn(b, key, s, s ? strlen(s) : 0);
}

static bool
put_i64(struct buf *b, const char *key, int64_t v)
{
	if (v < 0)
		return put_key(b, key) && buf_add(b, "null", 4);
	return put_ku64(b, key, (uint64_t)v);
}

/*
 * {"name":n,...}. Names given twice are summed: a JSON object with a
 * duplicate member is one the verifier (and many readers) refuse.
 */
static bool
put_counts(struct buf *b, const char *key, const struct audit_count *c,
           size_t n)
{
	bool first = true;

	if (!put_key(b, key) || !buf_addc(b, '{'))
		return false;
	for (size_t i = 0; i < n; i++) {
		uint64_t sum = 0;
		bool seen = false;

		if (c[i].name == NULL)
			continue;
		for (size_t j = 0; j < i && !seen; j++)
			seen = c[j].name && strcmp(c[j].name, c[i].name) == 0;
		if (seen)
			continue;
		for (size_t j = i; j < n; j++)
			if (c[j].name && strcmp(c[j].name, c[i].name) == 0)
				sum += c[j].count;
		if ((!first && !buf_addc(b, ',')) ||
		    !put_json_string(b, c[i].name, strlen(c[i].name)) ||
		    !buf_addc(b, ':') || !put_u64(b, sum))
			return false;
		first = false;
	}
	return buf_addc(b, '}');
}

static bool
put_list(struct buf *b, const char *key, const char *const *v, size_t n)
{
	if (!put_key(b, key) || !buf_addc(b, '['))
		return false;
	for (size_t i = 0; i < n; i++) {
		const char *s = v[i] ? v[i] : "";

		if ((i > 0 && !buf_addc(b, ',')) ||
		    !put_json_string(b, s, strlen(s)))
			return false;
	}
	return buf_addc(b, ']');
}

/*
 * The client address by policy. addr is as the connection printed it:
 * "a.b.c.d:port", "[v6]:port" or a bare address. Truncated keeps the
 * network (/24, /48) and never the port; an address that does not parse
 * is left out rather than written in a form nobody checked.
 */
static bool
put_client(struct buf *b, long mode, const char *addr)
{
	static _Thread_local char last_host[64], last_out[INET6_ADDRSTRLEN];
	unsigned char raw[16];
	char host[64], out[INET6_ADDRSTRLEN];
	const char *s = addr, *end;
	size_t n;

	if (addr == NULL || mode == AUDIT_CLIENT_NONE)
		return true;
	if (mode == AUDIT_CLIENT_FULL)
		return put_str(b, "client", addr);
	if (*s == '[') {
		s++;
		end = strchr(s, ']');
	} else {
		end = strchr(s, ':');
		/* Two colons or more: a bare IPv6 address, no port. */
		if (end != NULL && strchr(end + 1, ':') != NULL)
			end = NULL;
	}
	n = end ? (size_t)(end - s) : strlen(s);
	if (n == 0 || n >= sizeof(host))
		return true;
	memcpy(host, s, n);
	host[n] = '\0';
	/* Most records come from a few addresses: the last one is kept. */
	if (strcmp(host, last_host) == 0)
		return put_str(b, "client", last_out);
	if (inet_pton(AF_INET, host, raw) == 1) {
		raw[3] = 0;
		inet_ntop(AF_INET, raw, out, sizeof(out));
	} else if (inet_pton(AF_INET6, host, raw) == 1) {
		static const unsigned char mapped[12] = {0, 0, 0, 0, 0, 0,
		                                         0, 0, 0, 0, 0xff, 0xff};
		if (memcmp(raw, mapped, sizeof(mapped)) == 0) {
			raw[15] = 0;
			inet_ntop(AF_INET, raw + 12, out, sizeof(out));
		} else {
			memset(raw + 6, 0, 10);
			inet_ntop(AF_INET6, raw, out, sizeof(out));
		}
	} else {
		return true;
	}
	memcpy(last_host, host, n + 1);
	memcpy(last_out, out, sizeof(out));
	return put_str(b, "client", out);
}

/*
 * The record's body: '{' and members, no closing brace (the writer adds
 * seq, epoch and mac). Only what the caller passed, and only the
 * scrubbed bodies when store_scrubbed_body is on: there is no field for
 * anything else. Without room for the bodies (bodies false) it says so.
 */
static bool
format_record(const struct audit *a, const struct audit_record *r,
              struct buf *b, bool bodies)
{
	bool has_bodies = a->store_bodies &&
	                  (r->scrubbed_request || r->scrubbed_response);
	bool ok;

	ok = buf_add(b, "{\"type\":\"request\"", 17) && put_time(b, r->time_ms) &&
	     put_str(b, "request_id", r->request_id) &&
	     put_str(b, "key_id", r->key_id) &&
	     put_str(b, "key_name", r->key_name) &&
	     put_client(b, a->client_mode, r->client_addr) &&
	     put_str(b, "way_in", r->way_in) && put_str(b, "host", r->host) &&
	     put_str(b, "method", r->method) &&
	     /* The query string can carry anything: never keep it. */
	     put_strn(b, "path", r->path,
	              r->path ? strcspn(r->path, "?#") : 0) &&
	     put_str(b, "provider", r->provider) &&
	     put_str(b, "model", r->model) &&
	     put_key(b, "status") &&
	     (r->status < 0 ? buf_addf(b, "%d", r->status)
	                    : put_u64(b, (uint64_t)r->status)) &&
	     put_str(b, "decision", r->decision) &&
	     put_str(b, "reason", r->reason) &&
	     put_ku64(b, "bytes_in", r->bytes_in) &&
	     put_ku64(b, "bytes_out", r->bytes_out) &&
	     put_i64(b, "tokens_in", r->tokens_in) &&
	     put_i64(b, "tokens_out", r->tokens_out) &&
	     (r->cost_usd >= 0 && isfinite(r->cost_usd)
	          ? buf_addf(b, ",\"cost_usd\":%.10g", r->cost_usd)
	          : buf_add(b, ",\"cost_usd\":null", 16)) &&
	     put_counts(b, "redactions", r->redactions, r->nredactions) &&
	     put_counts(b, "rules", r->rules, r->nrules) &&
	     put_list(b, "context_ids", r->context_ids, r->ncontext) &&
	     put_ku64(b, "ms_total", r->ms_total) &&
	     put_ku64(b, "ms_upstream", r->ms_upstream) &&
	     put_ku64(b, "us_scrub", r->us_scrub);
	if (!ok || !has_bodies)
		return ok;
	if (!bodies)
		return buf_addf(b, ",\"bodies\":\"omitted_too_large\"");
	if (r->scrubbed_request &&
	    !put_strn(b, "scrubbed_request", r->scrubbed_request,
	              r->scrubbed_request_len))
		return false;
	if (r->scrubbed_response &&
	    !put_strn(b, "scrubbed_response", r->scrubbed_response,
	              r->scrubbed_response_len))
		return false;
	return true;
}

static bool
drop(struct audit *a, const char *why)
{
	uint64_t d = atomic_fetch_add(&a->dropped, 1) + 1;

	/* 1, 2, 4, 8...: an overload is reported without flooding. */
	if ((d & (d - 1)) == 0)
		log_error("audit: record dropped (%s); %" PRIu64 " so far", why, d);
	return false;
}

bool
audit_write(struct audit *a, const struct audit_record *r)
{
	struct audit_item *it;
	struct buf b;
	const char *why;
	bool wake = false;

	if (a == NULL)
		return true;
	buf_init(&b, AUDIT_MAX_RECORD);
	buf_hint(&b, 1024); /* a usual record, in one allocation */
	if (!format_record(a, r, &b, true)) {
		buf_reset(&b);
		if (!format_record(a, r, &b, false)) {
			buf_free(&b);
			return drop(a, "too large");
		}
	}
	it = malloc(sizeof(*it));
	if (it == NULL) {
		buf_free(&b);
		return drop(a, "out of memory");
	}
	it->next = NULL;
	it->data = b.p;
	it->len = b.len;
	pthread_mutex_lock(&a->mu);
	/* Under block the request was admitted (audit_admit) and its record
	 * must not be lost: it goes in past the cap. */
	why = a->closed                   ? "closed"
	      : atomic_load(&a->block)    ? NULL
	      : a->nitems >= a->max_items ? "queue full"
	      /* nbytes may be past the cap (block, then a reload). */
	      : a->nbytes >= AUDIT_QUEUE_MAX_BYTES ||
	              it->len > AUDIT_QUEUE_MAX_BYTES - a->nbytes
	          ? "queue full (bytes)"
	          : NULL;
	if (why == NULL) {
		/* A nap ends by itself; a queue filling up ends it early.
		 * The loop appends its own records (loop_flush_cb) and wakes
		 * the writer only when it cannot, or for a queue filling up. */
		wake = a->napping || a->loop_appends
		           ? a->nitems + 1 >= a->max_items / 2
		           : a->head == NULL;
		if (wake && a->loop_appends)
			a->help = true;
		if (a->tail != NULL)
			a->tail->next = it;
		else
			a->head = it;
		a->tail = it;
		a->nitems++;
		a->nbytes += it->len;
	}
	pthread_mutex_unlock(&a->mu);
	/* Signalled after unlocking, so the writer does not wake only to
	 * block on the mutex we still hold. It checks the queue under the
	 * lock before it waits, so the wake-up cannot be missed. */
	if (why == NULL && wake)
		pthread_cond_signal(&a->cv);
	if (why != NULL) {
		free(it->data);
		free(it);
		return drop(a, why);
	}
	/* After the callbacks already due in this turn: the answers of the
	 * turn go out before their records are written. */
	if (a->flush_ev != NULL && !a->flush_pending) {
		a->flush_pending = true;
		event_active(a->flush_ev, EV_TIMEOUT, 1);
	}
	return true;
}

/* ---- the file ---------------------------------------------------------- */

/* The size the file had before its last line started, or -1. */
static off_t
last_newline_end(int fd, off_t size)
{
	char chunk[65536];
	off_t pos = size;

	while (pos > 0 && size - pos <= (off_t)AUDITCHAIN_MAX_LINE) {
		size_t n = pos > (off_t)sizeof(chunk) ? sizeof(chunk) : (size_t)pos;
		ssize_t got = pread(fd, chunk, n, pos - (off_t)n);

		if (got != (ssize_t)n)
			return -1;
		pos -= (off_t)n;
		for (size_t i = n; i > 0; i--)
			if (chunk[i - 1] == '\n')
				return pos + (off_t)i;
	}
	return pos == 0 ? 0 : -1;
}

/*
 * A crash (or power loss) mid-write can leave a last line without its
 * newline; the next record would be glued to it. Cut it, and say so in
 * the next checkpoint: the cut bytes were never a sealed record.
 */
static bool
cut_torn_tail(struct audit *a, int fd, off_t size, char *err, size_t errlen)
{
	char last;
	off_t keep;

	if (size == 0)
		return true;
	if (pread(fd, &last, 1, size - 1) != 1) {
		snprintf(err, errlen, "cannot read %s: %s", a->path,
		         strerror(errno));
		return false;
	}
	if (last == '\n')
		return true;
	keep = last_newline_end(fd, size - 1);
	if (keep < 0 || ftruncate(fd, keep) != 0) {
		snprintf(err, errlen, "%s ends with a partial line that cannot "
		         "be cut: move the file away", a->path);
		return false;
	}
	log_warn("audit: cut %lld bytes of a partial last line from %s",
	         (long long)(size - keep), a->path);
	snprintf(a->note, sizeof(a->note),
	         "cut %lld bytes of a partial last line",
	         (long long)(size - keep));
	return true;
}

static void
sync_parent(const char *path)
{
	char *d = xstrdup(path), *slash = strrchr(d, '/');
	int fd;

	if (slash == d)
		slash[1] = '\0';
	else if (slash != NULL)
		*slash = '\0';
	fd = open(slash ? d : ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd >= 0) {
		(void)fsync(fd);
		close(fd);
	}
	free(d);
}

/* Open the log to append, lock it against a second writer, cut a torn
 * end. Sets a->fd. */
static bool
open_log(struct audit *a, char *err, size_t errlen)
{
	struct stat st;
	int fd;

	fd = open(a->path, O_RDWR | O_APPEND | O_CREAT | O_CLOEXEC, 0600);
	if (fd < 0) {
		snprintf(err, errlen, "cannot open %s: %s", a->path,
		         strerror(errno));
		return false;
	}
	if (fstat(fd, &st) != 0) {
		snprintf(err, errlen, "cannot stat %s: %s", a->path,
		         strerror(errno));
		close(fd);
		return false;
	}
	a->regular = S_ISREG(st.st_mode);
	if (a->regular) {
		/* Two writers would interleave two chains in one file. */
		if (flock(fd, LOCK_EX | LOCK_NB) != 0) {
			snprintf(err, errlen,
			         "%s is locked by another process (another scrim "
			         "writing it?)",
			         a->path);
			close(fd);
			return false;
		}
		if (!cut_torn_tail(a, fd, st.st_size, err, errlen)) {
			close(fd);
			return false;
		}
		/* A file just created exists after a crash only once its
		 * directory entry is on disk too. */
		if (st.st_size == 0 && a->fsync_mode != AUDIT_FSYNC_NEVER)
			sync_parent(a->path);
	}
	a->fd = fd;
	return true;
}

/*
 * Where the file's chain stands: the state after its last record, whose
 * MAC is checked with this key so a wrong key file (or a forged end) is
 * found now, not by the next verify. *have false for an empty file.
 */
static bool
read_tail_state(struct audit *a, const unsigned char key0[AUDITCHAIN_KEY_LEN],
                struct auditchain_state *st, bool *have, char *err,
                size_t errlen)
{
	struct auditchain_line last, prev;
	struct auditchain_keyring kr;
	struct auditchain_state before;
	unsigned char mac[AUDITCHAIN_MAC_LEN];
	struct stat sb;
	off_t start_last, start_prev;
	char *text = NULL;
	const char *why, *lp;
	size_t ln;
	bool ok = false;

	*have = false;
	if (!a->regular || fstat(a->fd, &sb) != 0 || sb.st_size == 0)
		return true;
	start_last = last_newline_end(a->fd, sb.st_size - 1);
	start_prev = start_last > 0 ? last_newline_end(a->fd, start_last - 1)
	                            : 0;
	if (start_last < 0 || start_prev < 0) {
		snprintf(err, errlen, "the last lines of %s are too long", a->path);
		return false;
	}
	/* File-sized: a failure is an error, not an abort. */
	text = malloc((size_t)(sb.st_size - start_prev));
	if (text == NULL ||
	    pread(a->fd, text, (size_t)(sb.st_size - start_prev), start_prev) !=
	        sb.st_size - start_prev) {
		snprintf(err, errlen, "cannot read the end of %s", a->path);
		goto done;
	}
	lp = text + (start_last - start_prev);
	ln = (size_t)(sb.st_size - start_last) - 1;
	if (!auditchain_parse(lp, ln, &last, &why)) {
		snprintf(err, errlen,
		         "the last line of %s is not an audit record (%s): move "
		         "the file away to start a new chain",
		         a->path, why);
		goto done;
	}
	if (last.type == AUDITCHAIN_CHECKPOINT) {
		memcpy(before.mac, last.prev_mac, AUDITCHAIN_MAC_LEN);
	} else if (start_last > start_prev &&
	           auditchain_parse(text, (size_t)(start_last - start_prev) - 1,
	                            &prev, &why)) {
		auditchain_after(&prev, &before);
	} else {
		snprintf(err, errlen,
		         "the end of %s is not an audit chain: move the file away "
		         "to start a new chain",
		         a->path);
		goto done;
	}
	auditchain_keyring_init(&kr, key0);
	ok = auditchain_keyring_seek(&kr, last.epoch) &&
	     auditchain_hmac(kr.key, before.mac, AUDITCHAIN_MAC_LEN, lp,
	                     last.signed_len, mac) &&
	     CRYPTO_memcmp(mac, last.mac, AUDITCHAIN_MAC_LEN) == 0;
	auditchain_keyring_wipe(&kr);
	if (!ok) {
		snprintf(err, errlen,
		         "the last record of %s does not verify with this key "
		         "(wrong key file?): move the file away or restore the key",
		         a->path);
		goto done;
	}
	memset(st, 0, sizeof(*st));
	auditchain_after(&last, st);
	*have = true;
done:
	free(text);
	return ok;
}

/*
 * The anchor (FILE.anchor): the chain's end, rewritten in place after
 * each batch, so an empty file (rotated while scrim was stopped) still
 * links on, and an end cut off while scrim was stopped shows at the next
 * start. Fixed width, so it is read by offsets.
 */
#define ANCHOR_PREFIX "scrim-audit-anchor seq="
#define ANCHOR_FMT ANCHOR_PREFIX "%020" PRIu64 " epoch=%020" PRIu64 " mac=%s\n"
#define ANCHOR_LEN (sizeof(ANCHOR_PREFIX) - 1 + 20 + 7 + 20 + 5 + 64 + 1)

static bool
parse_u64(const char *s, size_t n, uint64_t *v)
{
	uint64_t x = 0;

	for (size_t i = 0; i < n; i++) {
		unsigned d = (unsigned)(s[i] - '0');

		if (d > 9 || x > (UINT64_MAX - d) / 10)
			return false;
		x = x * 10 + d;
	}
	*v = x;
	return n > 0;
}

static bool
anchor_open(struct audit *a, struct auditchain_state *st)
{
	const size_t p = sizeof(ANCHOR_PREFIX) - 1;
	char text[ANCHOR_LEN];

	a->anchor_fd = open(a->anchor_path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
	if (a->anchor_fd < 0) {
		log_warn("audit: cannot keep %s (%s): a file rotated while scrim "
		         "is stopped will not link to the one before",
		         a->anchor_path, strerror(errno));
		return false;
	}
	memset(st, 0, sizeof(*st));
	return pread(a->anchor_fd, text, sizeof(text), 0) == (ssize_t)ANCHOR_LEN &&
	       memcmp(text, ANCHOR_PREFIX, p) == 0 &&
	       parse_u64(text + p, 20, &st->seq) &&
	       memcmp(text + p + 20, " epoch=", 7) == 0 &&
	       parse_u64(text + p + 27, 20, &st->epoch) &&
	       memcmp(text + p + 47, " mac=", 5) == 0 &&
	       auditchain_unhex(text + p + 52, AUDITCHAIN_MAC_LEN, st->mac) &&
	       text[ANCHOR_LEN - 1] == '\n';
}

static void
anchor_write(struct audit *a)
{
	char line[200], hex[2 * AUDITCHAIN_MAC_LEN + 1];
	int n;

	if (a->anchor_fd < 0)
		return;
	auditchain_hex(a->chain.st.mac, AUDITCHAIN_MAC_LEN, hex);
	n = snprintf(line, sizeof(line), ANCHOR_FMT, a->chain.st.seq,
	             a->chain.st.epoch, hex);
	/* Fixed width, so overwriting in place never leaves a stale tail. */
	if (n > 0 && pwrite(a->anchor_fd, line, (size_t)n, 0) != n &&
	    !a->anchor_warned) {
		log_warn("audit: cannot update %s: %s", a->anchor_path,
		         strerror(errno));
		a->anchor_warned = true;
	}
}

/* ---- the writer thread ------------------------------------------------- */

static void
chain_roll(struct audit_chain *c, uint64_t now)
{
	auditchain_key_next(c->key);
	c->st.epoch++;
	c->st.count = 0;
	c->epoch_start_ms = now;
}

static void
note_failure(struct audit *a, int err, uint64_t now)
{
	atomic_fetch_add(&a->failed, 1);
	if (atomic_exchange(&a->healthy, false))
		log_error("audit: cannot write %s: %s; records stay queued and "
		          "are retried",
		          a->path, strerror(err));
	/* A checkpoint is owed: the first lines that make it after the
	 * failure say so, with what was dropped and refused meanwhile. It
	 * also keeps the writer retrying when nothing else is queued (a
	 * failed fsync), so under block the log cannot stay shut. */
	if (a->ckpt_event == NULL)
		a->ckpt_event = "resume";
	a->retry_ms = a->retry_ms ? a->retry_ms * 2 : AUDIT_RETRY_MIN_MS;
	if (a->retry_ms > AUDIT_RETRY_MAX_MS)
		a->retry_ms = AUDIT_RETRY_MAX_MS;
	a->retry_at_ms = now + a->retry_ms;
	/* A disk with some room left takes a smaller batch. */
	if (a->batch_max > 1)
		a->batch_max /= 2;
}

/*
 * Append p[0..n) (whole lines) with one write(2). On a short write the
 * file is cut back to where it was, so no torn line stays behind: the
 * size before is the size after less what went in, asked only then (an
 * fstat(2) per batch was a tenth of the writer's system calls).
 */
static bool
file_append(struct audit *a, const char *p, size_t n, int *err)
{
	const char *why = NULL;
	struct stat st;
	ssize_t w;

	do
		w = write(a->fd, p, n);
	while (w < 0 && errno == EINTR);
	if (w >= 0 && (size_t)w == n)
		return true;
	*err = w < 0 ? errno : ENOSPC;
	if (w <= 0 || !a->regular)
		return false;
	if (fstat(a->fd, &st) != 0 ||
	    (st.st_size >= (off_t)w &&
	     ftruncate(a->fd, st.st_size - (off_t)w) != 0))
		why = strerror(errno);
	else if (st.st_size < (off_t)w)
		why = "it is shorter than what was just written";
	if (why != NULL)
		log_error("audit: cannot cut a partial line from %s: %s", a->path,
		          why);
	return false;
}

static bool
sync_now(struct audit *a, uint64_t now)
{
	a->dirty = false;
	a->last_sync_ms = now;
	/* EINVAL: a device such as /dev/null has nothing to sync. */
	if (a->fd < 0 || fdatasync(a->fd) == 0 || errno == EINVAL)
		return true;
	note_failure(a, errno, now);
	return false;
}

/*
 * The writer thread's interval fsync, with wmu let go meanwhile: the loop
 * goes on appending while the disk works (a few milliseconds here, much
 * more on a busy disk). The descriptor stays open: only this thread
 * closes it.
 */
static void
sync_unlocked(struct audit *a)
{
	int fd = a->fd, e = 0;

	a->dirty = false;
	a->last_sync_ms = mono_ms();
	if (fd < 0)
		return;
	pthread_mutex_unlock(&a->wmu);
	/* EINVAL: a device such as /dev/null has nothing to sync. */
	if (fdatasync(fd) != 0 && errno != EINVAL)
		e = errno;
	pthread_mutex_lock(&a->wmu);
	if (e != 0)
		note_failure(a, e, mono_ms());
}

/* Seal the checkpoint owed (a->ckpt_event) into the batch. */
static bool
seal_checkpoint(struct audit *a, struct audit_chain *w, uint64_t now)
{
	const char *ev = a->ckpt_event;
	char hex[2 * AUDITCHAIN_MAC_LEN + 1];
	size_t mark = a->batch.len;
	uint64_t dropped = atomic_load(&a->dropped);
	uint64_t refused = atomic_load(&a->refused);
	bool ok;

	/* A run or a file starts a new epoch, so no key serves two runs;
	 * the chain's very first record stays in epoch 0, as verify wants. */
	if (strcmp(ev, "epoch") == 0 ||
	    ((strcmp(ev, "open") == 0 || strcmp(ev, "reopen") == 0) &&
	     w->st.seq > 0) ||
	    w->st.count >= AUDITCHAIN_EPOCH_RECORDS)
		chain_roll(w, now);
	auditchain_hex(w->st.mac, AUDITCHAIN_MAC_LEN, hex);
	ok = buf_add(&a->batch, "{\"type\":\"checkpoint\"", 20) &&
	     put_time(&a->batch, clock_ms(CLOCK_REALTIME)) &&
	     buf_addf(&a->batch,
	              ",\"event\":\"%s\",\"boot\":\"%s\",\"version\":\"%s\"", ev,
	              a->boot, SCRIM_VERSION) &&
	     (a->note[0] == '\0' || put_str(&a->batch, "note", a->note)) &&
	     /* What the chain itself cannot hold, said in it: records lost
	      * and requests refused (block) since the last checkpoint. */
	     (dropped == w->dropped_told ||
	      buf_addf(&a->batch, ",\"dropped\":%" PRIu64,
	               dropped - w->dropped_told)) &&
	     (refused == w->refused_told ||
	      buf_addf(&a->batch, ",\"refused\":%" PRIu64,
	               refused - w->refused_told)) &&
	     buf_addf(&a->batch, ",\"prev_seq\":%" PRIu64 ",\"prev_mac\":\"%s\"",
	              w->st.seq, hex) &&
	     auditchain_seal(&a->batch, mark, &w->st, w->key);
	if (!ok) {
		a->batch.len = mark;
		return false;
	}
	/* Told once this batch commits (w becomes the chain then). */
	w->dropped_told = dropped;
	w->refused_told = refused;
	return true;
}

/* The batch is in the file: make its chain the chain, release its
 * records, then sync, anchor and copy by policy. */
static void
commit(struct audit *a, struct audit_chain *w, size_t n, uint64_t now)
{
	struct audit_item *it, *next;
	bool synced = true;

	OPENSSL_cleanse(&a->chain, sizeof(a->chain));
	a->chain = *w;
	a->ckpt_event = NULL;
	a->note[0] = '\0';
	pthread_mutex_lock(&a->mu);
	it = a->head;
	for (size_t i = 0; i < n; i++) {
		a->nbytes -= a->head->len;
		a->head = a->head->next;
	}
	a->nitems -= n;
	if (a->head == NULL)
		a->tail = NULL;
	pthread_mutex_unlock(&a->mu);
	/* Popped items are no longer reachable by audit_write. */
	for (size_t i = 0; i < n; i++, it = next) {
		next = it->next;
		free(it->data);
		free(it);
	}
	if (a->fsync_mode == AUDIT_FSYNC_ALWAYS)
		synced = sync_now(a, now);
	else if (a->fsync_mode == AUDIT_FSYNC_INTERVAL)
		a->dirty = true;
	anchor_write(a);
	/* Copies of what is now in the file, never of anything else. */
	auditredis_push(a->redis, a->batch.p, a->batch.len);
	if (a->use_syslog) {
		const char *p = a->batch.p, *end = a->batch.p + a->batch.len;

		while (p < end) {
			const char *nl = memchr(p, '\n', (size_t)(end - p));
			auditsyslog_send(p, (size_t)(nl - p));
			p = nl + 1;
		}
	}
	atomic_fetch_add(&a->written, n);
	/* A failed fsync keeps its backoff: the "resume" checkpoint it owes
	 * is retried at that pace, not in a tight loop. */
	if (!synced)
		return;
	a->retry_ms = 0;
	a->retry_at_ms = 0;
	if (!atomic_exchange(&a->healthy, true))
		log_info("audit: writing %s works again", a->path);
}

/*
 * Seal the checkpoint owed and up to max queued records into one batch
 * and append it. Returns the records written, -1 on failure (the queue
 * is untouched and a retry is scheduled).
 */
static long
writer_flush(struct audit *a, size_t max)
{
	struct audit_chain w;
	struct audit_item *it;
	char err[256];
	size_t avail, n = 0;
	uint64_t now = mono_ms();
	int e = 0;

	if (a->fd < 0 && !open_log(a, err, sizeof(err))) {
		log_debug("audit: %s", err);
		note_failure(a, errno, now);
		return -1;
	}
	buf_reset(&a->batch);
	w = a->chain;
	if (a->ckpt_event != NULL && !seal_checkpoint(a, &w, now)) {
		e = ENOMEM;
		goto failed;
	}
	if (max > a->batch_max)
		max = a->batch_max;
	pthread_mutex_lock(&a->mu);
	it = a->head;
	avail = a->nitems < max ? a->nitems : max;
	pthread_mutex_unlock(&a->mu);
	while (n < avail) {
		size_t mark = a->batch.len;

		if (mark > 0 && mark + it->len > AUDIT_BATCH_BYTES)
			break;
		if (w.st.count >= AUDITCHAIN_EPOCH_RECORDS)
			chain_roll(&w, now);
		if (!buf_add(&a->batch, it->data, it->len) ||
		    !auditchain_seal(&a->batch, mark, &w.st, w.key)) {
			a->batch.len = mark;
			break;
		}
		/* Only items counted in avail are read: the last one's next
		 * may be being written by audit_write. */
		if (++n < avail)
			it = it->next;
	}
	if (a->batch.len == 0) {
		OPENSSL_cleanse(&w, sizeof(w));
		return 0;
	}
	if (!file_append(a, a->batch.p, a->batch.len, &e))
		goto failed;
	commit(a, &w, n, now);
	if (n == avail && a->batch_max < AUDIT_BATCH_ITEMS)
		a->batch_max *= 2;
	OPENSSL_cleanse(&w, sizeof(w));
	return (long)n;
failed:
	OPENSSL_cleanse(&w, sizeof(w));
	note_failure(a, e, now);
	return -1;
}

static void
writer_close_file(struct audit *a)
{
	if (a->fd < 0)
		return;
	if (a->fsync_mode != AUDIT_FSYNC_NEVER && a->dirty)
		sync_now(a, mono_ms());
	else if (a->fsync_mode == AUDIT_FSYNC_ALWAYS)
		(void)fdatasync(a->fd);
	close(a->fd);
	a->fd = -1;
}

/*
 * SIGHUP after logrotate moved the file: finish the old file with what is
 * queued and a "rotate" checkpoint (when it still takes writes; else the
 * queue goes to the new one), then open the path again and owe a
 * "reopen" checkpoint, which links to the last record written anywhere.
 */
static void
writer_reopen(struct audit *a)
{
	char err[256];

	if (a->fd >= 0 && atomic_load(&a->healthy)) {
		size_t left;
		long w = 1;

		pthread_mutex_lock(&a->mu);
		left = a->nitems;
		pthread_mutex_unlock(&a->mu);
		while (left > 0 && (w = writer_flush(a, left)) > 0)
			left -= (size_t)w;
		if (w > 0 || left == 0) {
			a->ckpt_event = "rotate";
			if (writer_flush(a, 0) < 0)
				a->ckpt_event = NULL;
		}
	}
	writer_close_file(a);
	a->ckpt_event = "reopen";
	if (!open_log(a, err, sizeof(err))) {
		log_error("audit: reopen: %s", err);
		note_failure(a, errno, mono_ms());
		return;
	}
	a->retry_at_ms = 0;
	log_info("audit: reopened %s", a->path);
}

/* When the current epoch ends by time (an idle epoch still ends on
 * time, so its key does not linger in memory), or 0: none is running or
 * a checkpoint is owed already. wmu held. */
static uint64_t
epoch_end(const struct audit *a)
{
	if (a->ckpt_event != NULL || a->chain.st.seq == 0)
		return 0;
	return a->chain.epoch_start_ms + AUDITCHAIN_EPOCH_MS;
}

/*
 * The loop's end of a turn: append what the turn queued, so that the
 * writer thread need not be woken for it. On a CPU shared by the loop and
 * the writer, each wake-up of the writer took the CPU from the next
 * request at a moment of its own choosing; appended here, the records go
 * in while the loop would otherwise wait for the next event. The loop
 * only tries: whatever is not plain (the writer thread has the file, the
 * log fails or waits for a retry, the file is closed, a write was slow)
 * is left to the writer thread, which is woken for it.
 */
static void
loop_flush_cb(evutil_socket_t fd, short what, void *arg)
{
	struct audit *a = arg;
	bool more = false, nudge = false, news = false;
	uint64_t now;
	long w;

	(void)fd;
	(void)what;
	a->flush_pending = false;
	if (pthread_mutex_trylock(&a->wmu) != 0) {
		/* The thread has the file: it takes these too (nothing else
		 * might come to append them), now or, if it has just decided
		 * to wait, once signalled. */
		pthread_mutex_lock(&a->mu);
		a->help = true;
		pthread_cond_signal(&a->cv);
		pthread_mutex_unlock(&a->mu);
		return;
	}
	now = mono_ms();
	/* A failure has its retry timer in the writer thread already. */
	if (a->fd < 0 || !atomic_load(&a->healthy) || now < a->retry_at_ms) {
		/* nothing */
	} else if (!a->regular || now < a->loop_off_until) {
		nudge = true;
	} else {
		bool was_dirty = a->dirty;
		uint64_t end = epoch_end(a);

		/* Records after the epoch's end are sealed in the next one,
		 * as when the thread appends them. */
		if (end != 0 && now >= end)
			a->ckpt_event = "epoch";
		w = writer_flush(a, AUDIT_LOOP_BATCH_ITEMS);
		/* News to the thread: the retry a failure set, the fsync a
		 * first write since the last one makes due. */
		news = w < 0 || (!was_dirty && a->dirty);
		if (w >= 0 && mono_ms() - now >= AUDIT_LOOP_SLOW_MS) {
			a->loop_off_until = mono_ms() + AUDIT_LOOP_OFF_MS;
			atomic_fetch_add(&a->slow, 1);
			log_warn("audit: a write to %s took %" PRIu64 " ms; the "
			         "writer thread appends alone for %d s",
			         a->path, mono_ms() - now, AUDIT_LOOP_OFF_MS / 1000);
			nudge = true;
		} else if (w == AUDIT_LOOP_BATCH_ITEMS) {
			more = true;
		}
	}
	pthread_mutex_unlock(&a->wmu);
	pthread_mutex_lock(&a->mu);
	if (nudge)
		a->help = true;
	/* A napping thread looks at the queue when its nap ends. */
	if (news || a->writer_idle || (nudge && !a->napping))
		pthread_cond_signal(&a->cv);
	more = more && a->head != NULL;
	pthread_mutex_unlock(&a->mu);
	if (more) {
		a->flush_pending = true;
		event_active(a->flush_ev, EV_TIMEOUT, 1);
	}
}

static void
wait_until(struct audit *a, uint64_t wake)
{
	struct timespec ts;

	if (wake == UINT64_MAX) {
		pthread_cond_wait(&a->cv, &a->mu);
		return;
	}
	ts.tv_sec = (time_t)(wake / 1000);
	ts.tv_nsec = (long)(wake % 1000) * 1000000;
	pthread_cond_timedwait(&a->cv, &a->mu, &ts);
}

static uint64_t
earliest(uint64_t a, uint64_t b)
{
	return a < b ? a : b;
}

static void *
writer_main(void *arg)
{
	struct audit *a = arg;
	uint64_t stop_by = 0, nap_until = 0;

	pthread_mutex_lock(&a->wmu);
	pthread_mutex_lock(&a->mu);
	for (;;) {
		uint64_t now = mono_ms(), wake = UINT64_MAX, t;
		bool reopen = a->reopen_req, stop = a->stop_req;
		/* Records the loop appends itself are not ours to race it for,
		 * unless it asks, the log fails (the retries are ours) or we
		 * stop. */
		bool mine = !a->loop_appends || a->help || stop ||
		            !atomic_load(&a->healthy);
		bool have = (a->head != NULL && mine) || a->ckpt_event != NULL;
		bool flush_due = have && now >= a->retry_at_ms;
		bool sync_due = false, epoch_due = false;

		if (a->dirty && a->fsync_mode == AUDIT_FSYNC_INTERVAL) {
			t = a->last_sync_ms + a->fsync_interval_ms;
			sync_due = now >= t;
			wake = earliest(wake, t);
		}
		/* An "epoch" checkpoint moves the key on (epoch_end). */
		if ((t = epoch_end(a)) != 0) {
			epoch_due = now >= t;
			wake = earliest(wake, t);
		}
		if (have && !flush_due)
			wake = earliest(wake, a->retry_at_ms);
		if (stop && !reopen) {
			if (stop_by == 0)
				stop_by = now + AUDIT_CLOSE_TIMEOUT_MS;
			if (!have || now >= stop_by)
				break;
			wake = earliest(wake, stop_by);
		}
		if (!reopen && !flush_due && !sync_due && !epoch_due) {
			a->napping = !stop && now < nap_until;
			if (a->napping)
				wake = earliest(wake, nap_until);
			a->writer_idle = wake == UINT64_MAX;
			/* The loop may append while we wait. Waiting with no
			 * timer, we are woken by its first append, to set the
			 * fsync and epoch timers (loop_flush_cb). */
			pthread_mutex_unlock(&a->wmu);
			wait_until(a, wake);
			a->napping = a->writer_idle = false;
			nap_until = 0;
			/* wmu before mu, as everywhere. */
			pthread_mutex_unlock(&a->mu);
			pthread_mutex_lock(&a->wmu);
			pthread_mutex_lock(&a->mu);
			continue;
		}
		a->reopen_req = false;
		pthread_mutex_unlock(&a->mu);
		if (reopen)
			writer_reopen(a);
		if (epoch_due)
			a->ckpt_event = "epoch";
		if (flush_due || epoch_due) {
			(void)writer_flush(a, AUDIT_BATCH_ITEMS);
			nap_until = mono_ms() + AUDIT_NAP_MS;
		}
		if (sync_due && a->dirty)
			sync_unlocked(a);
		pthread_mutex_lock(&a->mu);
		if (a->head == NULL)
			a->help = false;
	}
	pthread_mutex_unlock(&a->mu);
	/* A clean end is marked, so a verifier can tell it from a crash. */
	if (a->fd >= 0 && atomic_load(&a->healthy) && a->ckpt_event == NULL &&
	    a->chain.st.seq > 0) {
		a->ckpt_event = "close";
		(void)writer_flush(a, 0);
	}
	writer_close_file(a);
	if (a->anchor_fd >= 0) {
		(void)fdatasync(a->anchor_fd);
		close(a->anchor_fd);
		a->anchor_fd = -1;
	}
	pthread_mutex_unlock(&a->wmu);
	return NULL;
}

/* ---- open, close, the rest of the interface ---------------------------- */

static void
audit_free(struct audit *a)
{
	if (a->flush_ev != NULL)
		event_free(a->flush_ev);
	auditredis_free(a->redis);
	if (a->fd >= 0)
		close(a->fd);
	if (a->anchor_fd >= 0)
		close(a->anchor_fd);
	OPENSSL_cleanse(&a->chain, sizeof(a->chain));
	buf_free(&a->batch);
	pthread_cond_destroy(&a->cv);
	pthread_mutex_destroy(&a->mu);
	pthread_mutex_destroy(&a->wmu);
	free(a->path);
	free(a->anchor_path);
	free(a);
}

/*
 * The writer thread keeps its own clock for fsync, retries and epochs, so
 * no timer of the file's runs on the loop. base carries the Redis Stream
 * copy and the loop's end-of-turn appends (loop_flush_cb); with base NULL
 * the writer thread does all the writing.
 */
struct audit *
audit_open(const struct scrim_config *cfg, struct event_base *base,
           char *err, size_t errlen)
{
	unsigned char key0[AUDITCHAIN_KEY_LEN], rnd[16];
	struct auditchain_state tail, anchor;
	struct auditchain_keyring kr;
	pthread_condattr_t ca;
	sigset_t all, old;
	struct audit *a;
	bool have_tail, have_anchor;
	int rc;

	a = xcalloc(1, sizeof(*a));
	a->fd = a->anchor_fd = -1;
	a->path = xstrdup(cfg->audit_file);
	a->anchor_path = xasprintf("%s.anchor", cfg->audit_file);
	a->fsync_mode = cfg->audit_fsync;
	a->fsync_interval_ms = cfg->audit_fsync_interval_ms > 0
	                           ? (uint64_t)cfg->audit_fsync_interval_ms
	                           : 1000;
	a->client_mode = cfg->audit_client_address;
	a->store_bodies = cfg->audit_store_bodies != 0;
	a->use_syslog = cfg->audit_syslog != 0;
	a->max_items = cfg->audit_queue > 0 ? (size_t)cfg->audit_queue : 10000;
	buf_init(&a->batch, AUDIT_MAX_RECORD + AUDIT_BATCH_BYTES + 4096);
	a->batch_max = AUDIT_BATCH_ITEMS;
	atomic_init(&a->healthy, true);
	atomic_init(&a->block, cfg->audit_block == 0);
	pthread_mutex_init(&a->mu, NULL);
	pthread_mutex_init(&a->wmu, NULL);
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&a->cv, &ca);
	pthread_condattr_destroy(&ca);

	if (RAND_bytes(rnd, sizeof(rnd)) != 1) {
		snprintf(err, errlen, "no randomness for the audit boot id");
		goto fail;
	}
	auditchain_hex(rnd, sizeof(rnd), a->boot);
	if (!auditchain_key_load(cfg->audit_key_file, true, key0, err, errlen))
		goto fail;
	if (!open_log(a, err, errlen) ||
	    !read_tail_state(a, key0, &tail, &have_tail, err, errlen)) {
		OPENSSL_cleanse(key0, sizeof(key0));
		goto fail;
	}
	have_anchor = anchor_open(a, &anchor);
	memset(&a->chain, 0, sizeof(a->chain));
	if (have_anchor && (!have_tail || anchor.seq > tail.seq)) {
		/* The file is empty (rotated while stopped) or shorter than
		 * what was written: link to what was written, so verify
		 * shows the gap instead of the chain quietly going on. */
		if (have_tail) {
			log_error("audit: %s ends at seq %" PRIu64 " but seq %" PRIu64
			          " was written: records are missing from its end",
			          a->path, tail.seq, anchor.seq);
			snprintf(a->note, sizeof(a->note),
			         "the file ended at seq %" PRIu64 ", %" PRIu64
			         " had been written",
			         tail.seq, anchor.seq);
		}
		a->chain.st = anchor;
	} else if (have_tail) {
		a->chain.st = tail;
	}
	a->chain.st.count = 0;
	auditchain_keyring_init(&kr, key0);
	OPENSSL_cleanse(key0, sizeof(key0));
	if (!auditchain_keyring_seek(&kr, a->chain.st.epoch)) {
		auditchain_keyring_wipe(&kr);
		snprintf(err, errlen, "%s: epoch %" PRIu64 " is out of range",
		         a->path, a->chain.st.epoch);
		goto fail;
	}
	memcpy(a->chain.key, kr.key, AUDITCHAIN_KEY_LEN);
	auditchain_keyring_wipe(&kr);
	a->chain.epoch_start_ms = mono_ms();
	a->ckpt_event = "open";
	if (cfg->audit_redis_stream != NULL && *cfg->audit_redis_stream) {
		a->redis = auditredis_new(base, cfg, a->boot, err, errlen);
		if (a->redis == NULL)
			goto fail;
	}
	if (a->use_syslog)
		auditsyslog_open();
	/* fsync = always syncs each batch, which the loop must not wait for;
	 * a pipe or a device could block it. */
	a->loop_appends = base != NULL &&
	                  a->fsync_mode != AUDIT_FSYNC_ALWAYS && a->regular;
	if (a->loop_appends) {
		a->flush_ev = event_new(base, -1, 0, loop_flush_cb, a);
		if (a->flush_ev == NULL) {
			snprintf(err, errlen, "out of memory");
			if (a->use_syslog)
				auditsyslog_close();
			goto fail;
		}
	}

	/* The writer must not take the loop's signals (SIGHUP, SIGTERM). */
	sigfillset(&all);
	pthread_sigmask(SIG_SETMASK, &all, &old);
	rc = pthread_create(&a->thread, NULL, writer_main, a);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	/* Named, so that top -H and perf tell it from the loop. */
	if (rc == 0)
		(void)pthread_setname_np(a->thread, "scrim-audit");
	if (rc != 0) {
		snprintf(err, errlen, "cannot start the audit writer: %s",
		         strerror(rc));
		if (a->use_syslog)
			auditsyslog_close();
		goto fail;
	}
	return a;
fail:
	audit_free(a);
	return NULL;
}

bool
audit_healthy(const struct audit *a)
{
	return a == NULL || atomic_load(&a->healthy);
}

void
audit_set_block(struct audit *a, bool block)
{
	if (a != NULL)
		atomic_store(&a->block, block);
}

/*
 * A refused request gets no record of its own: writing one needs the
 * very log that cannot take it, and a client retrying in a loop would
 * queue refusals without end and push out the records of the requests
 * that were served. Nothing of it left the gateway, so what it says is
 * a count: exact here (/metrics) and in the chain's next checkpoint.
 */
bool
audit_admit(struct audit *a)
{
	bool room;

	if (a == NULL || !atomic_load(&a->block))
		return true;
	if (atomic_load(&a->healthy)) {
		pthread_mutex_lock(&a->mu);
		room = a->nitems < a->max_items &&
		       a->nbytes < AUDIT_QUEUE_MAX_BYTES;
		pthread_mutex_unlock(&a->mu);
		if (room)
			return true;
	}
	atomic_fetch_add(&a->refused, 1);
	return false;
}

void
audit_reopen(struct audit *a)
{
	if (a == NULL)
		return;
	pthread_mutex_lock(&a->mu);
	a->reopen_req = true;
	pthread_cond_signal(&a->cv);
	pthread_mutex_unlock(&a->mu);
}

void
audit_get_stats(struct audit *a, struct audit_stats *st)
{
	memset(st, 0, sizeof(*st));
	if (a == NULL)
		return;
	st->written = atomic_load(&a->written);
	st->failed = atomic_load(&a->failed);
	st->dropped = atomic_load(&a->dropped);
	st->refused = atomic_load(&a->refused);
	st->slow = atomic_load(&a->slow);
	pthread_mutex_lock(&a->mu);
	st->queued = a->nitems;
	pthread_mutex_unlock(&a->mu);
}

bool
audit_get_redis_stats(struct audit *a, struct auditredis_stats *st)
{
	if (a == NULL || a->redis == NULL)
		return false;
	auditredis_get_stats(a->redis, st);
	return true;
}

void
audit_close(struct audit *a)
{
	struct audit_item *it, *next;
	size_t left = 0;

	if (a == NULL)
		return;
	/* The loop appends no more: the writer thread writes what is left. */
	if (a->flush_ev != NULL) {
		event_free(a->flush_ev);
		a->flush_ev = NULL;
	}
	pthread_mutex_lock(&a->mu);
	a->stop_req = true;
	a->closed = true;
	pthread_cond_signal(&a->cv);
	pthread_mutex_unlock(&a->mu);
	pthread_join(a->thread, NULL);
	for (it = a->head; it != NULL; it = next) {
		next = it->next;
		free(it->data);
		free(it);
		left++;
	}
	if (left > 0)
		log_error("audit: %zu records could not be written to %s before "
		          "closing",
		          left, a->path);
	/* The writer is gone: the last lines (the close checkpoint) are all
	 * pushed, and the loop has stopped. */
	auditredis_flush(a->redis, AUDIT_REDIS_CLOSE_MS);
	if (a->use_syslog)
		auditsyslog_close();
	audit_free(a);
}
