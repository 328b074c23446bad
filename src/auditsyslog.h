/*
 * auditsyslog.h - the syslog sink of the audit log: a copy of each sealed
 * line sent to syslog(3) (facility authpriv), which reaches journald under
 * systemd and a remote collector through rsyslog. Kept apart from audit.c
 * because <syslog.h> defines LOG_INFO and LOG_DEBUG, which log.h uses as
 * its own level names.
 */
#ifndef SCRIM_AUDITSYSLOG_H
#define SCRIM_AUDITSYSLOG_H

#include "scrim.h"

/* Lines longer than this (stored bodies) are sent as a summary: seq,
 * epoch and mac, enough to anchor the chain elsewhere. */
#define AUDITSYSLOG_MAX_LINE 8192

void auditsyslog_open(void);
/* line[0..n) without its newline; called from the writer thread only. */
void auditsyslog_send(const char *line, size_t n);
void auditsyslog_close(void);

#endif
