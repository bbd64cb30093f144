/* metrics.c - metrics registry and Prometheus text exposition (0.0.4).
 *
 * Structure: a registry holds its families in registration order; a family
 * holds its series in creation order and, for lookup by label values, in a
 * small chained hash table.  One mutex per registry guards these lists;
 * it is taken only to create or find a series and to render.
 *
 * Values: every number a series holds is a 64-bit atomic.  Counters and
 * gauges keep the bits of a double and add with a compare-and-swap loop;
 * histograms keep one plain (non-cumulative) count per bucket plus the sum
 * of observations as double bits.  The cumulative counts, and the total
 * count, are computed when read, so _count always equals the +Inf bucket
 * in one rendering. */
#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "logpipe/metrics.h"
#include "logpipe/util.h"

#include "logpipe/banned.h"

/* Label names a family may have; lp_metric_series reads this many at most. */
#define MAX_LABELS 16
/* Slots of a family's series hash table; chains grow beyond that. */
#define SERIES_SLOTS 64

struct lp_series {
	struct lp_series *next;    /* next series of the family, creation order */
	struct lp_series *hnext;   /* next series in the same hash slot */
	struct lp_metric *metric;  /* the family */
	uint64_t hash;             /* hash of the label values */
	char **values;             /* label values, one per label name */
	_Atomic uint64_t bits;     /* counter/gauge value; histogram sum (double bits) */
	_Atomic uint64_t *buckets; /* histogram: count per bucket, +Inf last; else NULL */
};

struct lp_metric {
	struct lp_metric *next;    /* next family of the registry */
	struct lp_registry *reg;   /* the registry, whose mutex guards the lists */
	enum lp_metric_type type;  /* counter, gauge or histogram */
	char *name;                /* metric name */
	char *help;                /* help text, unescaped */
	char **labels;             /* label names */
	size_t nlabels;            /* number of label names */
	double *bounds;            /* histogram upper bounds, ascending, no +Inf */
	size_t nbounds;            /* number of bounds */
	struct lp_series *series;  /* first series, creation order */
	struct lp_series **stail;  /* where the next series is linked */
	struct lp_series *slots[SERIES_SLOTS]; /* hash table of the series */
};

struct lp_registry {
	pthread_mutex_t mu;        /* guards the family and series lists */
	struct lp_metric *families; /* first family, registration order */
	struct lp_metric **ftail;  /* where the next family is linked */
};

const double lp_default_buckets[] = { 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
				      0.1,    0.25,  0.5,    1,     2.5,  5,     10 };
const size_t lp_default_nbuckets = LP_ARRAY_SIZE(lp_default_buckets);

/* ---- atomic doubles ----------------------------------------------------- */

static uint64_t d2u(double d)
{
	uint64_t u;

	memcpy(&u, &d, sizeof(u));
	return u;
}

static double u2d(uint64_t u)
{
	double d;

	memcpy(&d, &u, sizeof(d));
	return d;
}

static void atomic_add_double(_Atomic uint64_t *a, double v)
{
	uint64_t old = atomic_load_explicit(a, memory_order_relaxed);

	while (!atomic_compare_exchange_weak_explicit(a, &old, d2u(u2d(old) + v),
						      memory_order_relaxed, memory_order_relaxed))
		;
}

/* ---- registries --------------------------------------------------------- */

static struct lp_registry *default_registry;
static pthread_once_t default_once = PTHREAD_ONCE_INIT;

static void default_init(void)
{
	default_registry = lp_registry_new();
}

struct lp_registry *lp_registry_default(void)
{
	pthread_once(&default_once, default_init);
	return default_registry;
}

struct lp_registry *lp_registry_new(void)
{
	struct lp_registry *r = lp_xcalloc(1, sizeof(*r));

	pthread_mutex_init(&r->mu, NULL);
	r->ftail = &r->families;
	return r;
}

static void free_strv(char **v, size_t n)
{
	for (size_t i = 0; i < n && v; i++)
		free(v[i]);
	free(v);
}

static void metric_free(struct lp_metric *m)
{
	struct lp_series *s, *next;

	for (s = m->series; s; s = next) {
		next = s->next;
		free_strv(s->values, m->nlabels);
		free(s->buckets);
		free(s);
	}
	free_strv(m->labels, m->nlabels);
	free(m->bounds);
	free(m->name);
	free(m->help);
	free(m);
}

/* The default registry lives as long as the process: freeing it is a
 * no-op, since breakers and services keep pointers into it. */
void lp_registry_free(struct lp_registry *r)
{
	struct lp_metric *m, *next;

	if (!r || r == default_registry)
		return;
	for (m = r->families; m; m = next) {
		next = m->next;
		metric_free(m);
	}
	pthread_mutex_destroy(&r->mu);
	free(r);
}

/* ---- families ----------------------------------------------------------- */

static bool valid_name(const char *s, bool colon_ok)
{
	if (!s || !*s || (*s >= '0' && *s <= '9'))
		return false;
	for (; *s; s++) {
		bool ok = (*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') ||
			  (*s >= '0' && *s <= '9') || *s == '_' || (colon_ok && *s == ':');
		if (!ok)
			return false;
	}
	return true;
}

/* Splits "a,b" into trimmed, valid label names.  Returns the count, or -1. */
static int split_labels(const char *list, char **out)
{
	const char *p = list;
	int n = 0;

	while (list && *p) {
		const char *end = strchr(p, ',');
		size_t len = end ? (size_t)(end - p) : strlen(p);
		char *name;

		while (len && *p == ' ')
			p++, len--;
		while (len && p[len - 1] == ' ')
			len--;
		if (n == MAX_LABELS)
			goto fail;
		name = lp_xmalloc(len + 1);
		memcpy(name, p, len);
		name[len] = '\0';
		out[n++] = name;
		if (!valid_name(name, false) || !strcmp(name, "le"))
			goto fail;
		p = end ? end + 1 : p + len;
	}
	return n;
fail:
	while (n)
		free(out[--n]);
	return -1;
}

static bool same_labels(const struct lp_metric *m, char **names, int n)
{
	if ((size_t)n != m->nlabels)
		return false;
	for (int i = 0; i < n; i++)
		if (strcmp(m->labels[i], names[i]))
			return false;
	return true;
}

static struct lp_series *series_find_locked(struct lp_metric *m, const char *const *values);

struct lp_metric *lp_metric_new(struct lp_registry *r, enum lp_metric_type type,
				const char *name, const char *help, const char *labels,
				const double *buckets, size_t nbuckets)
{
	char *names[MAX_LABELS];
	struct lp_metric *m = NULL;
	int n;

	if (!valid_name(name, true))
		return NULL;
	n = split_labels(labels, names);
	if (n < 0)
		return NULL;
	if (type == LP_HISTOGRAM && !buckets) {
		buckets = lp_default_buckets;
		nbuckets = lp_default_nbuckets;
	}
	if (type == LP_HISTOGRAM) {
		/* An explicit +Inf bound is implicit anyway; drop it. */
		if (nbuckets && isinf(buckets[nbuckets - 1]) && buckets[nbuckets - 1] > 0)
			nbuckets--;
		for (size_t i = 1; i < nbuckets; i++)
			if (!(buckets[i - 1] < buckets[i]))
				goto out;
	}

	pthread_mutex_lock(&r->mu);
	for (m = r->families; m; m = m->next)
		if (!strcmp(m->name, name))
			break;
	if (m) {
		if (m->type != type || !same_labels(m, names, n))
			m = NULL;
		pthread_mutex_unlock(&r->mu);
		goto out;
	}
	m = lp_xcalloc(1, sizeof(*m));
	m->reg = r;
	m->type = type;
	m->name = lp_xstrdup(name);
	m->help = lp_xstrdup(help ? help : "");
	m->labels = lp_xcalloc((size_t)n, sizeof(char *));
	m->nlabels = (size_t)n;
	memcpy(m->labels, names, (size_t)n * sizeof(char *));
	n = 0; /* the names now belong to m */
	if (type == LP_HISTOGRAM) {
		m->bounds = lp_xcalloc(nbuckets, sizeof(double));
		memcpy(m->bounds, buckets, nbuckets * sizeof(double));
		m->nbounds = nbuckets;
	}
	m->stail = &m->series;
	*r->ftail = m;
	r->ftail = &m->next;
	/* A family without labels has exactly one series: create it now so
	 * that it is rendered (as 0) before its first update. */
	if (!m->nlabels)
		series_find_locked(m, NULL);
	pthread_mutex_unlock(&r->mu);
out:
	while (n > 0)
		free(names[--n]);
	return m;
}

/* ---- series ------------------------------------------------------------- */

static uint64_t hash_values(const char *const *values, size_t n)
{
	uint64_t h = 1469598103934665603ULL; /* FNV-1a */

	for (size_t i = 0; i < n; i++) {
		for (const char *p = values[i]; *p; p++)
			h = (h ^ (unsigned char)*p) * 1099511628211ULL;
		h = (h ^ 0xff) * 1099511628211ULL; /* separator: ("a","b") != ("ab","") */
	}
	return h;
}

static bool same_values(const struct lp_series *s, const char *const *values, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (strcmp(s->values[i], values[i]))
			return false;
	return true;
}

/* Finds or creates the series; the registry mutex is held. */
static struct lp_series *series_find_locked(struct lp_metric *m, const char *const *values)
{
	uint64_t h = hash_values(values, m->nlabels);
	struct lp_series **slot = &m->slots[h % SERIES_SLOTS];
	struct lp_series *s;

	for (s = *slot; s; s = s->hnext)
		if (s->hash == h && same_values(s, values, m->nlabels))
			return s;
	s = lp_xcalloc(1, sizeof(*s));
	s->metric = m;
	s->hash = h;
	s->values = lp_xcalloc(m->nlabels, sizeof(char *));
	for (size_t i = 0; i < m->nlabels; i++)
		s->values[i] = lp_xstrdup(values[i]);
	if (m->type == LP_HISTOGRAM)
		s->buckets = lp_xcalloc(m->nbounds + 1, sizeof(*s->buckets));
	s->hnext = *slot;
	*slot = s;
	*m->stail = s;
	m->stail = &s->next;
	return s;
}

struct lp_series *lp_metric_seriesv(struct lp_metric *m, const char *const *values)
{
	const char *vals[MAX_LABELS];
	struct lp_series *s;

	/* A NULL value is taken as the empty string. */
	for (size_t i = 0; i < m->nlabels; i++)
		vals[i] = values[i] ? values[i] : "";
	pthread_mutex_lock(&m->reg->mu);
	s = series_find_locked(m, vals);
	pthread_mutex_unlock(&m->reg->mu);
	return s;
}

struct lp_series *lp_metric_series(struct lp_metric *m, ...)
{
	const char *vals[MAX_LABELS];
	va_list ap;

	va_start(ap, m);
	for (size_t i = 0; i < m->nlabels; i++)
		vals[i] = va_arg(ap, const char *);
	va_end(ap);
	return lp_metric_seriesv(m, vals);
}

static struct lp_series *single(struct lp_registry *r, enum lp_metric_type type, const char *name,
				const char *help, const double *buckets, size_t nbuckets)
{
	struct lp_metric *m = lp_metric_new(r, type, name, help, NULL, buckets, nbuckets);

	return m ? lp_metric_seriesv(m, NULL) : NULL;
}

struct lp_series *lp_counter(struct lp_registry *r, const char *name, const char *help)
{
	return single(r, LP_COUNTER, name, help, NULL, 0);
}

struct lp_series *lp_gauge(struct lp_registry *r, const char *name, const char *help)
{
	return single(r, LP_GAUGE, name, help, NULL, 0);
}

struct lp_series *lp_histogram(struct lp_registry *r, const char *name, const char *help,
			       const double *buckets, size_t nbuckets)
{
	return single(r, LP_HISTOGRAM, name, help, buckets, nbuckets);
}

/* ---- updates ------------------------------------------------------------ */

/* A counter only goes up: negative (and NaN) increments are ignored. */
void lp_series_add(struct lp_series *s, double v)
{
	if (s->metric->type == LP_HISTOGRAM ||
	    (s->metric->type == LP_COUNTER && !(v >= 0)))
		return;
	atomic_add_double(&s->bits, v);
}

void lp_series_inc(struct lp_series *s)
{
	lp_series_add(s, 1);
}

void lp_series_set(struct lp_series *s, double v)
{
	if (s->metric->type != LP_HISTOGRAM)
		atomic_store_explicit(&s->bits, d2u(v), memory_order_relaxed);
}

void lp_series_observe(struct lp_series *s, double v)
{
	const struct lp_metric *m = s->metric;
	size_t i = 0;

	if (m->type != LP_HISTOGRAM)
		return;
	while (i < m->nbounds && !(v <= m->bounds[i]))
		i++;
	atomic_fetch_add_explicit(&s->buckets[i], 1, memory_order_relaxed);
	atomic_add_double(&s->bits, v);
}

double lp_series_value(const struct lp_series *s)
{
	if (s->metric->type == LP_HISTOGRAM)
		return (double)lp_series_bucket(s, s->metric->nbounds);
	return u2d(atomic_load_explicit(&s->bits, memory_order_relaxed));
}

unsigned long long lp_series_bucket(const struct lp_series *s, size_t i)
{
	unsigned long long n = 0;

	if (s->metric->type != LP_HISTOGRAM)
		return 0;
	if (i > s->metric->nbounds)
		i = s->metric->nbounds;
	for (size_t k = 0; k <= i; k++)
		n += atomic_load_explicit(&s->buckets[k], memory_order_relaxed);
	return n;
}

double lp_series_sum(const struct lp_series *s)
{
	if (s->metric->type != LP_HISTOGRAM)
		return 0;
	return u2d(atomic_load_explicit(&s->bits, memory_order_relaxed));
}

/* ---- exposition --------------------------------------------------------- */

/* Prometheus spelling of a number: integers without exponent or fraction,
 * other values with the fewest digits that read back exactly. */
static void add_number(struct lp_buf *out, double v)
{
	char tmp[40];

	if (isnan(v)) {
		lp_buf_adds(out, "NaN");
	} else if (isinf(v)) {
		lp_buf_adds(out, v > 0 ? "+Inf" : "-Inf");
	} else if (v == floor(v) && fabs(v) < 1e15) {
		lp_buf_addf(out, "%.0f", v);
	} else {
		for (int prec = 15; prec <= 17; prec++) {
			snprintf(tmp, sizeof(tmp), "%.*g", prec, v);
			if (strtod(tmp, NULL) == v)
				break;
		}
		lp_buf_adds(out, tmp);
	}
}

/* Appends s with \ and newline escaped, and " too when quote is set (label
 * values), as the text format asks. */
static void add_escaped(struct lp_buf *out, const char *s, bool quote)
{
	for (; *s; s++) {
		if (*s == '\\')
			lp_buf_adds(out, "\\\\");
		else if (*s == '\n')
			lp_buf_adds(out, "\\n");
		else if (*s == '"' && quote)
			lp_buf_adds(out, "\\\"");
		else
			lp_buf_addch(out, *s);
	}
}

/* Writes name{labels} (or plain name), le first if given, then the value. */
static void add_sample(struct lp_buf *out, const struct lp_series *s, const char *suffix,
		       const double *le, double v)
{
	const struct lp_metric *m = s->metric;
	const char *sep = "{";

	lp_buf_adds(out, m->name);
	lp_buf_adds(out, suffix);
	for (size_t i = 0; i < m->nlabels; i++) {
		lp_buf_addf(out, "%s%s=\"", sep, m->labels[i]);
		add_escaped(out, s->values[i], true);
		lp_buf_addch(out, '"');
		sep = ",";
	}
	if (le) {
		lp_buf_addf(out, "%sle=\"", sep);
		add_number(out, *le);
		lp_buf_addch(out, '"');
		sep = ",";
	}
	if (*sep == ',')
		lp_buf_addch(out, '}');
	lp_buf_addch(out, ' ');
	add_number(out, v);
	lp_buf_addch(out, '\n');
}

static void render_histogram(struct lp_buf *out, const struct lp_series *s)
{
	const struct lp_metric *m = s->metric;
	unsigned long long cum = 0;
	double inf = INFINITY;

	for (size_t i = 0; i <= m->nbounds; i++) {
		cum += atomic_load_explicit(&s->buckets[i], memory_order_relaxed);
		add_sample(out, s, "_bucket", i < m->nbounds ? &m->bounds[i] : &inf, (double)cum);
	}
	add_sample(out, s, "_sum", NULL, lp_series_sum(s));
	add_sample(out, s, "_count", NULL, (double)cum);
}

void lp_registry_render(struct lp_registry *r, struct lp_buf *out)
{
	static const char *const type_names[] = { "counter", "gauge", "histogram" };

	pthread_mutex_lock(&r->mu);
	for (const struct lp_metric *m = r->families; m; m = m->next) {
		lp_buf_addf(out, "# HELP %s ", m->name);
		add_escaped(out, m->help, false);
		lp_buf_addf(out, "\n# TYPE %s %s\n", m->name, type_names[m->type]);
		for (const struct lp_series *s = m->series; s; s = s->next) {
			if (m->type == LP_HISTOGRAM)
				render_histogram(out, s);
			else
				add_sample(out, s, "", NULL, lp_series_value(s));
		}
	}
	pthread_mutex_unlock(&r->mu);
}
