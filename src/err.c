/*
 * err.c - the table behind enum scrim_err. Codes are part of the API:
 * clients and dashboards match on them, so they never change meaning.
 */
#include "err.h"

static const struct err_info table[ERR__COUNT] = {
	[ERR_NONE] = {200, "", "", ""},
	[ERR_BAD_REQUEST] = {400, "invalid_request_error", "bad_request",
	                     "Malformed HTTP request"},
	[ERR_INVALID_JSON] = {400, "invalid_request_error", "invalid_json",
	                      "The request body is not valid JSON"},
	[ERR_INVALID_API_KEY] = {401, "authentication_error", "invalid_api_key",
	                         "Missing or invalid API key"},
	[ERR_ROUTE_NOT_FOUND] = {404, "invalid_request_error", "route_not_found",
	                         "No route for this path"},
	[ERR_METHOD_NOT_ALLOWED] = {405, "invalid_request_error",
	                            "method_not_allowed", "Method not allowed"},
	[ERR_NOT_IMPLEMENTED] = {501, "invalid_request_error",
	                         "method_not_implemented",
	                         "This method is not supported"},
	[ERR_REQUEST_TIMEOUT] = {408, "invalid_request_error", "request_timeout",
	                         "The request was not received in time"},
	[ERR_BODY_TOO_LARGE] = {413, "invalid_request_error", "body_too_large",
	                        "The request body is too large"},
	[ERR_URI_TOO_LONG] = {414, "invalid_request_error", "uri_too_long",
	                      "The request line is too long"},
	[ERR_HEADERS_TOO_LARGE] = {431, "invalid_request_error",
	                           "headers_too_large",
	                           "The request headers are too large"},
	[ERR_EXPECTATION_FAILED] = {417, "invalid_request_error",
	                            "expectation_failed",
	                            "Only Expect: 100-continue is supported"},
	[ERR_VERSION] = {505, "invalid_request_error",
	                 "http_version_not_supported",
	                 "Only HTTP/1.0 and HTTP/1.1 are supported"},
	[ERR_PROVIDER_KEY_MISSING] = {502, "server_error",
	                              "provider_key_missing",
	                              "The gateway has no API key for this provider"},
	[ERR_UPSTREAM_CONNECT] = {502, "server_error", "upstream_connect_failed",
	                          "Could not connect to the provider"},
	[ERR_UPSTREAM_TLS] = {502, "server_error", "upstream_tls_failed",
	                      "The provider's TLS certificate could not be verified"},
	[ERR_UPSTREAM_ERROR] = {502, "server_error", "upstream_error",
	                        "The provider's answer was broken off or malformed"},
	[ERR_UPSTREAM_TIMEOUT] = {504, "server_error", "upstream_timeout",
	                          "The provider did not answer in time"},
	[ERR_PROXY_AUTH] = {407, "authentication_error", "proxy_auth_required",
	                    "Proxy-Authorization with a scrim key is required"},
	[ERR_FORBIDDEN_TARGET] = {403, "invalid_request_error",
	                          "target_not_allowed",
	                          "The proxy does not allow this target (host, "
	                          "port or a private address)"},
	[ERR_NO_CA] = {503, "server_error", "no_local_ca",
	               "HTTPS interception needs a local CA: run `scrim ca init`"},
	[ERR_KEY_REVOKED] = {401, "authentication_error", "invalid_api_key",
	                     "This API key was revoked or has expired"},
	[ERR_MODEL_NOT_ALLOWED] = {403, "invalid_request_error",
	                           "model_not_allowed",
	                           "This key may not use this model"},
	[ERR_RATE_LIMITED] = {429, "rate_limit_error", "rate_limit_exceeded",
	                      "Rate limit reached"},
	[ERR_LIMITS_UNAVAILABLE] = {503, "server_error", "limits_unavailable",
	                            "Usage limits cannot be checked right now"},
	[ERR_AUDIT_UNAVAILABLE] = {503, "server_error", "audit_unavailable",
	                           "The audit log cannot be written right now"},
	[ERR_BLOCKED] = {403, "invalid_request_error", "blocked_by_policy",
	                 "The request was blocked by a privacy rule"},
	[ERR_UNSCRUBBABLE] = {415, "invalid_request_error",
	                      "unsupported_media_type",
	                      "The gateway can only scrub JSON request bodies"},
	[ERR_SCRUB_FAILED] = {503, "server_error", "scrub_failed",
	                      "The request could not be scrubbed, so it was not "
	                      "sent"},
	[ERR_SHUTTING_DOWN] = {503, "server_error", "shutting_down",
	                       "The gateway is shutting down"},
	[ERR_INTERNAL] = {500, "server_error", "internal_error",
	                  "Internal gateway error"},
};

const struct err_info *
err_info(enum scrim_err e)
{
	if ((unsigned)e >= ERR__COUNT)
		e = ERR_INTERNAL;
	return &table[e];
}
