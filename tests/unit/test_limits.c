/*
 * test_limits.c - what limits.c formats by hand for every virtual-key
 * answer (OpenAI's reset format, decimal numbers), against what the
 * printf formats it replaced give.
 */
#include "harness.h"
#include "limits.h"

#include <stdio.h>
#include <string.h>

/* The formats limits_format_reset used before it was written by hand. */
static void
reset_printf(long ms, char *out, size_t cap)
{
	if (ms < 1000)
		snprintf(out, cap, "%ldms", ms < 0 ? 0 : ms);
	else if (ms < 60000)
		snprintf(out, cap, "%lds", (ms + 999) / 1000);
	else
		snprintf(out, cap, "%ldm%lds", ms / 60000,
		         ((ms % 60000) + 999) / 1000);
}

int
main(void)
{
	static const long resets[] = {
	    -5, 0, 1, 250, 999, 1000, 1001, 59000, 59001, 59999, 60000,
	    60001, 61000, 119999, 360000, 3599999, 86400000, 2678400000L};
	static const long nums[] = {0, 7, -7, 10, -10, 1000000000, -123456789,
	                            2147483647L, -2147483647L - 1};
	char a[64], b[64], n[24];

	for (size_t i = 0; i < sizeof(resets) / sizeof(resets[0]); i++) {
		limits_format_reset(resets[i], a, sizeof(a));
		reset_printf(resets[i], b, sizeof(b));
		CHECK(strcmp(a, b) == 0, "reset %ld: %s, printf %s", resets[i], a,
		      b);
	}
	limits_format_reset(250, a, sizeof(a));
	CHECK(strcmp(a, "250ms") == 0, "250 ms: %s", a);
	limits_format_reset(360000, a, sizeof(a));
	CHECK(strcmp(a, "6m0s") == 0, "6 minutes: %s", a);
	limits_format_reset(61000, a, 4);
	CHECK(strcmp(a, "1m1") == 0, "cut to its room: %s", a);
	for (size_t i = 0; i < sizeof(nums) / sizeof(nums[0]); i++) {
		size_t len = limits_format_long(nums[i], n);
		snprintf(b, sizeof(b), "%ld", nums[i]);
		CHECK(strcmp(n, b) == 0 && len == strlen(b), "%ld: %s", nums[i], n);
	}
	return harness_done();
}
