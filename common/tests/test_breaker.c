/* test_breaker.c - unit tests for the circuit breaker's state machine,
 * driven by an explicit clock so that nothing sleeps. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "logpipe/breaker.h"
#include "logpipe/log.h"
#include "logpipe/metrics.h"
#include "logpipe/util.h"

#include "logpipe/banned.h"

#define T0 1000000

/* Lets one call through at now and records its outcome. */
static void call(struct lp_breaker *b, bool ok, int64_t elapsed_ms, int64_t now)
{
	assert_true(lp_breaker_allow_at(b, now));
	lp_breaker_record_at(b, ok, elapsed_ms, now);
}

static void calls(struct lp_breaker *b, const char *outcomes, int64_t now)
{
	for (const char *p = outcomes; *p; p++)
		call(b, *p == 'o', 1, now);
}

static void assert_state(struct lp_breaker *b, enum lp_breaker_state want, int64_t now)
{
	assert_string_equal(lp_breaker_state_name(lp_breaker_state_at(b, now)),
			    lp_breaker_state_name(want));
}

/* Opens a default breaker at now: five failures. */
static struct lp_breaker *open_breaker(const char *name, int64_t now)
{
	struct lp_breaker *b = lp_breaker_new(name, NULL);

	calls(b, "xxxxx", now);
	assert_state(b, LP_BREAKER_OPEN, now);
	return b;
}

static void test_needs_min_calls(void **state)
{
	struct lp_breaker *b = lp_breaker_new("min", NULL);

	calls(b, "xxxx", T0);
	assert_state(b, LP_BREAKER_CLOSED, T0);
	calls(b, "x", T0);
	assert_state(b, LP_BREAKER_OPEN, T0);
	lp_breaker_free(b);
}

static void test_opens_at_half_failures(void **state)
{
	struct lp_breaker *b = lp_breaker_new("rate", NULL);

	calls(b, "ooxox", T0); /* 2 of 5: 40 % */
	assert_state(b, LP_BREAKER_CLOSED, T0);
	calls(b, "x", T0); /* 3 of 6: 50 % */
	assert_state(b, LP_BREAKER_OPEN, T0);
	lp_breaker_free(b);
}

static void test_open_refuses_then_half_opens(void **state)
{
	struct lp_breaker *b = open_breaker("wait", T0);

	assert_false(lp_breaker_allow_at(b, T0));
	assert_false(lp_breaker_allow_at(b, T0 + 4999));
	assert_state(b, LP_BREAKER_OPEN, T0 + 4999);
	/* A late record of a call let through before it opened changes nothing. */
	lp_breaker_record_at(b, true, 1, T0 + 10);
	assert_state(b, LP_BREAKER_OPEN, T0 + 4999);
	assert_state(b, LP_BREAKER_HALF_OPEN, T0 + 5000);
	lp_breaker_free(b);
}

static void test_retry_after(void **state)
{
	struct lp_breaker *b = lp_breaker_new("retry", NULL);

	assert_int_equal(lp_breaker_retry_after_ms(b), 0);
	/* The real clock: "now" here is within a few ms of the call below. */
	calls(b, "xxxxx", lp_now_ms());
	assert_in_range(lp_breaker_retry_after_ms(b), 4000, 5000);
	lp_breaker_free(b);
}

static void test_half_open_closes_after_trials(void **state)
{
	struct lp_breaker *b = open_breaker("close", T0);
	int64_t t = T0 + 5000;

	assert_true(lp_breaker_allow_at(b, t));
	assert_true(lp_breaker_allow_at(b, t));
	assert_true(lp_breaker_allow_at(b, t));
	assert_false(lp_breaker_allow_at(b, t)); /* only three trials */
	lp_breaker_record_at(b, true, 1, t);
	lp_breaker_record_at(b, true, 1, t);
	assert_state(b, LP_BREAKER_HALF_OPEN, t);
	lp_breaker_record_at(b, true, 1, t);
	assert_state(b, LP_BREAKER_CLOSED, t);
	/* The window was cleared: four failures are below min_calls again. */
	calls(b, "xxxx", t);
	assert_state(b, LP_BREAKER_CLOSED, t);
	lp_breaker_free(b);
}

static void test_half_open_failure_reopens(void **state)
{
	struct lp_breaker *b = open_breaker("reopen", T0);
	int64_t t = T0 + 6000;

	assert_true(lp_breaker_allow_at(b, t));
	assert_true(lp_breaker_allow_at(b, t));
	lp_breaker_record_at(b, true, 1, t);
	lp_breaker_record_at(b, false, 1, t);
	assert_state(b, LP_BREAKER_OPEN, t);
	/* The wait starts again from the failure. */
	assert_false(lp_breaker_allow_at(b, t + 4999));
	assert_true(lp_breaker_allow_at(b, t + 5000));
	lp_breaker_free(b);
}

static void test_slow_calls_count(void **state)
{
	struct lp_breaker_opts o = { .slow_ms = 100 };
	struct lp_breaker *b = lp_breaker_new("slow", &o);

	for (int i = 0; i < 5; i++)
		call(b, true, 100, T0); /* not slower than slow_ms */
	assert_state(b, LP_BREAKER_CLOSED, T0);
	for (int i = 0; i < 5; i++)
		call(b, true, 101, T0);
	assert_state(b, LP_BREAKER_OPEN, T0);
	lp_breaker_free(b);

	/* With slow_ms 0 duration does not matter. */
	b = lp_breaker_new("not-slow", NULL);
	for (int i = 0; i < 10; i++)
		call(b, true, 1000000, T0);
	assert_state(b, LP_BREAKER_CLOSED, T0);
	lp_breaker_free(b);
}

static void test_slow_trial_reopens(void **state)
{
	struct lp_breaker_opts o = { .slow_ms = 100 };
	struct lp_breaker *b = lp_breaker_new("slow-trial", &o);

	calls(b, "xxxxx", T0);
	call(b, true, 500, T0 + 5000);
	assert_state(b, LP_BREAKER_OPEN, T0 + 5000);
	lp_breaker_free(b);
}

static void test_window_slides(void **state)
{
	struct lp_breaker_opts o = { .window = 4, .min_calls = 4 };
	struct lp_breaker *b = lp_breaker_new("slide", &o);

	calls(b, "xooo", T0); /* 1 of 4 */
	calls(b, "o", T0);    /* the failure slides out: 0 of 4 */
	calls(b, "x", T0);    /* 1 of 4 */
	assert_state(b, LP_BREAKER_CLOSED, T0);
	/* 2 of 4 now; counting every call since the start it would be 3 of 7. */
	calls(b, "x", T0);
	assert_state(b, LP_BREAKER_OPEN, T0);
	lp_breaker_free(b);
}

static void test_custom_options(void **state)
{
	struct lp_breaker_opts o = {
		.window = 5, .min_calls = 3, .failure_rate = 0.6, .open_ms = 100,
		.half_open_calls = 1,
	};
	struct lp_breaker *b = lp_breaker_new("custom", &o);

	calls(b, "oxo", T0); /* 1 of 3 */
	calls(b, "x", T0);   /* 2 of 4: 50 % < 60 % */
	assert_state(b, LP_BREAKER_CLOSED, T0);
	calls(b, "x", T0); /* 3 of 5: 60 % */
	assert_state(b, LP_BREAKER_OPEN, T0);
	assert_state(b, LP_BREAKER_HALF_OPEN, T0 + 100);
	call(b, true, 1, T0 + 100); /* one trial is enough */
	assert_state(b, LP_BREAKER_CLOSED, T0 + 100);
	lp_breaker_free(b);
}

static void test_gauge_and_names(void **state)
{
	struct lp_metric *m = lp_metric_new(lp_registry_default(), LP_GAUGE,
					    "circuit_breaker_state", "", "name", NULL, 0);
	struct lp_breaker *b = lp_breaker_new("gauge-dep", NULL);
	struct lp_series *s = lp_metric_series(m, "gauge-dep");
	struct lp_buf out = LP_BUF_INIT;

	assert_string_equal(lp_breaker_name(b), "gauge-dep");
	assert_int_equal((int)lp_series_value(s), 0);
	calls(b, "xxxxx", T0);
	assert_int_equal((int)lp_series_value(s), 1);
	assert_state(b, LP_BREAKER_HALF_OPEN, T0 + 5000);
	assert_int_equal((int)lp_series_value(s), 2);
	lp_registry_render(lp_registry_default(), &out);
	assert_non_null(strstr(out.buf, "\ncircuit_breaker_state{name=\"gauge-dep\"} 2\n"));
	lp_buf_release(&out);

	assert_string_equal(lp_breaker_state_name(LP_BREAKER_CLOSED), "closed");
	assert_string_equal(lp_breaker_state_name(LP_BREAKER_OPEN), "open");
	assert_string_equal(lp_breaker_state_name(LP_BREAKER_HALF_OPEN), "half_open");
	lp_breaker_free(b);
	lp_breaker_free(NULL);
}

static int quiet(void **state)
{
	lp_log_init("test_breaker", LP_LOG_ERROR);
	return 0;
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_needs_min_calls),
		cmocka_unit_test(test_opens_at_half_failures),
		cmocka_unit_test(test_open_refuses_then_half_opens),
		cmocka_unit_test(test_retry_after),
		cmocka_unit_test(test_half_open_closes_after_trials),
		cmocka_unit_test(test_half_open_failure_reopens),
		cmocka_unit_test(test_slow_calls_count),
		cmocka_unit_test(test_slow_trial_reopens),
		cmocka_unit_test(test_window_slides),
		cmocka_unit_test(test_custom_options),
		cmocka_unit_test(test_gauge_and_names),
	};

	return cmocka_run_group_tests(tests, quiet, NULL);
}
