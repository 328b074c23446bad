/*
 * keyadmin.h - the key operations of the admin API (list, create, show,
 * revoke, rotate, usage), each an asynchronous chain of Redis calls that
 * each keep to one hash slot, so that they work on Redis Cluster; and
 * the two scripts they share with `scrim keys` (keyscmd.c). The request
 * path (check, settle) is limits.c's.
 */
#ifndef SCRIM_KEYADMIN_H
#define SCRIM_KEYADMIN_H

#include "scrim.h"

struct scrim_redis;

typedef void (*keyadmin_cb)(void *arg, const char *json, size_t len);

/*
 * Start op with args (strings; see keyadmin_start in keyadmin.c for each
 * op's). The callback runs once, from the loop, with the answer as JSON
 * text (an object; {"error": ...} for an unknown id), or NULL when Redis
 * did not answer or said an error. False, and no callback: Redis is not
 * connected, or op or its number of args is unknown.
 */
bool keyadmin_start(struct scrim_redis *r, const char *op,
                    const char *const *args, size_t nargs, keyadmin_cb cb,
                    void *arg) SCRIM_MUSTCHECK;

/* KEYS: scrim:{H}:key, and for "usage" :rpm :tpm:MINUTE :tpd:DAY
 * :usd:MONTH :par of the same H; ARGV: "show", "revoke" or "usage", then
 * for usage the id and the first millisecond of the last minute. A JSON
 * text: the record, the counts, or {"error": "no such key"}. */
extern const char keyadmin_key_lua[];

/* KEYS: scrim:id:ID; ARGV: old hash, new hash. 1 if the id named the old
 * hash and now names the new one, else 0 (changed nothing). */
extern const char keyadmin_repoint_lua[];

#endif
