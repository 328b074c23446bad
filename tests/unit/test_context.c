/*
 * test_context.c - tenancy of the context stage: which index grants a
 * virtual key may carry, and which indexes a request may search given
 * its route's list, its key's grant and whether the route requires one.
 */
#include "context.h"
#include "harness.h"

#include <string.h>

static void
test_valid(void)
{
	static const char *const good[] = {
	    "", "none", "wiki", "team-a,team_b,C3", "a,b,c,d,e,f,g,h",
	};
	static const char *const bad[] = {
	    ",", "a,", ",a", "a,,b", "a b", "a;b", "../x", "a,b,c,d,e,f,g,h,i",
	    "x.db",
	    /* 65 letters */
	    "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
	};
	char why[120];

	for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++)
		CHECK(context_grant_valid(good[i], NULL, 0), "grant '%s' valid",
		      good[i]);
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		why[0] = '\0';
		CHECK(!context_grant_valid(bad[i], why, sizeof(why)) &&
		          why[0] != '\0',
		      "grant '%s' refused", bad[i]);
	}
}

static void
test_apply(void)
{
	char *route[] = {"wiki", "team-a", "team-b"};
	const char *out[CONTEXT_MAX_INDEXES];
	size_t n;

	n = context_grant_apply(route, 3, NULL, false, out);
	CHECK(n == 3 && strcmp(out[2], "team-b") == 0,
	      "no grant: the route's indexes");
	n = context_grant_apply(route, 3, "", false, out);
	CHECK(n == 3, "empty grant is no grant");
	n = context_grant_apply(route, 3, NULL, true, out);
	CHECK(n == 0, "no grant where one is required: none");
	n = context_grant_apply(route, 3, "team-b,wiki", true, out);
	CHECK(n == 2 && strcmp(out[0], "wiki") == 0 &&
	          strcmp(out[1], "team-b") == 0,
	      "grant narrows the route, in the route's order");
	n = context_grant_apply(route, 3, "team-c", false, out);
	CHECK(n == 0, "a grant never widens the route");
	n = context_grant_apply(route, 3, "team", false, out);
	CHECK(n == 0, "names match whole, not by prefix");
	n = context_grant_apply(route, 3, "team-a-x,eam-a", false, out);
	CHECK(n == 0, "nor by suffix or extension");
	n = context_grant_apply(route, 3, "none", false, out);
	CHECK(n == 0, "none is none");
}

int
main(void)
{
	test_valid();
	test_apply();
	return harness_done();
}
