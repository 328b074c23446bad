/*
 * fuzz_config.c - the configuration loader on an arbitrary file. Beyond
 * "no crash, no leak": a configuration that loads is consistent, every
 * route naming a provider of the same snapshot, and every bounded number
 * the server sizes buffers from is positive.
 */
#include "fuzz.h"

#include "config.h"

#include <string.h>

static void
check_config(const struct scrim_config *c)
{
	FUZZ_CHECK(c->refcnt == 1, "refcnt %d", c->refcnt);
	for (size_t i = 0; i < c->nroutes; i++) {
		const struct cfg_route *r = &c->routes[i];
		FUZZ_CHECK(r->provider != NULL, "route %zu has no provider", i);
		FUZZ_CHECK(r->provider >= c->providers &&
		           r->provider < c->providers + c->nproviders,
		           "route %zu points outside the providers", i);
		FUZZ_CHECK(r->provider_name != NULL && r->provider->name != NULL &&
		           strcmp(r->provider_name, r->provider->name) == 0,
		           "route %zu points at the wrong provider", i);
		FUZZ_CHECK(r->prefix != NULL, "route %zu has no prefix", i);
	}
	for (size_t i = 0; i < c->nproviders; i++)
		FUZZ_CHECK(c->providers[i].name != NULL &&
		           c->providers[i].base_url != NULL,
		           "provider %zu is incomplete", i);
	FUZZ_CHECK(c->max_request_line > 0 && c->max_header_size > 0 &&
	           c->max_headers > 0 && c->max_body_size > 0,
	           "a framing limit is not positive");
}

int
LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc;
	(void)argv;
	fuzz_quiet();
	(void)fuzz_tmpdir();
	return 0;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const char *path = fuzz_write_file("fuzz.conf", data, size);
	struct scrim_config *c = config_load(path, false);

	if (c == NULL)
		return 0;
	check_config(c);
	config_unref(c);
	return 0;
}
