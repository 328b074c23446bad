/*
 * metrics.h - counters and histograms for /metrics (Prometheus text
 * format). Label values are route names, provider names, status codes,
 * entity types and rule ids: never a key, a prompt or a value.
 */
#ifndef SCRIM_METRICS_H
#define SCRIM_METRICS_H

#include "buf.h"
#include "scrim.h"

struct metrics;

struct metrics *metrics_new(void);
void metrics_free(struct metrics *m);

/* labels: a ready label set without braces, e.g. `route="openai"`. */
void metrics_add(struct metrics *m, const char *name, const char *labels,
                 double v);
/* Histograms in seconds, with fixed buckets from 1 ms to 30 s. */
void metrics_observe(struct metrics *m, const char *name, const char *labels,
                     double seconds);

/* Append every series; help texts come from a table in metrics.c. */
bool metrics_render(const struct metrics *m, struct buf *out);

/* Visit every series called name (counters): labels and value. */
void metrics_each(const struct metrics *m, const char *name,
                  void (*fn)(void *arg, const char *labels, double v),
                  void *arg);
/* Sum of a counter over all its label sets. */
double metrics_sum(const struct metrics *m, const char *name);

/* Quote a label value: only [A-Za-z0-9_.:-], anything else becomes _. */
void metrics_label(char *out, size_t cap, const char *v);

#endif
