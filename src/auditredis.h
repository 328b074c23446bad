/*
 * auditredis.h - the Redis Stream sink of the audit log: each sealed line
 * (the same JSON, MAC included, as in the file) is added to a capped
 * stream with XADD key MAXLEN ~ N * record LINE boot BOOT, to gather a
 * fleet's records in one place. A copy only: the file stays the authority for
 * on_failure, and nothing here ever holds a request up.
 */
#ifndef SCRIM_AUDITREDIS_H
#define SCRIM_AUDITREDIS_H

#include "scrim.h"

struct event_base;
struct scrim_config;
struct auditredis;

/*
 * Connect to [redis] url (its password, its db) on the loop, for the
 * stream [audit] redis_stream capped at redis_stream_maxlen. Each entry
 * also carries boot (the run's id, as in its checkpoints), so that the
 * lines of one run, interleaved with other instances' in the stream, can
 * be told apart and verified as a chain. Loop thread. NULL with err
 * filled when the URL does not parse or the loop cannot take the events.
 */
struct auditredis *auditredis_new(struct event_base *base,
                                  const struct scrim_config *cfg,
                                  const char *boot, char *err, size_t errlen);

/*
 * Queue lines[0..len) (whole lines, each ending in '\n') to be sent.
 * Any thread (the audit writer); never blocks on Redis. Lines that do
 * not fit the outbox are dropped and counted.
 */
void auditredis_push(struct auditredis *ar, const char *lines, size_t len);

/*
 * At shutdown, once nothing pushes any more and the loop has stopped: run
 * the loop alone for at most ms so that the last lines (the close
 * checkpoint among them) reach Redis. Returns at once when Redis is not
 * connected.
 */
void auditredis_flush(struct auditredis *ar, long ms);

/* Loop thread, once nothing pushes any more. Lines not sent yet are
 * counted as dropped and logged. */
void auditredis_free(struct auditredis *ar);

struct auditredis_stats {
	uint64_t sent;    /* lines Redis took */
	uint64_t failed;  /* calls Redis refused, or that got no answer */
	uint64_t dropped; /* lines never sent: outbox full, shutdown */
	uint64_t pending; /* lines waiting in the outbox, now */
};
void auditredis_get_stats(struct auditredis *ar, struct auditredis_stats *st);

#endif
