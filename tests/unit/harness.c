/* harness.c - counters and the closing line for unit tests. */
#include "harness.h"

int harness_passed, harness_failed;

int
harness_done(void)
{
	printf("%d passed, %d failed\n", harness_passed, harness_failed);
	return harness_failed == 0 ? 0 : 1;
}
