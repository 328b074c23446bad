/*
 * log.h - the only text log sink (stderr, which systemd sends to the
 * journal). Callers pass ids, counts and sizes: never a prompt, a body, a
 * key or a matched value. The level is checked before formatting.
 */
#ifndef SCRIM_LOG_H
#define SCRIM_LOG_H

#include "scrim.h"

enum log_level { LOG_DEBUG, LOG_INFO, LOG_WARN, LOG_ERROR };

extern enum log_level log_min_level;

void log_write(enum log_level lvl, const char *fmt, ...) SCRIM_PRINTF(2, 3);
bool log_parse_level(const char *s, enum log_level *out);

#define log_at(lvl, ...)                                                       \
	do {                                                                   \
		if ((lvl) >= log_min_level)                                    \
			log_write((lvl), __VA_ARGS__);                         \
	} while (0)
#define log_debug(...) log_at(LOG_DEBUG, __VA_ARGS__)
#define log_info(...) log_at(LOG_INFO, __VA_ARGS__)
#define log_warn(...) log_at(LOG_WARN, __VA_ARGS__)
#define log_error(...) log_at(LOG_ERROR, __VA_ARGS__)

#endif
