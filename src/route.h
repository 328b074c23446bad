/*
 * route.h - picks the [route] for a request from its path and model, and
 * builds the upstream URL. Proxy-mode classification (CONNECT, absolute
 * form) joins it when that mode exists.
 */
#ifndef SCRIM_ROUTE_H
#define SCRIM_ROUTE_H

#include "config.h"

/*
 * First route, in file order, whose prefix starts path and whose model
 * globs match model (globs are ignored when model is NULL). NULL: none.
 */
const struct cfg_route *route_find(const struct scrim_config *cfg,
                                   const char *path, size_t path_len,
                                   const char *model);

/* Does any route's prefix start this path? (404 before reading a body.) */
bool route_path_known(const struct scrim_config *cfg, const char *path,
                      size_t path_len);

/* The provider's base_url + the target after the route's strip prefix.
 * Caller frees. */
char *route_upstream_url(const struct cfg_route *r,
                         const struct cfg_provider *p, const char *target,
                         size_t target_len);

/*
 * Refuse paths a provider could read differently from us: dot segments,
 * encoded dots and slashes, backslashes, fragments. True when safe.
 */
bool route_path_safe(const char *target, size_t len);

#endif
