/*
 * admin.h - the admin port: /healthz (the process is up) and /readyz (a
 * configuration is loaded and every provider's host resolves).
 */
#ifndef SCRIM_ADMIN_H
#define SCRIM_ADMIN_H

#include "scrim.h"

void admin_handle(struct scrim_conn *c);
void admin_conn_closed(struct scrim_conn *c);

#endif
