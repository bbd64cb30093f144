/* test_content.c - the generator's events: level mix, catalogue, schema
 * and size. */
#include <math.h>
#include <regex.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>
#include <jansson.h>

#include "../content.h"
#include "../params.h"
#include "logpipe/event.h"
#include "logpipe/json.h"
#include "logpipe/util.h"

#include "logpipe/banned.h"

#define DRAWS 1000000

/* Each level's share over many draws is within 0.3 points of its weight
 * (the standard error at 1e6 draws is below 0.05 points). */
static void check_mix(const unsigned mix[GEN_NLEVELS])
{
	unsigned long count[GEN_NLEVELS] = { 0 };
	struct gen_rng r;
	int i, l;

	gen_rng_seed(&r, 42);
	for (i = 0; i < DRAWS; i++)
		count[gen_level_draw(&r, mix)]++;
	for (l = 0; l < GEN_NLEVELS; l++) {
		double got = 100.0 * (double)count[l] / DRAWS;
		double want = mix[l] / 100.0;

		if (fabs(got - want) > 0.3)
			fail_msg("%s: %.3f %% drawn, %.3f %% expected", gen_level_names[l], got, want);
	}
}

static void test_level_mix(void **state)
{
	unsigned sum = 0, bsum = 0;
	int l;

	for (l = 0; l < GEN_NLEVELS; l++) {
		sum += gen_level_mix[l];
		bsum += gen_burst_mix[l];
	}
	assert_int_equal(sum, 10000);
	assert_int_equal(bsum, 10000);
	/* The mix the brief asks for: ~70 INFO, 15 DEBUG, 10 WARN, 4 ERROR,
	 * 1 FATAL/TRACE together. */
	assert_int_equal(gen_level_mix[GEN_INFO], 7000);
	assert_int_equal(gen_level_mix[GEN_DEBUG], 1500);
	assert_int_equal(gen_level_mix[GEN_WARN], 1000);
	assert_int_equal(gen_level_mix[GEN_ERROR], 400);
	assert_int_equal(gen_level_mix[GEN_FATAL] + gen_level_mix[GEN_TRACE], 100);
	check_mix(gen_level_mix);
	check_mix(gen_burst_mix);
}

static void test_rng_below_range(void **state)
{
	struct gen_rng r;
	unsigned long hits[7] = { 0 };
	int i;

	gen_rng_seed(&r, 0);
	assert_int_equal(gen_rng_below(&r, 0), 0);
	for (i = 0; i < 70000; i++) {
		uint32_t x = gen_rng_below(&r, 7);

		assert_true(x < 7);
		hits[x]++;
	}
	for (i = 0; i < 7; i++)
		assert_in_range(hits[i], 9000, 11000);
}

static void test_catalogue(void **state)
{
	size_t i, j;

	assert_true(gen_nservices >= 6);
	for (i = 0; i < gen_nhosts; i++) {
		assert_true(lp_ip_valid(gen_hosts[i].ip));
		assert_true(lp_str_has_prefix(gen_hosts[i].ip, "192.168.1."));
	}
	for (i = 0; i < gen_nservices; i++) {
		assert_true(gen_services[i].nhosts > 0);
		assert_true(gen_services[i].nendpoints > 0);
		for (j = 0; j < gen_services[i].nhosts; j++)
			assert_true(gen_services[i].hosts[j] < gen_nhosts);
	}
}

/* Parses one event and checks it against the normalised schema. */
static json_t *parse_event(const struct gen_writer *w)
{
	json_error_t je;
	json_t *ev = lp_json_loadb(w->out.buf, w->out.len, 0, &je);
	char err[200];

	if (!ev)
		fail_msg("not JSON: %s in %s", je.text, w->out.buf);
	if (lp_event_check_normalized(ev, err, sizeof(err)) < 0)
		fail_msg("not a normalised event: %s in %s", err, w->out.buf);
	return ev;
}

static void test_event_schema(void **state)
{
	struct gen_writer w;
	struct gen_rng r;
	struct gen_event_spec s = { .now_ms = 1705328625123LL, .size_bytes = 1024,
				    .burst_service = -1, .instance_id = "gen \"1\"", .seq = 7 };
	int i;

	gen_writer_init(&w);
	gen_rng_seed(&r, 1);
	for (i = 0; i < 2000; i++) {
		const struct gen_service *svc = gen_event_write(&w, &r, &s);
		json_t *ev = parse_event(&w);
		json_t *attrs = json_object_get(ev, "attributes");

		assert_string_equal(json_string_value(json_object_get(ev, "service")), svc->name);
		assert_string_equal(json_string_value(json_object_get(ev, "timestamp")),
				    "2024-01-15T14:23:45.123Z");
		assert_int_equal(json_integer_value(json_object_get(ev, "schema_version")),
				 LP_EVENT_SCHEMA_VERSION);
		assert_true(lp_ip_valid(json_string_value(json_object_get(ev, "source_ip"))));
		assert_non_null(json_object_get(ev, "tenant"));
		assert_int_equal(strlen(json_string_value(json_object_get(ev, "correlation_id"))),
				 32);
		assert_string_equal(json_string_value(json_object_get(attrs, "generator")),
				    "gen \"1\"");
		assert_int_equal(json_integer_value(json_object_get(attrs, "seq")), 7);
		assert_non_null(strstr(json_string_value(json_object_get(ev, "message")),
				       "request_id=req_"));
		json_decref(ev);
	}
	gen_writer_release(&w);
}

/* The event is exactly the size asked, from GEN_MIN_EVENT_BYTES up. */
static void test_event_size(void **state)
{
	static const size_t sizes[] = { GEN_MIN_EVENT_BYTES, 350, 400, 512, 1000, 1024, 4096,
					65536, GEN_SIZE_MAX };
	struct gen_writer w;
	struct gen_rng r;
	struct gen_event_spec s = { .now_ms = 1705328625123LL, .burst_service = -1,
				    .instance_id = "generator-test-8085" };
	size_t i;
	int k;

	gen_writer_init(&w);
	gen_rng_seed(&r, 2);
	for (i = 0; i < LP_ARRAY_SIZE(sizes); i++) {
		s.size_bytes = sizes[i];
		for (k = 0; k < (sizes[i] > 100000 ? 20 : 500); k++) {
			json_t *ev;

			gen_event_write(&w, &r, &s);
			if (w.out.len != sizes[i])
				fail_msg("asked %zu bytes, got %zu: %s", sizes[i], w.out.len,
					 w.out.buf);
			assert_int_equal(strlen(w.out.buf), w.out.len);
			ev = parse_event(&w);
			json_decref(ev);
		}
	}
	gen_writer_release(&w);
}

/* Below the minimum the event is as small as it gets, still valid, and
 * never far above the minimum. */
static void test_event_small(void **state)
{
	struct gen_writer w;
	struct gen_rng r;
	struct gen_event_spec s = { .now_ms = 1705328625123LL, .size_bytes = 1,
				    .burst_service = -1, .instance_id = "g" };
	int k;

	gen_writer_init(&w);
	gen_rng_seed(&r, 3);
	for (k = 0; k < 2000; k++) {
		json_t *ev;

		s.size_bytes = k % 2 ? 1 : 256;
		gen_event_write(&w, &r, &s);
		assert_in_range(w.out.len, 200, GEN_MIN_EVENT_BYTES);
		ev = parse_event(&w);
		assert_null(json_object_get(ev, "attributes"));
		json_decref(ev);
	}
	gen_writer_release(&w);
}

/* A service in an error burst logs mostly errors, the others do not. */
static void test_error_burst(void **state)
{
	struct gen_writer w;
	struct gen_rng r;
	struct gen_event_spec s = { .now_ms = 1705328625123LL, .size_bytes = 600,
				    .burst_service = 3, .instance_id = "g" };
	unsigned long in_burst = 0, burst_errors = 0, other = 0, other_errors = 0;
	int k;

	gen_writer_init(&w);
	gen_rng_seed(&r, 4);
	for (k = 0; k < 20000; k++) {
		const struct gen_service *svc = gen_event_write(&w, &r, &s);
		bool err = strstr(w.out.buf, "\"level\":\"ERROR\"") ||
			   strstr(w.out.buf, "\"level\":\"FATAL\"");

		if (svc == &gen_services[3]) {
			in_burst++;
			burst_errors += err;
		} else {
			other++;
			other_errors += err;
		}
	}
	assert_true(in_burst > 1000);
	assert_in_range(100 * burst_errors / in_burst, 45, 55);
	assert_in_range(1000 * other_errors / other, 35, 55);
	gen_writer_release(&w);
}

/* The traffic is spread by weight over every service and host. */
static void test_spread(void **state)
{
	unsigned long svc[16] = { 0 }, total = 0;
	struct gen_rng r;
	size_t i;
	int k;

	assert_true(gen_nservices <= 16);
	gen_rng_seed(&r, 5);
	for (k = 0; k < 100000; k++)
		svc[gen_service_draw(&r)]++;
	for (i = 0; i < gen_nservices; i++)
		total += gen_services[i].weight;
	for (i = 0; i < gen_nservices; i++) {
		double want = 100000.0 * gen_services[i].weight / (double)total;

		if (fabs((double)svc[i] - want) > want * 0.05)
			fail_msg("%s: %lu drawn, %.0f expected", gen_services[i].name, svc[i], want);
	}
}

/* The timestamp's text is kept per writer and only its milliseconds are
 * rewritten within a second: across seconds, days, years and a clock that
 * steps back, both time fields stay lp_rfc3339's text of now_ms. */
static void test_event_time(void **state)
{
	static const int64_t starts[] = { 1705328625123LL, 1704067198950LL, 0, 999,
					  253402300799000LL };
	struct gen_writer w;
	struct gen_rng r, steps;
	struct gen_event_spec s = { .size_bytes = 256, .burst_service = -1, .instance_id = "g" };
	char want[32];
	size_t i;
	int k;

	gen_writer_init(&w);
	gen_rng_seed(&r, 6);
	gen_rng_seed(&steps, 7);
	for (i = 0; i < LP_ARRAY_SIZE(starts); i++) {
		s.now_ms = starts[i];
		for (k = 0; k < 3000; k++) {
			json_t *ev;

			gen_event_write(&w, &r, &s);
			ev = parse_event(&w);
			lp_rfc3339(s.now_ms, want);
			if (strcmp(json_string_value(json_object_get(ev, "timestamp")), want) != 0 ||
			    strcmp(json_string_value(json_object_get(ev, "received_at")), want) != 0)
				fail_msg("now_ms %lld: want %s in %s", (long long)s.now_ms, want,
					 w.out.buf);
			json_decref(ev);
			/* Mostly forward by up to 1.5 s, now and then back by one. */
			if (gen_rng_below(&steps, 50) == 0 && s.now_ms >= 1000)
				s.now_ms -= 1000;
			else
				s.now_ms += gen_rng_below(&steps, 1500);
		}
	}
	gen_writer_release(&w);
}

/* Numbers are written without printf: the attributes carry them exactly,
 * seq beyond 32 bits included. */
static void test_event_numbers(void **state)
{
	static const uint64_t seqs[] = { 0, 9, 10, 4294967295ULL, 4294967296ULL,
					 12345678901234567ULL };
	struct gen_writer w;
	struct gen_rng r;
	struct gen_event_spec s = { .now_ms = 1705328625123LL, .size_bytes = 2048,
				    .burst_service = -1, .instance_id = "g" };
	size_t i;

	gen_writer_init(&w);
	gen_rng_seed(&r, 8);
	for (i = 0; i < LP_ARRAY_SIZE(seqs); i++) {
		json_t *ev, *attrs;
		json_int_t st, lat;

		s.seq = seqs[i];
		gen_event_write(&w, &r, &s);
		ev = parse_event(&w);
		attrs = json_object_get(ev, "attributes");
		assert_int_equal((uint64_t)json_integer_value(json_object_get(attrs, "seq")), seqs[i]);
		st = json_integer_value(json_object_get(attrs, "http_status"));
		lat = json_integer_value(json_object_get(attrs, "latency_ms"));
		assert_in_range(st, 200, 504);
		assert_in_range(lat, 2, 5000);
		json_decref(ev);
	}
	gen_writer_release(&w);
}

#define RID " request_id=req_[0-9a-f]{16}$"
#define EP "(GET|POST|PUT) /[a-z0-9/._-]+"

/* What each level's messages look like, as the first version printed them
 * with printf formats (%06u as [0-9]{6}, %02u as [0-9]{2}, ...). */
static const struct {
	enum gen_level level;
	const char *re;
} templates[] = {
	{ GEN_TRACE, "^entering handler " EP RID },
	{ GEN_DEBUG, "^(cache lookup|feature flag evaluation|SQL query|token validation|"
		     "rate limit check|schema validation) took [0-9]+us hit=(true|false)" RID },
	{ GEN_INFO, "^" EP " completed status=(200|201|204) latency_ms=[0-9]+" RID },
	{ GEN_INFO, "^payment pay_[0-9]{6} authorized amount=[1-9][0-9]*\\.[0-9]{2} "
		    "(EUR|USD|GBP|JPY) in [0-9]+ms" RID },
	{ GEN_INFO, "^order ORD-[0-9]{6} created items=[1-9] total=[1-9][0-9]*\\.[0-9]{2} "
		    "customer=[0-9]+" RID },
	{ GEN_INFO, "^stock reserved sku=SKU-[0-9]{5} qty=[1-5] warehouse=wh-[1-4] "
		    "remaining=[0-9]+" RID },
	{ GEN_INFO, "^(email|sms|push) notification queued template=order-confirmation "
		    "user=[0-9]+" RID },
	{ GEN_INFO, "^access token issued user=[0-9]+ scope=read:orders ttl=[1-9][0-9]*00s" RID },
	{ GEN_INFO, "^shipment SHP-[0-9]{6} label created carrier=ups weight=[0-9]+\\.[0-9]kg" RID },
	{ GEN_INFO, "^search query answered hits=[0-9]+ shards=[1-8] took [0-9]+ms" RID },
	{ GEN_INFO, "^user [0-9]+ session refreshed, [1-5] active sessions" RID },
	{ GEN_WARN, "^slow request " EP " took [0-9]+ms \\(threshold 500ms\\)" RID },
	{ GEN_WARN, "^retrying call to [a-z]+-service attempt [1-3]/3 after [0-9]+ms" RID },
	{ GEN_WARN, "^connection pool (8|9)[0-9]% used \\(4[0-9] of 50 connections\\)" RID },
	{ GEN_ERROR, "^" EP " failed status=50[0234]: [a-zA-Z0-9 ,:._-]+" RID },
	{ GEN_FATAL, "^fatal: [a-zA-Z0-9 ,/._-]+" RID },
};

/* Every message reads as one of its level's templates (the filler that
 * pads it to size taken off), and every template is used. */
static void test_message_templates(void **state)
{
	regex_t re[LP_ARRAY_SIZE(templates)];
	unsigned long used[LP_ARRAY_SIZE(templates)] = { 0 };
	struct gen_writer w;
	struct gen_rng r;
	struct gen_event_spec s = { .now_ms = 1705328625123LL, .size_bytes = 1024,
				    .burst_service = 2, .instance_id = "g" };
	size_t i;
	int k;

	for (i = 0; i < LP_ARRAY_SIZE(templates); i++)
		if (regcomp(&re[i], templates[i].re, REG_EXTENDED | REG_NOSUB) != 0)
			fail_msg("bad pattern %s", templates[i].re);
	gen_writer_init(&w);
	gen_rng_seed(&r, 9);
	for (k = 0; k < 50000; k++) {
		json_t *ev;
		const char *level;
		char msg[1024], *filler;
		bool matched = false;

		gen_event_write(&w, &r, &s);
		ev = parse_event(&w);
		level = json_string_value(json_object_get(ev, "level"));
		lp_strlcpy(msg, json_string_value(json_object_get(ev, "message")), sizeof(msg));
		filler = strstr(msg, " lorem ipsum");
		if (filler)
			*filler = '\0';
		for (i = 0; i < LP_ARRAY_SIZE(templates); i++) {
			if (strcmp(gen_level_names[templates[i].level], level) != 0 ||
			    regexec(&re[i], msg, 0, NULL, 0) != 0)
				continue;
			used[i]++;
			matched = true;
			break;
		}
		if (!matched)
			fail_msg("%s message \"%s\" matches no template", level, msg);
		json_decref(ev);
	}
	for (i = 0; i < LP_ARRAY_SIZE(templates); i++) {
		if (!used[i])
			fail_msg("template %s never used", templates[i].re);
		regfree(&re[i]);
	}
	gen_writer_release(&w);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_level_mix),
		cmocka_unit_test(test_rng_below_range),
		cmocka_unit_test(test_catalogue),
		cmocka_unit_test(test_event_schema),
		cmocka_unit_test(test_event_size),
		cmocka_unit_test(test_event_small),
		cmocka_unit_test(test_error_burst),
		cmocka_unit_test(test_spread),
		cmocka_unit_test(test_event_time),
		cmocka_unit_test(test_event_numbers),
		cmocka_unit_test(test_message_templates),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
