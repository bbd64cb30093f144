/* test_params.c - reading a start request into the run's settings. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "../params.h"

#include "logpipe/banned.h"

static const struct gen_params defaults = { 1000, 256, 4, 10, 0 };

/* Parses body over the defaults; asserts the outcome. */
static struct gen_params parse_ok(const char *body)
{
	struct gen_params p = defaults;
	struct gen_param_error e;

	if (gen_params_parse(&p, body, strlen(body), &e) != 0)
		fail_msg("refused %s: %s (%s)", body, e.message, e.field);
	return p;
}

static void parse_bad(const char *body, const char *code, const char *field)
{
	struct gen_params p = defaults;
	struct gen_param_error e;

	memset(&e, 0, sizeof(e));
	if (gen_params_parse(&p, body, strlen(body), &e) != -EINVAL)
		fail_msg("accepted %s", body);
	assert_string_equal(e.code, code);
	assert_string_equal(e.field, field);
	assert_true(strlen(e.message) > 0);
	/* Nothing changed on failure. */
	assert_memory_equal(&p, &defaults, sizeof(p));
}

static void test_empty_body_is_defaults(void **state)
{
	struct gen_params p = parse_ok("");

	assert_memory_equal(&p, &defaults, sizeof(p));
	p = parse_ok("  \n");
	assert_memory_equal(&p, &defaults, sizeof(p));
	p = parse_ok("{}");
	assert_memory_equal(&p, &defaults, sizeof(p));
}

static void test_all_fields(void **state)
{
	struct gen_params p = parse_ok("{\"rate\": 2500.5, \"size_bytes\": 1024, \"threads\": 8,"
				       " \"batch_size\": 50, \"duration_s\": 30}");

	assert_true(p.rate == 2500.5);
	assert_int_equal(p.size_bytes, 1024);
	assert_int_equal(p.threads, 8);
	assert_int_equal(p.batch_size, 50);
	assert_true(p.duration_s == 30);
}

/* Seed 004: {"size_kb": 1, "rate": 10}. */
static void test_seed_004_size_kb(void **state)
{
	struct gen_params p = parse_ok("{\"size_kb\": 1, \"rate\": 10}");

	assert_int_equal(p.size_bytes, 1024);
	assert_true(p.rate == 10);
	p = parse_ok("{\"size_kb\": 0.5}");
	assert_int_equal(p.size_bytes, 512);
}

static void test_strings_and_aliases(void **state)
{
	struct gen_params p = parse_ok("{\"rate\": \"100\", \"batchSize\": \"5\", \"duration\": 2,"
				       " \"size\": 300}");

	assert_true(p.rate == 100);
	assert_int_equal(p.batch_size, 5);
	assert_true(p.duration_s == 2);
	assert_int_equal(p.size_bytes, 300);
	p = parse_ok("{\"ratePerSecond\": 7, \"threads\": null}");
	assert_true(p.rate == 7);
	assert_int_equal(p.threads, 4);
}

static void test_refusals_name_the_field(void **state)
{
	parse_bad("{\"rate\": 0}", "invalid_field", "rate");
	parse_bad("{\"rate\": -5}", "invalid_field", "rate");
	parse_bad("{\"rate\": \"fast\"}", "invalid_field", "rate");
	parse_bad("{\"rate\": 1e12}", "invalid_field", "rate");
	parse_bad("{\"rate\": true}", "invalid_field", "rate");
	parse_bad("{\"threads\": 2.5}", "invalid_field", "threads");
	parse_bad("{\"threads\": 0}", "invalid_field", "threads");
	parse_bad("{\"threads\": 65}", "invalid_field", "threads");
	parse_bad("{\"batch_size\": 0}", "invalid_field", "batch_size");
	parse_bad("{\"batchSize\": 100001}", "invalid_field", "batchSize");
	parse_bad("{\"size_bytes\": 2000000}", "invalid_field", "size_bytes");
	parse_bad("{\"size_kb\": -1}", "invalid_field", "size_kb");
	parse_bad("{\"size_bytes\": 100, \"size_kb\": 1}", "invalid_field", "size_kb");
	parse_bad("{\"duration_s\": -1}", "invalid_field", "duration_s");
	parse_bad("{\"rates\": 10}", "unknown_field", "rates");
	parse_bad("[1, 2]", "invalid_json", "");
	parse_bad("{\"rate\": ", "invalid_json", "");
	parse_bad("{\"rate\": 1, \"rate\": 2}", "invalid_json", "");
}

static void test_check_bounds(void **state)
{
	struct gen_params p = defaults;
	struct gen_param_error e;

	assert_int_equal(gen_params_check(&p, &e), 0);
	p.rate = GEN_RATE_MAX;
	p.size_bytes = GEN_SIZE_MAX;
	p.threads = GEN_THREADS_MAX;
	p.batch_size = GEN_BATCH_MAX;
	p.duration_s = GEN_DURATION_MAX;
	assert_int_equal(gen_params_check(&p, &e), 0);
	p.threads = 0;
	assert_int_equal(gen_params_check(&p, &e), -EINVAL);
	assert_string_equal(e.field, "threads");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_empty_body_is_defaults),
		cmocka_unit_test(test_all_fields),
		cmocka_unit_test(test_seed_004_size_kb),
		cmocka_unit_test(test_strings_and_aliases),
		cmocka_unit_test(test_refusals_name_the_field),
		cmocka_unit_test(test_check_bounds),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
