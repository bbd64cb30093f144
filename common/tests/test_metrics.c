/* test_metrics.c - unit tests for the metrics registry and its exposition. */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "logpipe/metrics.h"

#include "logpipe/banned.h"

static void test_counter_and_gauge(void **state)
{
	struct lp_registry *r = lp_registry_new();
	struct lp_series *c = lp_counter(r, "events_total", "Events.");
	struct lp_series *g = lp_gauge(r, "queue_depth", "Depth.");

	lp_series_inc(c);
	lp_series_add(c, 2.5);
	lp_series_add(c, -10); /* a counter never goes down */
	assert_float_equal(lp_series_value(c), 3.5, 0);

	lp_series_set(g, 7);
	lp_series_add(g, -2);
	assert_float_equal(lp_series_value(g), 5, 0);

	/* The same name and type gives the same series back. */
	assert_ptr_equal(lp_counter(r, "events_total", "Events."), c);
	lp_registry_free(r);
}

static void test_name_conflicts(void **state)
{
	struct lp_registry *r = lp_registry_new();

	assert_non_null(lp_metric_new(r, LP_COUNTER, "x_total", "X.", "a,b", NULL, 0));
	assert_null(lp_metric_new(r, LP_GAUGE, "x_total", "X.", "a,b", NULL, 0));
	assert_null(lp_metric_new(r, LP_COUNTER, "x_total", "X.", "a", NULL, 0));
	assert_non_null(lp_metric_new(r, LP_COUNTER, "x_total", "X.", "a, b", NULL, 0));
	assert_null(lp_metric_new(r, LP_COUNTER, "9bad", "X.", NULL, NULL, 0));
	assert_null(lp_metric_new(r, LP_COUNTER, "bad-name", "X.", NULL, NULL, 0));
	assert_null(lp_metric_new(r, LP_COUNTER, "y_total", "X.", "ok,b-ad", NULL, 0));
	assert_null(lp_metric_new(r, LP_HISTOGRAM, "h", "X.", "le", NULL, 0));
	assert_null(lp_metric_new(r, LP_HISTOGRAM, "h", "X.", NULL, (const double[]){ 2, 1 }, 2));
	lp_registry_free(r);
}

static void test_histogram_buckets(void **state)
{
	static const double bounds[] = { 1, 2, 5 };
	struct lp_registry *r = lp_registry_new();
	struct lp_series *h = lp_histogram(r, "lat_seconds", "Latency.", bounds, 3);

	lp_series_observe(h, 0.5);
	lp_series_observe(h, 1); /* upper bounds are inclusive */
	lp_series_observe(h, 1.5);
	lp_series_observe(h, 10);
	assert_int_equal(lp_series_bucket(h, 0), 2);
	assert_int_equal(lp_series_bucket(h, 1), 3);
	assert_int_equal(lp_series_bucket(h, 2), 3);
	assert_int_equal(lp_series_bucket(h, 3), 4);
	assert_float_equal(lp_series_sum(h), 13, 0);
	assert_float_equal(lp_series_value(h), 4, 0);
	lp_registry_free(r);
}

static void test_default_buckets(void **state)
{
	struct lp_registry *r = lp_registry_new();
	struct lp_series *h = lp_histogram(r, "d_seconds", "D.", NULL, 0);

	lp_series_observe(h, 0.0004);
	lp_series_observe(h, 11);
	assert_int_equal(lp_series_bucket(h, 0), 1);
	assert_int_equal(lp_series_bucket(h, lp_default_nbuckets - 1), 1);
	assert_int_equal(lp_series_bucket(h, lp_default_nbuckets), 2);
	lp_registry_free(r);
}

static void test_labels_and_escaping(void **state)
{
	struct lp_registry *r = lp_registry_new();
	struct lp_metric *m = lp_metric_new(r, LP_COUNTER, "req_total", "Requests.",
					    "route,status", NULL, 0);
	struct lp_buf out = LP_BUF_INIT;
	struct lp_series *a = lp_metric_series(m, "/a", "200");
	struct lp_series *q = lp_metric_series(m, "q\"b\\c\nd", "500");

	assert_ptr_equal(lp_metric_series(m, "/a", "200"), a);
	assert_ptr_equal(lp_metric_seriesv(m, (const char *const[]){ "/a", "200" }), a);
	assert_ptr_not_equal(lp_metric_series(m, "/a", "201"), a);
	lp_series_inc(a);
	lp_series_add(q, 2);
	lp_registry_render(r, &out);
	assert_string_equal(out.buf, "# HELP req_total Requests.\n"
				     "# TYPE req_total counter\n"
				     "req_total{route=\"/a\",status=\"200\"} 1\n"
				     "req_total{route=\"q\\\"b\\\\c\\nd\",status=\"500\"} 2\n"
				     "req_total{route=\"/a\",status=\"201\"} 0\n");
	lp_buf_release(&out);
	lp_registry_free(r);
}

static void test_exposition_text(void **state)
{
	static const double bounds[] = { 0.1, 1 };
	struct lp_registry *r = lp_registry_new();
	struct lp_series *c = lp_counter(r, "a_total", "Help with \\ and\nnewline \"q\".");
	struct lp_metric *g = lp_metric_new(r, LP_GAUGE, "b_ratio", "B.", "k", NULL, 0);
	struct lp_metric *h = lp_metric_new(r, LP_HISTOGRAM, "c_seconds", "C.", "op", bounds, 2);
	struct lp_buf out = LP_BUF_INIT;
	struct lp_series *hs = lp_metric_series(h, "get");

	lp_counter(r, "z_total", "Never updated.");
	lp_series_add(c, 3);
	lp_series_set(lp_metric_series(g, "x"), 0.25);
	lp_series_set(lp_metric_series(g, "y"), -1e20);
	lp_series_observe(hs, 0.05);
	lp_series_observe(hs, 0.5);
	lp_series_observe(hs, 2);
	lp_registry_render(r, &out);
	assert_string_equal(out.buf,
			    "# HELP a_total Help with \\\\ and\\nnewline \"q\".\n"
			    "# TYPE a_total counter\n"
			    "a_total 3\n"
			    "# HELP b_ratio B.\n"
			    "# TYPE b_ratio gauge\n"
			    "b_ratio{k=\"x\"} 0.25\n"
			    "b_ratio{k=\"y\"} -1e+20\n"
			    "# HELP c_seconds C.\n"
			    "# TYPE c_seconds histogram\n"
			    "c_seconds_bucket{op=\"get\",le=\"0.1\"} 1\n"
			    "c_seconds_bucket{op=\"get\",le=\"1\"} 2\n"
			    "c_seconds_bucket{op=\"get\",le=\"+Inf\"} 3\n"
			    "c_seconds_sum{op=\"get\"} 2.55\n"
			    "c_seconds_count{op=\"get\"} 3\n"
			    "# HELP z_total Never updated.\n"
			    "# TYPE z_total counter\n"
			    "z_total 0\n");
	lp_buf_release(&out);
	lp_registry_free(r);
}

static void test_histogram_without_labels(void **state)
{
	struct lp_registry *r = lp_registry_new();
	struct lp_buf out = LP_BUF_INIT;

	lp_series_observe(lp_histogram(r, "h_seconds", "H.", (const double[]){ 1 }, 1), 3);
	lp_registry_render(r, &out);
	assert_string_equal(out.buf, "# HELP h_seconds H.\n"
				     "# TYPE h_seconds histogram\n"
				     "h_seconds_bucket{le=\"1\"} 0\n"
				     "h_seconds_bucket{le=\"+Inf\"} 1\n"
				     "h_seconds_sum 3\n"
				     "h_seconds_count 1\n");
	lp_buf_release(&out);
	lp_registry_free(r);
}

#define THREADS 4
#define ADDS 20000

/* Each thread looks the series up by its labels (creating it at most
 * once between them) and adds to it. */
static void *adder(void *arg)
{
	for (int i = 0; i < ADDS; i++)
		lp_series_add(lp_metric_series(arg, "shared"), 0.5);
	return NULL;
}

static void test_concurrent_adds(void **state)
{
	struct lp_registry *r = lp_registry_new();
	struct lp_metric *m = lp_metric_new(r, LP_COUNTER, "n_total", "N.", "k", NULL, 0);
	pthread_t t[THREADS];

	for (int i = 0; i < THREADS; i++)
		pthread_create(&t[i], NULL, adder, m);
	for (int i = 0; i < THREADS; i++)
		pthread_join(t[i], NULL);
	assert_int_equal((long long)lp_series_value(lp_metric_series(m, "shared")),
			 THREADS * ADDS / 2);
	lp_registry_free(r);
}

static void test_default_registry(void **state)
{
	struct lp_registry *d = lp_registry_default();

	assert_non_null(d);
	assert_ptr_equal(lp_registry_default(), d);
	lp_registry_free(d); /* a no-op for the default registry */
	assert_non_null(lp_counter(d, "still_usable_total", "S."));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_counter_and_gauge),
		cmocka_unit_test(test_name_conflicts),
		cmocka_unit_test(test_histogram_buckets),
		cmocka_unit_test(test_default_buckets),
		cmocka_unit_test(test_labels_and_escaping),
		cmocka_unit_test(test_exposition_text),
		cmocka_unit_test(test_histogram_without_labels),
		cmocka_unit_test(test_concurrent_adds),
		cmocka_unit_test(test_default_registry),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
