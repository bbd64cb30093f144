/* test_ratelimit.c - unit tests for the token bucket and the backoff,
 * driven by an explicit clock so that nothing sleeps. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "logpipe/ratelimit.h"

#include "logpipe/banned.h"

/* Fills b and returns the clock reading it started at. */
static int64_t start(struct lp_bucket *b, double rate, double burst)
{
	lp_bucket_init(b, rate, burst);
	return b->last_us;
}

static void test_starts_full_and_drains(void **state)
{
	struct lp_bucket b;
	int64_t t = start(&b, 10, 5);
	assert_float_equal(lp_bucket_available_at(&b, t), 5, 0);
	for (int i = 0; i < 5; i++)
		assert_true(lp_bucket_take_at(&b, 1, t));
	assert_false(lp_bucket_take_at(&b, 1, t));
	assert_float_equal(lp_bucket_available_at(&b, t), 0, 0);
	lp_bucket_release(&b);
}

static void test_refill(void **state)
{
	struct lp_bucket b;
	int64_t t = start(&b, 10, 5); /* one token per 100 ms */
	assert_true(lp_bucket_take_at(&b, 5, t));
	assert_false(lp_bucket_take_at(&b, 1, t + 99999));
	assert_true(lp_bucket_take_at(&b, 1, t + 100000));
	assert_false(lp_bucket_take_at(&b, 1, t + 100000));
	assert_float_equal(lp_bucket_available_at(&b, t + 150000), 0.5, 1e-6);
	/* Fractional costs work too. */
	assert_true(lp_bucket_take_at(&b, 0.5, t + 150000));
	/* A clock going backwards adds nothing and takes nothing away. */
	assert_float_equal(lp_bucket_available_at(&b, t), 0, 1e-6);
	lp_bucket_release(&b);
}

static void test_burst_cap(void **state)
{
	struct lp_bucket b;
	int64_t t = start(&b, 1000, 3);
	assert_true(lp_bucket_take_at(&b, 3, t));
	/* An hour idle refills no more than the burst. */
	assert_float_equal(lp_bucket_available_at(&b, t + 3600000000LL), 3, 0);
	assert_false(lp_bucket_take_at(&b, 4, t + 3600000000LL));
	assert_true(lp_bucket_take_at(&b, 3, t + 3600000000LL));
	lp_bucket_release(&b);
}

static void test_set_rate(void **state)
{
	struct lp_bucket b;
	int64_t t;

	lp_bucket_init(&b, 100, 100);
	/* Lowering the burst caps the tokens at it. */
	lp_bucket_set_rate(&b, 1, 2);
	t = b.last_us;
	assert_float_equal(lp_bucket_available_at(&b, t), 2, 0);
	assert_true(lp_bucket_take_at(&b, 2, t));
	/* The new rate applies: one token per second. */
	assert_false(lp_bucket_take_at(&b, 1, t + 999999));
	assert_true(lp_bucket_take_at(&b, 1, t + 1000000));
	/* Raising the burst keeps the tokens as they are. */
	lp_bucket_set_rate(&b, 1, 50);
	assert_true(lp_bucket_available(&b) < 2);
	lp_bucket_release(&b);
}

static void test_wait_us(void **state)
{
	struct lp_bucket b;
	int64_t t = start(&b, 4, 2); /* one token per 250 ms */
	assert_int_equal(lp_bucket_wait_us_at(&b, 1, t), 0);
	assert_true(lp_bucket_take_at(&b, 2, t));
	assert_int_equal(lp_bucket_wait_us_at(&b, 1, t), 250000);
	assert_int_equal(lp_bucket_wait_us_at(&b, 2, t), 500000);
	assert_int_equal(lp_bucket_wait_us_at(&b, 1, t + 100000), 150000);
	assert_int_equal(lp_bucket_wait_us_at(&b, 3, t), INT64_MAX); /* above burst */
	lp_bucket_release(&b);

	/* The real clock: the bucket is empty, so the wait is about 250 ms. */
	lp_bucket_init(&b, 4, 2);
	assert_true(lp_bucket_take(&b, 2));
	assert_in_range(lp_bucket_wait_us(&b, 1), 200000, 250000);
	lp_bucket_release(&b);

	t = start(&b, 0, 1); /* no refill at all */
	assert_true(lp_bucket_take_at(&b, 1, t));
	assert_int_equal(lp_bucket_wait_us_at(&b, 1, t + 1000000), INT64_MAX);
	lp_bucket_release(&b);
}

static void test_backoff_growth_and_cap(void **state)
{
	unsigned seed = 1;

	for (int i = 0; i < 200; i++) {
		assert_in_range(lp_backoff_ms(1, 100, 10000, &seed), 50, 100);
		assert_in_range(lp_backoff_ms(2, 100, 10000, &seed), 100, 200);
		assert_in_range(lp_backoff_ms(4, 100, 10000, &seed), 400, 800);
		assert_in_range(lp_backoff_ms(8, 100, 10000, &seed), 5000, 10000);
		assert_in_range(lp_backoff_ms(1000, 100, 10000, &seed), 5000, 10000);
		assert_in_range(lp_backoff_ms(0, 100, 10000, &seed), 50, 100);
		assert_in_range(lp_backoff_ms(3, 100, 10000, NULL), 200, 400);
	}
	assert_int_equal(lp_backoff_ms(1, 0, 10000, &seed), 0);
	/* A cap below the base wins. */
	assert_in_range(lp_backoff_ms(1, 500, 300, &seed), 150, 300);
}

static void test_backoff_jitter(void **state)
{
	unsigned seed = 42, again = 42;
	int64_t lo = INT64_MAX, hi = 0, first = lp_backoff_ms(5, 100, 100000, &again);

	assert_int_equal(lp_backoff_ms(5, 100, 100000, &seed), first); /* same seed, same delay */
	for (int i = 0; i < 500; i++) {
		int64_t d = lp_backoff_ms(5, 100, 100000, &seed);

		lo = d < lo ? d : lo;
		hi = d > hi ? d : hi;
	}
	/* Delays spread over [800, 1600]: the lowest in the lower quarter,
	 * the highest in the upper quarter. */
	assert_in_range(lo, 800, 1000);
	assert_in_range(hi, 1400, 1600);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_starts_full_and_drains),
		cmocka_unit_test(test_refill),
		cmocka_unit_test(test_burst_cap),
		cmocka_unit_test(test_set_rate),
		cmocka_unit_test(test_wait_us),
		cmocka_unit_test(test_backoff_growth_and_cap),
		cmocka_unit_test(test_backoff_jitter),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
