/*
 * auditsyslog.c - copies sealed audit lines to syslog(3); see
 * auditsyslog.h. A copy off the host is what makes the end of the chain
 * checkable: records cut from the end of the file are still in syslog.
 */
#include "auditsyslog.h"

#include "auditchain.h"

#include <inttypes.h>
#include <syslog.h>

void
auditsyslog_open(void)
{
	/* authpriv: audit trails belong with the other access records,
	 * readable by root only on a stock rsyslog. */
	openlog("scrim-audit", LOG_NDELAY | LOG_PID, LOG_AUTHPRIV);
}

void
auditsyslog_send(const char *line, size_t n)
{
	struct auditchain_line l;
	char hex[2 * AUDITCHAIN_MAC_LEN + 1];
	const char *why;

	if (n <= AUDITSYSLOG_MAX_LINE) {
		syslog(LOG_INFO, "%.*s", (int)n, line);
		return;
	}
	if (!auditchain_parse(line, n, &l, &why))
		return;
	auditchain_hex(l.mac, AUDITCHAIN_MAC_LEN, hex);
	syslog(LOG_INFO,
	       "{\"type\":\"summary\",\"bytes\":%zu,\"seq\":%" PRIu64
	       ",\"epoch\":%" PRIu64 ",\"mac\":\"%s\"}",
	       n, l.seq, l.epoch, hex);
}

void
auditsyslog_close(void)
{
	closelog();
}
