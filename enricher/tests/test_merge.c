/* test_merge.c - unit tests for the enricher's pure logic: record parsing,
 * lookup classification and the merge into the "enrichment" object. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>
#include <jansson.h>

#include "../merge.h"
#include "logpipe/buf.h"
#include "logpipe/json.h"
#include "logpipe/util.h"

#include "logpipe/banned.h"

#define HOST_JSON                                                                          \
	"{\"hostname\":\"new-server\",\"ipAddress\":\"192.168.1.150\",\"datacenter\":"       \
	"\"us-west-2\",\"environment\":\"production\",\"costCenter\":\"engineering\","       \
	"\"tags\":{\"rack\":\"r1\"}}"
#define SERVICE_JSON \
	"{\"name\":\"payment-service\",\"team\":\"payments\",\"owner\":\"alice\",\"tier\":\"1\"}"

static struct md_record *parse(enum md_kind k, const char *text)
{
	char err[160] = "";
	struct md_record *r = md_record_parse(k, text, strlen(text), err, sizeof(err));

	if (!r)
		print_message("parse failed: %s\n", err);
	return r;
}

static void test_parse_host(void **state)
{
	struct md_record *r = parse(MD_HOST, HOST_JSON);

	assert_non_null(r);
	assert_string_equal(r->name, "new-server");
	assert_string_equal(r->ip, "192.168.1.150");
	assert_string_equal(r->attr[0], "us-west-2");
	assert_string_equal(r->attr[1], "production");
	assert_string_equal(r->attr[2], "engineering");
	md_record_unref(r);
}

static void test_parse_service_with_nulls(void **state)
{
	struct md_record *r = parse(MD_SERVICE, "{\"name\":\"api\",\"team\":null,\"tier\":\"2\"}");

	assert_non_null(r);
	assert_string_equal(r->name, "api");
	assert_null(r->ip);
	assert_null(r->attr[0]);
	assert_null(r->attr[1]);
	assert_string_equal(r->attr[2], "2");
	md_record_unref(r);
}

static void test_parse_rejects(void **state)
{
	static const struct {
		enum md_kind kind;
		const char *text;
		const char *want; /* part of the error message */
	} bad[] = {
		{ MD_HOST, "not json", "invalid JSON" },
		{ MD_HOST, "[1]", "not a JSON object" },
		{ MD_HOST, "{\"name\":\"x\"}", "hostname" },
		{ MD_HOST, "{\"hostname\":\"\"}", "hostname" },
		{ MD_HOST, "{\"hostname\":\"h\",\"datacenter\":5}", "datacenter" },
		{ MD_HOST, "{\"hostname\":\"h\",\"ipAddress\":[]}", "ipAddress" },
		{ MD_SERVICE, "{\"hostname\":\"x\"}", "name" },
		{ MD_SERVICE, "{\"name\":\"s\",\"owner\":{}}", "owner" },
	};
	char err[160];
	size_t i;

	for (i = 0; i < LP_ARRAY_SIZE(bad); i++) {
		err[0] = '\0';
		assert_null(md_record_parse(bad[i].kind, bad[i].text, strlen(bad[i].text), err,
					    sizeof(err)));
		if (!strstr(err, bad[i].want))
			fail_msg("input %s: error \"%s\" does not mention \"%s\"", bad[i].text, err,
				 bad[i].want);
	}
}

static void test_refcount(void **state)
{
	struct md_record *r = parse(MD_SERVICE, SERVICE_JSON);

	assert_ptr_equal(md_record_ref(r), r);
	assert_int_equal(r->refs, 2);
	md_record_unref(r);
	assert_int_equal(r->refs, 1);
	md_record_unref(r);
	md_record_unref(NULL);
}

static void test_key(void **state)
{
	char buf[16];

	assert_string_equal(md_key(buf, sizeof(buf), "host", "web-1"), "host:web-1");
	assert_null(md_key(buf, sizeof(buf), "service", "a-very-long-name"));
}

/* ---- classification -------------------------------------------------------------- */

static void classify(enum tier_outcome l, enum tier_outcome r, enum tier_outcome m,
		     enum lookup_status want)
{
	enum tier_outcome out[TIER_COUNT] = { l, r, m };
	enum lookup_status got = lookup_classify(out);

	if (got != want)
		fail_msg("outcomes {%d,%d,%d}: got %s, want %s", l, r, m, lookup_reason(got),
			 lookup_reason(want));
}

static void test_classify(void **state)
{
	/* Any tier that found the record answers. */
	classify(OUT_FOUND, OUT_SKIPPED, OUT_SKIPPED, LOOKUP_FOUND);
	classify(OUT_MISS, OUT_FOUND, OUT_SKIPPED, LOOKUP_FOUND);
	classify(OUT_MISS, OUT_UNAVAILABLE, OUT_FOUND, LOOKUP_FOUND);
	/* The metadata service's 404 is authoritative, whatever Redis did. */
	classify(OUT_MISS, OUT_MISS, OUT_NOT_FOUND, LOOKUP_NOT_FOUND);
	classify(OUT_MISS, OUT_UNAVAILABLE, OUT_NOT_FOUND, LOOKUP_NOT_FOUND);
	/* A remembered "not found" (memo) counts as its tier's answer. */
	classify(OUT_SKIPPED, OUT_SKIPPED, OUT_NOT_FOUND, LOOKUP_NOT_FOUND);
	/* Unanswered: blame the metadata service when it failed, else Redis. */
	classify(OUT_MISS, OUT_MISS, OUT_UNAVAILABLE, LOOKUP_METADATA_UNAVAILABLE);
	classify(OUT_MISS, OUT_UNAVAILABLE, OUT_UNAVAILABLE, LOOKUP_METADATA_UNAVAILABLE);
	classify(OUT_MISS, OUT_UNAVAILABLE, OUT_SKIPPED, LOOKUP_REDIS_UNAVAILABLE);
	/* Every configured tier missed: nobody has it. */
	classify(OUT_MISS, OUT_MISS, OUT_SKIPPED, LOOKUP_NOT_FOUND);
	classify(OUT_NOT_FOUND, OUT_SKIPPED, OUT_SKIPPED, LOOKUP_NOT_FOUND);
	assert_string_equal(lookup_reason(LOOKUP_NO_FIELD), "no_host_field");
	assert_string_equal(lookup_reason(LOOKUP_REDIS_UNAVAILABLE), "redis_unavailable");
	assert_string_equal(lookup_reason(LOOKUP_METADATA_UNAVAILABLE), "metadata_unavailable");
}

/* ---- merge ----------------------------------------------------------------------- */

static json_t *event(void)
{
	return json_pack("{s:s, s:s, s:s}", "id", "0190d9a4-7c1e-7000-8000-000000000001",
			 "service", "payment-service", "message", "Payment processing failed");
}

static const char *en_str(json_t *ev, const char *field)
{
	return json_string_value(json_object_get(json_object_get(ev, "enrichment"), field));
}

static void test_merge_complete(void **state)
{
	struct lookup_answer h, s;
	json_t *ev = event(), *en;

	lookup_answer_init(&h, "source_ip", "192.168.1.150");
	h.status = LOOKUP_FOUND;
	h.tier = TIER_LOCAL;
	h.rec = parse(MD_HOST, HOST_JSON);
	lookup_answer_init(&s, "service", "payment-service");
	s.status = LOOKUP_FOUND;
	s.tier = TIER_REDIS;
	s.rec = parse(MD_SERVICE, SERVICE_JSON);

	assert_true(enrich_merge(ev, &h, &s, 1705328625123LL));
	en = json_object_get(ev, "enrichment");
	assert_string_equal(en_str(ev, "status"), "complete");
	assert_string_equal(en_str(ev, "enriched_at"), "2024-01-15T14:23:45.123Z");
	assert_string_equal(en_str(ev, "datacenter"), "us-west-2");
	assert_string_equal(en_str(ev, "environment"), "production");
	assert_string_equal(en_str(ev, "cost_center"), "engineering");
	assert_string_equal(en_str(ev, "team"), "payments");
	assert_string_equal(en_str(ev, "owner"), "alice");
	assert_string_equal(en_str(ev, "tier"), "1");
	assert_null(json_object_get(en, "missing"));
	assert_string_equal(json_string_value(json_object_get(json_object_get(en, "host"), "matched_by")),
			    "source_ip");
	assert_string_equal(json_string_value(json_object_get(json_object_get(en, "host"), "source")),
			    "local");
	assert_string_equal(json_string_value(json_object_get(json_object_get(en, "service"), "source")),
			    "redis");
	/* The event itself is untouched. */
	assert_string_equal(json_string_value(json_object_get(ev, "message")),
			    "Payment processing failed");
	lookup_answer_release(&h);
	lookup_answer_release(&s);
	json_decref(ev);
}

static void test_merge_partial(void **state)
{
	struct lookup_answer h, s;
	json_t *ev = event(), *en, *missing, *m;

	lookup_answer_init(&h, "host", "web-9");
	h.status = LOOKUP_METADATA_UNAVAILABLE;
	h.failed_tiers = (1u << TIER_REDIS) | (1u << TIER_METADATA);
	lookup_answer_init(&s, "service", "payment-service");
	s.status = LOOKUP_FOUND;
	s.rec = parse(MD_SERVICE, SERVICE_JSON);

	assert_false(enrich_merge(ev, &h, &s, 0));
	en = json_object_get(ev, "enrichment");
	assert_string_equal(en_str(ev, "status"), "partial");
	assert_true(json_is_null(json_object_get(en, "datacenter")));
	assert_true(json_is_null(json_object_get(en, "cost_center")));
	assert_string_equal(en_str(ev, "team"), "payments");
	missing = json_object_get(en, "missing");
	assert_int_equal(json_array_size(missing), 1);
	m = json_array_get(missing, 0);
	assert_string_equal(json_string_value(json_object_get(m, "lookup")), "host");
	assert_string_equal(json_string_value(json_object_get(m, "reason")), "metadata_unavailable");
	assert_string_equal(json_string_value(json_object_get(m, "value")), "web-9");
	assert_int_equal(json_array_size(json_object_get(m, "failed_tiers")), 2);
	assert_null(json_object_get(en, "host"));
	lookup_answer_release(&h);
	lookup_answer_release(&s);
	json_decref(ev);
}

static void test_merge_no_host_field_replaces_old(void **state)
{
	struct lookup_answer h, s;
	json_t *ev = event(), *m;

	json_object_set_new(ev, "enrichment", json_string("stale"));
	lookup_answer_init(&h, NULL, NULL);
	h.status = LOOKUP_NO_FIELD;
	lookup_answer_init(&s, "service", "payment-service");
	s.status = LOOKUP_NOT_FOUND;

	assert_false(enrich_merge(ev, &h, &s, 0));
	assert_string_equal(en_str(ev, "status"), "partial");
	m = json_object_get(json_object_get(ev, "enrichment"), "missing");
	assert_int_equal(json_array_size(m), 2);
	assert_string_equal(json_string_value(json_object_get(json_array_get(m, 0), "reason")),
			    "no_host_field");
	assert_null(json_object_get(json_array_get(m, 0), "value"));
	assert_string_equal(json_string_value(json_object_get(json_array_get(m, 1), "reason")),
			    "not_found");
	assert_null(json_object_get(json_array_get(m, 1), "failed_tiers"));
	json_decref(ev);
}

static void test_splice(void **state)
{
	static const struct {
		const char *in, *want;
	} cases[] = {
		{ "{\"a\":1}", "{\"a\":1,\"enrichment\":{\"x\":1}}" },
		{ "{\"a\": [1, {}] }\n", "{\"a\": [1, {}],\"enrichment\":{\"x\":1}}" },
		{ "{ }", "{\"enrichment\":{\"x\":1}}" },
	};
	struct lp_buf b = LP_BUF_INIT;
	size_t i;

	for (i = 0; i < LP_ARRAY_SIZE(cases); i++) {
		lp_buf_reset(&b);
		assert_int_equal(enrich_splice(&b, cases[i].in, strlen(cases[i].in), "{\"x\":1}", 7),
				 0);
		assert_string_equal(b.buf, cases[i].want);
	}
	assert_int_equal(enrich_splice(&b, "[1]", 3, "{}", 2), -EINVAL);
	assert_int_equal(enrich_splice(&b, "}", 1, "{}", 2), -EINVAL);
	assert_int_equal(enrich_splice(&b, "", 0, "{}", 2), -EINVAL);
	lp_buf_release(&b);
}

static void test_render_is_valid_json_with_escapes(void **state)
{
	struct lookup_answer h, s;
	struct lp_buf b = LP_BUF_INIT;
	json_error_t je;
	json_t *en;

	lookup_answer_init(&h, "host", "we\"ird\\host\n");
	h.status = LOOKUP_NOT_FOUND;
	lookup_answer_init(&s, "service", "api");
	s.status = LOOKUP_FOUND;
	s.rec = parse(MD_SERVICE, "{\"name\":\"api\",\"team\":\"t\\u00e9am \\\"q\\\"\"}");
	assert_false(enrich_render(&b, &h, &s, 0));
	en = lp_json_loadb(b.buf, b.len, 0, &je);
	if (!en)
		fail_msg("render produced invalid JSON (%s): %s", je.text, b.buf);
	assert_string_equal(json_string_value(json_object_get(en, "team")), "t\u00e9am \"q\"");
	assert_string_equal(json_string_value(json_object_get(
				    json_array_get(json_object_get(en, "missing"), 0), "value")),
			    "we\"ird\\host\n");
	json_decref(en);
	lookup_answer_release(&s);
	lp_buf_release(&b);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_parse_host),
		cmocka_unit_test(test_parse_service_with_nulls),
		cmocka_unit_test(test_parse_rejects),
		cmocka_unit_test(test_refcount),
		cmocka_unit_test(test_key),
		cmocka_unit_test(test_classify),
		cmocka_unit_test(test_merge_complete),
		cmocka_unit_test(test_merge_partial),
		cmocka_unit_test(test_merge_no_host_field_replaces_old),
		cmocka_unit_test(test_splice),
		cmocka_unit_test(test_render_is_valid_json_with_escapes),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
