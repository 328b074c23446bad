/*
 * route.c - route matching. Globs go through fnmatch(3), the same syntax
 * operators know from shells; routes are few, so a linear walk in file
 * order keeps "first match wins" obvious.
 */
#include "route.h"

#include "alloc.h"

#include <fnmatch.h>
#include <string.h>
#include <strings.h>

static bool
prefix_ok(const struct cfg_route *r, const char *path, size_t len)
{
	size_t pl = strlen(r->prefix);
	return pl <= len && memcmp(path, r->prefix, pl) == 0;
}

const struct cfg_route *
route_find(const struct scrim_config *cfg, const char *path, size_t len,
           const char *model)
{
	for (size_t i = 0; i < cfg->nroutes; i++) {
		const struct cfg_route *r = &cfg->routes[i];

		if (!prefix_ok(r, path, len))
			continue;
		if (r->nmodels == 0 || model == NULL)
			return r;
		for (size_t m = 0; m < r->nmodels; m++)
			if (fnmatch(r->models[m], model, 0) == 0)
				return r;
	}
	return NULL;
}

bool
route_path_known(const struct scrim_config *cfg, const char *path, size_t len)
{
	for (size_t i = 0; i < cfg->nroutes; i++)
		if (prefix_ok(&cfg->routes[i], path, len))
			return true;
	return false;
}

char *
route_upstream_url(const struct cfg_route *r, const struct cfg_provider *p,
                   const char *target, size_t len)
{
	size_t sl = strlen(r->strip);
	const char *rest = target + (sl <= len ? sl : len);
	size_t rl = len - (size_t)(rest - target);
	size_t bl = strlen(p->base_url);
	char *url = xmalloc(bl + rl + 2);

	memcpy(url, p->base_url, bl);
	if (rl == 0 || (rest[0] != '/' && rest[0] != '?'))
		url[bl++] = '/';
	memcpy(url + bl, rest, rl);
	url[bl + rl] = '\0';
	return url;
}

bool
route_path_safe(const char *t, size_t len)
{
	size_t plen = len;
	const char *q = memchr(t, '?', len);

	if (q != NULL)
		plen = (size_t)(q - t);
	if (plen == 0 || t[0] != '/')
		return false;
	for (size_t i = 0; i < len; i++)
		if (t[i] == '\\' || t[i] == '#')
			return false;
	for (size_t i = 0; i < plen; i++) {
		if (t[i] == '%' && i + 3 <= plen &&
		    (strncasecmp(t + i, "%2e", 3) == 0 ||
		     strncasecmp(t + i, "%2f", 3) == 0 ||
		     strncasecmp(t + i, "%5c", 3) == 0 ||
		     strncasecmp(t + i, "%00", 3) == 0))
			return false;
		if (t[i] == '/' && i + 1 < plen && t[i + 1] == '/')
			return false;
		if (t[i] == '/' && i + 1 < plen && t[i + 1] == '.') {
			size_t e = i + 2;
			if (e == plen || t[e] == '/')
				return false; /* "/." */
			if (t[e] == '.' && (e + 1 == plen || t[e + 1] == '/'))
				return false; /* "/.." */
		}
	}
	return true;
}
