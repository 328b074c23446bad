/*
 * harness.h - a tiny test harness in the spirit of Redis' testhelp.h:
 * CHECK records a pass or a failure with its line, and harness_done()
 * prints "N passed, N failed" and returns the exit status for ctest.
 */
#ifndef SCRIM_HARNESS_H
#define SCRIM_HARNESS_H

#include <stdio.h>

extern int harness_passed, harness_failed;

#define CHECK(cond, ...)                                                       \
	do {                                                                   \
		if (cond) {                                                    \
			harness_passed++;                                      \
		} else {                                                       \
			harness_failed++;                                      \
			fprintf(stderr, "FAIL %s:%d: ", __FILE__, __LINE__);   \
			fprintf(stderr, __VA_ARGS__);                          \
			fputc('\n', stderr);                                   \
		}                                                              \
	} while (0)

int harness_done(void);

#endif
