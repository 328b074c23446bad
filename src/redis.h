/*
 * redis.h - one asynchronous Redis connection per process on the event
 * loop (hiredis), with what Debian 12's hiredis 0.14.1 lacks: a timeout
 * on every call, and reconnection with backoff. A call that times out
 * gets a NULL reply at once; after several timeouts in a row the
 * connection is dropped (the Redis is stalled, not just busy) and
 * rebuilt.
 */
#ifndef SCRIM_REDIS_H
#define SCRIM_REDIS_H

#include "scrim.h"

struct event_base;
struct redisReply;
struct scrim_redis;
struct redis_call;

/* reply is NULL on timeout, disconnect or error; it is freed after the
 * callback returns. */
typedef void (*redis_cb)(void *arg, struct redisReply *reply);

/* name says whose connection it is in the log ("limits"); a string
 * that lives as long as the connection. */
struct scrim_redis *redis_new(struct event_base *base, const char *name,
                              const char *url, const char *password,
                              long timeout_ms);
void redis_free(struct scrim_redis *r);

/* Send a command (argv form). Returns a handle the caller may cancel
 * (its callback then never runs), or NULL when the command could not be
 * sent: not connected. */
struct redis_call *redis_call(struct scrim_redis *r, redis_cb cb, void *arg,
                              int argc, const char **argv,
                              const size_t *argvlen);
void redis_cancel(struct redis_call *c);

bool redis_connected(const struct scrim_redis *r);

struct redis_stats {
	uint64_t calls, timeouts, errors, reconnects;
};
void redis_get_stats(const struct scrim_redis *r, struct redis_stats *st);

/* Parse redis://[:password@]host[:port][/db] or a socket path. */
bool redis_parse_url(const char *url, char *host, size_t hostcap, int *port,
                     int *db, bool *unix_socket);

#endif
