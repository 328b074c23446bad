/*
 * metrics.c - see metrics.h. Series live in an open-addressing table by
 * name and label set; label values come from a small, operator-defined
 * vocabulary (routes, providers, rules), so the table stays small, and it
 * is bounded anyway: past METRICS_MAX series new ones are folded into
 * an "other" series instead of growing without end.
 */
#include "metrics.h"

#include "alloc.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define METRICS_MAX 4096
#define METRICS_SLOTS 8192

static const double bucket_le[] = {0.001, 0.0025, 0.005, 0.01, 0.025,
                                   0.05,  0.1,    0.25,  0.5,  1,
                                   2.5,   5,      10,    30};
#define NBUCKETS SCRIM_ARRAY_LEN(bucket_le)

struct series {
	char *name;
	char *labels;
	bool hist;
	double value;              /* counters */
	uint64_t buckets[NBUCKETS]; /* histograms: counts per bucket */
	double sum;
	uint64_t count;
};

struct metrics {
	struct series *v;
	size_t n, cap;
	uint32_t slots[METRICS_SLOTS]; /* index + 1 */
};

static const struct {
	const char *name, *type, *help;
} help[] = {
	{"scrim_requests_total", "counter", "Requests answered, by route, "
	                                    "provider and status"},
	{"scrim_request_duration_seconds", "histogram",
	 "Time from the request's head to the end of its answer"},
	{"scrim_upstream_duration_seconds", "histogram",
	 "Time from forwarding to the provider's response head"},
	{"scrim_scrub_duration_seconds", "histogram",
	 "Time spent scrubbing a request body"},
	{"scrim_limits_duration_seconds", "histogram",
	 "Time spent checking usage limits in Redis"},
	{"scrim_redactions_total", "counter", "Values replaced, by entity type"},
	{"scrim_rule_hits_total", "counter", "Scrub rule hits, by rule"},
	{"scrim_blocked_total", "counter", "Requests refused by a block rule"},
	{"scrim_rate_limited_total", "counter", "Requests refused with 429"},
	{"scrim_errors_total", "counter", "Requests failed by scrim, by code"},
	{"scrim_key_requests_total", "counter", "Requests, by client key id"},
	{"scrim_key_tokens_total", "counter",
	 "Tokens reported by providers, by client key id and direction"},
};

struct metrics *
metrics_new(void)
{
	return xcalloc(1, sizeof(struct metrics));
}

void
metrics_free(struct metrics *m)
{
	if (m == NULL)
		return;
	for (size_t i = 0; i < m->n; i++) {
		free(m->v[i].name);
		free(m->v[i].labels);
	}
	free(m->v);
	free(m);
}

void
metrics_label(char *out, size_t cap, const char *v)
{
	size_t i = 0;

	for (; v && *v && i + 1 < cap; v++, i++) {
		char c = *v;
		bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
		          (c >= '0' && c <= '9') || c == '_' || c == '.' ||
		          c == ':' || c == '-';
		out[i] = (char)(ok ? c : '_');
	}
	out[i] = '\0';
}

static uint32_t
hash(const char *a, const char *b)
{
	uint32_t h = 2166136261u;
	for (; *a; a++)
		h = (h ^ (unsigned char)*a) * 16777619u;
	h = (h ^ 0xff) * 16777619u;
	for (; *b; b++)
		h = (h ^ (unsigned char)*b) * 16777619u;
	return h;
}

static struct series *
find(struct metrics *m, const char *name, const char *labels, bool hist)
{
	uint32_t i = hash(name, labels) & (METRICS_SLOTS - 1);
	struct series *s;

	while (m->slots[i] != 0) {
		s = &m->v[m->slots[i] - 1];
		if (strcmp(s->name, name) == 0 && strcmp(s->labels, labels) == 0)
			return s;
		i = (i + 1) & (METRICS_SLOTS - 1);
	}
	if (m->n >= METRICS_MAX)
		return strcmp(labels, "other=\"true\"") == 0
		           ? NULL
		           : find(m, name, "other=\"true\"", hist);
	if (m->n == m->cap) {
		m->cap = m->cap ? m->cap * 2 : 32;
		m->v = xrealloc(m->v, sizeof(*m->v) * m->cap);
	}
	s = &m->v[m->n];
	memset(s, 0, sizeof(*s));
	s->name = xstrdup(name);
	s->labels = xstrdup(labels);
	s->hist = hist;
	m->slots[i] = (uint32_t)++m->n;
	return s;
}

void
metrics_add(struct metrics *m, const char *name, const char *labels, double v)
{
	struct series *s = find(m, name, labels ? labels : "", false);
	if (s != NULL)
		s->value += v;
}

void
metrics_observe(struct metrics *m, const char *name, const char *labels,
                double seconds)
{
	struct series *s = find(m, name, labels ? labels : "", true);

	if (s == NULL)
		return;
	for (size_t b = 0; b < NBUCKETS; b++)
		if (seconds <= bucket_le[b])
			s->buckets[b]++;
	s->sum += seconds;
	s->count++;
}

bool
metrics_render(const struct metrics *m, struct buf *out)
{
	bool ok = true;

	for (size_t h = 0; h < SCRIM_ARRAY_LEN(help) && ok; h++) {
		bool header = false;
		for (size_t i = 0; i < m->n && ok; i++) {
			const struct series *s = &m->v[i];
			const char *sep = *s->labels ? "," : "";
			if (strcmp(s->name, help[h].name) != 0)
				continue;
			if (!header) {
				ok = buf_addf(out, "# HELP %s %s\n# TYPE %s %s\n", s->name,
				              help[h].help, s->name, help[h].type);
				header = true;
			}
			if (!s->hist) {
				ok = ok && buf_addf(out, "%s{%s} %.17g\n", s->name, s->labels,
				                    s->value);
				continue;
			}
			for (size_t b = 0; b < NBUCKETS && ok; b++)
				ok = buf_addf(out, "%s_bucket{%s%sle=\"%g\"} %llu\n", s->name,
				              s->labels, sep, bucket_le[b],
				              (unsigned long long)s->buckets[b]);
			ok = ok &&
			     buf_addf(out, "%s_bucket{%s%sle=\"+Inf\"} %llu\n", s->name,
			              s->labels, sep, (unsigned long long)s->count) &&
			     buf_addf(out, "%s_sum{%s} %.9f\n%s_count{%s} %llu\n",
			              s->name, s->labels, s->sum, s->name, s->labels,
			              (unsigned long long)s->count);
		}
	}
	return ok;
}

void
metrics_each(const struct metrics *m, const char *name,
             void (*fn)(void *arg, const char *labels, double v), void *arg)
{
	for (size_t i = 0; i < m->n; i++)
		if (!m->v[i].hist && strcmp(m->v[i].name, name) == 0)
			fn(arg, m->v[i].labels, m->v[i].value);
}

double
metrics_sum(const struct metrics *m, const char *name)
{
	double t = 0;

	for (size_t i = 0; i < m->n; i++)
		if (strcmp(m->v[i].name, name) == 0)
			t += m->v[i].hist ? (double)m->v[i].count : m->v[i].value;
	return t;
}
