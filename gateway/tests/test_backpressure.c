/* test_backpressure.c - the ingest limit as a function of the lag (SPEC's
 * thresholds), the group list syntax, and a reader with no Kafka. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "../backpressure.h"

#include "logpipe/banned.h"

static const struct gw_bp_policy spec = { .rate = 1000, .lag_normal = 10000,
					  .lag_critical = 50000, .floor = 100 };

static void check(const struct gw_bp_policy *p, long long lag, long long want_limit,
		  enum gw_bp_state want_state)
{
	enum gw_bp_state st;
	long long got = gw_bp_limit(p, lag, &st);

	if (got != want_limit || st != want_state) {
		print_error("lag %lld: got %lld %s, want %lld %s\n", lag, got, gw_bp_state_name(st),
			    want_limit, gw_bp_state_name(want_state));
		fail();
	}
}

static void test_spec_thresholds(void **state)
{
	check(&spec, 0, 1000, GW_BP_NORMAL);
	check(&spec, 9999, 1000, GW_BP_NORMAL);
	check(&spec, 10000, 1000, GW_BP_DEGRADED);
	check(&spec, 20000, 775, GW_BP_DEGRADED);
	check(&spec, 30000, 550, GW_BP_DEGRADED);
	check(&spec, 49999, 100, GW_BP_DEGRADED);
	check(&spec, 50000, 100, GW_BP_DEGRADED);
	check(&spec, 50001, 100, GW_BP_CRITICAL);
	check(&spec, 5000000, 100, GW_BP_CRITICAL);
}

static void test_monotonic(void **state)
{
	enum gw_bp_state st;
	long long lag, prev = spec.rate, cur;

	for (lag = 0; lag < 60000; lag += 37) {
		cur = gw_bp_limit(&spec, lag, &st);
		assert_true(cur <= prev);
		assert_in_range(cur, spec.floor, spec.rate);
		prev = cur;
	}
}

static void test_odd_policies(void **state)
{
	struct gw_bp_policy p = spec;

	/* A floor above the rate never raises the limit. */
	p.floor = 5000;
	check(&p, 60000, 1000, GW_BP_CRITICAL);
	/* Equal thresholds: a step from rate to floor. */
	p = spec;
	p.lag_critical = p.lag_normal;
	check(&p, 9999, 1000, GW_BP_NORMAL);
	check(&p, 10000, 100, GW_BP_DEGRADED);
	check(&p, 10001, 100, GW_BP_CRITICAL);
	assert_string_equal(gw_bp_state_name(GW_BP_CRITICAL), "CRITICAL");
}

static void test_groups_parse(void **state)
{
	char err[200] = "";
	struct gw_bp_group *g;

	g = gw_bp_groups_parse("logpipe-enricher=raw-logs, logpipe-consumer = "
			       "enriched-logs-complete+enriched-logs-partial",
			       err, sizeof(err));
	assert_non_null(g);
	assert_string_equal(g[0].name, "logpipe-enricher");
	assert_string_equal(g[0].topics[0], "raw-logs");
	assert_null(g[0].topics[1]);
	assert_string_equal(g[1].name, "logpipe-consumer");
	assert_string_equal(g[1].topics[0], "enriched-logs-complete");
	assert_string_equal(g[1].topics[1], "enriched-logs-partial");
	assert_null(g[1].topics[2]);
	assert_null(g[2].name);
	gw_bp_groups_free(g);

	g = gw_bp_groups_parse("", err, sizeof(err));
	assert_non_null(g);
	assert_null(g[0].name);
	gw_bp_groups_free(g);

	assert_null(gw_bp_groups_parse("logpipe-enricher", err, sizeof(err)));
	assert_non_null(strstr(err, "names no topics"));
	assert_null(gw_bp_groups_parse("g=", err, sizeof(err)));
	assert_null(gw_bp_groups_parse("=t", err, sizeof(err)));
}

/* Issue #17 item 5: an ingest request costs the events it carries. */
static void test_ingest_cost(void **state)
{
	static const char nd[] = "{\"message\":\"a\"}\n\n{\"message\":\"b, {c}\"}\n{\"m\":[1,2]}\n";
	static const char pretty[] = "{\n  \"message\": \"one\",\n  \"level\": \"INFO\"\n}\n";
	static const char arr[] = "\xef\xbb\xbf [ {\"message\":\"a,b\",\"x\":[1,2,{\"y\":\"]\"}]},"
				  " {\"message\":\"\\\"},\"} ,{} ]";
	char big[3000];

	(void)state;
	assert_int_equal(gw_ingest_cost(GW_INGEST_ONE, "[{},{}]", 7), 1);
	assert_int_equal(gw_ingest_cost(GW_INGEST_BATCH, arr, strlen(arr)), 3);
	assert_int_equal(gw_ingest_cost(GW_INGEST_BATCH, nd, strlen(nd)), 3);
	assert_int_equal(gw_ingest_cost(GW_INGEST_BATCH, pretty, strlen(pretty)), 1);
	assert_int_equal(gw_ingest_cost(GW_INGEST_BATCH, "[\"a\", 1, null]", 14), 3);
	/* Nothing countable still costs one: the producer refuses it. */
	assert_int_equal(gw_ingest_cost(GW_INGEST_BATCH, "[]", 2), 1);
	assert_int_equal(gw_ingest_cost(GW_INGEST_BATCH, "", 0), 1);
	assert_int_equal(gw_ingest_cost(GW_INGEST_BATCH, NULL, 0), 1);
	assert_int_equal(gw_ingest_cost(GW_INGEST_BATCH, "garbage", 7), 1);
	memset(big, 'x', sizeof(big));
	assert_int_equal(gw_ingest_cost(GW_INGEST_OTLP, big, 1024), 1);
	assert_int_equal(gw_ingest_cost(GW_INGEST_OTLP, big, 1025), 2);
	assert_int_equal(gw_ingest_cost(GW_INGEST_OTLP, big, sizeof(big)), 3);
	assert_int_equal(gw_ingest_cost(GW_INGEST_OTLP, big, 0), 1);
}

static void test_without_kafka(void **state)
{
	struct gw_bp_opts o = { .brokers = "", .groups = "g=t", .interval_ms = 1000,
				.policy = spec };
	char err[200];
	struct gw_backpressure *b = gw_bp_start(&o, err, sizeof(err));
	struct gw_bp_snapshot s;

	assert_non_null(b);
	assert_int_equal(gw_bp_current_limit(b), 1000);
	gw_bp_snapshot(b, &s);
	assert_false(s.enabled);
	assert_int_equal(s.lag, -1);
	assert_int_equal(s.state, GW_BP_NORMAL);
	assert_int_equal(s.age_ms, -1);
	gw_bp_stop(b);
	gw_bp_stop(NULL);

	o.brokers = "127.0.0.1:9";
	o.groups = "no-topics";
	assert_null(gw_bp_start(&o, err, sizeof(err)));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_spec_thresholds),
		cmocka_unit_test(test_monotonic),
		cmocka_unit_test(test_odd_policies),
		cmocka_unit_test(test_groups_parse),
		cmocka_unit_test(test_ingest_cost),
		cmocka_unit_test(test_without_kafka),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
