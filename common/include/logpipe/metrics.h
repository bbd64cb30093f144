/* metrics.h - metrics registry (counters, gauges, histograms with labels)
 * and Prometheus text exposition (format 0.0.4).
 *
 * A metric family is created once at start-up; each distinct set of label
 * values is a series, looked up (and created on first use) with
 * lp_metric_series().  Callers on hot paths keep the series pointer and
 * update it with lock-free atomics.  Families and series live until the
 * registry is freed.  All functions are thread-safe. */
#ifndef LOGPIPE_METRICS_H
#define LOGPIPE_METRICS_H

#include <stddef.h>

#include "logpipe/buf.h"

enum lp_metric_type { LP_COUNTER, LP_GAUGE, LP_HISTOGRAM };

struct lp_registry;
struct lp_metric;
struct lp_series;

/* The process-wide registry that /metrics renders. */
struct lp_registry *lp_registry_default(void);
struct lp_registry *lp_registry_new(void);
void lp_registry_free(struct lp_registry *r);

/* Creates (or returns the existing) family.  labels is a comma-separated
 * list of label names ("route,status") or NULL.  buckets/nbuckets are the
 * upper bounds of a histogram (ascending; +Inf is implicit); NULL selects
 * lp_default_buckets.  Returns NULL if name exists with another type or
 * other label names, or if a name is not a valid Prometheus name (at most
 * 16 labels; "le" is reserved). */
struct lp_metric *lp_metric_new(struct lp_registry *r, enum lp_metric_type type,
				const char *name, const char *help, const char *labels,
				const double *buckets, size_t nbuckets);
/* The series for the given label values, one string per label name, in
 * order.  Values are escaped on output.  Never NULL. */
struct lp_series *lp_metric_series(struct lp_metric *m, ...);
/* Same with an array of values. */
struct lp_series *lp_metric_seriesv(struct lp_metric *m, const char *const *values);

/* Shorthands for a family without labels: the family and its one series. */
struct lp_series *lp_counter(struct lp_registry *r, const char *name, const char *help);
struct lp_series *lp_gauge(struct lp_registry *r, const char *name, const char *help);
struct lp_series *lp_histogram(struct lp_registry *r, const char *name, const char *help,
			       const double *buckets, size_t nbuckets);

void lp_series_add(struct lp_series *s, double v); /* counter or gauge */
void lp_series_inc(struct lp_series *s);
void lp_series_set(struct lp_series *s, double v); /* gauge */
void lp_series_observe(struct lp_series *s, double v); /* histogram */
double lp_series_value(const struct lp_series *s); /* counter/gauge; histogram: count */
/* Histogram only: cumulative count of the bucket with upper bound index i
 * (i == nbuckets is +Inf), and the sum of observations. */
unsigned long long lp_series_bucket(const struct lp_series *s, size_t i);
double lp_series_sum(const struct lp_series *s);

/* Appends the Prometheus text exposition of every family to out. */
void lp_registry_render(struct lp_registry *r, struct lp_buf *out);

/* Seconds: 0.5 ms .. 10 s, the usual latency buckets. */
extern const double lp_default_buckets[];
extern const size_t lp_default_nbuckets;

#endif
