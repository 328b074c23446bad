/* test_route.c - route matching, URL building and path safety. */
#include "harness.h"
#include "route.h"

#include <stdlib.h>
#include <string.h>

int
main(void)
{
	struct scrim_config *c = config_load(SCRIM_SOURCE_DIR "/conf/scrim.conf",
	                                     true);
	const struct cfg_route *r;
	char *url;

	CHECK(c != NULL, "default config");
	if (c == NULL)
		return harness_done();
#define FIND(p, m) route_find(c, p, strlen(p), m)
	r = FIND("/v1/chat/completions", "gpt-4o");
	CHECK(r && strcmp(r->name, "openai") == 0, "gpt-* -> openai");
	r = FIND("/v1/chat/completions", "o3-mini");
	CHECK(r && strcmp(r->name, "openai") == 0, "o[0-9]* -> openai");
	r = FIND("/v1/chat/completions", "claude-3-5-sonnet");
	CHECK(r && strcmp(r->name, "anthropic-compat") == 0, "claude-* compat");
	r = FIND("/v1/chat/completions", "llama3.1");
	CHECK(r && strcmp(r->name, "local") == 0, "the rest -> local");
	r = FIND("/v1/models", NULL);
	CHECK(r && strcmp(r->name, "openai") == 0, "no model: first prefix");
	r = FIND("/anthropic/v1/messages", "claude-3-haiku");
	CHECK(r && strcmp(r->name, "anthropic") == 0, "anthropic native");
	CHECK(FIND("/nope", NULL) == NULL, "unknown path");
	CHECK(!route_path_known(c, "/v2/x", 5), "unknown prefix");

	r = FIND("/v1/chat/completions", "gpt-4o");
	url = route_upstream_url(r, r->provider, "/v1/chat/completions?a=1", 24);
	CHECK(strcmp(url, "https://api.openai.com/v1/chat/completions?a=1") == 0,
	      "openai url: %s", url);
	free(url);
	r = FIND("/v1/chat/completions", "claude-3-5-sonnet");
	url = route_upstream_url(r, r->provider, "/v1/chat/completions", 20);
	CHECK(strcmp(url, "https://api.anthropic.com/v1/chat/completions") == 0,
	      "anthropic compat url: %s", url);
	free(url);
	r = FIND("/anthropic/v1/messages", NULL);
	url = route_upstream_url(r, r->provider, "/anthropic/v1/messages", 22);
	CHECK(strcmp(url, "https://api.anthropic.com/v1/messages") == 0,
	      "anthropic url: %s", url);
	free(url);

	CHECK(route_path_safe("/v1/chat/completions", 20), "plain path");
	CHECK(route_path_safe("/v1/x?a=../b", 12), "dots in the query are fine");
	CHECK(!route_path_safe("/v1/../admin", 12), "dot-dot");
	CHECK(!route_path_safe("/v1/./x", 7), "dot");
	CHECK(!route_path_safe("/v1/..", 6), "trailing dot-dot");
	CHECK(!route_path_safe("/v1/%2e%2e/x", 12), "encoded dot-dot");
	CHECK(!route_path_safe("/v1/a%2Fb", 9), "encoded slash");
	CHECK(!route_path_safe("/v1//x", 6), "empty segment");
	CHECK(!route_path_safe("/v1/a\\b", 7), "backslash");
	CHECK(route_path_safe("/v1/.well", 9), "dot-prefixed name is fine");
	config_unref(c);
	return harness_done();
}
