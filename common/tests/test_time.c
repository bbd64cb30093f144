/* test_time.c - RFC 3339 formatting and parsing (time.c), decimal formatting and
 * lp_sleep_ms (util.c). */
#include <errno.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>

#include "logpipe/util.h"

#include "logpipe/banned.h"

static void test_format(void **state)
{
	static const struct {
		int64_t ms;
		const char *want;
	} cases[] = {
		{0, "1970-01-01T00:00:00.000Z"},
		{1705328625123, "2024-01-15T14:23:45.123Z"},
		{1234567890000, "2009-02-13T23:31:30.000Z"},
		{1709164800000, "2024-02-29T00:00:00.000Z"},
		{-1, "1969-12-31T23:59:59.999Z"},
		{253402300799999, "9999-12-31T23:59:59.999Z"},
		{INT64_MAX, "9999-12-31T23:59:59.999Z"}, /* clamped */
		{INT64_MIN, "0000-01-01T00:00:00.000Z"}, /* clamped */
	};
	for (size_t i = 0; i < LP_ARRAY_SIZE(cases); i++) {
		char out[32];
		lp_rfc3339(cases[i].ms, out);
		assert_string_equal(out, cases[i].want);
	}
}

static void test_parse_valid(void **state)
{
	static const struct {
		const char *in;
		int64_t want;
	} cases[] = {
		{"2024-01-15T14:23:45Z", 1705328625000},
		{"2024-01-15T14:23:45.123Z", 1705328625123},
		{"2024-01-15T14:23:45.1Z", 1705328625100},
		{"2024-01-15T14:23:45.12Z", 1705328625120},
		{"2024-01-15T14:23:45.123456789Z", 1705328625123}, /* truncated */
		{"2024-01-15T14:23:45,5Z", 1705328625500},
		{"2024-01-15T14:23:45+02:00", 1705321425000},
		{"2024-01-15T14:23:45-05:30", 1705348425000},
		{"2024-01-15T14:23:45+0200", 1705321425000},
		{"2024-01-15T14:23:45+02", 1705321425000},
		{"2024-01-15t14:23:45z", 1705328625000},
		{"2024-01-15 14:23:45Z", 1705328625000},
		{"2024-01-15 14:23:45", 1705328625000}, /* no zone: UTC */
		{"2024-02-29T00:00:00Z", 1709164800000},
		{"1999-12-31T23:59:59.999+00:00", 946684799999},
		{"1970-01-01T00:00:00Z", 0},
		{"1998-12-31T23:59:60Z", 915148800000}, /* leap second rolls over */
	};
	for (size_t i = 0; i < LP_ARRAY_SIZE(cases); i++) {
		int64_t ms = -42;
		int rc = lp_parse_rfc3339(cases[i].in, &ms);
		if (rc != 0)
			print_error("input %s\n", cases[i].in);
		assert_int_equal(rc, 0);
		assert_int_equal(ms, cases[i].want);
	}
}

static void test_parse_invalid(void **state)
{
	static const char *const cases[] = {
		"",
		"yesterday",
		"2024-01-15",
		"2024-01-15T14:23Z",
		"2024-01-15T14:23:45.Z",
		"2024-01-15T14:23:45ZZ",
		"2024-01-15T14:23:45 Z",
		"2024-01-15T14:23:45+2:00",
		"2024-01-15T14:23:45+24:00",
		"2024-01-15T14:23:45+02:60",
		"2024-01-15T14:23:45+02:0",
		"2024-13-01T00:00:00Z",
		"2024-00-01T00:00:00Z",
		"2023-02-29T00:00:00Z",
		"2024-04-31T00:00:00Z",
		"2024-01-15T24:00:00Z",
		"2024-01-15T12:60:00Z",
		"2024-01-15T12:00:61Z",
		"2024-01-15X12:00:00Z",
		"24-01-15T12:00:00Z",
		"2024/01/15T12:00:00Z",
		"1234567890000",
	};
	for (size_t i = 0; i < LP_ARRAY_SIZE(cases); i++) {
		int64_t ms = 0;
		int rc = lp_parse_rfc3339(cases[i], &ms);
		if (rc != -EINVAL)
			print_error("input '%s' was accepted as %lld\n", cases[i], (long long)ms);
		assert_int_equal(rc, -EINVAL);
	}
	int64_t ms;
	assert_int_equal(lp_parse_rfc3339(NULL, &ms), -EINVAL);
}

static void test_fmt_u64(void **state)
{
	char d[24];

	(void)state;
	assert_int_equal(lp_fmt_u64(d, 0), 1);
	assert_string_equal(d, "0");
	assert_int_equal(lp_fmt_u64(d, 429), 3);
	assert_string_equal(d, "429");
	assert_int_equal(lp_fmt_u64(d, 1000000), 7);
	assert_string_equal(d, "1000000");
	assert_int_equal(lp_fmt_u64(d, UINT64_MAX), 20);
	assert_string_equal(d, "18446744073709551615");
}

/* The same text as gmtime_r and strftime give, over the whole range (a
 * stride that visits every month, day and time of day in turn). */
static void test_format_matches_gmtime(void **state)
{
	const int64_t lo = -62167219200000LL, hi = 253402300799999LL;
	int64_t step = 8640000LL * 1000 + 3600000 * 7 + 60000 * 13 + 1000 * 17 + 389;

	for (int64_t ms = lo; ms <= hi; ms += step) {
		char out[32], want[40];
		time_t t = (time_t)(ms >= 0 ? ms / 1000 : -((-ms + 999) / 1000));
		int64_t frac = ms - (int64_t)t * 1000;
		struct tm tm;

		assert_non_null(gmtime_r(&t, &tm));
		snprintf(want, sizeof(want), "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900,
			 tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, (int)frac);
		lp_rfc3339(ms, out);
		if (strcmp(out, want) != 0)
			fail_msg("%lld: %s, want %s", (long long)ms, out, want);
	}
}

static void test_round_trip(void **state)
{
	for (int64_t ms = -86400000; ms < 4102444800000; ms += 987654321987) {
		char out[32];
		int64_t back = 0;
		lp_rfc3339(ms, out);
		assert_int_equal(lp_parse_rfc3339(out, &back), 0);
		assert_int_equal(back, ms);
	}
}

static void *set_stop(void *arg)
{
	atomic_store((atomic_bool *)arg, true);
	return NULL;
}

/* The stop flag is an atomic_bool another thread sets: the sleep returns
 * once it is set, long before its length (the bound is generous, the
 * sleep would otherwise last 60 s). */
static void test_sleep_stop(void **state)
{
	atomic_bool stop = false;
	pthread_t th;
	int64_t t0;

	(void)state;
	atomic_store(&stop, true);
	t0 = lp_now_ms();
	lp_sleep_ms(60000, &stop);
	assert_true(lp_now_ms() - t0 < 10000);

	atomic_store(&stop, false);
	assert_int_equal(pthread_create(&th, NULL, set_stop, &stop), 0);
	t0 = lp_now_ms();
	lp_sleep_ms(60000, &stop);
	assert_true(lp_now_ms() - t0 < 10000);
	assert_int_equal(pthread_join(th, NULL), 0);

	/* Without a flag the whole time passes. */
	t0 = lp_now_ms();
	lp_sleep_ms(30, NULL);
	assert_true(lp_now_ms() - t0 >= 30);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_format),
		cmocka_unit_test(test_parse_valid),
		cmocka_unit_test(test_parse_invalid),
		cmocka_unit_test(test_round_trip),
		cmocka_unit_test(test_format_matches_gmtime),
		cmocka_unit_test(test_fmt_u64),
		cmocka_unit_test(test_sleep_stop),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
