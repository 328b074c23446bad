/*
 * request.h - one request through the gateway pipeline:
 *
 *   authenticate -> limits -> read body -> parse -> route -> context
 *     -> scrub -> forward -> (stream back through restore) -> account
 *     -> audit
 *
 * struct scrim_req owns everything the request needs (its config snapshot,
 * body, parsed JSON, upstream transfer) and is owned by its connection.
 */
#ifndef SCRIM_REQUEST_H
#define SCRIM_REQUEST_H

#include "scrim.h"

/* A head arrived on the gateway port: run the pipeline. */
void req_start(struct scrim_conn *c);
/* The client went away or the connection is being torn down. */
void req_abort(struct scrim_req *r);
/* The client's output buffer drained: resume a paused upstream. */
void req_output_drained(struct scrim_req *r);

#endif
